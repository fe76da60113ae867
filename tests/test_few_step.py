"""Few-step sampling: minibatch OT at batch 2048, reflow straightens trajectories, dopri5 against
scipy's solve_ivp and in the runtime."""
import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import fm_runtime
from fm_runtime.errors import UsageError
from fm_runtime.solve.adaptive import dopri5
from tests.conftest import run_cli
from training.couplings import couple, ot_pair
from training.data import sample_data
from training.sample import sample as torch_sample


def _cost(a, b):
    return float(((a - b) ** 2).sum())


@pytest.mark.parametrize("dataset", ["moons", "checkerboard"])
def test_ot_at_batch_2048_is_a_permutation_that_never_increases_the_cost(dataset):
    g = torch.Generator().manual_seed(0)
    for k in range(3):
        x1 = torch.from_numpy(sample_data(dataset, 2048 + k * 13, np.random.default_rng(k)))  # and a ragged last block
        x0 = torch.randn(x1.shape, generator=g)
        paired = couple("ot", x0, x1)
        assert torch.equal(paired.sort(0).values, x0.sort(0).values)          # the same noise rows...
        assert len(torch.unique(paired, dim=0)) == len(x0)                    # ...each used once
        assert _cost(paired, x1) <= _cost(x0, x1)
        assert _cost(paired, x1) < 0.5 * _cost(x0, x1)                        # and much shorter
    # blocks of the batch: never better than one assignment over it all, never worse than the pairs as drawn
    x1 = torch.from_numpy(sample_data(dataset, 384, np.random.default_rng(9)))
    x0 = torch.randn(x1.shape, generator=g)
    exact, blocks = _cost(ot_pair(x0, x1, None), x1), _cost(ot_pair(x0, x1, 64), x1)
    assert exact <= blocks <= _cost(x0, x1)
    # batches of up to 256 rows get one exact assignment, as the batch-256 OT recipe was measured
    assert torch.equal(couple("ot", x0[:256], x1[:256]), ot_pair(x0[:256], x1[:256], None))


def _field(x, t):
    w = 1 + 2 * t       # a rotation speeding up, and a contraction: exact solution below
    return np.stack([-w * x[..., 1] - 0.5 * x[..., 0], w * x[..., 0] - 0.5 * x[..., 1]], -1)


def _exact(x0, t):
    th, r = t + t * t, np.exp(-0.5 * t)
    c, s = np.cos(th), np.sin(th)
    return r * np.stack([c * x0[:, 0] - s * x0[:, 1], s * x0[:, 0] + c * x0[:, 1]], -1)


@pytest.mark.parametrize("tol", [1e-3, 1e-6, 1e-9])
def test_dopri5_against_solve_ivp(tol):
    x0 = np.random.default_rng(0).standard_normal((5, 2))
    sol = dopri5(_field, x0, 0.0, 1.0, rtol=tol, atol=tol)
    ref = solve_ivp(lambda t, y: _field(y.reshape(x0.shape), t).ravel(), (0, 1), x0.ravel(), method="RK45",
                    rtol=tol, atol=tol)
    y = ref.y[:, -1].reshape(x0.shape)
    assert np.abs(sol.x - y).max() <= 0.1 * tol      # the same method: the same answer
    assert np.abs(sol.x - _exact(x0, 1.0)).max() <= 30 * tol
    assert abs(sol.nfe - ref.nfev) <= 0.2 * ref.nfev and sol.nfe == 2 + 6 * (sol.accepted + sol.rejected)
    back = dopri5(_field, sol.x, 1.0, 0.0, rtol=tol, atol=tol)
    assert np.abs(back.x - x0).max() <= 100 * tol and back.times[-1] == 0.0


def test_dopri5_in_the_runtime(trained, tmp_path):
    s = fm_runtime.load(trained.onnx)
    z = np.random.default_rng(4).standard_normal((500, 2), dtype=np.float32)
    fine = torch_sample(trained.model, z, 64, "rk4")
    loose, tight = s.run(noise=z, solver="dopri5", rtol=1e-3, atol=1e-3), s.run(noise=z, solver="dopri5", rtol=1e-6, atol=1e-6)
    assert np.abs(tight.samples - fine).max() < 1e-4 < np.abs(loose.samples - fine).max()
    assert 10 < loose.nfe < tight.nfe and s.last_nfe == tight.nfe
    for bad in (dict(steps=4), dict(schedule="cosine"), dict(return_trajectory=True), dict(rtol=0.0)):
        with pytest.raises(UsageError):
            s.sample(noise=z, solver="dopri5", **bad)
    with pytest.raises(UsageError, match="rtol applies to the adaptive solver"):
        s.sample(noise=z, rtol=1e-3)
    np.save(tmp_path / "z.npy", z)
    p = run_cli("fm-run", "sample", str(trained.onnx), "--noise", str(tmp_path / "z.npy"), "--solver", "dopri5",
                "--rtol", "1e-6", "--atol", "1e-6", "--out", str(tmp_path / "x.npy"))
    assert f"{tight.nfe} NFE" in p.stderr and np.array_equal(np.load(tmp_path / "x.npy"), tight.samples)


def test_reflow_straightens_the_flow(trained, tmp_path):
    from training.checkpoint import load_checkpoint, save_checkpoint
    from training.reflow import ReflowRecipe, reflow, straightness
    from training.sample import guided_velocity

    recipe = ReflowRecipe(pairs=8192, steps=400, batch_size=512, teacher_steps=8)
    student, config = reflow(trained.ckpt, recipe, progress=False)
    save_checkpoint(tmp_path / "r1.ckpt", student, config)
    again, cfg = load_checkpoint(tmp_path / "r1.ckpt")
    assert cfg["reflow"]["round"] == 1 and cfg["coupling"] == "reflow" and cfg["path"]["name"] == "ot"
    z = np.random.default_rng(5).standard_normal((2000, 2), dtype=np.float32)
    before = straightness(guided_velocity(trained.model), z)
    after = straightness(guided_velocity(again), z)
    print(f"straightness: teacher {before:.4f}, 1-reflow {after:.4f}")
    assert after < 0.5 * before
    # the student's one Euler step lands closer to the teacher's converged samples than the teacher's own
    target = torch_sample(trained.model, z, 16, "midpoint")
    one = {name: np.mean(np.sum((torch_sample(m, z, 1, "euler") - target) ** 2, 1)) for name, m in
           (("teacher", trained.model), ("student", again))}
    assert one["student"] < 0.5 * one["teacher"], one


@pytest.mark.parametrize("field, words", [
    (lambda x, t: -1e8 * x, "after 20000 network evaluations"),                       # stiff: h ~ 1e-8 forever
    (lambda x, t: np.ones_like(x) / (0.5 - t) ** 2, "its step fell below 1e-09 of the span"),   # blows up at t = 1/2
])
def test_dopri5_ends_on_fields_it_cannot_solve(field, words):
    """Every adaptive solve is bounded: a stiff or exploding field ends in NumericalError (exit 5)
    naming the bound and where it stopped, not in a solve that runs until killed."""
    from fm_runtime.errors import NumericalError
    with pytest.raises(NumericalError, match=words):
        dopri5(field, np.ones(3, np.float32))
