"""Training recipes on moons: sample quality against network evaluations and training cost.

    python benchmarks/bench_recipes.py                 # every recipe below, ~10 minutes
    python benchmarks/bench_recipes.py tutorial default
    python benchmarks/bench_recipes.py tutorial --seeds 4   # mean and spread over training seeds

Each recipe trains the tutorial's network size (3 hidden layers of 64) with torch on one thread,
so the CPU time is the training budget. Quality: energy distance (unbiased estimate) between
10 000 samples and 10 000 independent fresh moons points, mean of 4 noise/data draws, after
1, 8 and 32 midpoint steps (2, 16, 64 NFE), all recipes on the same noise and data. Noise floor:
the mean |energy distance| between two independent data draws of the same size, what a perfect
sampler scores. Data for measuring is drawn iid (training.data.fresh_data): make_moons spaces
its points evenly, and two such draws sit closer together than any sampler can get to one.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch

from fm_runtime.solve.metrics import energy_distance
from training.data import fresh_data
from training.recipe import TUTORIAL_RECIPE
from training.sample import sample
from training.train import fit

N, DRAWS = 10_000, 4
RECIPES = {
    "tutorial": TUTORIAL_RECIPE,
    "default": {},     # fit()'s defaults: SiLU, batch 2048, lr 3e-3 cosine, EMA 0.999, 10k steps
    "default-elu": dict(activation="elu"),
    "elu-bs512-20k": dict(steps=20_000, batch_size=512, activation="elu"),
    "ot": dict(steps=8_000, batch_size=256, activation="elu", coupling="ot"),
}
NFES = (2, 16, 64)


def quality(model, steps: int) -> float:
    return float(np.mean([energy_distance(
        sample(model, np.random.default_rng([7, r]).standard_normal((N, 2), dtype=np.float32), steps, "midpoint"),
        fresh_data("moons", N, [8, r])) for r in range(DRAWS)]))


def main() -> None:
    torch.set_num_threads(1)
    args = sys.argv[1:]
    seeds = 1
    if "--seeds" in args:
        i = args.index("--seeds")
        seeds = int(args[i + 1])
        del args[i:i + 2]
    names = args or list(RECIPES)
    floor = float(np.mean([abs(energy_distance(fresh_data("moons", N, [9, r]), fresh_data("moons", N, [8, r])))
                           for r in range(DRAWS)]))
    print(f"noise floor {floor:.1e} ({N} points, {DRAWS} draws)")
    print(f"{'recipe':<16} {'CPU s':>6} " + " ".join(f"{f'{n} NFE':>9}" for n in NFES))
    for name in names:
        runs = []
        for seed in range(seeds):
            clock = time.process_time()
            model, config = fit("moons", seed=seed, progress=False, **RECIPES[name])
            cpu = time.process_time() - clock
            eds = [quality(model, nfe // 2) for nfe in NFES]
            runs.append(eds)
            label = name if seeds == 1 else f"{name} seed {seed}"
            print(f"{label:<16} {cpu:>6.0f} " + " ".join(f"{e:>9.2e}" for e in eds), flush=True)
            print(json.dumps({"recipe": name, "seed": seed, "cpu_seconds": round(cpu, 1), "floor": floor,
                              **{f"nfe{n}": e for n, e in zip(NFES, eds)}}), file=sys.stderr)
        if seeds > 1:
            mean, sd = np.mean(runs, 0), np.std(runs, 0, ddof=1)
            print(f"{name + ' mean':<16} {'':>6} " + " ".join(f"{m:>9.2e}" for m in mean))
            print(f"{name + ' sd':<16} {'':>6} " + " ".join(f"{d:>9.2e}" for d in sd), flush=True)


if __name__ == "__main__":
    main()
