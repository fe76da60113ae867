"""Training recipes on moons: sample quality at 2 and 16 NFE against training time.

    python benchmarks/bench_recipes.py                 # every recipe below, several minutes
    python benchmarks/bench_recipes.py tutorial ot     # just these

Energy distance to fresh moons (2000 points, mean of 3 noise/data draws) after 1 midpoint step
(2 NFE) and 8 midpoint steps (16 NFE), with the noise floor (two fresh data draws), for the
tutorial's 64-wide ELU network trained by each recipe; wall time of training beside it. Run it on
an otherwise idle machine: the times are the budget the paths/recipe work is judged against.
"""
from __future__ import annotations

import sys
import time

import numpy as np

from fm_runtime.metrics import energy_distance
from training.data import sample_data
from training.sample import sample
from training.train import fit

RECIPES = {
    "tutorial": dict(steps=10_000, batch_size=256, lr=1e-2),
    "cosine-ema": dict(steps=20_000, batch_size=512, lr=3e-3, lr_schedule="cosine", ema=0.999),
    "cosine-ema-lr1e-2": dict(steps=20_000, batch_size=512, lr=1e-2, lr_schedule="cosine", ema=0.999),
    "logit-normal": dict(steps=20_000, batch_size=512, lr=3e-3, lr_schedule="cosine", ema=0.999,
                         time_sampling="logit-normal"),
    "long-ema": dict(steps=30_000, batch_size=512, lr=2e-3, lr_schedule="cosine", ema=0.9995,
                     grad_clip=1.0),
    "ot": dict(steps=8_000, batch_size=256, lr=3e-3, lr_schedule="cosine", ema=0.999, coupling="ot"),
}


def quality(model, steps: int, draws: int = 3) -> float:
    eds = []
    for r in range(draws):
        z = np.random.default_rng([7, r]).standard_normal((2000, 2), dtype=np.float32)
        eds.append(energy_distance(sample(model, z, steps, "midpoint"), sample_data("moons", 2000, [8, r])))
    return float(np.mean(eds))


def main() -> None:
    names = sys.argv[1:] or list(RECIPES)
    floor = float(np.mean([energy_distance(sample_data("moons", 2000, [9, r]), sample_data("moons", 2000, [8, r]))
                           for r in range(3)]))
    print(f"noise floor {floor:.2e}")
    print(f"{'recipe':<20} {'train':>7} {'2 NFE':>9} {'16 NFE':>9}")
    for name in names:
        start = time.perf_counter()
        model, _ = fit("moons", seed=0, progress=False, **RECIPES[name])
        took = time.perf_counter() - start
        print(f"{name:<20} {took:>6.0f}s {quality(model, 1):>9.2e} {quality(model, 8):>9.2e}", flush=True)


if __name__ == "__main__":
    main()
