"""The moons model shipped inside the package (the script that rebuilds it: tests/test_default_model.py)."""
import fm_runtime


def test_shipped_model_declares_what_it_is():
    path = fm_runtime.default_model_path()
    assert path.is_file() and path.stat().st_size < 300_000
    s = fm_runtime.load()
    spec = s.spec
    assert spec.format_version == 1 and spec.kind == "velocity"   # unconditional: readable by version-1 runtimes
    assert spec.data_shape == (2,) and spec.prob_path == {"name": "ot", "sigma_min": 0.0}
    assert spec.training["dataset"] == "moons" and spec.training["steps"] == 10_000
    assert spec.training["batch_size"] == 2048 and spec.training["ema"] == 0.999    # the default recipe
    assert spec.architecture == {"type": "mlp", "dim": 2, "width": 64, "depth": 3, "activation": "silu"}
    assert (spec.default_solver, spec.default_steps) == ("midpoint", 8)
