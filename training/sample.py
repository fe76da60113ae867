"""The torch-native reference sampler and log-likelihood: what the exported runtime must
reproduce."""
from __future__ import annotations

import math

import numpy as np
import torch

from fm_runtime.solve.schedules import parse_schedule
from fm_runtime.solve.solvers import integrate


def guided_velocity(model: torch.nn.Module, labels=None, guidance: float = 1.0):
    """v(x, t) as the runtime defines it: unconditional (labels None), conditional (guidance 1),
    or classifier-free guided v_u + w (v_c - v_u), with the model's "no label" id for v_u."""
    y = None if labels is None else torch.as_tensor(np.asarray(labels, np.int64))

    def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
        tt = torch.full((x.shape[0],), t, dtype=x.dtype)
        if y is None:
            return model(x, tt)
        vc = model(x, tt, y)
        if guidance == 1.0:
            return vc
        vu = model(x, tt, None)
        return vu + guidance * (vc - vu)
    return velocity


@torch.no_grad()
def sample(model: torch.nn.Module, noise, steps: int | None = 8, solver: str = "midpoint",
           trajectory: bool = False, labels=None, guidance: float = 1.0, schedule=None):
    """Integrate model from the given noise [n, *shape] (t = 0) to t = 1 with a fixed-step solver
    on the grid of `schedule` (fm_runtime.solve.schedules; None: uniform; explicit times fix the steps),
    in float32 eager torch; class-conditional models take `labels` [n] and a `guidance` weight.
    Returns numpy samples, or (samples, trajectory [steps + 1, n, *shape])."""
    schedule = parse_schedule(schedule)
    steps = schedule.steps or steps
    x0 = torch.as_tensor(np.asarray(noise, np.float32))
    sol = integrate(guided_velocity(model, labels, guidance), x0, steps, solver, trajectory=trajectory,
                    schedule=schedule)
    if trajectory:
        return sol.x.numpy(), torch.stack(sol.trajectory).numpy()
    return sol.x.numpy()


def exact_divergence(velocity, x: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(v, div v) at x [B, *shape], the divergence as the exact trace of the Jacobian (one
    backward pass per dimension)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = velocity(x, t)
        flat_v, flat_x = v.reshape(len(x), -1), x
        div = torch.zeros(len(x), dtype=x.dtype)
        for i in range(flat_v.shape[1]):
            g, = torch.autograd.grad(flat_v[:, i].sum(), flat_x, retain_graph=True)
            div += g.reshape(len(x), -1)[:, i]
    return v.detach(), div


def log_prob(model: torch.nn.Module, x, steps: int = 8, solver: str = "midpoint", labels=None,
             guidance: float = 1.0, schedule=None) -> np.ndarray:
    """log p1(x) in nats by the instantaneous change of variables, integrating the data back from
    t = 1 to t = 0 with the exact divergence: log p1(x) = log N(x_0; 0, I) - int_0^1 div v dt."""
    x1 = torch.as_tensor(np.asarray(x, np.float32))
    velocity = guided_velocity(model, labels, guidance)
    n, d = len(x1), x1[0].numel()

    def augmented(state: torch.Tensor, t: float) -> torch.Tensor:
        v, div = exact_divergence(velocity, state[:, :d].reshape(x1.shape), t)
        return torch.cat([v.reshape(n, d), div[:, None]], 1)

    state = torch.cat([x1.reshape(n, d), torch.zeros(n, 1)], 1)
    schedule = parse_schedule(schedule)
    end = integrate(augmented, state, schedule.steps or steps, solver, t0=1.0, t1=0.0, schedule=schedule).x
    z, minus_integral = end[:, :d], end[:, d]
    log_p0 = -0.5 * (z ** 2).sum(1) - 0.5 * d * math.log(2 * math.pi)
    return (log_p0 + minus_integral).detach().numpy()


@torch.no_grad()
def jump_sample(model: torch.nn.Module, noise, steps: int = 1, labels=None, guidance: float = 1.0, schedule=None,
                conds: dict | None = None, null_conds: dict | None = None) -> np.ndarray:
    """Sample a flow map u(x, s, t) by `steps` jumps on the grid of `schedule` (None: uniform):
    x <- x + (t_{i+1} - t_i) u(x, t_i, t_{i+1}), in float32 eager torch, from noise [n, *shape]
    at t = 0. A plain map takes class `labels` [n]; a task's map takes its velocity inputs `conds`
    (and `null_conds`, their nulls, for guidance != 1). Classifier-free guidance applies per jump:
    u = u_uncond + w (u_cond - u_uncond). Returns numpy samples."""
    from fm_runtime.solve.solvers import time_grid

    x = torch.as_tensor(np.asarray(noise, np.float32))
    y = None if labels is None else torch.as_tensor(np.asarray(labels, np.int64))
    if conds is not None and guidance != 1.0 and null_conds is None:
        raise ValueError("guidance with task conditions needs null_conds")

    def average_velocity(x: torch.Tensor, s: torch.Tensor, t: torch.Tensor, uncond: bool) -> torch.Tensor:
        if conds is not None:
            return model(x, s, t, null_conds if uncond else conds)
        return model(x, s, t, None if uncond else y)

    grid = time_grid(steps, schedule=schedule)
    for a, b in zip(grid[:-1], grid[1:]):
        s, t = torch.full((len(x),), a, dtype=x.dtype), torch.full((len(x),), b, dtype=x.dtype)
        conditional = y is not None or conds is not None
        u = average_velocity(x, s, t, uncond=not conditional)
        if conditional and guidance != 1.0:
            uu = average_velocity(x, s, t, uncond=True)
            u = uu + guidance * (u - uu)
        x = x + float(b - a) * u
    return x.numpy()
