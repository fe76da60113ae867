"""Couplings of noise and data within a batch: each function takes the noise x0 and the data x1
of one batch (same number of rows) and returns x0 reordered (or resampled), row i paired with x1_i.

independent: the tutorial's pairs (x0_i, x1_i) as drawn.
ot: minibatch optimal transport (Tong et al., 2023; Pooladian et al., 2023) solved exactly over
    batches of up to OT_EXACT_MAX rows, and on consecutive blocks of OT_BLOCK rows of larger ones: each block's noise is reordered so that the pairing
    minimises its total squared distance (scipy's linear_sum_assignment). The rows of a batch are
    iid draws, so the blocks are random sub-batches; the result is a permutation, and it never
    increases the total squared distance of the pairs as drawn (each block's assignment is at
    least as good as the identity). Exact assignment costs ~n^3: at batch 2048 one solve took
    0.35-3.7 s (100 to 1000 training steps), 32 blocks of 64 take ~7 ms.
ot-exact: the exact assignment over the whole batch (for measurement; slow above ~512 rows).
sinkhorn: entropic OT (SINKHORN_ITERS Sinkhorn iterations, regularisation relative to the mean
    cost) with each data point's noise drawn from its column of the plan: not a permutation (a
    noise row can be drawn twice; ~37% were at batch 2048), as torchcfm's OT sampler draws pairs;
    for measurement: 0.26 s per call at batch 2048, 80 training steps' worth.
"""
from __future__ import annotations

import numpy as np
import torch

COUPLINGS = ("independent", "ot", "ot-exact", "sinkhorn")
# Rows per exact assignment in "ot", measured at batch 2048 on moons (benchmarks/bench_few_step.py ot;
# 10 000 default steps, 1 thread; a training step alone takes ~3.3 ms; busy machine):
#   block   ms per call   cost / optimum   CPU s of the run   2-NFE energy distance / noise floor
#     32        2.8           1.26               83                 6.6x
#     64        7.3           1.15              107                 2.8x
#    128       21             1.08              239                 0.7x
#    256       55             1.04              606                 0.1x
#   2048     2100 (ot-exact)  1                 ~6 h (not run)
# 64 keeps a default run at about 2 CPU minutes and is already better at 2 NFE than the old
# batch-256 OT recipe; for few-step sampling, reflow (training/reflow.py) measured better for less.
OT_BLOCK = 64
# Batches up to this size get one exact assignment (256: ~4 ms, what the batch-256 OT recipe of
# bench_recipes.py measured with).
OT_EXACT_MAX = 256
SINKHORN_REG = 0.05
SINKHORN_ITERS = 20


def _assign(cost: np.ndarray) -> np.ndarray:
    """order with sum_j cost[order[j], j] minimal: data point j gets noise row order[j]."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(cost)
    order = np.empty(len(cols), dtype=np.int64)
    order[cols] = rows
    return order


def ot_pair(x0: torch.Tensor, x1: torch.Tensor, block: int | None = OT_BLOCK) -> torch.Tensor:
    """x0 reordered so that sum_i |x0_i - x1_i|^2 is minimal over all pairings within each block
    of `block` consecutive rows (None or >= the batch: over the whole batch)."""
    n = len(x0)
    if len(x1) != n:
        raise ValueError(f"ot_pair needs as many noise rows as data rows, got {n} and {len(x1)}")
    a = x0.detach().reshape(n, -1).double()
    b = x1.detach().reshape(n, -1).double()
    block = n if not block or block >= n else int(block)
    order = np.empty(n, dtype=np.int64)
    full = n - n % block
    if full:    # every full block's cost matrix in one batched call
        costs = torch.cdist(a[:full].reshape(-1, block, a.shape[1]), b[:full].reshape(-1, block, b.shape[1])) ** 2
        for k, c in enumerate(costs.numpy()):
            order[k * block:(k + 1) * block] = k * block + _assign(c)
    if full < n:
        order[full:] = full + _assign((torch.cdist(a[full:], b[full:]) ** 2).numpy())
    return x0[torch.from_numpy(order)]


def sinkhorn_pair(x0: torch.Tensor, x1: torch.Tensor, reg: float = SINKHORN_REG,
                  iters: int = SINKHORN_ITERS, generator: torch.Generator | None = None) -> torch.Tensor:
    """For each data row j, a noise row drawn from column j of the entropic OT plan between the
    batch's uniform marginals (cost |x0_i - x1_j|^2 / its mean, regularisation `reg`), by
    `iters` Sinkhorn iterations on the kernel in float64 (matrix-vector products)."""
    n = len(x0)
    cost = torch.cdist(x0.detach().reshape(n, -1).double(), x1.detach().reshape(n, -1).double()) ** 2
    kernel = torch.exp(-cost / (reg * cost.mean()))
    v = torch.ones(n, dtype=torch.float64)
    for _ in range(iters):      # uniform marginals; the common 1/n factors cancel in the plan's columns
        u = 1.0 / (kernel @ v).clamp_min(1e-300)
        v = 1.0 / (kernel.T @ u).clamp_min(1e-300)
    plan_cols = (kernel * u[:, None]).T          # row j: proportional to P(noise i | data j)
    return x0[torch.multinomial(plan_cols.float(), 1, generator=generator).squeeze(1)]


def couple(coupling: str, x0: torch.Tensor, x1: torch.Tensor,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """x0 paired with x1 by the named coupling (COUPLINGS)."""
    if coupling == "independent":
        return x0
    if coupling == "ot":
        return ot_pair(x0, x1, None if len(x0) <= OT_EXACT_MAX else OT_BLOCK)
    if coupling == "ot-exact":
        return ot_pair(x0, x1, block=None)
    if coupling == "sinkhorn":
        return sinkhorn_pair(x0, x1, generator=generator)
    raise ValueError(f"unknown coupling {coupling!r}; choose one of: {', '.join(COUPLINGS)}")
