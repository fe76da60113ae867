"""Every fast mode (baked graph, in-place loop, tiling, threads) matches the torch sampler."""
import os
import re

import numpy as np
import pytest

import fm_runtime
from fm_runtime.solve.solvers import SOLVERS, VELOCITY_SOLVERS
from training.export_checkpoint import export_model
from training.sample import sample as native_sample

from .conftest import run_cli

ATOL = 1e-4
MODES = [dict(tile=0, threads=1), dict(tile=1024, threads=1), dict(tile=1024, threads=2),
         dict(tile=777, threads=3), dict(tile=0, threads=1, intra_op_threads=2)]


@pytest.fixture(scope="module")
def baked(trained, tmp_path_factory):
    d = tmp_path_factory.mktemp("baked")
    files = {}
    for solver in sorted(VELOCITY_SOLVERS):
        steps = 8 if solver == "midpoint" else 3
        files[solver, steps] = d / f"{solver}{steps}.onnx"
        export_model(trained.model, trained.config, files[solver, steps], bake=f"{solver}:{steps}")
    return files


@pytest.fixture(scope="module")
def noise():
    return np.random.default_rng(11).standard_normal((5000, 2)).astype(np.float32)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: "-".join(f"{k}{v}" for k, v in m.items()))
def test_baked_graph_matches_torch(trained, baked, noise, mode):
    for (solver, steps), path in baked.items():
        s = fm_runtime.load(path, **mode)
        assert s.baked and s.spec.baked == {"solver": solver, "steps": steps,
                                           "nfe": steps * SOLVERS[solver].evals_per_step}
        got = s.sample(noise=noise)
        ref = native_sample(trained.model, noise, steps, solver)
        assert np.abs(got - ref).max() <= ATOL, (solver, steps, mode)
        assert s.last_nfe == s.spec.baked["nfe"]


def test_baked_graph_folds_each_steps_time_into_the_first_layer(trained, baked):
    # export.fold: Gemm(Concat(t broadcast, x)) -> Gemm(x) with t's column in the bias: no Expand,
    # Reshape or Concat left in the graph, one Gemm per layer per evaluation
    import onnx
    layers = trained.config["architecture"]["depth"] + 1
    for (solver, steps), path in baked.items():
        ops = [n.op_type for n in onnx.load(str(path)).graph.node]
        assert not {"Concat", "Expand", "Reshape"} & set(ops), (solver, sorted(set(ops)))
        assert ops.count("Gemm") == layers * steps * SOLVERS[solver].evals_per_step


@pytest.mark.parametrize("mode", MODES, ids=lambda m: "-".join(f"{k}{v}" for k, v in m.items()))
@pytest.mark.parametrize("solver", sorted(VELOCITY_SOLVERS))
def test_velocity_loop_matches_torch(trained, noise, mode, solver):
    s = fm_runtime.load(trained.onnx, **mode)
    got = s.sample(noise=noise, steps=4, solver=solver)
    assert np.abs(got - native_sample(trained.model, noise, 4, solver)).max() <= ATOL
    assert s.last_nfe == 4 * SOLVERS[solver].evals_per_step


def test_baked_refuses_other_steps_and_trajectories(baked):
    s = fm_runtime.load(baked["midpoint", 8])
    assert s.sample(3, seed=0, steps=8, solver="midpoint").shape == (3, 2)
    with pytest.raises(ValueError, match="baked midpoint:8 sampler; it cannot run midpoint:4"):
        s.sample(3, steps=4)
    with pytest.raises(ValueError, match="no trajectory"):
        s.sample(3, return_trajectory=True)
    with pytest.raises(ValueError, match="no velocity"):
        s.velocity(np.zeros((1, 2), np.float32), 0.0)


def test_baked_cli(trained, baked, tmp_path):
    info = run_cli("fm-run", "info", str(baked["midpoint", 8])).stdout
    assert "baked (midpoint:8, 16 NFE in one call)" in info
    p = run_cli("fm-run", "sample", str(baked["midpoint", 8]), "-n", "3000", "--seed", "0",
                "--out", str(tmp_path / "x.npy"))
    assert "16 NFE" in p.stderr
    from fm_runtime.solve.noise import noise_rows
    z = noise_rows(0, 0, 3000, (2,))
    assert np.abs(np.load(tmp_path / "x.npy") - native_sample(trained.model, z, 8, "midpoint")).max() <= ATOL
    p = run_cli("fm-run", "sample", str(baked["midpoint", 8]), "--steps", "4", check=False)
    assert p.returncode == 2 and "cannot run midpoint:4" in p.stderr
    p = run_cli("fm-export", str(trained.ckpt), "--bake", "midpoint:zero", "--out", str(tmp_path / "b.onnx"),
                check=False)
    assert p.returncode == 2 and "SOLVER:STEPS" in p.stderr and not (tmp_path / "b.onnx").exists()


def test_bench_command_times_every_mode(baked):
    p = run_cli("fm-run", "bench", str(baked["midpoint", 8]), "--batch", "4", "--batch", "3000")
    lines = [line for line in p.stdout.splitlines() if line.strip().startswith("batch") and " ms " in line]
    modes = 3 if (os.cpu_count() or 1) > 1 else 2       # tiled, whole batch, and onnxruntime's threads in a call
    assert len(lines) == 2 * modes and "baked, midpoint 8 steps (16 NFE)" in p.stdout
    verdicts = [line for line in p.stdout.splitlines() if re.match(r"\s+batch\s+\d+: ", line)]
    assert len(verdicts) == 2 and all("the default is fastest" in v or "fm-run sample --" in v for v in verdicts)
    # each line: the median time and the rate it achieves (FLOPs per sample x NFE x batch / time)
    # beside the measured matmul rate, so rate x time is the work, proportional to the batch
    parsed = [re.search(r"batch\s+(\d+).*?([\d.]+) ms\s+([\d.]+) GFLOP/s \(\s*(\d+)% of the matmul rate\)", line)
              for line in lines]
    assert all(parsed), lines
    per_row = [float(m[2]) * float(m[3]) / int(m[1]) for m in parsed]
    assert max(per_row) / min(per_row) < 1.05, lines


@pytest.mark.parametrize("solver", sorted(VELOCITY_SOLVERS))
def test_device_resident_loop_matches_torch(trained, noise, solver):
    # the accelerator code path (state, stages, t and coefficients as OrtValues, updates by the
    # shipped axpy graph through IOBinding), run here on the CPU provider
    s = fm_runtime.load(trained.onnx, device_resident=True, tile=0)
    assert type(s.backend).__name__ == "DeviceBackend"
    got = s.sample(noise=noise[:700], steps=3, solver=solver)
    other = s.sample(noise=noise[700:1400], steps=3, solver=solver)
    assert np.abs(got - native_sample(trained.model, noise[:700], 3, solver)).max() <= ATOL
    assert np.abs(other - native_sample(trained.model, noise[700:1400], 3, solver)).max() <= ATOL
    assert s.last_nfe == 3 * SOLVERS[solver].evals_per_step


def test_device_resident_baked_runner_reuses_buffers(trained, baked, noise):
    s = fm_runtime.load(baked["rk4", 3], device_resident=True, tile=0)
    ref = native_sample(trained.model, noise[:300], 3, "rk4")
    first = s.sample(noise=noise[:300])
    again = s.sample(noise=noise[:300] * 0.5)    # replays the same bound buffers
    assert np.abs(first - ref).max() <= ATOL      # and leaves earlier results alone
    assert np.abs(again - native_sample(trained.model, noise[:300] * 0.5, 3, "rk4")).max() <= ATOL
    assert np.abs(s.sample(noise=noise[:5]) - ref[:5]).max() <= ATOL
    assert sorted(s.backend.runner._bound) == [5, 300]


def test_cuda_graph_needs_cuda_and_a_baked_file(trained):
    with pytest.raises(fm_runtime.FmError, match="cuda_graph needs provider='cuda'"):
        fm_runtime.load(trained.onnx, cuda_graph=True)


def test_a_bake_exports_the_velocity_graph_once_and_unrolls_it_in_onnx(trained, tmp_path, monkeypatch):
    # export.unroll: one torch export of the velocity network, copied per evaluation, instead of
    # tracing the whole solve (seconds per evaluation); graphs it cannot copy fall back to the trace
    import onnx

    import export.onnx_export as ox
    from export.unroll import unrollable
    from fuzz.hostile_files import loop, loop_inits, model
    traced = []
    real = ox._to_onnx
    monkeypatch.setattr(ox, "_to_onnx", lambda module, shape, kind="velocity", *a: traced.append(kind) or real(module, shape, kind, *a))
    export_model(trained.model, trained.config, tmp_path / "b.onnx", bake="rk4:2")
    assert traced == ["velocity"]
    assert unrollable(onnx.load(str(trained.onnx))) and not unrollable(model([loop("x", "v", 2)], loop_inits("v", 2)))


@pytest.mark.parametrize("n, dim, workers, tile, want", [
    (256, 2, 2, 2048, [(0, 128), (128, 256)]),        # moons: 128 rows a worker is worth a call
    (100, 2, 2, 2048, [(0, 100)]),                    # under that, one call
    (64, 768, 2, 2048, [(0, 32), (32, 64)]),          # an image row is work enough: both cores
    (3, 768, 2, 2048, [(0, 2), (2, 3)]),
    (1, 768, 2, 2048, [(0, 1)]),
    (10, 768, 2, 4, [(0, 4), (4, 8), (8, 10)]),        # the tile still caps a call's rows
    (10, 768, 2, 0, [(0, 10)]),                       # tile 0: the whole batch in one call
    (500, 64, 1, 2048, [(0, 500)])])                  # one worker: never split below the tile
def test_tiles_split_a_batch_by_the_work_in_it(n, dim, workers, tile, want):
    from fm_runtime.engine.tiler import Tiler
    assert Tiler(tile, workers).bounds(n, None, dim) == want
