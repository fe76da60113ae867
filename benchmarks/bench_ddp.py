"""Training on several processes: steps per second at N = 1 and N = 2, and what each step sends.

    python benchmarks/bench_ddp.py                  # ~2 minutes on 2 cores
    python benchmarks/bench_ddp.py --steps 1000

For each recipe (the default one at its batch of 2048, and minibatch OT at batch 256), on the
same global batch: one process without torch.distributed (the reference), and `fm-train fit
--nproc N` for N = 1 and 2 (torchrun, DistributedDataParallel on gloo). Steps/s counts the
training loop only (the checkpoint's train_seconds); start-up (torchrun, imports, joining the
group) is printed apart. Each process uses one thread, as fm-train fit does.

What to expect here: nothing faster. These networks have ~9 000 parameters and a step takes a
few milliseconds, so an all-reduce over gloo (~0.1-1 ms on one machine) is a visible share of
it, the per-step stream makes every process draw the whole generated batch (microseconds), and on
a 2-core machine shared with other work the two processes compete with everything else.

At N GPUs and several nodes (what changes, on paper):
- Each of N processes computes the forward and backward pass of B/N rows; the step's compute
  time shrinks ~N-fold while B/N still fills a GPU, then stays flat.
- Per step, DistributedDataParallel all-reduces the gradients: P float32 numbers (P parameters),
  a ring all-reduce moving 2 (N-1)/N * 4P bytes in and out of each process, overlapped with the
  backward pass (bucketed). nccl uses NVLink inside a node and the network (InfiniBand/RoCE,
  else TCP) between nodes; between nodes the slowest link sets the pace.
- --coupling ot adds a gather of 2 B D float32 numbers into process 0, one assignment there
  (O(B^3) on its CPU, the same at any N: it does not shrink with more GPUs), and a scatter of
  B D numbers back: at large B the assignment, not the traffic, is the limit.
- The loss reported in the log and progress bar is averaged over processes every 50 steps
  (one all-reduce of 50 numbers), and process 0 alone writes checkpoints.
- Several nodes: the same command on every node with --nnodes M --node-rank i (or an elastic
  range --nnodes 2:4) and a shared rendezvous, --rdzv-backend c10d --rdzv-endpoint HOST:PORT
  --rdzv-id JOB; all nodes must see the same --out folder (a shared file system) for restarts to
  resume from the last checkpoint. See docs/training.md ("Training on several processes or machines").
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from training.checkpoint import load_checkpoint
from training.train import fit

RECIPES = {
    "default (batch 2048)": dict(batch_size=2048),
    "OT coupling (batch 256)": dict(batch_size=256, coupling="ot"),
}
COMMON = dict(lr_schedule="constant", ema=0.999)


def torchrun(nproc: int, steps: int, options: dict, out: Path) -> tuple[float, float]:
    """(training seconds, wall seconds) of fm-train fit --nproc `nproc`."""
    args = ["--steps", str(steps), "--no-progress", "--out", str(out)]
    for key, value in {**COMMON, **options}.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "training.cli", "fit", "--nproc", str(nproc), *args],
                   check=True, capture_output=True, text=True)
    return load_checkpoint(out)[1]["train_seconds"], time.perf_counter() - start


def traffic(params: int, batch: int, dim: int, n: int, ot: bool) -> str:
    ring = 2 * (n - 1) / n * 4 * params
    text = f"gradients {ring / 1e3:.1f} kB in and out per process (ring all-reduce of {params} float32)"
    if ot:
        text += f"; OT: {2 * batch * dim * 4 / 1e3:.1f} kB gathered, {batch * dim * 4 / 1e3:.1f} kB scattered"
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"{args.steps} steps per run; steps/s of the training loop (start-up apart)\n")
    print(f"{'recipe':26s} {'one process':>12s} {'torchrun N=1':>13s} {'torchrun N=2':>13s} {'N=2 / one':>10s}"
          f" {'start-up N=1, N=2':>18s}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, options in RECIPES.items():
            model, config = fit("moons", steps=args.steps, progress=False, threads=1, **COMMON, **options)
            ref = args.steps / config["train_seconds"]
            runs = {n: torchrun(n, args.steps, options, Path(tmp) / f"{n}.ckpt") for n in (1, 2)}
            rate = {n: args.steps / s for n, (s, _) in runs.items()}
            startup = {n: wall - s for n, (s, wall) in runs.items()}
            print(f"{name:26s} {ref:12.0f} {rate[1]:13.0f} {rate[2]:13.0f} {rate[2] / ref:10.2f}"
                  f" {startup[1]:8.1f} s {startup[2]:6.1f} s")
            params = sum(p.numel() for p in model.parameters())
            for n in (2, 8, 64):
                print(f"    per step at N={n}: {traffic(params, options['batch_size'], 2, n, 'coupling' in options)}")
    print("\nOn a 2-core machine no speed-up is expected (see the docstring for N GPUs and several nodes).")
    print(f"Gradient traffic per process and step tends to 8P bytes as N grows, whatever the batch "
          f"(P = {params} parameters here: {8 * params / 1e3:.0f} kB).")


if __name__ == "__main__":
    main()
