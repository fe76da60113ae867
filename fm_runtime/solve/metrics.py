"""Sample-quality distances between two point clouds (numpy only).

Used by tests and evaluation to say, with a number, how close generated samples are to data.
Always read a distance next to its noise floor: what the same distance gives for two independent
draws of the data itself, i.e. for a perfect sampler. Both clouds must be independent (iid)
draws: stratified data (sklearn's make_moons spaces its points evenly along the arcs) sits closer
to another stratified draw than any sampler can, which makes a floor no model reaches.
"""
from __future__ import annotations

import numpy as np


def _sum_pairwise(a: np.ndarray, b: np.ndarray, block: int = 2048) -> float:
    """Sum of |a_i - b_j| over all pairs, from |a|^2 + |b|^2 - 2 a.b (one matmul per block:
    5x the broadcast difference at 2 dimensions, 20x at 64; float64 keeps the cancellation
    below 1e-7 per pair, and a point's distance to itself within 1e-7 of 0)."""
    total, bb = 0.0, (b * b).sum(1)
    for i in range(0, len(a), block):
        ai = a[i:i + block]
        d2 = (ai * ai).sum(1)[:, None] + bb[None, :] - 2.0 * (ai @ b.T)
        np.maximum(d2, 0.0, out=d2)
        total += np.sqrt(d2, out=d2).sum()
    return total


def energy_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'|, estimated without bias (U-statistic: the
    within-sample means leave out each point's zero distance to itself), so that two draws of
    the same distribution give 0 on average and the value can be compared across sample sizes
    and read as a ratio. It can come out slightly negative. The plug-in (V-statistic) estimate
    adds about (E|X-X'| + E|Y-Y'|) / n, 1e-3 for 2000 moons points, which would swamp the
    differences between good models. Inputs are [n, d] arrays; images are flattened."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    y = np.asarray(y, np.float64).reshape(len(y), -1)
    if len(x) < 2 or len(y) < 2:
        raise ValueError("energy_distance needs at least 2 points in each sample")
    n, m = len(x), len(y)
    return float(2 * _sum_pairwise(x, y) / (n * m) - _sum_pairwise(x, x) / (n * (n - 1))
                 - _sum_pairwise(y, y) / (m * (m - 1)))


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
