"""Sample-quality distances between two point clouds (numpy only).

Used by tests and evaluation to say, with a number, how close generated samples are to data.
Always read a distance next to its noise floor: the same distance between two fresh data draws.
"""
from __future__ import annotations

import numpy as np


def _mean_pairwise(a: np.ndarray, b: np.ndarray, block: int = 2048) -> float:
    total = 0.0
    for i in range(0, len(a), block):
        d2 = ((a[i:i + block, None, :] - b[None, :, :]) ** 2).sum(-1)
        total += np.sqrt(d2).sum()
    return total / (len(a) * len(b))


def energy_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'| (V-statistic, so never negative; zero only for
    identical samples). Inputs are [n, d] arrays; images are flattened."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    y = np.asarray(y, np.float64).reshape(len(y), -1)
    return float(2 * _mean_pairwise(x, y) - _mean_pairwise(x, x) - _mean_pairwise(y, y))


def sliced_wasserstein(x: np.ndarray, y: np.ndarray, projections: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance: root mean over random directions of the squared 1-D W2
    between sorted projections. The two samples must have the same size."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    y = np.asarray(y, np.float64).reshape(len(y), -1)
    if len(x) != len(y):
        raise ValueError("sliced_wasserstein needs samples of equal size")
    dirs = np.random.default_rng(seed).standard_normal((x.shape[1], projections))
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
    px, py = np.sort(x @ dirs, axis=0), np.sort(y @ dirs, axis=0)
    return float(np.sqrt(((px - py) ** 2).mean()))
