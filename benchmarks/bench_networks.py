"""Real networks: the U-Net-style conv net and the digits DiT, runtime against torch, same threads.

    python benchmarks/bench_networks.py            # a few minutes on 2 cores
    python benchmarks/bench_networks.py --threads 1 --batches 1,64

For each network (random weights, perturbed so no gate sits at zero): export time and size,
then at each batch the time of an 8-step midpoint solve (16 NFE), the fastest of 3 interleaved
rounds' medians (--rounds), by
- torch eager: the reference sampler (torch.no_grad, same solver code as the runtime);
- torch.compile: the whole no_grad solve loop compiled (inductor), once per batch, untimed;
- the runtime: fm_runtime.load(file).sample(noise=z), the loop over the velocity file;
- the runtime baked: the same solve unrolled into one graph (fm-export --bake midpoint:8);
- both as one call with onnxruntime's threads inside it (what fm-run bench --save may choose);
- the runtime int8: the loop over `fm-export --quantize int8`'s file (static QDQ convolutions, dynamic
  matmuls; its sample deviation from float32 is printed, as the file records it);
with torch and onnxruntime given the same number of threads, and torch eager and torch.compile at 1
thread as well (torch's own threads can collapse on a shared machine). A roofline column: the network's
FLOPs per sample per evaluation (torch's FlopCounterMode: convolutions and matmuls), the
GFLOP/s each mode achieves, and that as a share of this machine's measured float32 matmul rate.

Then log-likelihoods of a U-Net on [1, 16, 16] (256 dimensions, 4 midpoint steps): the runtime's
exact divergence and Hutchinson (16 probes) against torch autograd's (one backward pass per
dimension or per probe), on 2 and 8 images, with the largest difference from torch exact.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import fm_runtime
from export import export_velocity
from fm_runtime.solve.solvers import integrate
from fm_runtime.tools.bench import machine, matmul_gflops, median_seconds
from training.nets import VelocityDiT, VelocityUNet
from training.sample import log_prob as torch_log_prob
from training.sample import sample as torch_sample

STEPS = 8


def perturbed(net):
    """Random weights moved off their initialisation (no gate left at zero), in eval mode."""
    for p in net.parameters():
        p.data += 0.05 * torch.randn_like(p)
    return net.eval()


def one_thread(fn, threads: int):
    """fn run with torch at 1 thread (and its thread count put back after)."""
    def run():
        torch.set_num_threads(1)
        try:
            return fn()
        finally:
            torch.set_num_threads(threads)
    return run


def networks() -> dict:
    torch.manual_seed(0)
    nets = {"unet [3,16,16] w32": (VelocityUNet((3, 16, 16), 32), (3, 16, 16)),
            "digits DiT [1,8,8] w64 d4": (VelocityDiT((1, 8, 8), 64, 4), (1, 8, 8))}
    for net, _ in nets.values():
        perturbed(net)
    return nets


def flops_per_eval(net, shape) -> int:
    """Forward FLOPs of one evaluation for one sample (2 per multiply-add)."""
    x = torch.zeros((4, *shape))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x, torch.zeros(4))
    return counter.get_total_flops() // 4


def interleaved(modes: dict, rounds: int) -> dict[str, float]:
    """Each mode's median time in each of `rounds` rounds that run every mode in turn, and the
    fastest round's kept: this machine's speed drifts by tens of percent over minutes, and a
    mode timed alone in a slow minute would carry that minute into its ratio."""
    times = {mode: float("inf") for mode in modes}
    for _ in range(rounds):
        for mode, fn in modes.items():
            times[mode] = min(times[mode], median_seconds(fn, min_time=0.4))
    return times


def compiled_solve(net):
    def solve(x):
        h = 1.0 / STEPS
        for i in range(STEPS):
            t = torch.full((x.shape[0],), i * h)
            k1 = net(x, t)
            x = x + h * net(x + k1 * (h / 2), t + h / 2)
        return x
    compiled = torch.compile(solve, dynamic=False)

    def run(z):
        with torch.no_grad():
            return compiled(torch.from_numpy(z))
    return run


def torch_hutchinson(net, x: np.ndarray, steps: int, probes: int) -> np.ndarray:
    """log p1(x) with Hutchinson's estimator in torch: `probes` Rademacher probes per row fixed for
    the solve, e . (e^T J) by one backward pass each (the FFJORD way)."""
    x1 = torch.from_numpy(x)
    n, d = len(x1), x1[0].numel()
    e = torch.randint(0, 2, (probes, n, d), generator=torch.Generator().manual_seed(0)).float() * 2 - 1

    def augmented(state, t):
        with torch.enable_grad():
            xs = state[:, :d].reshape(x1.shape).detach().requires_grad_(True)
            v = net(xs, torch.full((n,), float(t))).reshape(n, d)
            div = sum((torch.autograd.grad(v, xs, e[k], retain_graph=True)[0].reshape(n, d) * e[k]).sum(1)
                      for k in range(probes)) / probes
        return torch.cat([v.detach(), div[:, None]], 1)
    end = integrate(augmented, torch.cat([x1.reshape(n, d), torch.zeros(n, 1)], 1), steps, "midpoint",
                    t0=1.0, t1=0.0).x
    return (-0.5 * (end[:, :d] ** 2).sum(1) - 0.5 * d * np.log(2 * np.pi) + end[:, d]).numpy()


def likelihoods(threads: int, tmp: Path) -> None:
    torch.manual_seed(0)
    net = perturbed(VelocityUNet((1, 16, 16), 32))
    clock = time.perf_counter()
    export_velocity(net, tmp / "lp.onnx", data_shape=(1, 16, 16))
    print(f"\nlog-likelihoods, unet [1,16,16] w32 (export with its divergence graph: "
          f"{time.perf_counter() - clock:.1f} s), 4 midpoint steps:")
    s = fm_runtime.load(tmp / "lp.onnx", threads=threads)
    for n in (2, 8):
        x = s.noise(n, seed=1)
        clock = time.perf_counter()
        want = torch_log_prob(lambda z, t: net(z, t), x, steps=4)
        t_torch = time.perf_counter() - clock
        clock = time.perf_counter()
        got = s.log_prob(x, steps=4, divergence="exact")
        t_rt = time.perf_counter() - clock
        clock = time.perf_counter()
        torch_hutchinson(net, x, 4, 16)
        t_th = time.perf_counter() - clock
        clock = time.perf_counter()
        hutch = s.log_prob(x, steps=4, divergence="hutchinson", probes=16)
        t_rh = time.perf_counter() - clock
        print(f"  {n} images: exact runtime {t_rt:.2f} s, torch autograd {t_torch:.2f} s ({t_torch / t_rt:.2f}x), "
              f"max |diff| {np.abs(got - want).max():.1e} nats; hutchinson x16 runtime {t_rh:.2f} s, torch "
              f"{t_th:.2f} s ({t_th / t_rh:.2f}x), {t_torch / t_rh:.0f}x faster than torch exact, standard error "
              f"{np.nanmean(s.last_std_error):.1f} nats, mean |error| vs exact {np.abs(hutch - got).mean():.1f} nats")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch and onnxruntime threads")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--no-compile", action="store_true", help="leave torch.compile out (it compiles for minutes)")
    ap.add_argument("--only", choices=["sampling", "likelihood"], help="one part of the benchmark")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of every mode in turn; each mode's time is its fastest round's median")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rate = matmul_gflops()
    print(f"{machine(args.threads)}\nfloat32 matmul {rate:.0f} GFLOP/s measured (2048x2048), torch at {args.threads} threads")
    tmp = Path(tempfile.mkdtemp())
    if args.only != "sampling":
        likelihoods(args.threads, tmp)
    if args.only == "likelihood":
        return
    for name, (net, shape) in networks().items():
        velocity, baked = tmp / "v.onnx", tmp / "b.onnx"
        clock = time.perf_counter()
        report = export_velocity(net, velocity, data_shape=shape)
        t_export = time.perf_counter() - clock
        clock = time.perf_counter()
        export_velocity(net, baked, data_shape=shape, bake=f"midpoint:{STEPS}", divergence=False)
        t_bake = time.perf_counter() - clock
        int8 = tmp / "q.onnx"
        export_velocity(net, int8, data_shape=shape, divergence=False, quantize="int8", force=True)
        cost = fm_runtime.load(int8).spec.variant["vs_fp32"]
        fl = flops_per_eval(net, shape)
        print(f"\n{name}: {report.size_bytes / 1e6:.2f} MB; export with divergence {t_export:.1f} s, baked "
              f"midpoint:{STEPS} {t_bake:.1f} s; {fl / 1e6:.2f} MFLOP per sample per evaluation; int8 "
              f"{cost['size_bytes'] / 1e6:.2f} MB, its samples {cost['mean_dev'] / cost['scale']:.1%} of their mean "
              f"magnitude from float32's (mean), {cost['max_dev']:.2f} at most")
        loop = fm_runtime.load(velocity, threads=args.threads)
        bake = fm_runtime.load(baked, threads=args.threads)
        quant = fm_runtime.load(int8, threads=args.threads)
        inside = {"tile": 0, "threads": 1, "intra_op_threads": args.threads}    # fm-run bench's third mode
        loop_in, bake_in = fm_runtime.load(velocity, **inside), fm_runtime.load(baked, **inside)
        compiled = None if args.no_compile else compiled_solve(net)
        print(f"{'batch':>6} | {'mode':<24} | {'time':>10} | {'vs eager':>8} | {'GFLOP/s':>7} | {'of matmul peak':>14}")
        for n in (int(b) for b in args.batches.split(",")):
            z = loop.noise(n, seed=0)
            ref = torch_sample(lambda x, t: net(x, t), z, STEPS, "midpoint")
            modes = {"torch eager (no_grad)": lambda: torch_sample(lambda x, t: net(x, t), z, STEPS, "midpoint"),
                     "runtime loop": lambda: loop.sample(noise=z, steps=STEPS, solver="midpoint"),
                     "runtime baked": lambda: bake.sample(noise=z),
                     "loop, threads in a call": lambda: loop_in.sample(noise=z, steps=STEPS, solver="midpoint"),
                     "baked, threads in a call": lambda: bake_in.sample(noise=z),
                     "runtime int8 loop": lambda: quant.sample(noise=z, steps=STEPS, solver="midpoint")}
            modes["torch eager, 1 thread"] = one_thread(modes["torch eager (no_grad)"], args.threads)
            if compiled is not None:
                compiled(z)                                  # compile for this batch, untimed
                modes["torch.compile (solve)"] = lambda: compiled(z)
                modes["torch.compile, 1 thread"] = one_thread(lambda: compiled(z), args.threads)
            for mode, fn in modes.items():
                gap = np.abs(np.asarray(fn()) - ref).max()
                assert gap < (1.0 if "int8" in mode else 1e-3), (mode, gap)
            times = interleaved(modes, args.rounds)
            for mode, t in times.items():
                achieved = fl * 2 * STEPS * n / t / 1e9
                print(f"{n:>6} | {mode:<24} | {t * 1e3:>8.2f}ms | {times['torch eager (no_grad)'] / t:>7.2f}x | "
                      f"{achieved:>7.1f} | {achieved / rate:>13.0%}")
            best_torch = min(t for mode, t in times.items() if mode.startswith("torch"))
            best = min((t, mode) for mode, t in times.items() if not mode.startswith("torch") and "int8" not in mode)
            print(f"{n:>6} | runtime loop against the fastest torch mode: {best_torch / times['runtime loop']:.2f}x; "
                  f"the fastest float32 runtime mode ({best[1]}): {best_torch / best[0]:.2f}x")
    print(machine(args.threads))            # the load average again, at the end


if __name__ == "__main__":
    main()
