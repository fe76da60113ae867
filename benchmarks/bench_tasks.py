"""The three conditioned task models, by their default recipes: train, export, score, time.

    python benchmarks/bench_tasks.py --out tasks-out          # about 5 CPU minutes on 2 cores
    python benchmarks/bench_tasks.py --tasks reach --out tasks-out --docs docs

For each task (reach, tts, digits-text): `fm-train fit --data TASK` (default recipe), `fm-export`,
`fm-train score` (held-out requests; reach also against an MSE regression net of the same size),
the file size, and samples per second on this CPU from the Python runtime and from onnxruntime-node
(the same requests; the same samples). Writes TASK.json and the pictures into --out (and copies
the pictures into --docs when given); prints one table per task.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import fm_runtime

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.node_bridge import JS, node_sample  # noqa: E402
from training.tasks import digits_text, reach, tts  # noqa: E402
from training.tasks.score import SCORES  # noqa: E402


def cli(*args: str) -> float:
    clock = time.perf_counter()
    subprocess.run([sys.executable, "-m", *args], check=True, cwd=ROOT)
    return time.perf_counter() - clock


def request(task: str, n: int, rng) -> dict:
    """n rows of one request for timing: reach n observations; tts one utterance of 8 tokens for
    n rows; digits-text one prompt for n rows."""
    if task == "reach":
        return {"cond": {"obs": reach.observations(n, rng)}}
    if task == "tts":
        r = tts.requests(1, rng, 8)
        return {"n": n, "cond": {"tokens": r["tokens"][0], "speaker": r["speaker"][0]}, "guidance": 2.0}
    return {"n": n, "cond": {"text": digits_text.encode(["seven"])[0]}, "guidance": 3.0}


def speed(task: str, path: Path, work: Path) -> dict:
    """Samples per second at batch 1 and 256 (the file's default solver): the Python runtime, and
    onnxruntime-node timed inside node (median of the sample() calls after a warm-up)."""
    s, out = fm_runtime.load(path), {}
    for n in (1, 256):
        req = request(task, n, np.random.default_rng(0))
        reps = max(5, 300 // n)
        times = []
        for _ in range(reps + 1):
            clock = time.perf_counter()
            s.sample(**req, seed=0)
            times.append(time.perf_counter() - clock)
        out[f"python_batch_{n}"] = n / float(np.median(times[1:]))
        ms = [r[2] for r in node_sample(work, [(path, [dict(req, seed=0)] * (reps + 1))], timing=True)]
        out[f"node_batch_{n}"] = n / (float(np.median(ms[1:])) / 1e3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="tasks-out")
    ap.add_argument("--docs", help="copy the pictures here too")
    ap.add_argument("--tasks", nargs="*", default=list(SCORES))
    ap.add_argument("--reuse", action="store_true", help="use the checkpoints and files already in --out")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    have_node = shutil.which("node") and (JS / "node_modules" / "onnxruntime-node").is_dir()
    for task in args.tasks:
        ckpt, onnx_file, picture = out / f"{task}.ckpt", out / f"{task}.onnx", out / f"{task}.png"
        reuse = args.reuse and onnx_file.exists()
        fit_s = None if reuse else cli("training.cli", "fit", "--data", task, "--out", str(ckpt))
        export_s = None if reuse else cli("training.export_cli", str(ckpt), "--out", str(onnx_file))
        options = {"baseline": True} if task == "reach" else {}
        scores = SCORES[task](str(onnx_file), plot=str(picture), **options)
        from training.checkpoint import load_checkpoint
        result = {"task": task, "train_seconds": load_checkpoint(ckpt)[1]["train_seconds"],
                  "fit_seconds_wall": fit_s, "export_seconds_wall": export_s,
                  "file_bytes": onnx_file.stat().st_size, "scores": scores,
                  "speed": speed(task, onnx_file, out) if have_node else {}}
        (out / f"{task}.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=1))
        if args.docs:
            shutil.copy(picture, Path(args.docs) / f"task-{task}.png")


if __name__ == "__main__":
    main()
