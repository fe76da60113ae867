"""Time schedules: grids (endpoints, monotone, formulas), parity of the runtime and baked graphs
with the torch reference on every solver x schedule, the file's default in metadata, the CLI."""
import math

import numpy as np
import onnx
import pytest

import fm_runtime
from fm_runtime.errors import ModelError, UsageError
from fm_runtime.model.contract import FORMAT_VERSION
from fm_runtime.solve.schedules import SWAY_MAX, parse_schedule
from fm_runtime.solve.solvers import SOLVERS, integrate, time_grid
from tests.conftest import run_cli
from training.sample import log_prob as torch_log_prob
from training.sample import sample as torch_sample

NAMED = ["uniform", "shift:3", "shift:0.3", "sway:-1", "sway:0.8", f"sway:{SWAY_MAX}", "cosine"]
EXPLICIT = [0.0, 0.05, 0.2, 0.55, 1.0]
ALL = NAMED + ["times:" + ",".join(map(str, EXPLICIT))]


@pytest.mark.parametrize("name", NAMED)
def test_grids_start_at_noise_end_at_data_and_increase(name):
    for steps in (1, 2, 3, 8, 50):
        g = time_grid(steps, schedule=name)
        assert len(g) == steps + 1 and g[0] == 0.0 and g[-1] == 1.0
        assert all(b > a for a, b in zip(g, g[1:])), (name, steps, g)
        back = time_grid(steps, 1.0, 0.0, schedule=name)     # a likelihood solve: same times, reversed
        assert np.allclose(back, g[::-1], rtol=0, atol=1e-15)


def test_grid_formulas():
    u = np.arange(5) / 4
    assert np.allclose(time_grid(4, schedule="shift:3"), 3 * u / (1 + 2 * u))
    assert np.allclose(time_grid(4, schedule="sway:-1"), 1 - np.cos(np.pi / 2 * u))
    assert np.allclose(time_grid(4, schedule="cosine"), (1 - np.cos(np.pi * u)) / 2)
    assert time_grid(4, schedule="uniform") == time_grid(4) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert time_grid(4, schedule=EXPLICIT) == EXPLICIT
    # shift:S and shift:1/S mirror each other: t_S(u) = 1 - t_{1/S}(1 - u)
    assert np.allclose(time_grid(6, schedule="shift:4"), 1 - np.array(time_grid(6, schedule="shift:0.25"))[::-1])


def test_bad_schedules_are_named():
    for bad, msg in [("shift:0", "1/1000000 <= S"), ("shift:x", "needs a number"), ("sway:-1.5", "-1 <= S"),
                     (f"sway:{SWAY_MAX + 0.01}", "not increasing"), ("cosine:2", "takes no parameter"),
                     ("linear", "unknown schedule"), ("times:0,0.5", "from 0 to 1"),
                     ("times:0,0.6,0.4,1", "strictly increasing"), ("times:0,a,1", "comma-separated"),
                     ([0.0], "2 to")]:
        with pytest.raises(ValueError, match=msg):
            parse_schedule(bad)
    with pytest.raises(ValueError, match="has 4 steps, not 3"):
        time_grid(3, schedule=EXPLICIT)
    assert str(parse_schedule("shift:3.0")) == "shift:3" and parse_schedule(str(parse_schedule(ALL[-1]))).times == tuple(EXPLICIT)


def test_schedule_helps_where_the_field_is_stiff():
    # dx/dt = -20 (x - t): a fast transient at the start; 4 Euler steps on a grid crowded near t = 0
    # (shift:0.2) land closer to the exact solution than the uniform grid's
    def f(x, t):
        return -20.0 * (x - t)
    exact = 1.0 - 1 / 20 + (1.0 + 1 / 20) * math.exp(-20.0)     # x(1) from x(0) = 1
    err = {s: abs(integrate(f, np.array([1.0]), 6, "heun", schedule=s).x[0] - exact) for s in ("uniform", "shift:0.2")}
    assert err["shift:0.2"] < err["uniform"] / 3, err


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_runtime_matches_torch_on_every_schedule(trained, solver):
    s = fm_runtime.load(trained.onnx)
    z = np.random.default_rng(1).standard_normal((300, 2), dtype=np.float32)
    for name in ALL:
        steps = None if name.startswith("times") else 3
        ref = torch_sample(trained.model, z, steps, solver, schedule=name)
        x = s.sample(noise=z, steps=steps, solver=solver, schedule=name)
        assert np.abs(x - ref).max() <= 1e-4, (solver, name)
        _, traj = s.sample(noise=z, steps=steps, solver=solver, schedule=name, return_trajectory=True)
        assert np.abs(traj[-1] - ref).max() <= 1e-4 and len(traj) == (steps or 4) + 1
    # a schedule changes the answer (else the parity above could not fail)
    assert np.abs(s.sample(noise=z, steps=2, solver=solver, schedule="shift:3")
                  - s.sample(noise=z, steps=2, solver=solver)).max() > 1e-2
    logp = s.log_prob(z[:50], steps=3, solver=solver, schedule="cosine")
    assert np.abs(logp - torch_log_prob(trained.model, z[:50], 3, solver, schedule="cosine")).max() <= 1e-3


def test_baked_schedule_and_file_default(trained, tmp_path):
    from training.export_checkpoint import export_model

    z = np.random.default_rng(2).standard_normal((257, 2), dtype=np.float32)
    export_model(trained.model, trained.config, tmp_path / "b.onnx", bake="heun:3", default_schedule="sway:-1")
    b = fm_runtime.load(tmp_path / "b.onnx")
    assert b.spec.default_schedule == "sway:-1" and b.spec.format_version == 3 <= FORMAT_VERSION
    assert np.abs(b.sample(noise=z) - torch_sample(trained.model, z, 3, "heun", schedule="sway:-1")).max() <= 1e-4
    with pytest.raises(UsageError, match="sway:-1 time schedule; it cannot run another"):
        b.sample(noise=z, schedule="uniform")
    # a velocity file whose default is an explicit grid: used (and its steps) when none is asked for
    export_model(trained.model, trained.config, tmp_path / "v.onnx", default_schedule=EXPLICIT, default_solver="rk4")
    v = fm_runtime.load(tmp_path / "v.onnx")
    assert v.spec.default_steps == 4 and v.spec.format_version == 3
    assert np.abs(v.sample(noise=z) - torch_sample(trained.model, z, 4, "rk4", schedule=EXPLICIT)).max() <= 1e-4
    assert np.abs(v.sample(noise=z, steps=2, schedule="uniform") - torch_sample(trained.model, z, 2, "rk4")).max() <= 1e-4
    with pytest.raises(UsageError, match="default time grid has 4 steps, not 2"):
        v.sample(noise=z, steps=2)
    # uniform files keep declaring the old version, so older runtimes still read them
    assert fm_runtime.load(trained.onnx).spec.format_version == 1
    m = onnx.load(tmp_path / "v.onnx")
    for p in m.metadata_props:
        if p.key == "fm.default_schedule":
            p.value = '"shift:-2"'
    onnx.save(m, tmp_path / "bad.onnx")
    with pytest.raises(ModelError, match="fm.default_schedule: shift:S needs 1/1000000 <= S"):
        fm_runtime.load(tmp_path / "bad.onnx")


def test_cli_schedule_and_times(trained, tmp_path):
    z = np.random.default_rng(3).standard_normal((100, 2), dtype=np.float32)
    np.save(tmp_path / "z.npy", z)
    run_cli("fm-run", "sample", str(trained.onnx), "--noise", str(tmp_path / "z.npy"), "--times", "0,0.2,1",
            "--solver", "midpoint", "--out", str(tmp_path / "r.npy"))
    run_cli("fm-train", "sample", str(trained.ckpt), "--noise", str(tmp_path / "z.npy"), "--times", "0,0.2,1",
            "--solver", "midpoint", "--out", str(tmp_path / "t.npy"))
    ref = torch_sample(trained.model, z, 2, "midpoint", schedule=[0, 0.2, 1])
    assert np.abs(np.load(tmp_path / "r.npy") - ref).max() <= 1e-4
    assert np.abs(np.load(tmp_path / "t.npy") - ref).max() <= 1e-6
    p = run_cli("fm-run", "sample", str(trained.onnx), "-n", "10", "--schedule", "shift:0", check=False)
    assert p.returncode == 2 and "--schedule" in p.stderr and "1/1000000 <= S" in p.stderr
    p = run_cli("fm-run", "sample", str(trained.onnx), "-n", "10", "--times", "0,0.5,1", "--steps", "3", check=False)
    assert p.returncode == 2 and "2 steps, not 3" in p.stderr
