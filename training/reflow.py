"""Reflow (rectified flow, Liu et al. 2022): straighten a trained flow by training a student on
the teacher's own coupling.

The teacher maps noise z to a sample x1 = phi(z) deterministically, so the pairs (z, phi(z))
are a coupling of noise and data whose straight lines cross much less than independent pairs;
the student regresses x1 - z along x_t = (1 - t) z + t x1 on those pairs, and its trajectories are
straighter, which is what few-step solvers need. Repeating on the student gives 2-reflow.

The pairs are drawn through the runtime (the teacher exported to a temporary model file, then
solved by fm_runtime in tiles on all cores); the student starts from the teacher's weights when
the teacher predicts velocity (Liu et al. initialise each reflow from the previous flow).
`distil` then trains the student through one fixed-step solve (e.g. midpoint:1) so that this
solve alone lands on the teacher's sample.
"""
from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fm_runtime.solve.noise import noise_rows
from fm_runtime.solve.solvers import integrate

from .checkpoint import load_checkpoint
from .nets import build_network
from .progress import progress_bar


@dataclass(frozen=True)
class ReflowRecipe:
    """The reflow defaults, measured on moons (benchmarks/bench_few_step.py; closing note)."""
    pairs: int = 200_000            # (noise, teacher sample) pairs drawn once
    teacher_solver: str = "midpoint"
    teacher_steps: int = 16         # 32 NFE: the teacher's converged quality
    steps: int = 4_000              # student optimiser steps
    batch_size: int = 2048
    lr: float = 1e-3                # Adam, cosine decay to 0; the student starts from the teacher
    ema: float = 0.999
    seed: int = 0
    distil: str | None = None       # "SOLVER:STEPS": then train through that solve
    distil_steps: int = 2_000
    distil_lr: float = 3e-4


def teacher_pairs(model: torch.nn.Module, config: dict, n: int, solver: str, steps: int, seed: int,
                  runtime: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(z, x1): n noise rows of the seeded stream and the teacher's samples from them."""
    from .sample import sample

    z = noise_rows(seed, 0, n, tuple(config["data_shape"]))
    if not runtime:
        return z, sample(model, z, steps, solver)
    import fm_runtime

    from .export_checkpoint import export_model

    with tempfile.TemporaryDirectory() as d:
        export_model(model, config, Path(d) / "teacher.onnx", divergence=False)
        return z, fm_runtime.load(Path(d) / "teacher.onnx").sample(noise=z, steps=steps, solver=solver)


def reflow(teacher: str | Path, recipe: ReflowRecipe | None = None, *, progress: bool | None = None,
           threads: int | None = 1, runtime: bool = True) -> tuple[torch.nn.Module, dict]:
    """Train a student on the teacher checkpoint's (noise, sample) coupling; returns (model,
    config) for save_checkpoint. The config's reflow["round"] counts the reflows behind it and
    total_train_seconds adds the teacher's training time to this run's."""
    recipe = recipe or ReflowRecipe()
    if recipe.pairs < recipe.batch_size or recipe.steps < 1 or recipe.lr <= 0:
        raise ValueError(f"reflow needs pairs >= batch_size, steps >= 1 and lr > 0, got {recipe}")
    if threads is not None:
        torch.set_num_threads(int(threads))
    model, config = load_checkpoint(teacher)
    if config.get("num_classes"):
        raise ValueError(f"{teacher}: reflow of class-conditional models is not supported")
    start = time.perf_counter()
    z, x1 = teacher_pairs(model, config, recipe.pairs, recipe.teacher_solver, recipe.teacher_steps,
                          recipe.seed, runtime)
    pair_seconds = time.perf_counter() - start
    torch.manual_seed(recipe.seed)
    student = build_network(config["architecture"])
    if config.get("prediction", "velocity") == "velocity":
        student.load_state_dict(model.state_dict())
    z, x1 = torch.from_numpy(z), torch.from_numpy(np.ascontiguousarray(x1, np.float32))
    gen = torch.Generator().manual_seed(recipe.seed + 1)
    final_loss = _train(student, recipe.steps, recipe.lr, recipe.ema, progress,
                        lambda: _flow_loss(student, z, x1, recipe.batch_size, gen))
    if recipe.distil:
        solver, _, n = recipe.distil.partition(":")
        final_loss = _train(student, recipe.distil_steps, recipe.distil_lr, recipe.ema, progress,
                            lambda: _distil_loss(student, z, x1, recipe.batch_size, gen, solver, int(n)))
    seconds = time.perf_counter() - start
    previous = config.get("reflow", {})
    out = {k: v for k, v in config.items() if k not in ("recipe", "reflow")}
    out.update({
        "path": {"name": "ot", "sigma_min": 0.0}, "prediction": "velocity", "coupling": "reflow",
        "steps": recipe.steps, "batch_size": recipe.batch_size, "lr": recipe.lr, "ema": recipe.ema,
        "lr_schedule": "cosine", "seed": recipe.seed, "final_loss": round(final_loss, 6),
        "train_seconds": round(seconds, 2),
        "total_train_seconds": round(config.get("total_train_seconds", config.get("train_seconds", 0.0)) + seconds, 2),
        "reflow": {"round": previous.get("round", 0) + 1, "teacher": str(teacher),
                   "pair_seconds": round(pair_seconds, 2), **recipe.__dict__},
    })
    return student.eval(), out


def _flow_loss(student, z, x1, batch: int, gen) -> torch.Tensor:
    i = torch.randint(len(z), (batch,), generator=gen)
    z0, x = z[i], x1[i]
    t = torch.rand(batch, generator=gen)
    tt = t.reshape(-1, *([1] * (z0.dim() - 1)))
    return ((student((1 - tt) * z0 + tt * x, t) - (x - z0)) ** 2).mean()


def _distil_loss(student, z, x1, batch: int, gen, solver: str, steps: int) -> torch.Tensor:
    i = torch.randint(len(z), (batch,), generator=gen)

    def v(x, t):
        return student(x, torch.full((len(x),), t, dtype=x.dtype))
    return ((integrate(v, z[i], steps, solver).x - x1[i]) ** 2).mean()


def _train(model: torch.nn.Module, steps: int, lr: float, ema: float, progress, loss_fn) -> float:
    """Adam with cosine decay and an EMA of the weights (loaded into model at the end); returns
    the mean loss of the last 100 steps."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    averaged = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(ema)) if ema else None
    model.train()
    recent: list[float] = []
    bar = progress_bar(steps, progress)
    for _ in range(steps):
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if averaged is not None:
            averaged.update_parameters(model)
        recent = (recent + [loss.item()])[-100:]
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if averaged is not None:
        model.load_state_dict(averaged.module.state_dict())
    model.eval()
    return float(np.mean(recent)) if recent else math.nan


def straightness(velocity, z: np.ndarray, steps: int = 32) -> float:
    """Mean squared deviation of trajectories from the straight line between their ends:
    mean over rows and the grid's inner times of |x_t - ((1 - t) x_0 + t x_1)|^2, solved with
    `steps` midpoint steps; velocity(x, t) -> v on torch tensors. 0 for straight flows."""
    with torch.no_grad():
        sol = integrate(velocity, torch.as_tensor(z), steps, "midpoint", trajectory=True)
    x0, x1 = sol.trajectory[0], sol.trajectory[-1]
    dev = [((x - ((1 - t) * x0 + t * x1)) ** 2).reshape(len(x0), -1).sum(1).mean().item()
           for t, x in zip(sol.times[1:-1], sol.trajectory[1:-1])]
    return float(np.mean(dev))
