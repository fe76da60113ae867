"""fm-export: any velocity network -> one verified, self-describing ONNX file.

The command lives beside fm-train because it also takes fm-train checkpoints (export_checkpoint.py);
export/ is the library it calls, and never imports training/."""
from __future__ import annotations

import sys
import time

import click

from fm_runtime.solve.solvers import DEFAULT_SOLVER, DEFAULT_STEPS, MAX_STEPS, SOLVERS
from fm_runtime.tools.io import check_writable, end_progress_line, progress_note
from fm_runtime.tools.options import watched_limits
from fm_runtime.tools.runner import run_cli

_CALL_HELP = ("How the network is called: x,t | t,x | cat(x,t) | cat(t,x) | x=,t= (keywords; "
              "sample=x,timestep=t renames them); add y for labels, e.g. x,t,y; an --input by its name, "
              "positionally or as KEYWORD=NAME (mu=, mu=mu); a constant keyword such as return_dict=False "
              "(diffusers: hidden_states=x,timestep=t,encoder_hidden_states=,return_dict=False). A flow map names two times: "
              "x,s,t (start, end), x,s,d (a shortcut model's (t, d), d = t - s); MeanFlow's u(z, r, t) is x,t,s "
              "with --time-convention noise-at-1.")


def _shape(ctx, param, value):
    if value is None:
        return None
    from export.errors import ExportError
    from export.signature import parse_shape
    try:
        return parse_shape(value)
    except ExportError as e:
        raise click.BadParameter(f"one sample's shape as positive integers or symbols, e.g. 2, 1,8,8 or 16,T ({e})") \
            from None


def _pairs(what: str, example: str):
    """A repeatable NAME=VALUE option as {name: value}."""
    def parse(ctx, param, values):
        out = {}
        for value in values:
            name, sep, rest = value.partition("=")
            if not sep or not name.isidentifier() or not rest or name in out:
                raise click.BadParameter(f"{value!r} is not {what} (e.g. {example}), or names {name} twice")
            out[name] = rest
        return out
    return parse


def _symbols(ctx, param, values):
    """--symbol T=MIN:MAX[:MULTIPLE] -> {"T": {"min", "max", "multiple_of"}}."""
    out = {}
    for name, text in _pairs("NAME=MIN:MAX[:MULTIPLE]", "T=4:1024:4")(ctx, param, values).items():
        parts = text.split(":")
        if len(parts) not in (2, 3) or not all(p.isdigit() and int(p) >= 1 for p in parts):
            raise click.BadParameter(f"{name}={text} is not MIN:MAX[:MULTIPLE] with positive integers (e.g. T=4:1024:4)")
        out[name] = dict(zip(("min", "max", "multiple_of"), map(int, parts)))
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source", required=False, type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="ONNX file to write (weights inside; no external-data sidecar).")
@click.option("--module", "factory", metavar="PKG.MOD:FACTORY",
              help="A network trained elsewhere: FACTORY() builds the nn.Module (imported from the current "
                   "folder or PYTHONPATH). Needs --data-shape.")
@click.option("--weights", type=click.Path(dir_okay=False), help="State dict for --module (torch.save file, loaded "
              "with weights_only=True; DDP 'module.' prefixes are stripped).")
@click.option("--weights-key", help="Entry of a --weights checkpoint that holds the state dict (e.g. ema_model).")
@click.option("--path", "prob_path", metavar="NAME|JSON",
              help="The probability path a network trained elsewhere used, recorded in the file: a name (ot, vp, "
                   "cosine, poly) or JSON such as '{\"name\": \"ot\", \"sigma_min\": 0.0}' [default: unknown].")
@click.option("--data-shape", callback=_shape, help="Shape of one sample: 2 for points, 1,8,8 for images, "
              "16,T for 16 channels of a length T each request binds.")
@click.option("--input", "inputs", multiple=True, callback=_pairs("NAME=DTYPE[SHAPE][:ROLE]", "mu=float32[16,T]"),
              help="An extra input of the network, named in --call: NAME=DTYPE[SHAPE][:ROLE], dtype float32 or "
                   "int64, shape per row with symbols shared with --data-shape, role condition (default), "
                   "mask (samples stay 0 where it is 0), guidance (the scale, for guidance-distilled nets) or "
                   "static. Repeatable.")
@click.option("--null", "nulls", multiple=True, callback=_pairs("NAME=NULL", "mu=zeros"),
              help="What classifier-free guidance replaces a condition with: NAME=zeros, NAME=stage (the condition "
                   "stage's output for a request of zeros: the empty prompt) or NAME=FILE.npy (a learned null stored in "
                   "the file, shaped as the input with 1 for each symbol). Repeatable.")
@click.option("--symbol", "symbols", multiple=True, callback=_symbols, metavar="NAME=MIN:MAX[:MULTIPLE]",
              help="Bounds of a symbol of the shapes, e.g. T=4:1024:4 (a request outside them is refused).")
@click.option("--condition-module", metavar="PKG.MOD:FACTORY",
              help="A condition stage: FACTORY() builds the nn.Module run once per request that makes some of the "
                   "inputs (--condition-output) from what a request gives (--condition-input).")
@click.option("--condition-input", "condition_inputs", multiple=True, callback=_pairs("NAME=DTYPE[SHAPE]", "tokens=int64[L]"),
              help="An input of the condition stage, e.g. tokens=int64[L]. Repeatable.")
@click.option("--condition-output", "condition_outputs", multiple=True, metavar="NAME",
              help="An --input the condition stage makes, in the order it returns them. Repeatable.")
@click.option("--time-convention", type=click.Choice(["noise-at-0", "noise-at-1"]), default="noise-at-0",
              show_default=True, help="noise-at-1: the network was trained with noise at t = 1 (pi0, SD3, Flux); "
              "the file keeps t = 0 as noise and negates the velocity.")
@click.option("--time-scale", type=click.FloatRange(0, 1e9, min_open=True), default=1.0, show_default=True,
              help="Multiply the time the network gets (1000 for nets that take sigma * 1000).")
@click.option("--call", default=None, help=_CALL_HELP + "  [default: x,t]")
@click.option("--time", "time_shape", type=click.Choice(["B", "B,1", "scalar"]), default="B", show_default=True,
              help="What t the network takes: one per row [B], a column [B,1], or one scalar per call.")
@click.option("--num-classes", type=click.IntRange(0, 1_000_000), default=0, show_default=True,
              help="Labels 0..C-1 (C = no label, for guidance); the call must pass y.")
@click.option("--add-divergence", is_flag=True,
              help="SOURCE is a velocity .onnx file (fm-export's or anyone's): write it to OUT with the "
                   "divergence graph log-likelihoods need. No torch needed.")
@click.option("--x-name", help="With --add-divergence on a plain ONNX: the input that is x.")
@click.option("--t-name", help="With --add-divergence on a plain ONNX: the input that is t.")
@click.option("--default-solver", type=click.Choice(sorted(SOLVERS)),
              help=f"Solver fm-run uses for this model when none is given [default: {DEFAULT_SOLVER}; a task "
                   "model's own, euler; a flow map's, jump].")
@click.option("--default-steps", type=click.IntRange(1, MAX_STEPS),
              help=f"Steps fm-run uses for this model when none are given [default: {DEFAULT_STEPS}; a task "
                   "model's own, 10; a flow map's, 1].")
@click.option("--schedule", metavar="NAME[:S]",
              help="Time schedule fm-run uses for this model when none is given (uniform, shift:S, sway:S, "
                   "cosine, or times:0,...,1); with --bake, the grid baked into the graph [default: uniform].")
@click.option("--bake", metavar="SOLVER:STEPS",
              help="Write a baked sampler instead: the whole fixed-step solve (e.g. midpoint:8) "
                   "unrolled into one graph, noise z -> samples x, run with a single call; a flow map's "
                   "jump:K (or map:K) unrolls K jumps. A conditioned network's baked graph also takes its "
                   "inputs under their own names (fm-run info prints the exact feed).")
@click.option("--bake-guidance", is_flag=True,
              help="With --bake of a conditioned network: classifier-free guidance inside the graph, against the "
                   "declared nulls (zeros or stored), with the weight as one more input, guidance_scale [B] "
                   "(each evaluation then runs 2B rows).")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="fp16: weights and compute in half precision where onnxruntime supports it; "
                   "inputs and outputs stay float32.")
@click.option("--quantize", type=click.Choice(["int8"]), help="int8: dynamic quantisation of the matmuls; convolutions static (QDQ), "
              "calibrated on the model's own trajectory.")
@click.option("--format", "fmt", type=click.Choice(["onnx", "ort"]), default="onnx", show_default=True,
              help="ort: onnxruntime's mobile format, plus OUT.required_operators.config for reduced builds.")
@click.option("--fuse/--no-fuse", default=True, show_default=True,
              help="Write each self-attention block as onnxruntime's com.microsoft Attention operator (one node "
                   "for about sixteen; see docs/performance.md). --no-fuse keeps standard ONNX operators only, "
                   "for runtimes other than onnxruntime.")
@click.option("--force", is_flag=True,
              help="Write a --precision/--quantize variant even when its measured cost against float32 is over "
                   "budget (energy distance to data up by more than half the noise floor, or samples moved by more "
                   "than 2% of their magnitude); it is printed either way.")
@click.option("--progress/--no-progress", default=None,
              help="Name each stage on stderr as it starts (tracing, the log-likelihood graph, the checks against "
                   "torch, a variant's measurement) [default: on a terminal].")
@watched_limits
def cli(source, out, factory, weights, weights_key, prob_path, data_shape, inputs, nulls, symbols, condition_module,
        condition_inputs, condition_outputs, time_convention, time_scale,
        call, time_shape, num_classes, add_divergence, x_name, t_name, default_solver, default_steps, schedule, bake,
        bake_guidance, precision, quantize, fmt, fuse, force, progress):
    """Export a velocity network to ONNX with the fm.* metadata contract (docs/contract.md),
    after checking it: onnx.checker, then onnxruntime against torch on random inputs at batch
    sizes 1, 7 and 256 (and the log-likelihood graph against torch autodiff). On any mismatch
    nothing is written (exit code 8).

    SOURCE is an fm-train checkpoint (.ckpt) or a torch.export program (.pt2); or give --module
    for any nn.Module, or --add-divergence with an .onnx file.

    \b
    Examples:
      fm-export moons.ckpt --out moons.onnx
      fm-export moons.ckpt --bake midpoint:8 --out moons-mid8.onnx
      fm-export moons-reflow.ckpt --bake midpoint:1 --out moons-1step.onnx
      fm-export moons.ckpt --bake euler:4 --schedule shift:0.5 --out moons-e4.onnx
      fm-export moons.ckpt --precision fp16 --out moons-fp16.onnx
      fm-export --module mynets:make_mlp --weights mlp.pt --data-shape 2 --call "cat(x,t)" --out mlp.onnx
      fm-export --module mynets:make_unet --weights unet.pt --data-shape 1,8,8 --call t,x --out unet.onnx
      fm-export tts.ckpt --bake midpoint:8 --bake-guidance --out tts-baked.onnx
      fm-export --add-divergence plain.onnx --out plain-lp.onnx
      fm-export --module tts:make_decoder --data-shape 16,T --input mu=float32[16,T] --input mask=float32[1,T]:mask \\
                --input spks=float32[8] --call x,mask,mu,t,spks --null mu=zeros --null spks=zeros --out dec.onnx
      fm-run info moons.onnx
    """
    started = time.perf_counter()       # torch, the network and its weights load after this, before the export's clock
    from export.sniff import sniff

    check_writable(out)
    _check_grid(bake, schedule)
    if bool(source) == bool(factory):
        raise click.UsageError("give one network: a SOURCE file (.ckpt, .pt2, or .onnx with --add-divergence) "
                               "or --module PKG.MOD:FACTORY")
    want = ".ort" if fmt == "ort" else ".onnx"
    if not out.lower().endswith(want):
        raise click.BadParameter(f"{out!r}: the file written is {'an ORT-format' if fmt == 'ort' else 'an ONNX'} model; "
                                 f"name it *{want}", param_hint="--out")
    kind = sniff(source) if source else "module"
    foreign = kind in ("module", "pt2")
    conditioned = bool(inputs or nulls or symbols or condition_module or time_convention != "noise-at-0" or time_scale != 1.0
                       or (data_shape and any(isinstance(d, str) for d in data_shape)))
    if not foreign and (weights or weights_key or prob_path or call or num_classes or time_shape != "B" or conditioned):
        raise click.UsageError("--weights, --weights-key, --path, --call, --time, --num-classes, --input, --null, --symbol, "
                               "--time-convention, --time-scale and a symbolic --data-shape describe a network "
                               "trained elsewhere (--module or a .pt2 program); an fm-train checkpoint knows them")
    if kind == "onnx" or add_divergence:
        return _add_divergence(source, out, kind, add_divergence, data_shape, x_name, t_name)
    terminal = sys.stderr.isatty()
    report = (lambda text: progress_note(f"fm-export: {text}", terminal)) if (terminal if progress is None else progress) \
        else None
    if bake_guidance and not bake:
        raise click.UsageError("--bake-guidance puts guidance inside a baked graph; give --bake SOLVER:STEPS too")
    variants = dict(default_schedule=schedule, bake=bake, bake_guidance=bake_guidance, precision=precision, quantize=quantize, fmt=fmt, force=force,
                    fuse=fuse, progress=report,
                    **{k: v for k, v in (("default_solver", default_solver), ("default_steps", default_steps)) if v})
    if foreign:
        if data_shape is None:
            raise click.UsageError("--data-shape is required for a network trained elsewhere (e.g. 2, or 1,8,8)")
        from export.foreign import load_factory, load_program, load_weights
        from export.onnx_export import export_velocity
        net = load_factory(factory) if factory else load_program(source)
        took = load_weights(net, weights, weights_key) if weights else None
        what = (factory or source) + (f" with {weights}" + (f"[{took}]" if took else "") if weights else "")
        extra = dict(inputs=inputs, nulls=nulls, symbols=symbols, time_convention=time_convention,
                     time_scale=time_scale) if conditioned else {}
        extra.update(_condition_stage(condition_module, condition_inputs, condition_outputs))
        r = export_velocity(net, out, data_shape=data_shape, call=call or "x,t", time=time_shape,
                            num_classes=num_classes, architecture={"type": "external", "source": factory or source},
                            path=_prob_path(prob_path), **variants, **extra)
    elif kind == "torch":
        from .export_checkpoint import export_checkpoint
        what = source
        r = export_checkpoint(source, out, **variants)
    else:
        raise click.UsageError(f"{source} is neither an fm-train checkpoint, a .pt2 program nor an ONNX file")
    end_progress_line()
    _summary(r, what, bake, schedule, time.perf_counter() - started)


def _check_grid(bake: str | None, schedule: str | None) -> None:
    """--bake and --schedule parsed before anything loads, each error naming its option."""
    if bake:
        from export.bake import parse_bake
        try:
            parse_bake(bake)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--bake") from None
    if schedule:
        from fm_runtime.solve.schedules import parse_schedule
        try:
            parse_schedule(schedule)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--schedule") from None


def _condition_stage(module: str | None, inputs, outputs) -> dict:
    """export_velocity's condition option from --condition-module/-input/-output, all three or none ({})."""
    if not (module or inputs or outputs):
        return {}
    if not (module and inputs and outputs):
        raise click.UsageError("a condition stage needs --condition-module, --condition-input and --condition-output")
    from export.foreign import load_factory
    return {"condition": {"module": load_factory(module), "inputs": inputs, "outputs": list(outputs)}}


def _summary(r, what: str, bake: str | None, schedule: str | None, total: float) -> None:
    """What was written, the checks' results and any warnings, on stderr."""
    kind_text = (f"baked {bake}{' ' + schedule if schedule else ''} sampler" if bake else
                 "flow map (one evaluation per jump)" if r.flow_map else "velocity model")
    click.echo(f"exported {kind_text} {what} -> {r.path}: {r.size_bytes / 1024:.1f} KiB, opset {r.opset}, "
               f"onnxruntime vs torch max |diff| {r.max_abs_diff:.2e} at batch sizes "
               f"{', '.join(map(str, r.batches))}; log-likelihoods: {r.divergence}; {r.seconds:.1f} s "
               f"({total:.1f} s with loading torch and the network)", err=True)
    if r.output_field:
        click.echo(f"the network's output held the velocity as {r.output_field} (taken from there)", err=True)
    for note in r.warnings:
        click.echo(f"warning: {note}", err=True)
    if r.variant and "vs_fp32" in r.variant:
        from fm_runtime.model.contract import describe_variant
        click.echo(f"variant {describe_variant(r.variant)}", err=True)


def _prob_path(text: str | None) -> dict | None:
    """--path as the fm.path value: a name or a JSON object with one."""
    if text is None:
        return None
    import json
    try:
        value = json.loads(text) if text.lstrip().startswith("{") else {"name": text}
    except ValueError as e:
        raise click.BadParameter(f"not a name or a JSON object ({e})", param_hint="--path") from None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
        raise click.BadParameter("give a name (ot, vp, ...) or a JSON object with a name", param_hint="--path")
    return value


def _add_divergence(source, out, kind, flag, data_shape, x_name, t_name):
    if not flag:
        raise click.UsageError(f"{source} is an ONNX model, already exported: sample it with `fm-run sample "
                               f"{source}`, or add log-likelihoods with `fm-export --add-divergence {source} --out NEW.onnx`")
    if kind != "onnx":
        raise click.UsageError(f"--add-divergence takes a velocity .onnx file; {source} is not ONNX")
    from export.divergence import add_divergence
    info = add_divergence(source, out, data_shape=data_shape, x_name=x_name, t_name=t_name)
    click.echo(f"added the divergence graph: {source} -> {out}; agreement with finite differences of the "
               f"velocity: median {info['median_rel_diff_vs_finite_differences']:.1e}, max "
               f"{info['max_rel_diff_vs_finite_differences']:.1e} (relative)", err=True)


def main(argv: list[str] | None = None) -> None:
    # supervised as fm-run is: Ctrl-C, SIGTERM and --timeout end it within seconds, even inside a
    # long export or divergence check, and leave no partial file
    sys.exit(run_cli(cli, "fm-export", argv, supervised=True))


if __name__ == "__main__":
    main()
