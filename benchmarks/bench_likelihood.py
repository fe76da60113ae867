"""Log-likelihoods on data with a known density, runtime (no torch) against torch autograd.

    python benchmarks/bench_likelihood.py          # two trainings with the default recipe, ~3 minutes

For the correlated Gaussian (density known in closed form) and the checkerboard (uniform on 8
squares of area 4: log p = -log 32 on them), trains the default recipe, exports, and reports on
2000 fresh data points: the runtime's mean log p (nats per dimension; exact divergence) beside
the true mean log density, the agreement of the runtime with the torch reference (exact autograd
divergence, same solver), and the Hutchinson estimator's error against exact with 1 and 16 probes.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import fm_runtime
from training.data import LOG_DENSITY, fresh_data
from training.export_checkpoint import export_model
from training.sample import log_prob as torch_log_prob
from training.train import fit

STEPS = 16     # midpoint steps for the likelihood solve


def main() -> None:
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp())
    for name in ("gaussian", "checkerboard"):
        clock = time.process_time()
        model, config = fit(name, progress=False)
        cpu = time.process_time() - clock
        export_model(model, config, tmp / f"{name}.onnx")
        s = fm_runtime.load(tmp / f"{name}.onnx")
        x = fresh_data(name, 2000, 11)
        clock = time.perf_counter()
        exact = s.log_prob(x, STEPS, divergence="exact")
        took = time.perf_counter() - clock
        ref = torch_log_prob(model, x[:500], STEPS)
        truth = LOG_DENSITY[name](x)
        h1 = s.log_prob(x, STEPS, divergence="hutchinson", probes=1)
        h16 = s.log_prob(x, STEPS, divergence="hutchinson", probes=16)
        print(f"{name} (trained {cpu:.0f} CPU s): runtime {exact.mean() / 2:.4f} nats/dim, truth "
              f"{truth.mean() / 2:.4f} nats/dim (model - truth {(exact.mean() - truth.mean()) / 2:+.4f}); "
              f"2000 points in {took:.2f} s")
        print(f"  runtime vs torch autograd, 500 points: max |diff| {np.abs(exact[:500] - ref).max():.1e} nats")
        print(f"  Hutchinson vs exact: 1 probe bias {np.mean(h1 - exact):+.4f}, mean |err| {np.abs(h1 - exact).mean():.3f}; "
              f"16 probes bias {np.mean(h16 - exact):+.4f}, mean |err| {np.abs(h16 - exact).mean():.3f} nats")


if __name__ == "__main__":
    main()
