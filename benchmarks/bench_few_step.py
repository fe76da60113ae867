"""Few-step sampling: quality against network evaluations for the default model, minibatch-OT
pairs, 1-reflow and 2-reflow (and time schedules), with the training CPU time of each.

    python benchmarks/bench_few_step.py                      # moons, 8gaussians, checkerboard (~30 min)
    python benchmarks/bench_few_step.py --data moons
    python benchmarks/bench_few_step.py ot                   # couplings at batch 2048: cost and quality
    python benchmarks/bench_few_step.py ot --steps 2000 --coupling ot:32 --coupling ot:64
    python benchmarks/bench_few_step.py schedules moons.ckpt    # one model on every schedule

Torch on one thread, so the CPU time is the training budget. Quality: energy distance (the
unbiased estimate of fm_runtime.solve.metrics) between N samples and N independent fresh data points,
mean of DRAWS noise/data draws, each model sampled by the runtime from its exported file; the
noise floor is the mean |energy distance| between two independent data draws (a perfect sampler).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fm_runtime.solve.metrics import energy_distance
from training import couplings
from training.data import fresh_data, sample_data

N, DRAWS = 5_000, 3
NFES = (1, 2, 4, 8, 16)
SOLVER_FOR = {1: "euler"}           # one evaluation: Euler; more: midpoint steps


def draws(dataset: str):
    return [(np.random.default_rng([7, r]).standard_normal((N, 2), dtype=np.float32),
             fresh_data(dataset, N, [8, r])) for r in range(DRAWS)]


def noise_floor(dataset: str) -> float:
    return float(np.mean([abs(energy_distance(fresh_data(dataset, N, [9, r]), fresh_data(dataset, N, [8, r])))
                          for r in range(DRAWS)]))


def solve_for(nfe: int, schedule=None) -> dict:
    solver = SOLVER_FOR.get(nfe, "midpoint")
    return {"solver": solver, "steps": nfe if solver == "euler" else nfe // 2, "schedule": schedule}


def quality(sample, dataset: str, schedule=None) -> dict[int, float]:
    """{NFE: energy distance} for sample(noise, solver=, steps=, schedule=) -> samples."""
    cells = draws(dataset)
    return {nfe: float(np.mean([energy_distance(sample(z, **solve_for(nfe, schedule)), d) for z, d in cells]))
            for nfe in NFES}


def torch_sampler(model):
    from training.sample import sample
    return lambda z, solver, steps, schedule: sample(model, z, steps, solver,
                                                     **({"schedule": schedule} if schedule else {}))


def row(name: str, cpu_s: float, q: dict[int, float], floor: float) -> str:
    return f"| {name} | {cpu_s:.0f} | " + " | ".join(f"{q[n]:.1e} ({q[n] / floor:.1f}x)" for n in NFES) + " |"


def header(floor: float, what: str) -> str:
    return (f"noise floor {floor:.1e} ({N} points, mean of {DRAWS} draws); cells: energy distance (x floor); "
            f"1 NFE = one Euler step, else midpoint steps\n| {what} | CPU s | "
            + " | ".join(f"{n} NFE" for n in NFES) + " |\n|---|---|" + "---|" * len(NFES))


def runtime_sampler(model, config, where: Path):
    """The model exported (no divergence graph) and loaded by the runtime."""
    import fm_runtime
    from training.export_checkpoint import export_model
    export_model(model, config, where, divergence=False)
    s = fm_runtime.load(where)
    return s, (lambda z, solver, steps, schedule: s.sample(noise=z, steps=steps, solver=solver, schedule=schedule))


def train_models(dataset: str, d: Path, args) -> dict:
    """{name: (model, config, CPU seconds including the teachers')}: default, OT, 1- and 2-reflow."""
    from training.checkpoint import save_checkpoint
    from training.reflow import ReflowRecipe, reflow
    from training.train import fit

    out = {}
    for name, options in (("default", {}), ("ot", {"coupling": "ot"})):
        start = time.process_time()
        model, config = fit(dataset, progress=False, threads=1, **options)
        out[name] = (model, config, time.process_time() - start)
    save_checkpoint(d / "r0.ckpt", out["default"][0], out["default"][1])
    recipe = ReflowRecipe(**({"distil": args.distil} if args.distil else {}))
    for k in (1, 2):
        start = time.process_time()
        model, config = reflow(d / f"r{k - 1}.ckpt", recipe, progress=False)
        save_checkpoint(d / f"r{k}.ckpt", model, config)
        before = out["default" if k == 1 else "1-reflow"][2]
        out[f"{k}-reflow"] = (model, config, before + time.process_time() - start)
    return out


def throughput(s, nfe: int, schedule=None, n: int = 100_000, repeats: int = 3) -> float:
    """Samples per second of the runtime (tiled loop) at one NFE, median of `repeats` runs."""
    kw = solve_for(nfe, schedule)
    z = np.random.default_rng(0).standard_normal((n, 2), dtype=np.float32)
    s.sample(noise=z[:4096], **kw)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        s.sample(noise=z, **kw)
        times.append(time.perf_counter() - start)
    return n / float(np.median(times))


def bench_table(args) -> None:
    torch.set_num_threads(1)
    results = {}
    for dataset in args.data or ["moons", "8gaussians", "checkerboard"]:
        floor = noise_floor(dataset)
        print(f"\n{dataset}: " + header(floor, "model (schedule)"), flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            models = train_models(dataset, Path(tmp), args)
            rows, samplers = {}, {}
            for name, (model, config, cpu) in models.items():
                s, sample = runtime_sampler(model, config, Path(tmp) / f"{name}.onnx")
                samplers[name] = s
                for schedule in (None, *args.schedule):
                    label = name + (f" ({schedule})" if schedule else "")
                    rows[label] = {"cpu_s": cpu, "energy": quality(sample, dataset, schedule)}
                    print(row(label, cpu, rows[label]["energy"], floor), flush=True)
        # equal quality: within 2x the noise floor; the best few-step model reaches it at the fewest NFE
        best = min(((n, r["energy"][n], label) for label, r in rows.items() for n in NFES
                    if r["energy"][n] <= 2 * floor), default=(None, None, None))
        ref = rows["default"]["energy"][16]
        results[dataset] = {"floor": floor, "rows": rows}
        print(f"fewest NFE within 2x the floor: {best[2]} at {best[0]} NFE ({best[1]:.1e}); " if best[0] else
              "no model within 2x the floor; ", f"default at 16 NFE {ref:.1e} ({ref / floor:.1f}x)")
        if dataset == "moons" and best[0]:
            name = best[2].split(" (")[0]
            fast = throughput(samplers[name], best[0], None if name == best[2] else best[2].split("(")[1][:-1])
            slow = throughput(samplers["default"], 16)
            print(f"throughput, 100 000 samples, runtime on all cores: {best[2]} at {best[0]} NFE {fast:,.0f}/s, "
                  f"default at 16 NFE {slow:,.0f}/s: {fast / slow:.1f}x")
            results[dataset]["throughput"] = {"best": fast, "default_16": slow}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def bench_ot(args) -> None:
    """Cost of each coupling per step at batch 2048 beside the training step, and the quality of
    moons models trained with each for --steps steps."""
    from training.train import fit

    torch.set_num_threads(1)
    x1 = torch.from_numpy(sample_data("moons", 2048, np.random.default_rng(0)))
    x0 = torch.randn(x1.shape, generator=torch.Generator().manual_seed(0))
    base = float(((x0 - x1) ** 2).sum())
    best = float(((couplings.ot_pair(x0, x1, None) - x1) ** 2).sum())
    print("coupling at batch 2048 on moons: time per call, total squared distance / the exact optimum")
    for name in args.coupling:
        fn = _coupling(name)
        fn(x0, x1)
        start = time.process_time()
        for _ in range(args.repeat):
            paired = fn(x0, x1)
        print(f"  {name:<12} {(time.process_time() - start) / args.repeat * 1e3:8.1f} ms   "
              f"{float(((paired - x1) ** 2).sum()) / best:.3f}  (independent pairs: {base / best:.2f})")
    floor = noise_floor("moons")
    print(header(floor, f"moons, batch 2048, {args.steps} steps"))
    for name in args.coupling:
        if name == "ot-exact" and not args.exact:
            continue
        coupling, block = _coupling_name(name)
        old, couplings.OT_BLOCK = couplings.OT_BLOCK, block or couplings.OT_BLOCK
        try:
            start = time.process_time()
            model, _ = fit("moons", steps=args.steps, coupling=coupling, progress=False, threads=1)
            cpu = time.process_time() - start
        finally:
            couplings.OT_BLOCK = old
        print(row(name, cpu, quality(torch_sampler(model), "moons"), floor), flush=True)


def bench_schedules(args) -> None:
    """One checkpoint sampled (torch reference) on each schedule."""
    from training.checkpoint import load_checkpoint

    torch.set_num_threads(1)
    model, config = load_checkpoint(args.checkpoint)
    dataset = config["dataset"]
    floor = noise_floor(dataset)
    print(header(floor, f"{args.checkpoint} ({dataset}), schedule"))
    for schedule in args.schedule or ["uniform", "shift:2", "shift:3", "shift:0.5", "cosine", "sway:-1", "sway:-0.5"]:
        print(row(schedule, config.get("total_train_seconds", config.get("train_seconds", 0)),
                  quality(torch_sampler(model), dataset, schedule), floor), flush=True)


def _coupling_name(name: str) -> tuple[str, int | None]:
    coupling, _, block = name.partition(":")
    return coupling, int(block) if block else None


def _coupling(name: str):
    coupling, block = _coupling_name(name)
    if coupling == "ot":
        return lambda a, b: couplings.ot_pair(a, b, block or couplings.OT_BLOCK)
    return lambda a, b: couplings.couple(coupling, a, b)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="?", default="table", choices=["table", "ot", "schedules"])
    p.add_argument("checkpoint", nargs="?", help="schedules: the checkpoint to sample on every schedule")
    p.add_argument("--data", action="append", help="datasets [default: moons, 8gaussians, checkerboard]")
    p.add_argument("--steps", type=int, default=2000, help="ot: training steps per coupling")
    p.add_argument("--coupling", action="append", help="ot: couplings to compare, ot:BLOCK for a block size")
    p.add_argument("--repeat", type=int, default=5, help="ot: timed calls per coupling")
    p.add_argument("--exact", action="store_true", help="ot: also train with the whole-batch assignment (hours)")
    p.add_argument("--schedule", action="append", help="table: also sample every model on this schedule "
                   "[default: shift:3]; schedules: the schedules to compare")
    p.add_argument("--distil", help="table: reflow with --distil SOLVER:STEPS")
    p.add_argument("--json", help="write the results as JSON here")
    args = p.parse_args()
    if args.what == "schedules":
        bench_schedules(args)
    elif args.what == "ot":
        args.coupling = args.coupling or ["independent", "ot:32", "ot:64", "ot:256", "sinkhorn", "ot-exact"]
        bench_ot(args)
    else:
        args.schedule = args.schedule or ["shift:3"]
        bench_table(args)


if __name__ == "__main__":
    main()
