"""Log-likelihoods of a loaded model, as functions the Sampler calls (its log_prob and the
likelihood part of its run()): the divergence graph the file carries, solved over tiles with the
instantaneous change of variables."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort

from ..errors import ModelError, NumericalError, UsageError
from ..model.contract import divergence_problem
from ..model.spec import ModelSpec
from ..solve.likelihood import probe_vectors, resolve_method, solve_with_divergence, standard_normal_logpdf
from . import request
from .tiler import Tiler
from .velocity import jvp_fn


def valid_logpdf(z: np.ndarray, req: request.Request) -> np.ndarray:
    """log N(z; 0, I) over the dimensions a mask leaves valid (all of them without a mask): the
    masked ones are 0 and are not part of the sample."""
    logp = standard_normal_logpdf(z)
    mask = req.spec.input("mask")
    if mask is None:
        return logp
    valid = np.broadcast_to(req.inputs[mask["name"]], z.shape).reshape(len(z), -1).sum(1)
    return logp + 0.5 * (req.spec.dim - valid) * np.log(2 * np.pi)


def check_method(spec: ModelSpec, where: str, req: request.Request) -> tuple[str, int]:
    """(the divergence method a request resolves to, its probes per row), refused where the file
    carries no divergence graph."""
    problem = divergence_problem(spec, where)
    if problem:
        raise ModelError(problem)
    try:
        method = resolve_method(req.divergence, req.spec.dim)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return method, req.spec.dim if method == "exact" else int(req.probes)


def solve_divergence(session: ort.InferenceSession, tiler: Tiler, where: str, x0: np.ndarray, req: request.Request,
                     method: str, k: int, forward: bool):
    """Solve [x, A] (dA/dt = div v) forward from noise or backward from data x0, in tiles, on the
    divergence graph `session` with `k` probes (or basis directions) per row. Returns (end
    state, A(end) - A(start) signed so that log p1 = log N(x_0) - integral, NFE, each row's
    standard error)."""
    n = len(x0)
    end, integral, spread, calls = np.empty_like(x0), np.empty(n, np.float64), np.empty(n), [0]
    t0, t1 = (0.0, 1.0) if forward else (1.0, 0.0)

    def run(ab: tuple[int, int]) -> None:
        a, b = ab
        e = probe_vectors(b - a, req.spec.data_shape, method, k, req.probe_seed, start=a)
        jvp = jvp_fn(session, req.spec, b - a, req.conditioning(a, b))
        end[a:b], acc, calls[0], spread[a:b] = solve_with_divergence(jvp, x0[a:b], e, method, req.steps, req.solver,
                                                                     t0, t1, req.schedule)
        integral[a:b] = acc if forward else -acc

    tile = tiler.tile
    tiler.map(run, tiler.bounds(n, max(16, tile // k) if tile > 0 else 0, req.spec.dim * (k + 1)))
    if not (np.isfinite(end).all() and np.isfinite(integral).all()):
        raise NumericalError(f"{where}: the log-likelihood solve produced NaN/Inf")
    return end, integral, calls[0], spread
