"""Run every shell block of README.md and of the documentation pages (PAGES, in this order: later
blocks use what earlier ones made) as written, top to bottom, in one empty folder, and check
that each command finishes within a CPU-time limit (CPU, not wall time: a busy machine slows a
command down without making it use more CPU). Each command is printed as it starts.

    python scripts/run_readme.py                 # limit 300 CPU seconds per command
    python scripts/run_readme.py --limit 120 --keep /tmp/readme-run

Left out, and said so: `pip install` steps (the environment this runs in is the one they make;
CI runs the two quick-start commands on their own, in fresh virtual environments), the test
command (it would run this again), and lines that need a GPU (`--provider cuda`, `--cuda-graph`).
Exit status 0 when every command succeeded within the limit; the slowest commands are printed.
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README] + [REPO / "docs" / f"{name}.md" for name in
                    ("performance", "training", "few-step", "flow-maps", "conditioning", "deploy", "javascript",
                     "serve")]
SKIP = (re.compile(r"--provider\s+cuda|--cuda-graph"), re.compile(r"python -m pytest"))


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def runnable(block: str) -> str:
    """The block with install steps, the test command and GPU lines taken out."""
    out = []
    for line in block.splitlines():
        if any(p.search(line) for p in SKIP):
            out.append(f"# (skipped here) {line}")
            continue
        parts = [p.strip() for p in line.split("&&")]
        kept = [p for p in parts if not p.startswith("pip install")]
        out.append(" && ".join(kept) if len(kept) != len(parts) else line)
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=float, default=300.0, help="CPU seconds allowed per command")
    ap.add_argument("--readme", action="append", help="a markdown file to run (repeatable) [default: README.md "
                                                     "and the documentation pages]")
    ap.add_argument("--keep", help="run in this folder (created, must be empty) instead of a temporary one")
    args = ap.parse_args()
    pages = [Path(p) for p in args.readme] if args.readme else PAGES
    script = "".join(runnable(b) for page in pages for b in shell_blocks(page.read_text()))
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="readme-"))
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        sys.exit(f"{folder} is not empty")
    # bash -x whose trace prompt carries the wall clock and the CPU seconds bash's finished children
    # have used so far (/proc/$$/stat fields 16-17, in clock ticks): each command's start, to time
    # them one by one
    (folder / "readme.sh").write_text("set -euo pipefail\n"
                                      "export PS4='+@${EPOCHREALTIME} $(read -ra s < /proc/$$/stat; echo $((s[15] + s[16]))) '\n"
                                      "set -x\n" + script + "set +x\n")
    n_cmds = sum(1 for line in script.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    tick = os.sysconf("SC_CLK_TCK")
    start, marks, err = time.time(), [], []
    p = subprocess.Popen(["bash", "readme.sh"], cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    backstop = threading.Timer(4 * args.limit * max(1, n_cmds), p.kill)     # wall clock: a backstop only
    backstop.start()
    for line in p.stderr:
        err.append(line)
        m = re.match(r"^\++@([\d.]+) (\d+) (.*)$", line)
        if m and not m.group(3).startswith("set +x"):
            marks.append((float(m.group(1)), int(m.group(2)) / tick, m.group(3)))
            print(f"[{time.time() - start:6.0f} s] {m.group(3)[:150]}", flush=True)
    p.wait()
    backstop.cancel()
    marks.append((time.time(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
                  + resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime, "(end)"))
    times = [(b[1] - a[1], b[0] - a[0], a[2]) for a, b in zip(marks, marks[1:])]
    slow = [t for t in times if t[0] > args.limit]
    for cpu, wall, cmd in sorted(times, reverse=True)[:8]:
        print(f"{cpu:7.1f} CPU s {wall:7.1f} s  {cmd[:100]}")
    print(f"{len(times)} commands in {time.time() - start:.0f} s in {folder}; limit {args.limit:.0f} CPU s each")
    p.stderr = "".join(err)
    if p.returncode != 0:
        print(f"README command failed (exit {p.returncode}):\n{p.stderr[-3000:]}", file=sys.stderr)
        return 1
    if slow:
        print(f"{len(slow)} command(s) over the limit: {[c for _, _, c in slow]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
