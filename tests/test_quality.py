"""Samples land on the moons: energy distance to fresh data, judged against calibrated references.

The threshold is measured in the test, not hard-coded: the energy distance between fresh moons
and moons blurred by N(0, 0.4^2) noise (eight times the dataset's own 0.05 noise: still two
crescents to the eye, measured ~0.012), while a standard normal sits at ~0.24 and two independent
draws (the noise floor) within ~6e-4 of zero for 2000 points (the distance is the unbiased
estimate, and the data independent draws: see fm_runtime.solve.metrics).
"""
import numpy as np

import fm_runtime
from fm_runtime.solve.metrics import energy_distance, sliced_wasserstein
from training.data import fresh_data

from .conftest import moons_data

N = 2000


def references():
    data, fresh = fresh_data("moons", N, 101), fresh_data("moons", N, 102)
    blur = fresh + 0.4 * np.random.default_rng(3).standard_normal(fresh.shape).astype(np.float32)
    gauss = np.random.default_rng(4).standard_normal(fresh.shape)
    return data, {
        "floor": abs(energy_distance(fresh, data)),
        "threshold": energy_distance(blur, data),
        "gaussian": energy_distance(gauss, data),
    }


def check_lands_on_moons(samples: np.ndarray, label: str) -> float:
    data, ref = references()
    ed = energy_distance(samples, data)
    sw = sliced_wasserstein(samples, data)
    print(f"{label}: energy distance {ed:.2e} (noise floor {ref['floor']:.2e}, threshold "
          f"{ref['threshold']:.2e}, standard normal {ref['gaussian']:.2e}); sliced W2 {sw:.3f}")
    assert ref["floor"] < ref["threshold"] < ref["gaussian"] / 10   # the references make sense
    assert ed < ref["threshold"]
    return ed


def test_model_trained_in_test_lands_on_moons(trained):
    x = fm_runtime.load(trained.onnx).sample(N, steps=8, solver="midpoint", seed=0)
    check_lands_on_moons(x, f"test model ({trained.config['steps']} steps)")


def test_shipped_model_lands_on_moons():
    x = fm_runtime.load().sample(N, seed=0)
    check_lands_on_moons(x, "shipped model")


def test_distances_behave():
    a, b = moons_data(500, 1), moons_data(500, 2)
    far = energy_distance(a, b + 1.0)
    assert far > 0.5 and abs(energy_distance(a, b)) < 0.01 * far
    # unbiased: over independent draws of one distribution the estimates centre on zero...
    same = [energy_distance(fresh_data("moons", 300, [1, r]), fresh_data("moons", 300, [2, r])) for r in range(40)]
    assert abs(np.mean(same)) < 3 * np.std(same) / np.sqrt(40)
    # ...where the plug-in estimate would sit about (E|X-X'| + E|Y-Y'|) / n above it
    assert abs(np.mean(same)) < 0.2 * 2 * 1.0 / 300
    assert sliced_wasserstein(a, a) == 0.0
    assert sliced_wasserstein(a, b + 1.0) > 5 * sliced_wasserstein(a, b)
