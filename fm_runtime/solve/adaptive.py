"""An adaptive solver: Dormand-Prince 5(4) ("dopri5") with error control, the reference for
converged quality. Works on numpy arrays (and anything with + and *) like the fixed-step
solvers; the error norm is the RMS over every element of the state, so a batch is one system
and its steps are shared by all rows (the runtime solves a dopri5 request whole, untiled).

A step from (x, t) with size h is accepted when
    sqrt(mean((err / (atol + rtol * max(|x|, |x_new|)))^2)) <= 1,
err the difference of the embedded 5th- and 4th-order results; the next h scales by
0.9 * norm^(-1/5), kept within [0.2, 10]. The first h follows Hairer, Norsett & Wanner
(Solving ODEs I, II.4), as scipy's solve_ivp does. Every network evaluation is counted.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

from ..definitions import CONTRACT
from ..errors import NumericalError
from .solvers import drive

NAME = "dopri5"
_METHOD = CONTRACT["solvers"]["methods"][NAME]          # its tableau, as data (contract.json)
DEFAULT_RTOL, DEFAULT_ATOL = _METHOD["rtol"], _METHOD["atol"]
MAX_STEPS = _METHOD["max_steps"]
# a bound on every solve: converged flows take tens to a few hundred evaluations even at rtol
# 1e-8; a field that is exploding, stiff or oscillating would otherwise shrink h forever
MAX_EVALS = 20_000
MIN_STEP = 1e-9          # times the time span

C = tuple(_METHOD["c"])
A = tuple(tuple(row) for row in _METHOD["a"])
# 5th-order weights are A[6] (first same as last); E = 5th - 4th order weights
E = tuple(_METHOD["e"])


class AdaptiveSolution(NamedTuple):
    x: Any                  # state at t1
    nfe: int                # network evaluations made
    accepted: int           # accepted steps
    rejected: int           # rejected steps
    times: list[float]      # the accepted grid, t0 first


def check_tolerances(rtol: float, atol: float) -> None:
    if not (1e-12 <= rtol <= 1.0 and 0.0 <= atol <= 1.0):
        raise ValueError(f"dopri5 needs 1e-12 <= rtol <= 1 and 0 <= atol <= 1, got rtol={rtol}, atol={atol}")


def _rms(a) -> float:
    a = np.asarray(a, np.float64)
    return float(np.sqrt(np.mean(a * a)))


def dopri5(f: Callable[[Any, float], Any], x0, t0: float = 0.0, t1: float = 1.0,
           rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL, max_steps: int = MAX_STEPS,
           max_evals: int = MAX_EVALS) -> AdaptiveSolution:
    """Solve dx/dt = f(x, t) from t0 to t1 (either direction) to tolerance rtol/atol. Raises
    NumericalError when the solve needs more than max_steps steps or max_evals evaluations, or
    a step below MIN_STEP of the span: the field is too stiff, oscillating or exploding."""
    return drive(dopri5_steps(x0, t0, t1, rtol, atol, max_steps, max_evals), f)


def dopri5_steps(x0, t0: float = 0.0, t1: float = 1.0, rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL,
                 max_steps: int = MAX_STEPS, max_evals: int = MAX_EVALS):
    """dopri5 as a generator (solvers.drive runs it): yields (x, t) per network evaluation, takes
    the velocity back by send(), returns the AdaptiveSolution."""
    check_tolerances(rtol, atol)
    calls = 0

    def fc(x, t):
        nonlocal calls
        if calls >= max_evals:
            raise NumericalError(f"dopri5 gave up at t = {t:.6g} after {calls} network evaluations (at most "
                                 f"{max_evals}; rtol={rtol:g}, atol={atol:g}): the velocity field is too stiff or "
                                 "not converging; try a looser tolerance or a fixed-step solver")
        calls += 1
        return x, t

    direction = 1.0 if t1 >= t0 else -1.0
    span = abs(t1 - t0)
    x, t = x0, t0
    k0 = yield fc(x, t)

    def scale(a, b=None):
        m = np.abs(np.asarray(a, np.float64))
        if b is not None:
            m = np.maximum(m, np.abs(np.asarray(b, np.float64)))
        return atol + rtol * m

    # first step (Hairer-Norsett-Wanner): one extra evaluation
    sc = scale(x)
    d0, d1 = _rms(np.asarray(x, np.float64) / sc), _rms(np.asarray(k0, np.float64) / sc)
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    h0 = min(h0, span)
    k_probe = yield fc(x + (direction * h0) * k0, t + direction * h0)
    d2 = _rms((np.asarray(k_probe, np.float64) - np.asarray(k0, np.float64)) / sc) / h0
    h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** (1 / 5)
    h = min(100 * h0, h1, span)
    accepted = rejected = 0
    times = [t0]
    while direction * (t1 - t) > 0:
        if accepted + rejected >= max_steps:
            raise NumericalError(f"dopri5 gave up at t = {t:.6g} after {max_steps} steps (rtol={rtol:g}, atol={atol:g}): "
                                 "the velocity field is too stiff or not converging")
        if not h >= MIN_STEP * span:        # also NaN: an error norm that is not finite
            raise NumericalError(f"dopri5 gave up at t = {t:.6g}: its step fell below {MIN_STEP:g} of the span "
                                 f"(rtol={rtol:g}, atol={atol:g}); the velocity field is too stiff or exploding")
        h = min(h, abs(t1 - t))
        last = h >= abs(t1 - t)
        hs = direction * h
        k = [k0]
        for ci, ai in zip(C[1:], A[1:]):
            stage = x
            for kk, a in zip(k, ai):
                if a:
                    stage = stage + (hs * a) * kk
            if ci == 1.0 and len(k) == 6:
                x_new = stage                     # the 5th-order result (A[6] = its weights)
                k.append((yield fc(x_new, t1 if last else t + hs)))
            else:
                k.append((yield fc(stage, t + ci * hs)))
        err = 0.0
        for kk, e in zip(k, E):
            if e:
                err = err + (hs * e) * np.asarray(kk, np.float64)
        norm = _rms(err / scale(x, x_new))
        if norm <= 1.0:
            x, t, k0 = x_new, (t1 if last else t + hs), k[6]
            accepted += 1
            times.append(t)
            factor = 10.0 if norm == 0 else min(10.0, 0.9 * norm ** -0.2)
        else:
            rejected += 1
            factor = max(0.2, 0.9 * norm ** -0.2)
        h *= factor
    return AdaptiveSolution(x, calls, accepted, rejected, times)
