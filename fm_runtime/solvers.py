"""Fixed-step ODE solvers as small pure functions.

Each step function maps (f, x, t, h) -> x at t + h, where f(x, t) is the velocity and t a Python
float. They use only `+` and `*`, so the same code drives numpy arrays in the runtime and torch
tensors in the training package's reference sampler; parity tests compare like with like.
Time runs from noise (t = 0) to data (t = 1) on a uniform grid.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

Velocity = Callable[[Any, float], Any]


def euler_step(f: Velocity, x, t: float, h: float):
    return x + h * f(x, t)


def midpoint_step(f: Velocity, x, t: float, h: float):
    """The tutorial's rule: k1 = f(x, t); x + h * f(x + h/2 k1, t + h/2)."""
    k1 = f(x, t)
    return x + h * f(x + (0.5 * h) * k1, t + 0.5 * h)


def heun_step(f: Velocity, x, t: float, h: float):
    k1 = f(x, t)
    k2 = f(x + h * k1, t + h)
    return x + (0.5 * h) * (k1 + k2)


def rk4_step(f: Velocity, x, t: float, h: float):
    k1 = f(x, t)
    k2 = f(x + (0.5 * h) * k1, t + 0.5 * h)
    k3 = f(x + (0.5 * h) * k2, t + 0.5 * h)
    k4 = f(x + h * k3, t + h)
    return x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


@dataclass(frozen=True)
class Solver:
    name: str
    step: Callable
    evals_per_step: int
    order: int
    # Butcher tableau of the same method, for the runtime's in-place loop (integrate_inplace):
    # stage i evaluates at t + c[i] h, from x + h * sum_j a[i][j] k_j; x += h * sum_i b[i] k_i
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]


SOLVERS: dict[str, Solver] = {
    s.name: s
    for s in (
        Solver("euler", euler_step, 1, 1, (0.0,), ((),), (1.0,)),
        Solver("midpoint", midpoint_step, 2, 2, (0.0, 0.5), ((), (0.5,)), (0.0, 1.0)),
        Solver("heun", heun_step, 2, 2, (0.0, 1.0), ((), (1.0,)), (0.5, 0.5)),
        Solver("rk4", rk4_step, 4, 4, (0.0, 0.5, 0.5, 1.0), ((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
               (1 / 6, 1 / 3, 1 / 3, 1 / 6)),
    )
}
DEFAULT_SOLVER = "midpoint"
DEFAULT_STEPS = 8
MAX_STEPS = 100_000      # far past any useful fixed-step count; beyond it a typo would run for days


def get_solver(name: str) -> Solver:
    try:
        return SOLVERS[name]
    except KeyError:
        raise ValueError(f"unknown solver {name!r}; choose one of: {', '.join(SOLVERS)}") from None


def nfe(solver: str, steps: int) -> int:
    """Network evaluations a fixed-step solve costs."""
    return get_solver(solver).evals_per_step * steps


def check_steps(steps: int) -> None:
    if not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_STEPS}, got {steps}")


def time_grid(steps: int, t0: float = 0.0, t1: float = 1.0) -> list[float]:
    """The uniform grid t0 = t_0 < ... < t_steps = t1, in float64 (exact ends)."""
    h = (t1 - t0) / steps
    return [t0 + i * h for i in range(steps)] + [t1]


class Solution(NamedTuple):
    x: Any                      # state at t1
    trajectory: list | None     # states at every grid time, x0 first, when asked for
    times: list[float]          # the grid
    nfe: int                    # network evaluations actually made


def integrate(f: Velocity, x0, steps: int, solver: str = DEFAULT_SOLVER, t0: float = 0.0,
              t1: float = 1.0, trajectory: bool = False) -> Solution:
    """Solve dx/dt = f(x, t) from t0 to t1 in `steps` uniform steps of a fixed-step solver."""
    check_steps(steps)
    step = get_solver(solver).step
    calls = 0

    def counted(x, t):
        nonlocal calls
        calls += 1
        return f(x, t)

    times = time_grid(steps, t0, t1)
    x = x0
    path = [x0] if trajectory else None
    for i in range(steps):
        x = step(counted, x, times[i], times[i + 1] - times[i])
        if path is not None:
            path.append(x)
    return Solution(x, path, times, calls)


def integrate_inplace(f, x0, steps: int, solver: str = DEFAULT_SOLVER, on_step=None) -> tuple:
    """The same solve as `integrate`, for numpy arrays, driven by the solver's Butcher tableau
    with preallocated buffers: the state is updated in place and no arrays are created per step
    other than what f returns. Returns (x, nfe). Agrees with `integrate` to float32 rounding.
    on_step(x, step, t), if given, is called after every step (step counts from 1)."""
    import numpy as np

    s = get_solver(solver)
    check_steps(steps)
    x = np.array(x0, copy=True)
    stage_x = np.empty_like(x)
    scratch = np.empty_like(x)
    k: list = [None] * len(s.c)
    times = time_grid(steps)
    calls = 0
    for i in range(steps):
        t, h = times[i], times[i + 1] - times[i]
        for j, (cj, aj) in enumerate(zip(s.c, s.a)):
            src = x
            if any(aj):
                np.copyto(stage_x, x)
                for kk, a in zip(k, aj):
                    if a:
                        np.multiply(kk, h * a, out=scratch)
                        stage_x += scratch
                src = stage_x
            k[j] = f(src, t + cj * h)
            calls += 1
        for kk, b in zip(k, s.b):
            if b:
                np.multiply(kk, h * b, out=scratch)
                x += scratch
        if on_step is not None:
            on_step(x, i + 1, times[i + 1])
    return x, calls
