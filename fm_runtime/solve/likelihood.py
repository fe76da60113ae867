"""Log-likelihoods by the instantaneous change of variables (numpy + onnxruntime only).

For x_t following dx/dt = v(x, t) from noise (t = 0) to data (t = 1),
    log p1(x_1) = log N(x_0; 0, I) - int_0^1 div v(x_t, t) dt.
The divergence comes from the model file's Jacobian-vector-product graph (fm.divergence,
(x, t[, y], e) -> (v, J e), written and checked against torch autodiff at export):
- exact: e runs over the D basis vectors, div v = sum_i e_i . J e_i (D products per row, one run);
- hutchinson: K random Rademacher probes per row, fixed for the whole solve (so each row's ODE is
  one smooth ODE), div v ~ mean_k e_k . J e_k: unbiased, with variance falling as 1/K.
Never a finite-difference estimate. The solve uses the same fixed-step solvers as sampling, on
the state [x, A] where dA/dt = div v.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .solvers import integrate

METHODS = ("auto", "exact", "hutchinson")
EXACT_MAX_DIM = 16      # "auto" is exact up to this many dimensions, Hutchinson above
# Hutchinson's default probes: one per 16 dimensions (its variance grows about as D / K, so the
# standard error per dimension stays level), at least 2 (so every estimate has a standard error)
# and at most 16 (the time budget: 16 tangent passes per evaluation, 0.16 s for 2 images of a
# 256-dim U-Net at 4 steps, against 3.5 s exact: benchmarks/bench_networks.py --only likelihood)
PROBES_PER_DIMS, MAX_DEFAULT_PROBES = 16, 16


def default_probes(dim: int) -> int:
    """Hutchinson probes per row when none are asked for, from the number of dimensions."""
    return int(min(MAX_DEFAULT_PROBES, max(2, -(-int(dim) // PROBES_PER_DIMS))))


def resolve_method(method: str, dim: int) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown divergence method {method!r}; choose one of: {', '.join(METHODS)}")
    if method == "auto":
        return "exact" if dim <= EXACT_MAX_DIM else "hutchinson"
    return method


def probe_vectors(n: int, shape: tuple[int, ...], method: str, probes: int = 1,
                  seed: int = 0, start: int = 0) -> np.ndarray:
    """Tangent vectors e [n, K, *shape]: the basis (K = D) for "exact", or K Rademacher probes
    per row for "hutchinson", row r drawn from default_rng([seed, start + r]) so that any range
    of rows is reproducible on its own."""
    d = math.prod(shape)
    if method == "exact":
        return np.broadcast_to(np.eye(d, dtype=np.float32).reshape(1, d, *shape), (n, d, *shape)).copy()
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    out = np.empty((n, probes, d), np.float32)
    for r in range(n):
        out[r] = np.random.default_rng([seed, start + r]).integers(0, 2, (probes, d)) * 2.0 - 1.0
    return out.reshape(n, probes, *shape)


def standard_normal_logpdf(z: np.ndarray) -> np.ndarray:
    flat = z.reshape(len(z), -1).astype(np.float64)
    return -0.5 * (flat ** 2).sum(1) - 0.5 * flat.shape[1] * math.log(2 * math.pi)


def solve_with_divergence(jvp: Callable, x: np.ndarray, e: np.ndarray, method: str, steps: int,
                          solver: str, t0: float, t1: float, schedule=None
                          ) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """Integrate [x, A] from t0 to t1 with dA/dt = div v, from the tangents e of probe_vectors:
    the sum of e_k . J e_k over the basis ("exact"), or for "hutchinson" one A_k per probe (each
    probe's own estimate of the whole integral), averaged. jvp(x, t, e) -> (v, J e). Returns
    (x at t1, A(t1) - A(t0) in float64, network evaluations, the standard error of A per row:
    0 for exact, std_k(A_k) / sqrt(K) for K >= 2 probes, NaN for one probe)."""
    n, k = len(x), e.shape[1]
    d = x[0].size
    e_flat = e.reshape(n, k, d)
    exact = method == "exact"
    cols = 1 if exact else k

    def augmented(state: np.ndarray, t: float) -> np.ndarray:
        v, jv = jvp(np.ascontiguousarray(state[:, :d]).reshape(x.shape), t, e)
        per_probe = np.einsum("nkd,nkd->nk", e_flat, jv.reshape(n, k, d))
        div = per_probe.sum(1, keepdims=True) if exact else per_probe
        return np.concatenate([v.reshape(n, d), div], 1)

    state = np.concatenate([x.reshape(n, d), np.zeros((n, cols), np.float32)], 1)
    sol = integrate(augmented, state, steps, solver, t0=t0, t1=t1, schedule=schedule)
    acc = sol.x[:, d:].astype(np.float64)
    spread = (np.zeros(n) if exact else acc.std(1, ddof=1) / math.sqrt(k) if k > 1 else np.full(n, np.nan))
    return sol.x[:, :d].reshape(x.shape), acc.mean(1), sol.nfe, spread
