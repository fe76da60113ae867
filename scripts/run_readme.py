"""Run every shell block of README.md as written, top to bottom, in one empty folder, and check
that each command finishes within a time limit.

    python scripts/run_readme.py                 # limit 300 s per command
    python scripts/run_readme.py --limit 120 --keep /tmp/readme-run

Left out, and said so: `pip install` steps (the environment this runs in is the one they make;
CI runs the two quick-start commands on their own, in fresh virtual environments), the test
command (it would run this again), and lines that need a GPU (`--provider cuda`, `--cuda-graph`).
Exit status 0 when every command succeeded within the limit; the slowest commands are printed.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
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
    ap.add_argument("--limit", type=float, default=300.0, help="seconds allowed per command")
    ap.add_argument("--keep", help="run in this folder (created, must be empty) instead of a temporary one")
    args = ap.parse_args()
    script = "".join(runnable(b) for b in shell_blocks(README.read_text()))
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="readme-"))
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        sys.exit(f"{folder} is not empty")
    # bash -x with a clock in the trace prompt: each command's start time, to time them one by one
    (folder / "readme.sh").write_text("set -euo pipefail\nexport PS4='+@${EPOCHREALTIME} '\nset -x\n" + script
                                      + "set +x\n")
    n_cmds = sum(1 for line in script.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    start = time.time()
    p = subprocess.run(["bash", "readme.sh"], cwd=folder, capture_output=True, text=True,
                       timeout=args.limit * max(1, n_cmds))
    marks = [(float(m.group(1)), m.group(2)) for m in re.finditer(r"^\++@([\d.]+) (.*)$", p.stderr, flags=re.M)]
    marks.append((start + (time.time() - start), "(end)"))
    times = [(b[0] - a[0], a[1]) for a, b in zip(marks, marks[1:]) if not a[1].startswith("set +x")]
    slow = [t for t in times if t[0] > args.limit]
    for sec, cmd in sorted(times, reverse=True)[:8]:
        print(f"{sec:7.1f} s  {cmd[:110]}")
    print(f"{len(times)} commands in {time.time() - start:.0f} s in {folder}; limit {args.limit:.0f} s each")
    if p.returncode != 0:
        print(f"README command failed (exit {p.returncode}):\n{p.stderr[-3000:]}", file=sys.stderr)
        return 1
    if slow:
        print(f"{len(slow)} command(s) over the limit: {[c for _, c in slow]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
