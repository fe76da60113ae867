"""The moons model shipped inside the package, and the script that rebuilds it."""
import hashlib
import subprocess
import sys

import pytest

import fm_runtime

from .conftest import REPO


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


@pytest.mark.slow
def test_build_script_is_reproducible(tmp_path):
    digests = []
    for name in ("a.onnx", "b.onnx"):
        subprocess.run([sys.executable, str(REPO / "scripts" / "build_default_model.py"), "--steps", "50",
                        "--out", str(tmp_path / name)], check=True, capture_output=True, timeout=300)
        digests.append(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_shipped_axpy_graph_is_what_the_script_builds():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from build_runtime_graphs import OUT, axpy_model
    finally:
        sys.path.pop(0)
    assert OUT.read_bytes() == axpy_model().SerializeToString()
