"""What a flow map buys at deployment: the reaching policy's flow map at 1 jump against its velocity
teacher at its default 10 Euler evaluations, run by the runtime from their ONNX files (numpy +
onnxruntime, one intra-op thread), interleaved in one process, at batch 1 (one robot asking for
its next chunk) and 64; with each side's success on 1000 held-out observations beside the timing.
Then training: distilling the map against training the teacher, seconds per step at equal steps.

    python benchmarks/bench_flowmap.py                                  # trains both first (~3 min)
    python benchmarks/bench_flowmap.py --teacher reach.ckpt --map reach-map.ckpt   # trained already

Checkpoints are exported to ONNX in --work (default: a temporary folder). Prints the CPU model
and flags, the thread settings and the load average, then one table; --json FILE keeps it.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import fm_runtime
from fm_runtime.tools.bench import machine
from training.tasks import reach
from training.tasks.score import HELD_OUT_SEED

ROOT = Path(__file__).resolve().parents[1]
def fm(tool: str, *args: str) -> None:
    entry = "main" if tool == "fm-train" else "export_main"
    subprocess.run([sys.executable, "-c", f"from training.launch import {entry}; {entry}()", *args], check=True,
                   cwd=ROOT)


def checkpoints(args, work: Path) -> tuple[Path, Path]:
    """The teacher's and the map's checkpoints: given, or trained here with fm-train's defaults."""
    teacher, flow_map = args.teacher, args.map
    if teacher is None:
        teacher = work / "reach.ckpt"
        fm("fm-train", "fit", "--data", "reach", "--out", str(teacher))
    if flow_map is None:
        flow_map = work / "reach-map.ckpt"
        fm("fm-train", "distill", str(teacher), "--out", str(flow_map))
    return Path(teacher), Path(flow_map)


def timed(sampler, obs: np.ndarray, **kw) -> float:
    clock = time.perf_counter()
    sampler.sample(cond={"obs": obs}, seed=0, **kw)
    return time.perf_counter() - clock


def latency(files: dict, batch: int, reps: int) -> dict:
    """Median seconds per request for each (name, sampler, options), the calls interleaved."""
    obs = reach.observations(batch, np.random.default_rng(1))
    times: dict[str, list[float]] = {name: [] for name in files}
    for s, kw in files.values():          # warm-up
        timed(s, obs, **kw)
    for _ in range(reps):
        for name, (s, kw) in files.items():
            times[name].append(timed(s, obs, **kw))
    return {name: float(np.median(t)) for name, t in times.items()}


def graph_call(files: dict, batch: int, reps: int) -> dict:
    """Median seconds of one bare graph call (session.run, no request handling) per sampler, interleaved:
    what one evaluation costs the network itself."""
    obs = reach.observations(batch, np.random.default_rng(1))
    feeds = {}
    for name, (s, _) in files.items():
        feed = {s.spec.x_name: np.zeros((batch, *s.spec.data_shape), np.float32), s.spec.t_name: np.ones(batch, np.float32),
                "obs": obs}
        if s.spec.s_name:
            feed[s.spec.s_name] = np.zeros(batch, np.float32)
        feeds[name] = feed
    times: dict[str, list[float]] = {name: [] for name in files}
    for _ in range(reps + 10):
        for name, (s, _) in files.items():
            clock = time.perf_counter()
            s.session.run(None, feeds[name])
            times[name].append(time.perf_counter() - clock)
    return {name: float(np.median(t[10:])) for name, t in times.items()}


def success(s, kw: dict) -> dict:
    obs = reach.observations(1000, np.random.default_rng(HELD_OUT_SEED))
    return reach.metrics(s.sample(cond={"obs": obs}, seed=0, **kw), obs)


def training_speed(teacher_ckpt: Path, steps: int) -> dict:
    """Seconds per step of the teacher's recipe and of distillation, `steps` each, in this process
    (one torch thread, as fm-train trains)."""
    import torch

    from training.flowmap import default_recipe, distill
    from training.tasks.fit import fit_task, task_recipe
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        clock = time.perf_counter()
        fit_task("reach", task_recipe("reach", {"steps": steps}), out=str(Path(d) / "v.ckpt"), progress=False)
        velocity = (time.perf_counter() - clock) / steps
        clock = time.perf_counter()
        distill(teacher_ckpt, default_recipe("reach", steps=steps), progress=False)
        flow_map = (time.perf_counter() - clock) / steps
    return {"velocity_s_per_step": velocity, "map_s_per_step": flow_map, "ratio": flow_map / velocity}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher", type=Path, help="the reach velocity checkpoint (default: train one)")
    ap.add_argument("--map", type=Path, help="its flow map's checkpoint (default: distill one)")
    ap.add_argument("--work", type=Path, help="folder for the exported files [default: a temporary one]")
    ap.add_argument("--train-steps", type=int, default=200, help="steps of each training timed")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    print(machine(), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        teacher_ckpt, map_ckpt = checkpoints(args, work)
        fm("fm-export", str(teacher_ckpt), "--out", str(work / "reach.onnx"))
        fm("fm-export", str(map_ckpt), "--out", str(work / "reach-map.onnx"))
        teacher, flow_map = fm_runtime.load(work / "reach.onnx"), fm_runtime.load(work / "reach-map.onnx")
        files = {"map, 1 jump": (flow_map, {}), "velocity, 10 Euler": (teacher, {"steps": 10, "solver": "euler"}),
                 "velocity, 4 Euler": (teacher, {"steps": 4, "solver": "euler"})}
        result = {"machine": machine(), "rows": []}
        quality = {name: success(s, kw) for name, (s, kw) in files.items()}
        for batch, reps in ((1, 300), (64, 60)):
            med, graph = latency(files, batch, reps), graph_call(files, batch, reps)
            base = med["velocity, 10 Euler"]
            for name, (s, kw) in files.items():
                evals = s.nfe(kw.get("steps"), kw.get("solver"))
                row = {"batch": batch, "model": name, "ms": med[name] * 1e3, "samples_per_s": batch / med[name],
                       "speedup_vs_10": base / med[name], "nfe": evals, "graph_ms": graph[name] * evals * 1e3,
                       **quality[name]}
                result["rows"].append(row)
        result["training"] = training_speed(teacher_ckpt, args.train_steps)
    print(f"{'batch':>5}  {'model':<20} {'NFE':>3} {'ms/request':>10} {'of it graph':>11} {'samples/s':>10} "
          f"{'vs 10 evals':>11} {'success':>8} {'left':>6}")
    for r in result["rows"]:
        print(f"{r['batch']:>5}  {r['model']:<20} {r['nfe']:>3} {r['ms']:>10.3f} {r['graph_ms']:>11.3f} {r['samples_per_s']:>10.0f} "
              f"{r['speedup_vs_10']:>10.2f}x {r['success']:>8.1%} {r['left']:>6.1%}")
    print("(of it graph: NFE x one bare session.run of the network at that batch; the rest is the runtime's "
          "per-request work: options, noise, conditions, the solver loop)")
    t = result["training"]
    print(f"training, {args.train_steps} steps each: velocity {t['velocity_s_per_step'] * 1e3:.1f} ms/step, "
          f"map distillation {t['map_s_per_step'] * 1e3:.1f} ms/step ({t['ratio']:.2f}x)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
