"""Flow maps trained here (training/flowmap.py) against their velocity teachers, in torch on one
thread: each map sampled by jumps (training.sample.jump_sample), each teacher by Euler steps.

    python benchmarks/bench_flowmap_training.py                      # all parts (~20 min on 2 cores)
    python benchmarks/bench_flowmap_training.py --part moons --part reach --ckpt-dir /tmp/maps
    python benchmarks/bench_flowmap_training.py --reuse-teachers --ckpt-dir /tmp/maps   # teachers already there

Parts: moons (energy distance of the map at 1, 2, 4 jumps and the teacher at 1, 2, 4, 10 Euler
steps, N points against N fresh data points, mean of 3 draws, beside the noise floor of two
fresh data draws); reach (success and left share on 1000 held-out observations, fm-train
score's); digits-text (a classifier's hit rate, 50 per prompt, guidance 1 and 3: the map at 1
jump, the teacher at its default 16 midpoint steps); tts (token and speaker accuracy over three
lengths, guidance 1 and 2: the map at 1 jump, the teacher at its default 10 Euler steps, and at
guidance 1 by the 16 midpoint steps the map was distilled from);
meanflow (maps from scratch by MeanFlow on moons and reach, scored as above). Each part prints
the training seconds of the teacher and of the map. The trained checkpoints are kept in
--ckpt-dir (NAME-teacher.ckpt, NAME-map.ckpt, NAME-meanflow.ckpt).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from training.checkpoint import load_checkpoint
from training.evaluate import nfe_table
from training.flowmap import default_recipe, distill, meanflow
from training.sample import jump_sample, sample
from training.tasks.fit import fit_task, task_recipe
from training.tasks.score import score
from training.train import fit

PARTS = ("moons", "reach", "digits-text", "tts", "meanflow")
N, DRAWS = 5000, 3


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else "?"
    return (f"CPU {cpu}, {os.cpu_count()} cores; torch {torch.__version__}, {torch.get_num_threads()} intra-op "
            f"thread(s), {torch.get_num_interop_threads()} inter-op; load average {os.getloadavg()}")


def teacher(name: str, ckpt: Path, reuse: bool) -> tuple[Path, float]:
    """The velocity teacher's checkpoint (trained by fm-train fit's defaults) and its training seconds."""
    path = ckpt / f"{name}-teacher.ckpt"
    if not (reuse and path.exists()):
        if name in ("reach", "tts", "digits-text"):
            fit_task(name, task_recipe(name, {}), out=str(path))
        else:
            fit(name, out=path)
    return path, float(load_checkpoint(path)[1]["train_seconds"])


def distilled(name: str, ckpt: Path, reuse: bool) -> tuple[Path, float, float]:
    path, teacher_seconds = teacher(name, ckpt, reuse)
    out = ckpt / f"{name}-map.ckpt"
    _, config = distill(path, default_recipe(name), out=out)
    return out, teacher_seconds, config["flow_map"]["seconds"]


def moons(ckpt: Path, reuse: bool) -> dict:
    path, t_sec, m_sec = distilled("moons", ckpt, reuse)
    vel, _ = load_checkpoint(ckpt / "moons-teacher.ckpt")
    flow, _ = load_checkpoint(path)
    m = nfe_table(lambda z, k, s: jump_sample(flow, z, k), "moons", N, [1, 2, 4], ["euler"], repeats=DRAWS)
    v = nfe_table(lambda z, k, s: sample(vel, z, k, s), "moons", N, [1, 2, 4, 10], ["euler"], repeats=DRAWS)
    return {"floor": m["floor_energy_distance"], "floor_spread": m["floor_spread"],
            "map_jumps": {r["nfe"]: r["energy_distance"] for r in m["rows"]},
            "velocity_euler": {r["nfe"]: r["energy_distance"] for r in v["rows"]},
            "teacher_seconds": t_sec, "map_seconds": m_sec}


def reach(ckpt: Path, reuse: bool) -> dict:
    path, t_sec, m_sec = distilled("reach", ckpt, reuse)
    return {"map": score(str(path))["flow"], "velocity": score(str(ckpt / "reach-teacher.ckpt"))["flow"],
            "teacher_seconds": t_sec, "map_seconds": m_sec}


def digits_text(ckpt: Path, reuse: bool) -> dict:
    path, t_sec, m_sec = distilled("digits-text", ckpt, reuse)
    one = score(str(path))["jumps"][1]
    vel = score(str(ckpt / "digits-text-teacher.ckpt"))
    return {"map_1_jump": one["guidance"], "velocity_16_midpoint": vel["guidance"],
            "teacher_seconds": t_sec, "map_seconds": m_sec}


def _tts_mean(result: dict) -> dict:
    rows = result["by_length"].values()
    return {g: {k: float(np.mean([r[g][k] for r in rows])) for k in ("token_accuracy", "speaker_accuracy")}
            for g in ("guidance 1", "guidance 2")}


def _tts_converged(path: Path) -> float:
    """The teacher's token accuracy at guidance 1 by its distillation solve (16 midpoint steps),
    on score_tts's requests."""
    from training.tasks import tts as tts_task
    from training.tasks.native import CheckpointSampler
    from training.tasks.score import HELD_OUT_SEED
    s, rng, acc = CheckpointSampler(str(path)), np.random.default_rng(HELD_OUT_SEED), []
    for length in (2, 8, 16):
        req = tts_task.requests(200, rng, length)
        mel = s.sample(cond=req, steps=16, solver="midpoint")
        acc.append(tts_task.scores(mel, req["tokens"], req["speaker"])["token_accuracy"])
    return float(np.mean(acc))


def tts(ckpt: Path, reuse: bool) -> dict:
    path, t_sec, m_sec = distilled("tts", ckpt, reuse)
    return {"map_1_jump": _tts_mean(score(str(path))["jumps"][1]),
            "velocity_10_euler": _tts_mean(score(str(ckpt / "tts-teacher.ckpt"))),
            "velocity_16_midpoint_token_accuracy_g1": _tts_converged(ckpt / "tts-teacher.ckpt"),
            "teacher_seconds": t_sec, "map_seconds": m_sec}


def meanflow_part(ckpt: Path, reuse: bool) -> dict:
    out = {}
    model, config = meanflow("moons", steps=8000, batch_size=1024, lr=1e-3, out=ckpt / "moons-meanflow.ckpt")
    m = nfe_table(lambda z, k, s: jump_sample(model, z, k), "moons", N, [1, 2, 4], ["euler"], repeats=DRAWS)
    out["moons"] = {"jumps": {r["nfe"]: r["energy_distance"] for r in m["rows"]}, "floor": m["floor_energy_distance"],
                    "seconds": config["flow_map"]["seconds"]}
    r = task_recipe("reach", {})
    _, config = meanflow("reach", steps=3000, batch_size=r.batch_size, lr=1e-3, width=r.width, depth=r.depth,
                         out=ckpt / "reach-meanflow.ckpt")
    out["reach"] = {"score": score(str(ckpt / "reach-meanflow.ckpt"))["flow"], "seconds": config["flow_map"]["seconds"]}
    return out


RUN = {"moons": moons, "reach": reach, "digits-text": digits_text, "tts": tts, "meanflow": meanflow_part}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", action="append", choices=PARTS, help="repeat for several [default: all]")
    ap.add_argument("--ckpt-dir", default="flowmap-checkpoints", help="where the checkpoints are written")
    ap.add_argument("--reuse-teachers", action="store_true", help="take NAME-teacher.ckpt from --ckpt-dir if there")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ckpt = Path(args.ckpt_dir)
    ckpt.mkdir(parents=True, exist_ok=True)
    print(machine(), flush=True)
    results = {}
    for part in args.part or PARTS:
        start = time.perf_counter()
        results[part] = RUN[part](ckpt, args.reuse_teachers)
        print(f"{part} ({time.perf_counter() - start:.0f} s): {json.dumps(results[part])}", flush=True)
    print(f"load average at the end {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
