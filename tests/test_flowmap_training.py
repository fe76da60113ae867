"""Flow maps on the training side (training/flowmap.py): a map starts as its teacher, distillation
makes one jump land where the teacher's long solve does, the jump sampler, checkpoints, the
tasks' map signatures, MeanFlow's target, and the fm-train commands that write maps."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from training.checkpoint import load_checkpoint, save_checkpoint
from training.flowmap import default_recipe, distill, map_from_teacher, meanflow, meanflow_target
from training.sample import jump_sample, sample
from training.tasks import TASKS
from training.train import fit


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("map") / "moons.ckpt"
    fit("moons", steps=300, batch_size=512, lr=3e-3, ema=0.0, out=path)
    return path


@pytest.fixture(scope="module")
def distilled(teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("map") / "moons-map.ckpt"
    distill(teacher, default_recipe("moons", steps=250, batch_size=512, pool=4, refresh=8, lr=3e-3), out=out)
    return out


def _noise(n=512, seed=1):
    return np.random.default_rng(seed).standard_normal((n, 2)).astype(np.float32)


def test_a_map_starts_as_its_teacher(teacher):
    model, config = load_checkpoint(teacher)
    student = map_from_teacher(model, config)
    z = _noise()
    assert np.abs(jump_sample(student, z, 1) - sample(model, z, 1, "euler")).max() < 1e-6
    assert np.abs(jump_sample(student, z, 4) - sample(model, z, 4, "euler")).max() < 1e-6


@pytest.mark.parametrize("name", sorted(TASKS))
def test_a_task_map_starts_as_its_velocity_and_puts_s_before_t(name):
    task = TASKS[name]
    arch = {"type": "task", "task": name, "width": 16, "depth": 2}
    velocity = task.build(arch)
    student = map_from_teacher(velocity, {"architecture": arch})
    x1, request = task.draw(3, np.random.default_rng(0))
    request = {k: torch.from_numpy(v) for k, v in request.items()}
    conds = velocity.conditions(request, torch.zeros(3, dtype=torch.bool))
    x, s, t = torch.randn(x1.shape), torch.tensor([0.0, 0.3, 0.5]), torch.tensor([1.0, 0.6, 0.5])
    with torch.no_grad():
        assert torch.allclose(student(x, s, t, conds), velocity(x, s, conds), atol=1e-6)
    options = task.export_options(student)
    names = options["call"].split(",")
    assert names.index("s") == names.index("t") - 1 and [n for n in names if n != "s"] == task.call.split(",")
    assert (options["default_solver"], options["default_steps"]) == ("jump", 1)
    assert task.export_options(velocity)["call"] == task.call        # a velocity model's call is unchanged


def test_distillation_makes_one_jump_land_on_the_teachers_solve(teacher, distilled):
    model, _ = load_checkpoint(teacher)
    student, config = load_checkpoint(distilled)
    z = _noise(2000, 5)
    target = sample(model, z, 32, "midpoint")
    before = np.mean((sample(model, z, 1, "euler") - target) ** 2)
    after = np.mean((jump_sample(student, z, 1) - target) ** 2)
    assert after < 0.1 * before, (before, after)
    assert config["model"] == "flow-map" and config["architecture"]["flow_map"] is True
    assert config["flow_map"]["method"] == "distill" and config["flow_map"]["steps"] == 250


def test_the_diagonal_stays_the_teachers_velocity(teacher, distilled):
    model, _ = load_checkpoint(teacher)
    student, _ = load_checkpoint(distilled)
    x, t = torch.from_numpy(_noise(1000, 3)), torch.rand(1000)
    with torch.no_grad():
        v, u = model(x, t), student(x, t, t)
    assert ((u - v) ** 2).mean() < 0.05 * (v ** 2).mean()


def test_a_map_checkpoint_round_trips(distilled, tmp_path):
    student, config = load_checkpoint(distilled)
    assert getattr(student, "flow_map", False)
    save_checkpoint(tmp_path / "again.ckpt", student, config)
    again, config2 = load_checkpoint(tmp_path / "again.ckpt")
    z = _noise(64)
    assert config2 == config and np.array_equal(jump_sample(again, z, 2), jump_sample(student, z, 2))


class _Recording(torch.nn.Module):
    """u(x, s, t, y) = (s + 10 t) (1 + y) with y = 0 for "no label"; records the (s, t) it is called at."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, s, t, y=None):
        self.calls.append((float(s[0]), float(t[0]), y is None))
        scale = 1.0 if y is None else 1.0 + y.to(x.dtype)[:, None]
        return ((s + 10 * t)[:, None] * scale).expand_as(x)


def test_jump_sample_jumps_on_the_grid_with_guidance_per_jump():
    model = _Recording()
    x = jump_sample(model, np.zeros((2, 2), np.float32), steps=4, labels=[1, 1], guidance=3.0)
    grid = [0, 0.25, 0.5, 0.75, 1.0]
    cond_calls = [(a, b) for a, b, unlabelled in model.calls if not unlabelled]
    assert cond_calls == list(zip(grid[:-1], grid[1:]))
    # u_c = 2 (s + 10 t), u_u = s + 10 t: guided u = u_u + 3 (u_c - u_u) = 4 (s + 10 t)
    expected = sum(0.25 * 4 * (a + 10 * b) for a, b in zip(grid[:-1], grid[1:]))
    assert np.allclose(x, expected, atol=1e-6)


def test_the_meanflow_target_is_the_average_velocity_of_a_known_flow():
    # dx/dt = x: x_t = x_s e^(t - s), so the exact map u = x (e^(t - s) - 1) / (t - s) is its own target
    def exact(x, s, t):
        gap = (t - s)[:, None]
        return x * torch.where(gap > 0, torch.expm1(gap) / gap.clamp(min=1e-12), torch.ones_like(gap))

    x, s = torch.randn(8, 2, dtype=torch.float64), torch.rand(8, dtype=torch.float64) * 0.5
    t = s + torch.rand(8, dtype=torch.float64) * 0.5
    u, target = meanflow_target(exact, x, s, t, x)
    assert torch.allclose(u, target, atol=1e-9)


@pytest.mark.parametrize("dataset", ["moons", "reach"])
def test_meanflow_trains_and_stays_finite(dataset):
    model, config = meanflow(dataset, steps=3, batch_size=32, width=16, depth=2)
    assert math.isfinite(config["final_loss"]) and config["flow_map"]["method"] == "meanflow"
    assert getattr(model, "flow_map", False)


def _fm_train(*args):
    from training.cli import cli
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_fm_train_distill_and_fit_write_loadable_maps(teacher, tmp_path):
    _fm_train("distill", str(teacher), "--out", str(tmp_path / "d.ckpt"), "--steps", "8", "--batch-size", "64",
              "--no-progress")
    _fm_train("fit", "--data", "moons", "--steps", "20", "--batch-size", "64", "--model", "flow-map",
              "--map-steps", "8", "--teacher-out", str(tmp_path / "t.ckpt"), "--out", str(tmp_path / "f.ckpt"),
              "--no-progress")
    _fm_train("sample", str(tmp_path / "f.ckpt"), "--steps", "2", "-n", "16", "--out", str(tmp_path / "x.npy"))
    for name in ("d.ckpt", "f.ckpt"):
        model, config = load_checkpoint(tmp_path / name)
        assert config["model"] == "flow-map" and getattr(model, "flow_map", False)
    assert load_checkpoint(tmp_path / "t.ckpt")[1].get("model") is None
    assert np.isfinite(np.load(tmp_path / "x.npy")).all()
