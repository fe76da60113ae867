"""GPU check: parity and timings of the accelerator code paths against the CPU runtime.

Needs onnxruntime-gpu (CUDA provider) and no torch:
    python benchmarks/gpu_check.py VELOCITY.onnx BAKED.onnx [--provider cuda]

Checks, for every solver, that the device-resident velocity loop on the provider matches the CPU
runtime (max |diff|), that the baked file matches with and without CUDA graphs, and prints median
times at batch 1, 256 and 100 000; and that log-likelihoods (the divergence graph) agree between
the provider and the CPU. `--provider cpu` runs the same script as a smoke test.
"""
from __future__ import annotations

import argparse

import numpy as np

import fm_runtime
from fm_runtime.solve.solvers import VELOCITY_SOLVERS
from fm_runtime.tools.bench import median_seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("velocity")
    ap.add_argument("baked")
    ap.add_argument("--provider", default="cuda")
    args = ap.parse_args()
    cpu = fm_runtime.load(args.velocity)
    dev = fm_runtime.load(args.velocity, provider=args.provider)
    print("providers:", dev.providers)
    z = np.random.default_rng(0).standard_normal((4096, *cpu.data_shape), dtype=np.float32)
    for solver in sorted(VELOCITY_SOLVERS):
        d = np.abs(dev.sample(noise=z, steps=4, solver=solver) - cpu.sample(noise=z, steps=4, solver=solver)).max()
        print(f"velocity loop {solver:8s} 4 steps: max |{args.provider} - cpu| = {d:.2e}")
    if cpu.spec.divergence:
        x = cpu.sample(noise=z[:1024])
        d = np.abs(dev.log_prob(x) - cpu.log_prob(x)).max()
        print(f"log p (divergence graph), 1024 points: max |{args.provider} - cpu| = {d:.2e} nats")
    baked_cpu = fm_runtime.load(args.baked)
    variants = {"baked": dict()}
    if args.provider == "cuda":
        variants["baked + cuda graph"] = dict(cuda_graph=True)
    samplers = {name: fm_runtime.load(args.baked, provider=args.provider, **kw) for name, kw in variants.items()}
    for name, s in samplers.items():
        print(f"{name}: max |{args.provider} - cpu| = {np.abs(s.sample(noise=z) - baked_cpu.sample(noise=z)).max():.2e}")
    for n in (1, 256, 100_000):
        zn = np.random.default_rng(1).standard_normal((n, *cpu.data_shape), dtype=np.float32)
        row = {"cpu baked": median_seconds(lambda: baked_cpu.sample(noise=zn)),
               "loop": median_seconds(lambda: dev.sample(noise=zn))}
        for name, s in samplers.items():
            row[name] = median_seconds(lambda: s.sample(noise=zn))
        print(f"batch {n:>6}: " + " | ".join(f"{k} {v * 1e3:.3f} ms" for k, v in row.items()))


if __name__ == "__main__":
    main()
