"""The fm-export command's entry: when the train extra is missing, say so before importing torch
(--add-divergence needs only onnx)."""
from __future__ import annotations

import sys

from training.launch import HINT, missing


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    needs = ("onnx",) if "--add-divergence" in args else ("onnx", "torch")
    absent = missing(*needs)
    if absent:
        print(f"fm-export: error: fm-export needs the train extra ({', '.join(absent)} not installed); {HINT}",
              file=sys.stderr)
        sys.exit(2)
    from .cli import main as run
    run(argv)
