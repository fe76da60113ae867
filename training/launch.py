"""The entries of fm-train and fm-export: when the train extra is missing, say so before importing
torch (fm-export --add-divergence needs only onnx)."""
from __future__ import annotations

import importlib.util
import sys

HINT = ("install it in the fm-runtime checkout with: pip install torch==2.13.0 && pip install '.[train]' "
        "(torch first, so that pip takes its CPU build)")


def missing(*modules: str) -> list[str]:
    def absent(m: str) -> bool:
        try:
            return importlib.util.find_spec(m) is None
        except (ImportError, ValueError):
            return True
    return [m for m in modules if absent(m)]


def main(argv: list[str] | None = None) -> None:
    absent = missing("torch", "sklearn")
    if absent:
        print(f"fm-train: error: fm-train needs the train extra ({', '.join(absent)} not installed); {HINT}",
              file=sys.stderr)
        sys.exit(2)
    from .cli import main as run
    run(argv)


def export_main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    needs = ("onnx",) if "--add-divergence" in args else ("onnx", "torch")
    absent = missing(*needs)
    if absent:
        print(f"fm-export: error: fm-export needs the train extra ({', '.join(absent)} not installed); {HINT}",
              file=sys.stderr)
        sys.exit(2)
    from .export_cli import main as run
    run(argv)
