"""Write docs/cli.md from the commands' own --help, so the page says what the tools do
(tests/test_docs.py fails when it is out of date: rerun `python scripts/cli_docs.py`)."""
from __future__ import annotations

import sys
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "cli.md"
sys.path.insert(0, str(REPO))


def commands():
    from export.cli import cli as export_cli
    from fm_runtime.cli.main import cli as run_cli
    from training.cli import cli as train_cli
    return [("fm-run", run_cli, "numpy + onnxruntime: sample, inspect, measure and serve model files"),
            ("fm-train", train_cli, "torch: train, reflow, evaluate and score models (the train extra)"),
            ("fm-export", export_cli, "torch + onnx: write a verified model file (the train extra)")]


def help_text(cmd: click.Command, path: str) -> str:
    ctx = click.Context(cmd, info_name=path, terminal_width=100, max_content_width=100)
    return cmd.get_help(ctx)


def page() -> str:
    lines = ["# Command-line reference", "",
             "Every command's `--help`, as the installed tools print it (written by `scripts/cli_docs.py`).", ""]
    for name, cli, what in commands():
        lines += [f"## {name}", "", what + ".", "", "```text", help_text(cli, name), "```", ""]
        if isinstance(cli, click.Group):
            for sub in sorted(cli.commands):
                lines += [f"### {name} {sub}", "", "```text", help_text(cli.commands[sub], f"{name} {sub}"), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    OUT.write_text(page())
    print(f"{OUT}: {len(OUT.read_text().splitlines())} lines")
