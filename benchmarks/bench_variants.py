"""Edge variants of the moons model: size, speed and quality cost against float32.

    python benchmarks/bench_variants.py          # about 2 minutes on 2 cores

Trains the tutorial's moons model (10 000 steps, seed 0), exports the velocity graph and a baked
midpoint:8 sampler in every variant, and prints file size, latency at batch 1 and 100 000
relative to the float32 file of the same kind (median after warm-up, default runtime settings),
sample deviation from float32 on the same noise, and the energy distance to fresh data beside
float32's and the noise floor (2000 samples).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

import fm_runtime
from fm_runtime.tools.bench import median_seconds
from training.export_checkpoint import export_model
from training.train import fit

VARIANTS = [("fp32", None, "onnx"), ("fp16", None, "onnx"), ("fp32", "int8", "onnx"),
            ("fp32", None, "ort"), ("fp16", None, "ort"), ("fp32", "int8", "ort")]


def main() -> None:
    model, config = fit("moons", steps=10_000, seed=0, progress=False)
    tmp = Path(tempfile.mkdtemp())
    print(f"{'kind':<12} {'variant':<14} {'size':>9} {'batch 1':>14} {'batch 100000':>16} "
          f"{'max dev':>9} {'mean dev':>9} {'energy dist':>11} {'fp32':>9} {'floor':>9}")
    for bake in (None, "midpoint:8"):
        base = {}
        for precision, quantize, fmt in VARIANTS:
            name = f"{precision}{'+' + quantize if quantize else ''}/{fmt}"
            path = tmp / f"{bake or 'v'}-{precision}-{quantize}.{fmt}".replace(":", "")
            export_model(model, config, path, bake=bake, precision=precision, quantize=quantize, fmt=fmt)
            s = fm_runtime.load(path)
            times = []
            for n in (1, 100_000):
                z = np.random.default_rng(0).standard_normal((n, 2), dtype=np.float32)
                times.append(median_seconds(lambda: s.sample(noise=z), min_time=2.0 if n == 1 else 4.0))
            if not base:
                base = {"times": times}
            m = s.spec.variant.get("vs_fp32")
            rel = [t / b for t, b in zip(times, base["times"])]
            cols = (f"{m['max_dev']:>9.2e} {m['mean_dev']:>9.2e} {m['energy_distance']:>11.2e} "
                    f"{m['energy_distance_fp32']:>9.2e} {m['noise_floor']:>9.2e}") if m else f"{'(reference)':>51}"
            print(f"{'baked' if bake else 'velocity':<12} {name:<14} {path.stat().st_size / 1024:>7.1f}KB "
                  f"{times[0] * 1e3:>7.3f}ms {rel[0]:>4.2f}x {times[1] * 1e3:>8.1f}ms {rel[1]:>4.2f}x {cols}")


if __name__ == "__main__":
    main()
