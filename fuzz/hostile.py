"""Run fm-run on every crafted hostile model file (fuzz/hostile_files.py) and check each run.

    python -m fuzz.hostile [FOLDER] [--json results.json]

Every file goes through `fm-run sample`, `info`, `logprob`, `bench` and `sample --grid`, each under
the default memory budget and a time limit (--timeout for the run; the process is killed and the
case fails if it outlives that by far). A run passes when it exits with a documented code other
than 1 (and the file's expected code for `sample` where one is stated), writes at most one line
to stderr with no traceback and no control characters or escape sequences on either stream,
leaves no file behind when it fails, and its peak memory stays under PEAK_BOUND. Prints a table
of classes x (files, exit codes, worst peak memory, worst time); exit status 1 if any run failed.

Each run is a fork of this process with fm_runtime already imported (no session opened before
the fork), so some 270 runs take about a minute, not five.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fm_runtime.errors import EXIT_INTERNAL

DOCUMENTED = {0, 2, 3, 4, 5, 6, 7, 9, 124, 130}
PEAK_BOUND = 512 << 20           # peak RSS of any run (files under 1 MiB, default budget), bytes
RUN_TIMEOUT = 3.0                # --timeout given to every run
KILL_AFTER = 30.0                # a run still alive after this is a hang: killed, and a failure
COMMANDS = ("sample", "info", "logprob", "bench", "grid")
RATE_BOUND = 1000                # % of the matmul rate no bench line may print (a small net in cache
                                 # beats the big-matmul yardstick, but not tenfold)


def argv_for(command: str, model: str, work: Path) -> list[str]:
    limits = ["--timeout", str(RUN_TIMEOUT)]          # and the default memory budget
    if command == "sample":
        return ["sample", model, "-n", "64", "--seed", "0", "--out", str(work / "x.npy"), *limits]
    if command == "info":
        return ["info", model, *limits]
    if command == "logprob":
        return ["logprob", model, str(work.parent / "data.npy"), "--out", str(work / "logp.npy"), *limits]
    if command == "grid":
        return ["sample", model, "--grid", str(work / "g.png"), *limits]
    return ["bench", model, "--batch", "4", "--steps", "1", "--solver", "euler", *limits]


def _fm_run(argv: list[str]) -> None:
    from fm_runtime.cli.main import main
    main(argv)


def _kib(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def run_forked(argv: list[str], cwd: Path, entry=_fm_run, name: str = "fm-run") -> dict:
    """`name argv` (entry(argv)) in a forked child: exit code, stdout, stderr, peak RSS (bytes: the
    child's own high-water mark, reset at the fork, so the pages it shares with this process
    count as a fresh process's imports would), what the run took on top of the forked process
    (bytes), seconds."""
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    taken_r, taken_w = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:                                     # the child: become `name argv`
        code = EXIT_INTERNAL
        os.close(taken_r)
        base = 0
        try:
            os.chdir(cwd)
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            resource.setrlimit(resource.RLIMIT_AS, (16 << 30, 16 << 30))    # a backstop only
            with open("/proc/self/clear_refs", "w") as f:   # 5: reset the peak RSS to the current
                f.write("5")
            base = _kib("VmRSS")
            sys.argv = [name, *argv]
            entry(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else EXIT_INTERNAL
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.write(taken_w, f"{_kib('VmHWM') * 1024} {max(0, _kib('VmHWM') - base) * 1024}".encode())
            os._exit(code)
    os.close(taken_w)
    killed = False
    while True:
        done, status, _ = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - start > KILL_AFTER:
            os.kill(pid, signal.SIGKILL)
            killed = True
        time.sleep(0.005)
    seconds = time.monotonic() - start
    peak, taken = (os.read(taken_r, 64).decode() or "0 0").split()
    os.close(taken_r)
    out.seek(0)
    err.seek(0)
    code = os.waitstatus_to_exitcode(status)
    return {"rc": "killed (hang)" if killed else code, "stdout": out.read().decode("utf-8", "replace"),
            "stderr": err.read().decode("utf-8", "replace"), "peak": int(peak), "taken": int(taken),
            "seconds": seconds}


def problems(r: dict, command: str, expect: int | dict | None, work: Path) -> list[str]:
    found = []
    if r["rc"] not in DOCUMENTED or r["rc"] == EXIT_INTERNAL:
        found.append(f"exit {r['rc']}")
    want = expect.get(command) if isinstance(expect, dict) else expect if command == "sample" else None
    if want is not None and r["rc"] != want:
        found.append(f"exit {r['rc']}, expected {want}")
    if r["stderr"].count("\n") > 1:
        found.append("more than one stderr line")
    if "Traceback" in r["stderr"] + r["stdout"]:
        found.append("traceback")
    text = r["stderr"] + r["stdout"]
    if any(not (c.isprintable() or c == "\n") for c in text):
        found.append("control characters on the terminal")
    left = sorted(p.name for p in work.iterdir())
    if r["rc"] != 0 and left:
        found.append(f"left {left} behind")
    if r["peak"] > PEAK_BOUND:
        found.append(f"peak memory {r['peak'] >> 20} MiB")
    rates = [float(w[1:-1]) for w in r["stdout"].split() if w.startswith("(") and w.endswith("%")]
    if any(rate > RATE_BOUND for rate in rates):
        found.append(f"a rate of {max(rates):.3g}% of the matmul rate")
    return found


def run_corpus(folder: Path) -> list[dict]:
    from fuzz.hostile_files import write_corpus
    folder = folder.resolve()
    files = write_corpus(folder / "models")
    np.save(folder / "data.npy", np.random.default_rng(0).standard_normal((64, 2)).astype(np.float32))
    import fm_runtime.cli.main  # noqa: F401  imported once, before the forks
    results = []
    for f in files:
        for command in COMMANDS:
            work = folder / "work"
            work.mkdir(exist_ok=True)
            r = run_forked(argv_for(command, f["path"], work), folder)
            r.update(f, command=command, problems=problems(r, command, f["expect"], work))
            for p in work.iterdir():
                p.unlink()
            results.append(r)
    return results


def table(results: list[dict]) -> str:
    lines = ["| class | files | runs | exit codes (count) | worst peak MiB | worst s | failed runs |",
             "|---|---|---|---|---|---|---|"]
    for cls in dict.fromkeys(r["class"] for r in results):
        rs = [r for r in results if r["class"] == cls]
        codes = {}
        for r in rs:
            codes[r["rc"]] = codes.get(r["rc"], 0) + 1
        lines.append(f"| {cls} | {len({r['name'] for r in rs})} | {len(rs)} | "
                     f"{', '.join(f'{c} ({n})' for c, n in sorted(codes.items(), key=str))} | "
                     f"{max(r['peak'] for r in rs) / 2**20:.0f} | {max(r['seconds'] for r in rs):.2f} | "
                     f"{sum(bool(r['problems']) for r in rs)} |")
    return "\n".join(lines)


def corpus_main(doc: str, run, names: dict | None = None) -> None:
    """The command line of a corpus runner: [FOLDER] [--json FILE]; run(folder) -> results; prints
    the table (its column names replaced as `names` says) and the failures; exit status 1 if any."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("folder", nargs="?", help="where to write the corpus [default: a temporary folder]")
    ap.add_argument("--json", help="write every run's result here")
    a = ap.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        results = run(Path(a.folder or tmp))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    text = table(results)
    for old, new in (names or {}).items():
        text = text.replace(old, new, 1)
    print(text)
    bad = [r for r in results if r["problems"]]
    for r in bad:
        print(f"FAIL {r['class']}/{r['name']} {r['command']}: {'; '.join(r['problems'])}: {r['stderr'].strip()[:200]}")
    print(f"{len(results)} runs on {len({r['path'] for r in results})} files, {len(bad)} failed")
    sys.exit(1 if bad else 0)


def main() -> None:
    corpus_main(__doc__, run_corpus)


if __name__ == "__main__":
    main()
