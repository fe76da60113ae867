"""fm-export: checkpoint -> one verified, self-describing ONNX file."""
from __future__ import annotations

import sys

import click

from fm_runtime.errors import run_cli
from fm_runtime.io import check_writable
from fm_runtime.solvers import DEFAULT_SOLVER, DEFAULT_STEPS, MAX_STEPS, SOLVERS


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="ONNX file to write (weights inside; no external-data sidecar).")
@click.option("--default-solver", type=click.Choice(sorted(SOLVERS)), default=DEFAULT_SOLVER,
              show_default=True, help="Solver fm-run uses for this model when none is given.")
@click.option("--default-steps", type=click.IntRange(1, MAX_STEPS), default=DEFAULT_STEPS, show_default=True,
              help="Steps fm-run uses for this model when none are given.")
@click.option("--bake", metavar="SOLVER:STEPS",
              help="Write a baked sampler instead: the whole fixed-step solve (e.g. midpoint:8) "
                   "unrolled into one graph, noise z -> samples x, run with a single call.")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="fp16: weights and compute in half precision where onnxruntime supports it; "
                   "inputs and outputs stay float32.")
@click.option("--quantize", type=click.Choice(["int8"]),
              help="int8: dynamic quantisation of the matmuls.")
@click.option("--format", "fmt", type=click.Choice(["onnx", "ort"]), default="onnx", show_default=True,
              help="ort: onnxruntime's mobile format, plus OUT.required_operators.config for reduced builds.")
def cli(checkpoint, out, default_solver, default_steps, bake, precision, quantize, fmt):
    """Export CHECKPOINT's velocity network to ONNX with the fm.* metadata contract
    (docs/contract.md), after checking it: onnx.checker, then onnxruntime against torch on random
    inputs at batch sizes 1, 7 and 256. On any mismatch nothing is written (exit code 8).

    \b
    Example:
      fm-export moons.ckpt --out moons.onnx
      fm-export moons.ckpt --bake midpoint:8 --out moons-mid8.onnx
      fm-export moons.ckpt --precision fp16 --out moons-fp16.onnx
      fm-export moons.ckpt --bake midpoint:8 --quantize int8 --format ort --out moons-mid8-int8.ort
      fm-run info moons.onnx
    """
    from .onnx_export import export_checkpoint

    from .bake import parse_bake

    check_writable(out)
    if bake:
        try:
            parse_bake(bake)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--bake") from None
    r = export_checkpoint(checkpoint, out, default_solver=default_solver, default_steps=default_steps,
                          bake=bake, precision=precision, quantize=quantize, fmt=fmt)
    what = f"baked {bake} sampler" if bake else "velocity model"
    click.echo(f"exported {what} {checkpoint} -> {r.path}: {r.size_bytes / 1024:.1f} KiB, opset {r.opset}, "
               f"onnxruntime vs torch max |diff| {r.max_abs_diff:.2e} at batch sizes "
               f"{', '.join(map(str, r.batches))}", err=True)
    if r.variant and "vs_fp32" in r.variant:
        from fm_runtime.contract import describe_variant
        click.echo(f"variant {describe_variant(r.variant)}", err=True)


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_cli(cli, "fm-export", argv))


if __name__ == "__main__":
    main()
