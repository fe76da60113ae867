"""Log-likelihoods of a loaded model (the Sampler's log_prob and the likelihood part of its
run()): the divergence graph the file carries, solved over tiles with the instantaneous change
of variables."""
from __future__ import annotations

import inspect

import numpy as np
import onnxruntime as ort

from ..errors import ModelError, NumericalError, UsageError
from ..model.contract import divergence_problem
from ..model.control import graph_errors, guarded
from ..model.session import open_divergence
from ..solve.likelihood import probe_vectors, resolve_method, solve_with_divergence, standard_normal_logpdf
from . import options, request
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


LOG_PROB = options.signature("logprob", ("steps", "solver", "labels", "guidance"),
                             first=(("x", inspect.Parameter.empty),))


class Likelihoods:
    """Mixed into Sampler: uses its spec, path, tiler, providers, session options and the lazily
    opened divergence session (`_jvp_session` under `_jvp_lock`)."""

    @property
    def last_std_error(self) -> np.ndarray | None:
        """Per row, the standard error (nats) of this thread's last log-likelihoods (see log_prob)."""
        return getattr(self._last, "std_error", None)

    @guarded
    def log_prob(self, *args, **kwargs) -> np.ndarray:
        """log p1(x) in nats for data x [n, *shape], by integrating x back from t = 1 to noise at
        t = 0 with the divergence of the velocity: log N(x_0) - int_0^1 div v dt.

        divergence "exact" sums over all D basis directions (D Jacobian-vector products per row
        and evaluation); "hutchinson" averages `probes` Rademacher probes per row (seeded by
        `probe_seed` and the row index; default one per 16 dimensions, 2 to 16): unbiased,
        cheaper in high dimension; "auto" is exact up to likelihood.EXACT_MAX_DIM dimensions. Divide by the number of dimensions (and ln 2)
        for nats (bits) per dimension. `last_std_error` then holds each row's standard error in
        nats: 0 for exact, the spread of the K probes' estimates over sqrt(K) for Hutchinson with
        K >= 2 (NaN with one probe, which gives no spread). Conditional models: log p(x | label), or of the guided
        field with guidance != 1. `schedule`, `cond`, `dims` and the guidance options as in sample(); the schedule is
        visited backwards."""
        given = options.bind(LOG_PROB, args, kwargs)
        x = given.pop("x")
        req = request.resolve(self.spec, self.path, "logprob", given, x=x, stage=self.through_stage)
        with graph_errors(self.path, cancel=req.cancel):
            z, integral, self._last.nfe = self._solve_divergence(req.start(), req, forward=False)
        return valid_logpdf(z, req) - integral

    def _solve_divergence(self, x0, req: request.Request, forward: bool):
        """Solve [x, A] (dA/dt = div v) forward from noise or backward from data x0, in tiles.
        Returns (end state, A(end) - A(start) signed so that log p1 = log N(x_0) - integral, NFE)."""
        divergence, probes, steps, solver, schedule = req.divergence, req.probes, req.steps, req.solver, req.schedule
        problem = divergence_problem(self.spec, self.path)
        if problem:
            raise ModelError(problem)
        try:
            method = resolve_method(divergence, req.spec.dim)
        except ValueError as e:
            raise UsageError(str(e)) from None
        if method == "hutchinson" and not 1 <= int(probes) <= 1024:
            raise UsageError(f"probes must be between 1 and 1024, got {probes}")
        session = self._divergence_session()
        k = req.spec.dim if method == "exact" else int(probes)
        n = len(x0)
        end, integral, spread, calls = np.empty_like(x0), np.empty(n, np.float64), np.empty(n), [0]

        def run(ab: tuple[int, int]) -> None:
            a, b = ab
            e = probe_vectors(b - a, req.spec.data_shape, method, k, req.probe_seed, start=a)
            jvp = jvp_fn(session, req.spec, b - a, req.conditioning(a, b))
            t0, t1 = (0.0, 1.0) if forward else (1.0, 0.0)
            end[a:b], acc, calls[0], spread[a:b] = solve_with_divergence(jvp, x0[a:b], e, method, steps, solver,
                                                                         t0, t1, schedule)
            integral[a:b] = acc if forward else -acc

        tile = self.tiler.tile
        self.tiler.map(run, self.tiler.bounds(n, max(16, tile // k) if tile > 0 else 0, req.spec.dim * (k + 1)))
        if not (np.isfinite(end).all() and np.isfinite(integral).all()):
            raise NumericalError(f"{self.path}: the log-likelihood solve produced NaN/Inf")
        self._last.std_error = spread
        return end, integral, calls[0]

    def _divergence_session(self) -> ort.InferenceSession:
        """The Jacobian-vector-product graph the file carries (fm.divergence), loaded once."""
        with self._jvp_lock:
            if self._jvp_session is None:
                self._jvp_session = open_divergence(self.spec, self.path, self.providers, self.session_options,
                                                    self.allow_loops)
            return self._jvp_session


Likelihoods.log_prob.__signature__ = LOG_PROB
