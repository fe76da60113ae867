"""2-D toy datasets, generated in code.

`moons` is the tutorial's: sklearn's make_moons with noise 0.05, unscaled. The others follow the
toy-data definitions published with FFJORD (Grathwohl et al., 2019, `toy_data.py`), the set most
flow and flow-matching papers plot: 8gaussians, checkerboard, 2spirals, circles, swissroll, with
their scales, so figures are comparable. `digits` is scikit-learn's 8x8 handwritten digits (it
ships inside scikit-learn), as images [1, 8, 8] in [-1, 1). Every sampler draws from a numpy
Generator, so a seed fixes the data stream, and returns points with their class labels (moons: the
two halves, 8gaussians: the mode, checkerboard: the square, 2spirals: the arm, circles: the ring,
digits: the digit; swissroll has none).
"""
from __future__ import annotations

from typing import Callable

import numpy as np


def _sk_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31 - 1))


Labelled = tuple[np.ndarray, np.ndarray | None]


def moons(n: int, rng: np.random.Generator) -> Labelled:
    """sklearn's make_moons(n, noise=0.05, random_state=seed), the same points to the bit, without
    importing sklearn (1.6 s of every fm-train start): evenly spaced angles on two half circles,
    shuffled, then Gaussian noise, all from one legacy RandomState."""
    state = np.random.RandomState(_sk_seed(rng))
    n_out = n // 2
    angle_out, angle_in = np.linspace(0, np.pi, n_out), np.linspace(0, np.pi, n - n_out)
    x = np.stack([np.append(np.cos(angle_out), 1 - np.cos(angle_in)),
                  np.append(np.sin(angle_out), 1 - np.sin(angle_in) - 0.5)], 1)
    y = np.append(np.zeros(n_out, np.intp), np.ones(n - n_out, np.intp))
    order = np.arange(n)
    state.shuffle(order)
    x, y = x[order], y[order]
    return x + state.normal(scale=0.05, size=x.shape), y


def moons_iid(n: int, rng: np.random.Generator) -> Labelled:
    """make_moons' distribution with independent points: a random half and a uniform random
    angle per point (make_moons spaces the angles evenly and splits the halves exactly)."""
    angle, half = rng.random(n) * np.pi, rng.integers(0, 2, n)
    x = np.where(half == 0, np.cos(angle), 1 - np.cos(angle))
    y = np.where(half == 0, np.sin(angle), 0.5 - np.sin(angle))
    return np.stack([x, y], 1) + 0.05 * rng.standard_normal((n, 2)), half


def eight_gaussians(n: int, rng: np.random.Generator) -> Labelled:
    s = 1.0 / np.sqrt(2)
    centers = 4.0 * np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)])
    mode = rng.integers(8, size=n)
    pts = centers[mode] + 0.5 * rng.standard_normal((n, 2))
    return pts / 1.414, mode


def checkerboard(n: int, rng: np.random.Generator) -> Labelled:
    x1 = rng.random(n) * 4 - 2
    u = rng.random(n)
    row = rng.integers(0, 2, n)
    x2 = u - row * 2
    x2 = x2 + np.floor(x1) % 2
    return np.stack([x1, x2], 1) * 2, (2 * (np.floor(x1) + 2) + row).astype(np.int64)


def two_spirals(n: int, rng: np.random.Generator) -> Labelled:
    m = n // 2
    r = np.sqrt(rng.random((n - m, 1))) * 540 * (2 * np.pi) / 360
    d1x = -np.cos(r) * r + rng.random((n - m, 1)) * 0.5
    d1y = np.sin(r) * r + rng.random((n - m, 1)) * 0.5
    arm = np.hstack([d1x, d1y])
    pts = np.vstack([arm, -arm[:m]]) / 3
    return pts + 0.1 * rng.standard_normal(pts.shape), np.repeat([0, 1], [n - m, m])


def circles(n: int, rng: np.random.Generator) -> Labelled:
    from sklearn.datasets import make_circles
    x, y = make_circles(n, factor=0.5, noise=0.08, random_state=_sk_seed(rng))
    return x * 3, y


def circles_iid(n: int, rng: np.random.Generator) -> Labelled:
    """make_circles' distribution with independent points (random ring and angle per point)."""
    angle, ring = rng.random(n) * 2 * np.pi, rng.integers(0, 2, n)
    radius = np.where(ring == 0, 1.0, 0.5)[:, None]
    pts = radius * np.stack([np.cos(angle), np.sin(angle)], 1) + 0.08 * rng.standard_normal((n, 2))
    return pts * 3, ring


def swissroll(n: int, rng: np.random.Generator) -> Labelled:
    from sklearn.datasets import make_swiss_roll
    return make_swiss_roll(n, noise=1.0, random_state=_sk_seed(rng))[0][:, [0, 2]] / 5, None


GAUSSIAN_MEAN = np.array([1.0, -0.5])
GAUSSIAN_CHOL = np.array([[0.5, 0.0], [0.6, 1.2]])     # covariance L L^T: anisotropic, correlated


def gaussian(n: int, rng: np.random.Generator) -> Labelled:
    """A correlated 2-D Gaussian: the case with a known density (LOG_DENSITY) for likelihoods."""
    return GAUSSIAN_MEAN + rng.standard_normal((n, 2)) @ GAUSSIAN_CHOL.T, None


def gaussian_log_density(x: np.ndarray) -> np.ndarray:
    z = np.linalg.solve(GAUSSIAN_CHOL, (np.asarray(x, np.float64) - GAUSSIAN_MEAN).T).T
    return -0.5 * (z ** 2).sum(1) - np.log(2 * np.pi) - np.log(np.diag(GAUSSIAN_CHOL)).sum()


def checkerboard_log_density(x: np.ndarray) -> np.ndarray:
    """Uniform on 8 squares of side 2 (area 32): log(1/32) on them, -inf elsewhere."""
    c = np.floor(np.asarray(x, np.float64) / 2)
    on = (np.abs(x) < 4).all(1) & ((c[:, 0] + c[:, 1]) % 2 == 0)
    return np.where(on, -np.log(32.0), -np.inf)


DIGITS_TRAIN = 1437     # load_digits' 1797 images, shuffled once: the first 1437 train, the last 360 are held out


def digit_images(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as integer pixel values 0..16 [n, 8, 8] with labels, in a fixed
    shuffled order; "train" or "test" (held out from every model and classifier fit here)."""
    from sklearn.datasets import load_digits
    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.target))
    idx = order[:DIGITS_TRAIN] if split == "train" else order[DIGITS_TRAIN:]
    return d.images[idx], d.target[idx]


def pixels_to_unit(images: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Digits' pixel values 0..16 to [-1, 1): (p + u) / 17 * 2 - 1, with u ~ U[0, 1) (uniform
    dequantisation, so the data has a density) or u = 0.5 without rng."""
    u = rng.random(images.shape) if rng is not None else 0.5
    return (images + u) / 17.0 * 2.0 - 1.0


def digits(n: int, rng: np.random.Generator) -> Labelled:
    images, labels = digit_images("train")
    pick = rng.integers(len(labels), size=n)
    return pixels_to_unit(images[pick], rng)[:, None], labels[pick]


DATASETS: dict[str, Callable[[int, np.random.Generator], Labelled]] = {
    "moons": moons,
    "8gaussians": eight_gaussians,
    "checkerboard": checkerboard,
    "2spirals": two_spirals,
    "circles": circles,
    "swissroll": swissroll,
    "gaussian": gaussian,
    "digits": digits,
}
LOG_DENSITY = {"gaussian": gaussian_log_density, "checkerboard": checkerboard_log_density}
# the conditioned tasks' data (training.tasks: each draws requests with their targets; fm-train fit
# --data NAME trains them with their own networks and condition stages)
TASK_DATA = ("reach", "tts", "digits-text")
NUM_CLASSES = {"moons": 2, "8gaussians": 8, "checkerboard": 8, "2spirals": 2, "circles": 2, "digits": 10}
VALUE_RANGE = {"digits": [-1.0, 1.0]}   # image data: the range a pixel spans
# Training uses the generators above (the tutorial's make_moons); quality is measured against
# independent draws, so stratified generators get an iid twin for evaluation.
IID = {"moons": moons_iid, "circles": circles_iid}


def sample_labelled(name: str, n: int, rng: np.random.Generator | int | None = None,
                    iid: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """n points of dataset `name` as float32 [n, *shape] with int64 labels [n] (None if the
    dataset has no classes). iid=True: independent points even where the training generator
    is stratified (moons, circles), for measuring samples against."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    x, y = (IID.get(name, DATASETS[name]) if iid else DATASETS[name])(n, rng)
    return x.astype(np.float32), None if y is None else np.asarray(y, np.int64)


def sample_data(name: str, n: int, rng: np.random.Generator | int | None = None,
                iid: bool = False) -> np.ndarray:
    """n points of dataset `name` as float32 [n, *shape] (2-D toys: [n, 2])."""
    return sample_labelled(name, n, rng, iid)[0]


def fresh_data(name: str, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """Independent data points to measure samples against (see IID)."""
    return sample_data(name, n, rng, iid=True)
