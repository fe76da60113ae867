"""Time schedules against torch: parity of the runtime and baked graphs with the torch reference on
every solver x schedule, the file's default in metadata, the CLI (the grids themselves, without
torch: tests/runtime/test_schedules.py)."""

import numpy as np
import onnx
import pytest

import fm_runtime
from fm_runtime.errors import ModelError, UsageError
from fm_runtime.model.contract import FORMAT_VERSION
from fm_runtime.solve.schedules import SWAY_MAX
from fm_runtime.solve.solvers import VELOCITY_SOLVERS
from tests.conftest import run_cli
from training.sample import log_prob as torch_log_prob
from training.sample import sample as torch_sample

NAMED = ["uniform", "shift:3", "shift:0.3", "sway:-1", "sway:0.8", f"sway:{SWAY_MAX}", "cosine"]
EXPLICIT = [0.0, 0.05, 0.2, 0.55, 1.0]
ALL = NAMED + ["times:" + ",".join(map(str, EXPLICIT))]


@pytest.mark.parametrize("solver", sorted(VELOCITY_SOLVERS))
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
    with pytest.raises(ModelError, match="fm.default_schedule is not a schedule this runtime can build: shift:S needs 1/1000000 <= S"):
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
