"""Every argument of a runtime request checked in one place, with the package's own errors:
UsageError (exit 2) for values the caller chose, InputError (exit 4) for unusable arrays."""
from __future__ import annotations

import numpy as np

from ..errors import InputError, UsageError
from ..model.spec import ModelSpec
from ..solve.schedules import Schedule, parse_schedule
from ..solve.solvers import check_steps, get_solver


def count(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise UsageError(f"n must be a whole number >= 1, got {n!r}")
    return int(n)


def seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
        raise UsageError(f"seed must be a whole number in [0, 2**63), got {seed!r}")
    return int(seed)


def check_guidance(guidance, labels=None) -> float:
    try:
        g = float(guidance)
    except (TypeError, ValueError):
        raise UsageError(f"guidance must be a number, got {guidance!r}") from None
    if not np.isfinite(g) or abs(g) > 1e3:
        raise UsageError(f"guidance must be a finite number of magnitude <= 1000, got {guidance}")
    if g != 1.0 and labels is None:
        raise UsageError(f"guidance {g:g} needs labels (it weighs the conditional against the "
                         "unconditional velocity)")
    return g


def check_labels(spec: ModelSpec, where: str, labels, n: int) -> np.ndarray | None:
    """Labels as int64 [n] (an int applies to every row; None: no label), checked against the
    model's classes; the "no label" id (spec.null_class) is allowed."""
    if labels is None:
        return None
    if not spec.num_classes:
        raise UsageError(f"{where} is not class-conditional; it takes no labels")
    arr = np.asarray(labels)
    if arr.dtype.kind not in "iu" and not (arr.dtype.kind == "f" and np.all(np.isfinite(arr))
                                           and np.all(arr == np.round(arr))):
        raise UsageError(f"labels must be integers, got dtype {arr.dtype}")
    arr = np.broadcast_to(arr.astype(np.int64), (n,)) if arr.ndim == 0 else arr.astype(np.int64)
    if arr.shape != (n,):
        raise UsageError(f"labels have shape {list(arr.shape)}, expected [{n}] (one per sample)")
    bad = arr[(arr < 0) | (arr > spec.num_classes)]
    if bad.size:
        raise UsageError(f"label {int(bad[0])} is out of range: this model has classes "
                         f"0..{spec.num_classes - 1} (and {spec.null_class} for no label)")
    return np.ascontiguousarray(arr)


def check_noise(data_shape: tuple[int, ...], noise, n: int | None = None, what: str = "noise") -> np.ndarray:
    """A float array [n, *data_shape] with finite values, as contiguous float32."""
    noise = np.asarray(noise)
    if noise.dtype.kind != "f":
        raise InputError(f"{what} must be floating point, got dtype {noise.dtype}")
    if noise.ndim != 1 + len(data_shape) or tuple(noise.shape[1:]) != data_shape:
        raise InputError(f"{what} has shape {list(noise.shape)}, expected [n, "
                         f"{', '.join(map(str, data_shape))}]")
    if n is not None and noise.shape[0] != n:
        raise InputError(f"{what} has {noise.shape[0]} rows but n = {n}")
    if noise.shape[0] == 0:
        raise InputError(f"{what} has no rows")
    if not np.isfinite(noise).all():
        raise InputError(f"{what} contains NaN or Inf")
    return np.ascontiguousarray(noise, dtype=np.float32)



def check_adaptive(baked: bool, solver, steps, schedule, trajectory, logprob, rtol, atol) -> dict | None:
    """{"rtol", "atol"} for a dopri5 request (None for a fixed-step one), refusing what it cannot do."""
    from ..solve.adaptive import DEFAULT_ATOL, DEFAULT_RTOL, NAME, check_tolerances
    if solver != NAME:
        if rtol is not None or atol is not None:
            raise UsageError(f"rtol/atol apply to the adaptive solver {NAME} only")
        return None
    if baked or steps is not None or schedule is not None or trajectory or logprob:
        raise UsageError(f"{NAME} chooses its own steps: it takes rtol/atol on a velocity model, not steps, a "
                         "schedule, a trajectory or log-likelihoods")
    tol = {"rtol": DEFAULT_RTOL if rtol is None else rtol, "atol": DEFAULT_ATOL if atol is None else atol}
    try:
        check_tolerances(float(tol["rtol"]), float(tol["atol"]))
    except (TypeError, ValueError) as e:
        raise UsageError(str(e)) from None
    return {k: float(v) for k, v in tol.items()}


def check_schedule(spec: ModelSpec, schedule, steps) -> tuple[Schedule, int | None]:
    """(schedule, steps) of a request: the model's default schedule when none is given; an
    explicit time grid fixes the steps (given steps must agree with it)."""
    try:
        s = parse_schedule(spec.default_schedule if schedule is None else schedule)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if s.steps is not None:
        if steps is not None and steps != s.steps:
            what = "the model's default time grid" if schedule is None else "the time grid"
            raise UsageError(f"{what} has {s.steps} steps, not {steps} (give times for {steps} steps, "
                             "or another schedule)")
        steps = s.steps
    return s, steps


def check_grid(spec: ModelSpec, steps, solver) -> tuple[int, str]:
    """(steps, solver) of a request, the model's defaults where not given."""
    steps = spec.default_steps if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise UsageError(f"steps must be an integer, got {steps!r}")
    solver = solver or spec.default_solver
    try:
        get_solver(solver)
        check_steps(int(steps))
    except ValueError as e:
        raise UsageError(str(e)) from None
    return int(steps), solver
