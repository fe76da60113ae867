"""2-D toy datasets, generated in code.

`moons` is the tutorial's: sklearn's make_moons with noise 0.05, unscaled. The others follow the
toy-data definitions published with FFJORD (Grathwohl et al., 2019, `toy_data.py`), the set most
flow and flow-matching papers plot: 8gaussians, checkerboard, 2spirals, circles, swissroll, with
their scales, so figures are comparable. Every sampler draws from a numpy Generator, so a seed
fixes the data stream.
"""
from __future__ import annotations

from typing import Callable

import numpy as np


def _sk_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31 - 1))


def moons(n: int, rng: np.random.Generator) -> np.ndarray:
    from sklearn.datasets import make_moons
    return make_moons(n, noise=0.05, random_state=_sk_seed(rng))[0]


def eight_gaussians(n: int, rng: np.random.Generator) -> np.ndarray:
    s = 1.0 / np.sqrt(2)
    centers = 4.0 * np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)])
    pts = centers[rng.integers(8, size=n)] + 0.5 * rng.standard_normal((n, 2))
    return pts / 1.414


def checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    x1 = rng.random(n) * 4 - 2
    x2 = rng.random(n) - rng.integers(0, 2, n) * 2
    x2 = x2 + np.floor(x1) % 2
    return np.stack([x1, x2], 1) * 2


def two_spirals(n: int, rng: np.random.Generator) -> np.ndarray:
    m = n // 2
    r = np.sqrt(rng.random((n - m, 1))) * 540 * (2 * np.pi) / 360
    d1x = -np.cos(r) * r + rng.random((n - m, 1)) * 0.5
    d1y = np.sin(r) * r + rng.random((n - m, 1)) * 0.5
    arm = np.hstack([d1x, d1y])
    pts = np.vstack([arm, -arm[:m]]) / 3
    return pts + 0.1 * rng.standard_normal(pts.shape)


def circles(n: int, rng: np.random.Generator) -> np.ndarray:
    from sklearn.datasets import make_circles
    return make_circles(n, factor=0.5, noise=0.08, random_state=_sk_seed(rng))[0] * 3


def swissroll(n: int, rng: np.random.Generator) -> np.ndarray:
    from sklearn.datasets import make_swiss_roll
    return make_swiss_roll(n, noise=1.0, random_state=_sk_seed(rng))[0][:, [0, 2]] / 5


DATASETS: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "moons": moons,
    "8gaussians": eight_gaussians,
    "checkerboard": checkerboard,
    "2spirals": two_spirals,
    "circles": circles,
    "swissroll": swissroll,
}


def sample_data(name: str, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """n points of dataset `name` as float32 [n, 2]."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    return DATASETS[name](n, rng).astype(np.float32)
