"""fm-export: checkpoint -> one verified, self-describing ONNX file."""
from __future__ import annotations

import sys

import click

from fm_runtime.errors import run_cli
from fm_runtime.io import check_writable
from fm_runtime.solvers import DEFAULT_SOLVER, DEFAULT_STEPS, SOLVERS


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="ONNX file to write (weights inside; no external-data sidecar).")
@click.option("--default-solver", type=click.Choice(sorted(SOLVERS)), default=DEFAULT_SOLVER,
              show_default=True, help="Solver fm-run uses for this model when none is given.")
@click.option("--default-steps", type=click.IntRange(min=1), default=DEFAULT_STEPS, show_default=True,
              help="Steps fm-run uses for this model when none are given.")
def cli(checkpoint, out, default_solver, default_steps):
    """Export CHECKPOINT's velocity network to ONNX with the fm.* metadata contract
    (docs/contract.md), after checking it: onnx.checker, then onnxruntime against torch on random
    inputs at batch sizes 1, 7 and 256. On any mismatch nothing is written (exit code 8).

    \b
    Example:
      fm-export moons.ckpt --out moons.onnx
      fm-run info moons.onnx
    """
    from .onnx_export import export_checkpoint

    check_writable(out)
    r = export_checkpoint(checkpoint, out, default_solver=default_solver, default_steps=default_steps)
    click.echo(f"exported {checkpoint} -> {r.path}: {r.size_bytes / 1024:.1f} KiB, opset {r.opset}, "
               f"onnxruntime vs torch max |diff| {r.max_abs_diff:.2e} at batch sizes "
               f"{', '.join(map(str, r.batches))}", err=True)


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_cli(cli, "fm-export", argv))


if __name__ == "__main__":
    main()
