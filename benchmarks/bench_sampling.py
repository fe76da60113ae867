"""Sampling speed: torch eager against every fm-runtime mode, same weights, one process.

    python benchmarks/bench_sampling.py            # about 3 minutes on 2 cores

Prints median times after warm-up for batch 1, 256 and 100 000 at 8 midpoint steps (16 NFE), a
steps sweep at batch 256, speed-ups over three torch baselines, and the ratio to the arithmetic
bound (matmul FLOPs at this machine's measured float32 matmul rate). Baselines:
- torch-tutorial: the tutorial's loop as written (autograd left on, t concatenated each call);
- torch-nograd: the project's reference sampler (torch.no_grad, same solver code as the runtime);
- torch.compile: the whole no_grad midpoint loop compiled (inductor, C++ on CPU), what a torch user
  would try first; compiled once per batch size, outside the timing.
Peak memory (RSS) of a 100 000-sample run is measured per mode in a fresh child process.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import fm_runtime
from fm_runtime.tools.bench import machine, matmul_gflops, median_seconds, mlp_flops_per_eval
from training.export_checkpoint import export_model
from training.sample import sample as native_sample
from training.train import fit

BATCHES = (1, 256, 100_000)


def tutorial_loop(model, z: np.ndarray, steps: int) -> torch.Tensor:
    """The tutorial's sampling loop, as written there (no torch.no_grad)."""
    x = torch.from_numpy(z)
    grid = torch.linspace(0, 1.0, steps + 1)
    for i in range(steps):
        t0, t1 = grid[i], grid[i + 1]
        t = t0.view(1, 1).expand(x.shape[0], 1)
        h = t1 - t0
        k1 = model.net(torch.cat((t, x), -1))
        x = x + h * model.net(torch.cat((t + h / 2, x + k1 * h / 2), -1))
    return x


def compiled_loop(model, steps: int):
    """torch.compile of the whole solve: 8 midpoint steps of the network, no autograd, one graph."""
    net = model.net

    def solve(x):
        h = 1.0 / steps
        for i in range(steps):
            t = torch.full((x.shape[0], 1), i * h)
            k1 = net(torch.cat((t, x), -1))
            x = x + h * net(torch.cat((t + h / 2, x + k1 * h / 2), -1))
        return x
    compiled = torch.compile(solve, dynamic=False)

    def run(z: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return compiled(torch.from_numpy(z))
    return run


def peak_rss_mb(path: str, kwargs: dict, n: int) -> float:
    """Peak resident memory (VmHWM) of a fresh torch-free process that loads and samples."""
    code = (f"import fm_runtime; s = fm_runtime.load({path!r}, **{kwargs!r}); s.sample({n}, seed=0)\n"
            "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer sizes, for a smoke run")
    ap.add_argument("--activation", default="elu", help="elu (the tutorial's network, docs/performance.md's table) or silu (the default recipe's)")
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    model, config = fit("moons", steps=200, lr=5e-3, batch_size=256, activation=args.activation, progress=False)
    tmp = Path(tempfile.mkdtemp())
    velocity, baked = tmp / "v.onnx", tmp / "b8.onnx"
    export_model(model, config, velocity)
    export_model(model, config, baked, bake="midpoint:8")
    modes = {
        "loop, whole batch": (velocity, dict(tile=0, threads=1)),
        "loop, tiled (default)": (velocity, {}),
        "baked, whole batch": (baked, dict(tile=0, threads=1)),
        "baked, tiled (default)": (baked, {}),
    }
    batches = (1, 256, 10_000) if args.quick else BATCHES
    compiled = compiled_loop(model, 8)
    rate = matmul_gflops()
    flops = 16 * mlp_flops_per_eval(config["architecture"], velocity.read_bytes())
    print(f"{machine(1)}\ntorch at {torch.get_num_threads()} threads; float32 matmul {rate:.0f} GFLOP/s measured; "
          f"{flops / 1e3:.0f} kFLOP per sample at 16 NFE")
    print(f"{'batch':>7} | {'mode':<24} | {'time':>10} | {'vs tutorial':>11} | {'vs nograd':>9} | {'/ bound':>7}")
    for n in batches:
        z = np.random.default_rng(0).standard_normal((n, 2), dtype=np.float32)
        big = n >= 10_000
        t_tut = median_seconds(lambda: tutorial_loop(model, z, 8), min_time=2.0 if big else 0.5)
        t_ng = median_seconds(lambda: native_sample(model, z, 8, "midpoint"), min_time=2.0 if big else 0.5)
        compiled(z)                                     # compile for this batch size, untimed
        if n == 256:                                    # the same solve as the reference
            gap = np.abs(compiled(z).numpy() - native_sample(model, z, 8, "midpoint")).max()
            assert gap < 1e-4, gap
        t_c = median_seconds(lambda: compiled(z), min_time=2.0 if big else 0.5)
        bound = flops * n / (rate * 1e9)
        print(f"{n:>7} | {'torch tutorial loop':<24} | {t_tut * 1e3:>8.3f}ms | {1:>10.1f}x | "
              f"{t_ng / t_tut:>8.2f}x | {t_tut / bound:>6.1f}x")
        print(f"{n:>7} | {'torch no_grad reference':<24} | {t_ng * 1e3:>8.3f}ms | {t_tut / t_ng:>10.1f}x | "
              f"{1:>8.2f}x | {t_ng / bound:>6.1f}x")
        print(f"{n:>7} | {'torch.compile (solve)':<24} | {t_c * 1e3:>8.3f}ms | {t_tut / t_c:>10.1f}x | "
              f"{t_ng / t_c:>8.2f}x | {t_c / bound:>6.1f}x")
        for name, (path, kw) in modes.items():
            s = fm_runtime.load(path, **kw)
            run_kw = {} if s.baked else {"steps": 8, "solver": "midpoint"}
            t = median_seconds(lambda: s.sample(noise=z, **run_kw), min_time=2.0 if big else 0.5)
            print(f"{n:>7} | {name:<24} | {t * 1e3:>8.3f}ms | {t_tut / t:>10.1f}x | {t_ng / t:>8.2f}x | "
                  f"{t / bound:>6.1f}x | {t_c / t:.2f}x torch.compile")
    print("\nsteps sweep, batch 256 (midpoint; NFE = 2 x steps):")
    z = np.random.default_rng(0).standard_normal((256, 2), dtype=np.float32)
    loop = fm_runtime.load(velocity)
    for steps in (1, 2, 4, 8, 16, 32):
        b = tmp / f"b{steps}.onnx"
        export_model(model, config, b, bake=f"midpoint:{steps}")
        s = fm_runtime.load(b)
        t_tut = median_seconds(lambda: tutorial_loop(model, z, steps))
        t_loop = median_seconds(lambda: loop.sample(noise=z, steps=steps))
        t_b = median_seconds(lambda: s.sample(noise=z))
        print(f"  steps {steps:>2}: torch tutorial {t_tut * 1e3:7.3f}ms | loop {t_loop * 1e3:7.3f}ms "
              f"({t_tut / t_loop:4.1f}x) | baked {t_b * 1e3:7.3f}ms ({t_tut / t_b:4.1f}x)")
    if not args.quick:
        print("\npeak RSS of one 100 000-sample run, fresh process per mode:")
        for name, (path, kw) in modes.items():
            print(f"  {name:<24} {peak_rss_mb(str(path), kw, 100_000):7.1f} MB")
    sys.stdout.flush()
    print(machine(1))           # the load average again, at the end


if __name__ == "__main__":
    main()
