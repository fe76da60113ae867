"""Fixed-step ODE solvers as data: each method is a Butcher tableau, and one stepper interprets
them all, in the same order of operations everywhere: `tableau_step` (only `+` and `*`, so it
drives numpy arrays in the runtime and torch tensors in the training package's reference sampler
and baked exports), `integrate_inplace` (the runtime's host loop, preallocated buffers) and the
device loop (device.py, the same updates as Y = X + A K on the device). The hand-written rules
live in tests/test_solvers.py as oracles. Time runs from noise (t = 0) to data (t = 1).

A method that `evaluates` "map" (jump) runs on a flow map u(x, s, t) instead of a velocity: each
stage asks f for u from its time to the step's end, f(x, (t + c h, t + h)) (a pair of times where
a velocity method passes one), so jump's Euler tableau is x += h u(x, t, t + h), exact for an exact
map. A velocity method on a flow map evaluates u(x, t, t), the instantaneous velocity.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

from ..definitions import CONTRACT
from .schedules import parse_schedule

Velocity = Callable[[Any, float], Any]


@dataclass(frozen=True)
class Solver:
    name: str
    evals_per_step: int
    order: int
    # Butcher tableau: stage i evaluates at t + c[i] h, from x + h * sum_j a[i][j] k_j;
    # then x += h * sum_i b[i] k_i (terms added one by one, zero coefficients skipped)
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    evaluates: str = "velocity"     # or "map": each stage is f(x, (t + c h, t + h)), a flow map's jump

    def at(self, t: float, c: float, h: float):
        """What a stage passes f for time: t + c h, or for a map method (t + c h, t + h)."""
        return (t + c * h, t + h) if self.evaluates == "map" else t + c * h


_REGISTRY = CONTRACT["solvers"]
# The fixed-step methods of contract.json's solver registry (dopri5, kind "adaptive", is adaptive.py)
SOLVERS: dict[str, Solver] = {
    name: Solver(name, m["evals_per_step"], m["order"], tuple(m["c"]), tuple(tuple(r) for r in m["a"]), tuple(m["b"]),
                 m.get("evaluates", "velocity"))
    for name, m in _REGISTRY["methods"].items() if m["kind"] == "fixed"
}
# the methods that evaluate a velocity (every solver but jump, which needs a flow-map file)
VELOCITY_SOLVERS: dict[str, Solver] = {k: s for k, s in SOLVERS.items() if s.evaluates == "velocity"}
DEFAULT_SOLVER: str = CONTRACT["keys"]["default_solver"]["default"]     # a file's defaults when it names none
DEFAULT_STEPS: int = CONTRACT["keys"]["default_steps"]["default"]
MAX_STEPS: int = _REGISTRY["max_steps"]      # far past any useful fixed-step count; beyond it a typo would run for days


def get_solver(name: str) -> Solver:
    try:
        return SOLVERS[name]
    except KeyError:
        adaptive = [k for k, m in _REGISTRY["methods"].items() if m.get("kind") == "adaptive"]
        fixed = [k for k, s in SOLVERS.items() if s.evaluates == "velocity"]
        maps = [k for k, s in SOLVERS.items() if s.evaluates == "map"]
        raise ValueError(f"unknown solver {name!r}; choose one of: {', '.join(fixed)} (fixed steps), "
                         f"{', '.join(adaptive)} (adaptive), {', '.join(maps)} (flow-map files)") from None


def nfe(solver: str, steps: int) -> int:
    """Network evaluations a fixed-step solve costs."""
    return get_solver(solver).evals_per_step * steps


def check_steps(steps: int) -> None:
    if not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_STEPS}, got {steps}")


def time_grid(steps: int, t0: float = 0.0, t1: float = 1.0, schedule=None) -> list[float]:
    """The grid t0 = t_0, ..., t_steps = t1 of a schedule (schedules.py; None: uniform), in
    float64 (exact ends)."""
    return parse_schedule(schedule).grid(steps, t0, t1)


def tableau_step(s: Solver, f: Velocity, x, t: float, h: float):
    """One step of method s from (x, t) to t + h."""
    k: list = []
    for cj, aj in zip(s.c, s.a):
        stage = x
        for kk, a in zip(k, aj):
            if a:
                stage = stage + (h * a) * kk
        k.append(f(stage, s.at(t, cj, h)))
    for kk, b in zip(k, s.b):
        if b:
            x = x + (h * b) * kk
    return x


class Solution(NamedTuple):
    x: Any                      # state at t1
    trajectory: list | None     # states at every grid time, x0 first, when asked for
    times: list[float]          # the grid
    nfe: int                    # network evaluations actually made


def integrate(f: Velocity, x0, steps: int, solver: str = DEFAULT_SOLVER, t0: float = 0.0,
              t1: float = 1.0, trajectory: bool = False, schedule=None) -> Solution:
    """Solve dx/dt = f(x, t) from t0 to t1 in `steps` steps of a fixed-step solver, on the
    grid of `schedule` (None: uniform)."""
    check_steps(steps)
    method = get_solver(solver)
    calls = 0

    def counted(x, t):
        nonlocal calls
        calls += 1
        return f(x, t)

    times = time_grid(steps, t0, t1, schedule)
    x = x0
    path = [x0] if trajectory else None
    for i in range(steps):
        x = tableau_step(method, counted, x, times[i], times[i + 1] - times[i])
        if path is not None:
            path.append(x)
    return Solution(x, path, times, calls)


def drive(steps, f):
    """Run a solve written as a generator (`stepping`, adaptive.dopri5_steps) with the velocity f:
    each (x, t) it yields is answered with f(x, t); returns what the generator returns. A server
    (fm_runtime.serve) answers many such generators with one network call instead."""
    try:
        x, t = next(steps)
        while True:
            x, t = steps.send(f(x, t))
    except StopIteration as done:
        return done.value


def integrate_inplace(f, x0, steps: int, solver: str = DEFAULT_SOLVER, on_step=None, schedule=None) -> tuple:
    """The same solve as `integrate`, for numpy arrays, driven by the solver's Butcher tableau
    with preallocated buffers: the state is updated in place and no arrays are created per step
    other than what f returns. Returns (x, nfe). Agrees with `integrate` to float32 rounding.
    on_step(x, step, t), if given, is called after every step (step counts from 1)."""
    return drive(stepping(x0, steps, solver, on_step, schedule), f)


def stepping(x0, steps: int, solver: str = DEFAULT_SOLVER, on_step=None, schedule=None):
    """integrate_inplace as a generator: yields (x, t) for each network evaluation, takes the
    velocity back by send(), and returns (x, nfe)."""
    import numpy as np

    s = get_solver(solver)
    check_steps(steps)
    x = np.array(x0, copy=True)
    stage_x = np.empty_like(x)
    scratch = np.empty_like(x)
    k: list = [None] * len(s.c)
    times = time_grid(steps, schedule=schedule)
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
            k[j] = yield src, s.at(t, cj, h)
            calls += 1
        for kk, b in zip(k, s.b):
            if b:
                np.multiply(kk, h * b, out=scratch)
                x += scratch
        if on_step is not None:
            on_step(x, i + 1, times[i + 1])
    return x, calls
