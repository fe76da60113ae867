"""Lines of code per package and per file, against a budget for the whole repository's shipped code.

A line counts when it is neither blank nor a comment (docstrings count: they are read too). Files
are cut by concept, not by a line ceiling; what is held down is the total, as tinygrad's sz.py
does. `--check` exits 1 when a package is over its budget.

    python scripts/lines.py            # the table, largest files first
    python scripts/lines.py --check    # and the budgets
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# code lines each package may have; raise one only with a reason in the commit that does
BUDGETS = {"fm_runtime": 6500, "js/src": 3000, "training": 3800, "export": 2800}
COMMENT = {".py": "#", ".mjs": "//"}


def code_lines(path: Path) -> int:
    mark = COMMENT[path.suffix]
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines()
               if line.strip() and not line.strip().startswith(mark))


def count() -> dict[str, dict[str, int]]:
    """{package: {file: code lines}} for every shipped source file."""
    out = {}
    for package in BUDGETS:
        files = sorted(p for p in (ROOT / package).rglob("*") if p.suffix in COMMENT and "__pycache__" not in p.parts)
        out[package] = {str(p.relative_to(ROOT)): code_lines(p) for p in files}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a package is over its budget")
    parser.add_argument("--top", type=int, default=15, help="files to list per package")
    args = parser.parse_args(argv)
    over = []
    for package, files in count().items():
        total = sum(files.values())
        print(f"{package}: {total} lines in {len(files)} files (budget {BUDGETS[package]})")
        for name, n in sorted(files.items(), key=lambda kv: -kv[1])[:args.top]:
            print(f"  {n:5d}  {name}")
        if total > BUDGETS[package]:
            over.append(f"{package} has {total} lines, over its budget of {BUDGETS[package]}")
    print(f"total: {sum(sum(f.values()) for f in count().values())} lines")
    for line in over:
        print(line, file=sys.stderr)
    return 1 if args.check and over else 0


if __name__ == "__main__":
    sys.exit(main())
