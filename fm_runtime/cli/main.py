"""fm-run: sample and inspect flow-matching model files (numpy + onnxruntime only)."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click
import numpy as np

from .. import __version__
from ..errors import FmError, printable
from ..model.contract import describe_variant, divergence_problem
from ..tools import limits
from ..tools.io import check_writable, load_array, save_npy
from ..tools.options import schedule_of
from ..tools.runner import run_cli
from .options import (
    check_conditioning,
    class_options,
    cond_option,
    describe_logp,
    dims_option,
    load_conditions,
    model_arg,
    open_sampler,
    plain_model_options,
    request_options,
    run_limits,
    times_option,
)
from .sample import sample
from .serve import serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fm-run")
def cli():
    """Sample flow-matching models exported to ONNX, without torch.

    MODEL is an .onnx file written by fm-export (or a plain velocity ONNX plus --dim);
    leave it out to use the small moons model shipped inside the package.

    \b
    Examples:
      fm-run sample -n 1000 --seed 0 --out samples.npy
      fm-run sample moons.onnx -n 300 --steps 8 --solver midpoint --plot traj.png
      fm-run info moons.onnx
      fm-run bench moons.onnx
      fm-run logprob moons.onnx points.npy --out logp.npy
      fm-run serve moons.onnx --port 8000
    """


cli.add_command(sample)
cli.add_command(serve)


@cli.command()
@click.argument("paths", nargs=-1, metavar="[MODEL] DATA")
@click.option("--out", type=click.Path(dir_okay=False),
              help="Write log p(x) of each row here (nats, float64 [n] .npy).")
@request_options("logprob")
@times_option
@class_options
@click.option("--provider", default="cpu", show_default=True, help="onnxruntime execution provider.")
@cond_option
@dims_option
@run_limits
def logprob(paths, out, times, label, labels, provider, cond, null_cond, dim, **asked):
    """Log-likelihood of each row of DATA (.npy [n, *shape]) under MODEL (default: the shipped
    moons model), by the instantaneous change of variables: the data is integrated back to noise
    while the divergence of the velocity is accumulated, log p(x) = log N(x_0) - int_0^1 div v dt.
    Prints the mean in nats and bits per dimension.

    \b
    Examples:
      fm-run logprob points.npy                       # under the shipped moons model
      fm-run logprob moons.onnx points.npy --out logp.npy
      fm-run logprob digits.onnx images.npy --divergence hutchinson --probes 4 --class 3
    """
    if not paths:
        raise click.UsageError("give the data to score: fm-run logprob [MODEL.onnx] DATA.npy (DATA: float32 [n, *shape]; "
                               "MODEL: default the shipped moons model)")
    if len(paths) > 2:
        raise click.UsageError(f"expected [MODEL] DATA, got {len(paths)} paths")
    model, data = (None, paths[0]) if len(paths) == 1 else paths
    if label is not None and labels:
        raise click.UsageError("give --class or --labels, not both")
    if out:
        check_writable(out)
    x = load_array(data, "data", kinds="f")
    y = load_array(labels, "labels", kinds="iu", dtype=np.int64) if labels else None
    sampler = open_sampler(model, provider)
    check_conditioning(sampler, label, y, asked["guidance"], True, None, null_cond)
    asked["schedule"] = schedule_of(asked["schedule"], times)
    clock = time.perf_counter()
    logp = sampler.log_prob(x, labels=label if y is None else y, cond=load_conditions(cond), dims=dim[1],
                            null_cond=load_conditions(null_cond) or None, **asked)
    if out:
        save_npy(out, logp)
    click.echo(f"{len(x):,} rows of shape {list(x.shape[1:])}: "
               f"{describe_logp(sampler, logp, sampler.last_nfe, asked['divergence'], asked['probes'], x[0].size)}, {time.perf_counter() - clock:.2f} s"
               + (f" -> {out}" if out else ""), err=True)
    if not out:
        click.echo("\n".join(f"{v:.6f}" for v in logp[:20]) + (f"\n... ({len(logp) - 20} more; use --out)"
                                                               if len(logp) > 20 else ""))


def _this_cpu(variant: dict) -> str:
    from ..tools.bench import cpu, variant_advice
    model, flags = cpu()
    return f"{printable(model)} {variant_advice(variant, flags)}"


@cli.command()
@model_arg
@click.option("--json", "as_json", is_flag=True, help="Print the declaration as JSON.")
@plain_model_options
@run_limits
def info(model, as_json, dim, x_name, t_name):
    """Show what a model file declares (shape, path, defaults, training summary) and whether it
    samples: a 3-row solve at its defaults, whose failure is shown and sets the exit code.

    \b
    Examples:
      fm-run info                 # the shipped moons model
      fm-run info moons.onnx --json
    """
    s = open_sampler(model, "cpu", dim, x_name, t_name)
    spec = s.spec
    trial = _trial(s)
    inputs = ({"z": f"{spec.z_name} float32[B, {_dims(spec.data_shape)}]"} if s.baked else
              {"x": spec.x_name, "t": spec.t_name + ("[B,1]" if spec.t_rank == 2 else "[B]")})
    if spec.flow_map:
        inputs = {"x": inputs["x"], "s": spec.s_name + inputs["t"][len(spec.t_name):] + " (start time)",
                  "t": inputs["t"] + " (end time)"}
    if spec.num_classes and not s.baked:
        inputs["y"] = f"{spec.y_name}[B] int64"
    staged = spec.stage.get("outputs", [])
    for item in spec.inputs:      # contract version 4: what --cond gives (or the runtime makes)
        made = {"mask": ", all ones when not given", "guidance": ", the --guidance weight"}.get(item["role"], "")
        made += ", or from the condition stage" if item["name"] in staged else ""
        inputs[item["name"]] = (f"{item['dtype']}[{_dims(('B', *item['shape']))}] {item['role']}"
                                + (f", null {item['null']}" if item.get("null") else "") + made)
    d = {
        "file": s.path, "contract_version": spec.format_version,
        "kind": spec.kind + (f" ({spec.baked['solver']}:{spec.baked['steps']}, {spec.baked['nfe']} NFE in one call)"
                             if s.baked else " (a flow map: u(x, s, t) jumps from s to t in one evaluation)"
                             if spec.flow_map else ""),
        "data_shape": list(spec.data_shape),
        **({"symbols": {k: _bounds(b) for k, b in spec.symbols.items()}} if spec.symbols else {}),
        "inputs": inputs,
        **({"feed": _feed(spec)} if s.baked else {}),
        **({"condition_stage": ", ".join(f"{i['name']} {i['dtype']}[{', '.join(map(str, i['shape']))}]"
                                         for i in spec.stage["inputs"]) + f" -> {', '.join(staged)}, once per request"}
           if spec.stage else {}),
        "output": spec.out_name if s.baked else spec.v_name, "prediction": spec.prediction, "path": spec.prob_path,
        "default_solver": spec.default_solver, "default_steps": spec.default_steps,
        "default_schedule": spec.default_schedule,
        "default_nfe": s.nfe(), "variant": describe_variant(spec.variant), "this_cpu": _this_cpu(spec.variant),
        "execution": (f"{s.execution['why']} (saved by fm-run bench --save)" if s.execution else
                      "the defaults (fm-run bench MODEL --batch N --save measures and keeps the fastest mode for "
                      "this file on this machine)"),
        "training": spec.training,
        "architecture": spec.architecture,
        "classes": (f"{spec.num_classes} (labels 0..{spec.num_classes - 1}; {spec.null_class} = no label, "
                    "classifier-free guidance)") if spec.num_classes else
                   "none (conditioned by its inputs)" if spec.inputs else "none (unconditional)",
        "log_likelihood": (f"no: {divergence_problem(spec, s.path)}" if divergence_problem(spec, s.path)
                           else "yes (divergence graph inside)"),
        "producer": spec.producer,
        "samples": trial[0],
    }
    if spec.value_range:
        d["value_range"] = list(spec.value_range)
    if as_json:
        click.echo(json.dumps(d, indent=2))          # JSON escapes control characters itself
    else:
        if spec.format_version is None:
            click.echo("(plain ONNX without fm.* metadata: shape and names inferred or given)")
        width = max(map(len, d))
        for k, v in d.items():
            if isinstance(v, dict):
                v = ", ".join(f"{a}={b}" for a, b in v.items()) or "-"
            click.echo(printable(f"{k:<{width}}  {v}"))
    if trial[1] is not None:
        raise trial[1]


def _trial(s) -> tuple[str, FmError | None]:
    """Whether the file samples: a 3-row solve at its defaults (the self-test alone checks one
    probe, and a graph can pass it yet fail at another batch size). A failure is reported in the
    table and raised after it, so `fm-run info` exits with the code `fm-run sample` would."""
    if s.spec.inputs or s.spec.symbolic:
        try:
            s.stage_session()           # a stage that cannot load fails here, as sample would
        except FmError as e:
            return f"no: {e}", e
        return "not tried (needs its conditions: fm-run sample --cond)", None
    import time
    clock = time.perf_counter()
    try:
        s.sample(3, seed=0)
    except FmError as e:
        return f"no: {e}", e
    return f"yes (3 rows at its defaults, {s.nfe()} NFE, {(time.perf_counter() - clock) * 1e3:.1f} ms)", None


def _dims(shape) -> str:
    return ", ".join(map(str, shape))


def _feed(spec) -> str:
    """A baked file's one call as any onnxruntime binding makes it: every input name, dtype and
    shape, and the output."""
    names = [f"{spec.z_name} float32[{_dims(('B', *spec.data_shape))}]"]
    names += [f"{i['name']} {i['dtype']}[{_dims(('B', *i['shape']))}]" for i in spec.inputs]
    stage = " (after the condition stage)" if spec.stage else ""
    return (f"session.run({spec.out_name!r}, {{{'; '.join(names)}}}){stage} -> {spec.out_name} "
            f"float32[{_dims(('B', *spec.data_shape))}]; B any, symbols within their bounds")


def _bounds(b: dict) -> str:
    """A symbol's bounds in words: '4..512, multiple of 4' (--dim NAME=N or a --cond binds it)."""
    text = f"{b.get('min', 1)}..{b['max'] if 'max' in b else 'any'}"
    return text + (f", multiple of {b['multiple_of']}" if b.get("multiple_of", 1) > 1 else "")


@cli.command()
@model_arg
@request_options("sample", only=("steps", "solver"))
@click.option("--batch", "batches", type=click.IntRange(min=1), multiple=True,
              help="Batch size to time; repeat the option for several [default: 1, 256, 100000, or "
                   "fewer rows for large samples: at most 256 MiB of data].")
@click.option("--save", is_flag=True,
              help="With one --batch: keep the fastest mode at that batch as this file's choice on this machine; "
                   "load() and fm-run sample then use it when given none of --tile/--threads/--intra-op-threads "
                   "(the cache: $FM_RUNTIME_CACHE, else ~/.cache/fm-runtime/execution.json).")
@plain_model_options
@run_limits
def bench(model, steps, solver, batches, save, dim, x_name, t_name):
    """Time sampling on this machine: median of repeated runs after warm-up, per runtime mode.

    Modes: the default (tiles of 2048 rows over all cores), one call on the whole batch, and one
    call with onnxruntime's threads inside it (all cores). Then, per batch, which mode was fastest
    for this file on this CPU and the options that choose it; --save keeps that choice. For the
    comparison with torch eager on the same weights, run benchmarks/bench_sampling.py.

    \b
    Examples:
      fm-run bench
      fm-run bench moons-mid8.onnx --batch 1 --batch 4096
      fm-run bench unet-mid8.onnx --batch 1 --save
    """
    from ..tools.bench import bench_table, fastest_modes, matmul_gflops, mlp_flops_per_eval

    if save and len(batches) != 1:
        raise click.UsageError("--save keeps the fastest mode at one batch size: give exactly one --batch "
                               "(the rows your requests have)")
    probe = open_sampler(model, "cpu", dim, x_name, t_name, intra_op_threads=1)
    if probe.spec.inputs or probe.spec.symbolic:
        raise click.UsageError(f"{probe.path} takes conditions ({', '.join(i['name'] for i in probe.spec.inputs)}); "
                               "fm-run bench times files without them")
    steps = probe.spec.baked.get("steps") if probe.baked else (steps or probe.spec.default_steps)
    solver = probe.spec.baked.get("solver") if probe.baked else (solver or probe.spec.default_solver)
    modes = {"tiled (default)": {}, "whole batch": {"tile": 0, "threads": 1}}
    cores = os.cpu_count() or 1
    if cores > 1:
        modes[f"{cores} threads in a call"] = {"tile": 0, "threads": 1, "intra_op_threads": cores}
    row_bytes = 4 * probe.spec.dim
    batches = batches or sorted({1, min(256, limits.work_rows(row_bytes, 256)), limits.work_rows(row_bytes, 100_000)})
    need = limits.in_memory_bytes(max(batches), row_bytes, tile_rows=0, stages=probe.nfe(1, solver))
    if need > limits.budget():
        raise click.UsageError(f"--batch {max(batches):,} needs about {limits.describe(need)}, more than the "
                               f"{limits.describe(limits.budget())} budget (--max-memory)")
    rows = bench_table(lambda kw: open_sampler(model, "cpu", dim, x_name, t_name, **{"intra_op_threads": 1, **kw}),
                       modes, batches, steps, solver)      # the defaults as they are, not a saved choice
    per_eval = mlp_flops_per_eval(probe.spec.architecture, Path(probe.path).read_bytes())
    rate = matmul_gflops() if per_eval else None
    click.echo(f"{probe.path}: {probe.spec.kind}, {solver} {steps} steps ({probe.nfe(steps, solver)} NFE)"
               + (f"; float32 matmul {rate:.0f} GFLOP/s measured" if rate else ""))
    click.echo(f"this CPU: {_this_cpu(probe.spec.variant)}")
    for r in rows:
        line = f"  batch {r['batch']:>7}  {r['mode']:<16} {r['seconds'] * 1e3:10.3f} ms"
        if rate:
            # the achieved rate beside the big-matmul yardstick: a small net's tiles can beat it
            # (they stay in cache), so it is a reference point, not a bound
            gflops = per_eval * probe.nfe(steps, solver) * r["batch"] / r["seconds"] / 1e9
            line += f"   {gflops:7.2f} GFLOP/s ({gflops / rate:4.0%} of the matmul rate)"
        click.echo(line)
    for line in fastest_modes(rows, modes):
        click.echo(line)
    if save:
        _save_choice(probe.path, rows, modes)


def _save_choice(path: str, rows: list[dict], modes: dict) -> None:
    from ..model.execution import save
    from ..tools.bench import choice
    options, why = choice(rows, modes)
    where = save(path, options, why)
    click.echo(f"saved for {path} on this machine: {why}; load() and fm-run sample use it ({where})")


def main(argv: list[str] | None = None) -> None:
    # a server drains on SIGTERM itself (uvicorn), on the main thread; every other command is
    # supervised, so that Ctrl-C, SIGTERM and --timeout stop it within seconds
    serving = (sys.argv[1:] if argv is None else argv)[:1] == ["serve"]
    sys.exit(run_cli(cli, "fm-run", argv, supervised=not serving))


if __name__ == "__main__":
    main()
