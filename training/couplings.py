"""Couplings of noise and data within a batch.

independent: the tutorial's pairs (x0_i, x1_i) as drawn.
ot: minibatch optimal transport (Tong et al., 2023; Pooladian et al., 2023): reorder the noise so
the pairing minimises the total squared distance, an exact assignment problem solved with scipy's
linear_sum_assignment. Straighter conditional paths make few-step sampling better.
"""
from __future__ import annotations

import numpy as np
import torch

COUPLINGS = ("independent", "ot")


def ot_pair(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """x0 reordered so that sum_i |x0_i - x1_i|^2 is minimal over all pairings."""
    from scipy.optimize import linear_sum_assignment

    a = x0.reshape(len(x0), -1).double().numpy()
    b = x1.reshape(len(x1), -1).double().numpy()
    cost = (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :]
    rows, cols = linear_sum_assignment(cost)
    order = np.empty(len(cols), dtype=np.int64)
    order[cols] = rows          # data point cols[k] gets noise rows[k]
    return x0[torch.from_numpy(order)]
