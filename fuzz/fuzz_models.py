"""Mutation fuzzer over model-file bytes, run against `fm-run sample` and `fm-run info`.

    python -m fuzz.fuzz_models --cases 10000 --seed 0

Each case mutates a valid model file (bit flips, overwritten, zeroed, inserted, duplicated or
deleted byte ranges, truncation) and runs the CLI on it in a worker process. A case fails if the
worker dies (crash), runs past the time limit (hang), prints a traceback or an "internal error"
(exit 1: something not foreseen), exits with a code the README does not document, or leaves an
output file behind after failing. Prints the counts; exit status 1 if any case failed.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DOCUMENTED = {0, 2, 3, 4, 5, 6, 7, 9, 124}


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """Half the cases keep the length (framing survives, so the damage reaches the graph, the
    weights and the metadata text); the rest also insert, delete, duplicate and truncate."""
    b = bytearray(data)
    meta = data.find(b"fm.")
    for _ in range(int(rng.integers(1, 4))):
        op = int(rng.integers(3) if rng.random() < 0.5 else rng.integers(8))
        if op == 7 and meta >= 0:                           # printable junk in the metadata text
            j = int(rng.integers(meta, len(b)))
            n = int(rng.integers(1, 5))
            b[j:j + n] = bytes(rng.choice(list(b'{}[]":,0123456789.-eE aZ'), n).tolist())[:len(b) - j]
            continue
        i = int(rng.integers(len(b))) if b else 0
        span = int(rng.integers(1, 64))
        if op == 0 and b:                                   # flip a few bits
            for _ in range(int(rng.integers(1, 9))):
                j = int(rng.integers(len(b)))
                b[j] ^= 1 << int(rng.integers(8))
        elif op == 1:                                       # overwrite with random bytes
            b[i:i + span] = rng.bytes(span)
        elif op == 2:                                       # zero a range
            b[i:i + span] = bytes(min(span, len(b) - i))
        elif op == 3:                                       # insert random bytes
            b[i:i] = rng.bytes(span)
        elif op == 4:                                       # duplicate a chunk
            b[i:i] = b[i:i + span]
        elif op == 5:                                       # delete a range
            del b[i:i + span]
        elif op == 6:                                       # truncate
            del b[i:]
    return bytes(b)


def run_case(model_bytes: bytes, argv_tail: list[str]) -> tuple[int, str, bool]:
    """In a worker: write the model, run fm-run on it, report (exit code, stderr, output left)."""
    from fm_runtime.cli.main import cli
    from fm_runtime.tools.runner import run_cli

    with tempfile.TemporaryDirectory() as d:
        model = Path(d) / "m.onnx"
        model.write_bytes(model_bytes)
        out = Path(d) / "out" / "x.npy"
        out.parent.mkdir()
        argv = [a.replace("{model}", str(model)).replace("{out}", str(out)) for a in argv_tail]
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = run_cli(cli, "fm-run", argv)
            except BaseException as e:   # a traceback would have reached the user
                return -1, f"escaped: {type(e).__name__}: {e}", False
        left = any(out.parent.iterdir())
        return code, err.getvalue(), left


COMMANDS = [
    ["sample", "{model}", "-n", "16", "--seed", "0", "--out", "{out}"],
    ["info", "{model}"],
    ["sample", "{model}", "-n", "3", "--steps", "2", "--solver", "rk4"],
]


def judge(code: int, err: str, left: bool) -> str | None:
    if code == -1 or "Traceback" in err:
        return "traceback"
    if code not in DOCUMENTED:
        return f"exit {code}"
    if code != 0 and left:
        return "partial output"
    if code != 0 and len(err.strip().splitlines()) != 1:
        return "not one line"
    return None


def fuzz(seeds: list[bytes], cases: int, seed: int, timeout: float = 30.0, workers: int = 2,
         log=print) -> dict:
    rng = np.random.default_rng(seed)
    counts = {"cases": 0, "crashes": 0, "hangs": 0, "tracebacks": 0, "other failures": 0, "ok exits": 0}
    examples: list[str] = []
    pool = cf.ProcessPoolExecutor(workers)
    start = time.time()
    try:
        batch = 32
        for first in range(0, cases, batch):
            jobs = []
            for _ in range(min(batch, cases - first)):
                data = mutate(seeds[int(rng.integers(len(seeds)))], rng)
                argv = COMMANDS[int(rng.integers(len(COMMANDS)))]
                jobs.append((pool.submit(run_case, data, argv), argv[0]))
            for fut, cmd in jobs:
                counts["cases"] += 1
                try:
                    code, err, left = fut.result(timeout=timeout)
                except cf.TimeoutError:
                    counts["hangs"] += 1
                    examples.append(f"hang in {cmd}")
                    pool = _restart(pool, workers)
                    continue
                except cf.process.BrokenProcessPool:
                    counts["crashes"] += 1
                    examples.append(f"crash in {cmd}")
                    pool = _restart(pool, workers)
                    continue
                verdict = judge(code, err, left)
                if verdict is None:
                    counts["ok exits"] += code == 0
                elif verdict == "traceback":
                    counts["tracebacks"] += 1
                    examples.append(f"{cmd}: {err.strip()[:200]}")
                else:
                    counts["other failures"] += 1
                    examples.append(f"{cmd}: {verdict}: {err.strip()[:200]}")
            if log and counts["cases"] % 1000 < batch:
                log(f"{counts['cases']} cases, {time.time() - start:.0f} s: {counts}")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    counts["seconds"] = round(time.time() - start, 1)
    counts["examples"] = examples[:20]
    return counts


def _restart(pool: cf.ProcessPoolExecutor, workers: int) -> cf.ProcessPoolExecutor:
    for p in list(getattr(pool, "_processes", {}).values()):
        p.kill()
    pool.shutdown(wait=False, cancel_futures=True)
    return cf.ProcessPoolExecutor(workers)


def seed_models() -> list[bytes]:
    import fm_runtime
    return [fm_runtime.default_model_path().read_bytes()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", action="append", default=[], help="extra seed model files")
    args = ap.parse_args()
    seeds = seed_models() + [Path(m).read_bytes() for m in args.model]
    counts = fuzz(seeds, args.cases, args.seed)
    print(counts)
    failed = counts["crashes"] + counts["hangs"] + counts["tracebacks"] + counts["other failures"]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
