"""fm-run sample: integrate a model from noise to data, in memory or streamed to disk."""
from __future__ import annotations

import os
import sys
import time

import click
import numpy as np

from ..errors import NumericalError, ResourceError
from ..solve.solvers import SOLVERS, time_grid
from ..tools import limits
from ..tools.io import NpyStream, Progress, check_space, check_writable, load_array, save_npy
from ..tools.options import schedule_of
from .options import (
    ADAPTIVE,
    check_conditioning,
    class_options,
    cond_option,
    describe_logp,
    load_conditions,
    model_arg,
    open_sampler,
    plain_model_options,
    request_options,
    run_limits,
    threads_option,
    times_option,
)

MAX_ROWS = 10**12                 # beyond this, -n is surely a typo


def _parse_shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    i, _, k = value.partition("/")
    if not (i.isascii() and k.isascii() and i.isdigit() and k.isdigit()) or len(k) > 15 or not 0 <= int(i) < int(k):
        raise click.BadParameter(f"expected I/K with 0 <= I < K, e.g. 0/4; got {value[:40]!r}"
                                 + ("..." if len(value) > 40 else ""), param_hint="--shard")
    return int(i), int(k)


@click.command()
@model_arg
@click.option("-n", "--num", "n", type=click.IntRange(1, MAX_ROWS),
              help="Number of samples [default: 1000; with --grid and a conditional model, "
                   "one row of --grid-cols per class] (ignored when --noise gives the starting points).")
@request_options("sample")
@times_option
@click.option("--noise", type=click.Path(dir_okay=False),
              help="Start from this .npy array [n, *shape] instead of drawing noise.")
@click.option("--out", type=click.Path(dir_okay=False),
              help="Write samples here as .npy (float32 [n, *shape]), streamed in chunks so memory "
                   "stays bounded for any n. Without it, 2-D samples are sketched in the terminal.")
@click.option("--shard", metavar="I/K",
              help="Produce only shard I of K (0-based) of the seeded run of -n rows: rows "
                   "[I*n//K, (I+1)*n//K). Concatenating shards 0..K-1 gives the full run.")
@click.option("--progress/--no-progress", default=None,
              help="Progress on stderr for long runs [default: when stderr is a terminal].")
@click.option("--plot", type=click.Path(dir_okay=False),
              help="Draw the trajectory from noise to data (up to 9 panels, 3x3) to this PNG; needs the plot extra.")
@class_options
@click.option("--logprob", "logprob_out", type=click.Path(dir_okay=False),
              help="Also write the log density of each sample (nats, float64 [n] .npy), computed in "
                   "the same forward solve; prints the mean in nats and bits per dimension.")
@click.option("--grid", type=click.Path(dir_okay=False),
              help="Image models: write the samples as a PNG grid (one row per class for a "
                   "conditional model without --class/--labels).")
@click.option("--grid-cols", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="Images per row of --grid.")
@click.option("--grid-scale", type=click.IntRange(1, 64),
              help="Screen pixels per image pixel in --grid [default: so that a row is about 640 px wide].")
@click.option("--provider", default="cpu", show_default=True,
              help="onnxruntime execution provider: cpu, cuda, tensorrt, ... (or a full name).")
@threads_option
@click.option("--tile", type=click.IntRange(min=0),
              help="Rows per tile on CPU (0: the whole batch in one call) [default: 2048].")
@click.option("--cuda-graph", is_flag=True,
              help="With --provider cuda and a baked file: capture the solve as a CUDA graph and "
                   "replay it (one capture per batch size).")
@cond_option
@plain_model_options
@run_limits
def sample(model, n, times, noise, out, shard, progress, plot, label, labels, logprob_out, grid, grid_cols, grid_scale,
           provider, threads, intra_op_threads, tile, cuda_graph, cond, null_cond, dim, x_name, t_name, **asked):
    """Integrate the model's velocity from noise (t = 0) to data (t = 1).

    \b
    Examples:
      fm-run sample -n 1000 --seed 0 --out samples.npy
      fm-run sample moons.onnx --noise z.npy --steps 4 --solver rk4 --out x.npy
      fm-run sample moons.onnx --steps 2 --schedule shift:0.5 -n 1000 --out x.npy
      fm-run sample moons.onnx --times 0,0.3,1 --solver midpoint -n 1000 --out x.npy
      fm-run sample moons.onnx --solver dopri5 --rtol 1e-6 -n 1000 --out ref.npy   # adaptive
      fm-run sample moons.onnx -n 100000000 --seed 1 --out big.npy      # streamed, bounded memory
      fm-run sample moons.onnx -n 100000000 --seed 1 --shard 2/8 --out part2.npy
      fm-run sample plain.onnx --dim 2 -n 500 --out x.npy
      fm-run sample tts.onnx --cond mu=mu.npy --cond spks=spk.npy --guidance 2 -n 4 --out mel.npy
      fm-run sample est.onnx --cond mu=mu.npy --dim T=64 --out x.npy       # a symbol no input binds
      fm-run sample moons-cond.onnx --class 1 --guidance 2 -n 500 --out upper.npy
      fm-run sample moons.onnx -n 1000 --seed 0 --out x.npy --logprob logp.npy
      fm-run sample digits.onnx --guidance 2 --grid digits.png       # one row per class
    """
    shard_ik = _parse_shard(shard)
    asked["schedule"] = schedule_of(asked["schedule"], times)
    _check_flags(asked, shard_ik, noise, out, logprob_out, plot, grid, label, labels, provider, cuda_graph)
    if plot:
        from ..tools.plot import require_matplotlib
        require_matplotlib()
    z = load_array(noise, "noise", kinds="f") if noise else None
    y = load_array(labels, "labels", kinds="iu", dtype=np.int64) if labels else None
    sampler = open_sampler(model, provider, dim, x_name, t_name, threads, tile, cuda_graph, intra_op_threads)
    check_conditioning(sampler, label, y, asked["guidance"], logprob_out, grid, null_cond)
    if grid and sampler.num_classes and label is None and y is None:
        _check_grid(sampler.num_classes * grid_cols, sampler.spec.dim, f"one row of {grid_cols} per class ({sampler.num_classes:,} classes)")
        y = np.repeat(np.arange(sampler.num_classes), grid_cols)   # one row per class
        n = len(y) if n is None and z is None else n
    conditions = load_conditions(cond)
    per_row = [len(a) for k, a in conditions.items() if a.ndim == sampler.spec.row_rank(k) + 1]
    if z is None and n is None:
        n = per_row[0] if per_row else 1000
    # the request, checked once with the model's defaults applied (UsageError, exit 2; InputError, exit 4)
    req = sampler.request(None if z is not None else n, noise=z, trajectory=bool(plot), logprob=bool(logprob_out),
                          labels=label if y is None else y, cond=conditions, dims=dim[1],
                          null_cond=load_conditions(null_cond) or None, **asked)
    if sampler.baked and plot:
        raise click.UsageError("--plot needs the trajectory; a baked sampler returns final samples only")
    start, stop = _rows(req.n, shard_ik)
    in_memory = bool(plot or logprob_out or grid or req.kind == "adaptive" or (z is not None and not out))
    _check_memory(sampler, req, stop - start, out, in_memory, plot, grid)
    clock = time.perf_counter()
    try:
        result, nonfinite = _run(sampler, req, out, start, stop, progress, logprob_out, in_memory)
    except NumericalError as e:
        raise NumericalError(f"{e}; nothing written (--keep-partial writes the samples anyway)") from None
    elapsed = time.perf_counter() - clock     # sampling and writing, not drawing
    if plot:
        from ..tools.plot import trajectory_figure
        trajectory_figure(plot, result.trajectory, time_grid(req.steps, schedule=req.schedule))
    click.echo(_summary(sampler, req, result, shard_ik, start, stop, elapsed, out, plot, z is not None), err=True)
    if nonfinite:
        where = min(nonfinite)[2]
        raise NumericalError(f"{sampler.path}: the solve produced NaN/Inf {where}; kept as asked "
                             f"(--keep-partial){' in ' + out if out else ''}")
    _show(sampler, req, None if result is None else result.samples, out, logprob_out, grid, grid_cols, grid_scale)


def _check_flags(asked, shard_ik, noise, out, logprob_out, plot, grid, label, labels, provider, cuda_graph) -> None:
    """Refuse the combinations of fm-run's own options that cannot work, before any work (the
    request options are checked with the request)."""
    if shard_ik and asked["solver"] in ADAPTIVE:
        raise click.UsageError("--solver dopri5 solves all rows as one system; it takes no --shard")
    if label is not None and labels:
        raise click.UsageError("give --class or --labels, not both")
    if grid and (plot or shard_ik):
        raise click.UsageError("--grid cannot be combined with --plot or --shard")
    if logprob_out and (plot or shard_ik):
        raise click.UsageError("--logprob cannot be combined with --plot or --shard")
    if noise and shard_ik:
        raise click.UsageError("--shard splits a seeded run; it does not apply to --noise")
    if cuda_graph and provider.lower() not in ("cuda", "cudaexecutionprovider"):
        raise click.UsageError("--cuda-graph needs --provider cuda")
    _check_outputs(out=out, logprob=logprob_out, plot=plot, grid=grid)
    if shard_ik and asked["seed"] is None:
        raise click.UsageError("--shard needs --seed: every shard must draw from the same seeded run")


def _rows(n: int, shard_ik) -> tuple[int, int]:
    """Rows [start, stop) of the run this command produces (a shard's, or all)."""
    if not shard_ik:
        return 0, n
    i, k = shard_ik
    start, stop = i * n // k, (i + 1) * n // k
    if stop == start:
        raise click.UsageError(f"--shard {i}/{k} of a {n:,}-row run has no rows; use at most {n} shards")
    return start, stop


def _check_grid(images: int, dim: int, what: str) -> None:
    """Refuse a --grid picture of more images than fit one picture and the memory budget."""
    most = limits.work_rows(4 * dim, 10_000)
    if images > most:
        raise click.UsageError(f"--grid draws {what}; {images:,} images are too many for one picture of these "
                               f"images (at most {most:,}): give --class, -n or fewer --grid-cols")


def _check_memory(sampler, req, rows: int, out, in_memory: bool, plot, grid) -> None:
    """Refuse, before any work, what cannot fit the memory budget (--max-memory) or the disk."""
    adaptive = req.kind == "adaptive"
    if grid:
        _check_grid(req.n, req.spec.dim, "every sample")
    row_bytes = 4 * req.spec.dim
    if out:
        check_space(out, rows * row_bytes + 4096)
    stages = 7 if adaptive else sampler.nfe(1, req.solver)
    need = limits.in_memory_bytes(rows, row_bytes, tile_rows=0 if adaptive else sampler.tiler.tile,
                                  workers=sampler.tiler.workers, stages=stages,
                                  trajectory_steps=req.steps if plot else 0, logprob=req.logprob)
    one = limits.in_memory_bytes(1, row_bytes, tile_rows=1, stages=stages)
    if one > limits.budget():
        bound = ", ".join(f"{k} = {v:,}" for k, v in dims_of(sampler.spec, req.spec).items())
        raise ResourceError(f"one sample of shape {list(req.spec.data_shape)}{' (' + bound + ')' if bound else ''} needs "
                            f"about {limits.describe(one)}, more than the {limits.describe(limits.budget())} budget "
                            "(--max-memory); nothing sampled")
    if (in_memory or not out) and need > limits.budget():
        raise ResourceError(f"{rows:,} samples need about {limits.describe(need)} in memory, more than "
                               f"the {limits.describe(limits.budget())} budget (--max-memory); write them with "
                               "--out (streamed in chunks)" + (" and drop --plot" if plot else ""))


def _summary(sampler, req, result, shard_ik, start, stop, elapsed, out, plot, given_noise: bool) -> str:
    """The one line fm-run sample prints on stderr once the samples are made."""
    what = f"rows {start:,}..{stop - 1:,} of a {req.n:,}-row run" if shard_ik else f"{stop - start:,} samples"
    if req.kind == "adaptive":
        steps = f"rtol {req.tolerances['rtol']:g}, atol {req.tolerances['atol']:g}, {result.nfe} NFE"
    else:
        unit = "jump" if SOLVERS[req.solver].evaluates == "map" else "step"
        steps = (f"{req.steps} {unit}{'s' if req.steps != 1 else ''}" + ("" if req.schedule.uniform else f" ({req.schedule})")
                 + f", {sampler.nfe(req.steps, req.solver)} NFE")
    return (f"{what} of shape {list(req.spec.data_shape)}: {req.solver}, {steps}, "
            f"{elapsed * 1e3:.1f} ms on {sampler.providers[0]}" + ("" if given_noise else f", seed {req.seed}")
            + (f" -> {out}" if out else "") + (f", figure -> {plot}" if plot else "") + _describe_conditioning(req))


def _show(sampler, req, x, out, logprob_out, grid, grid_cols, grid_scale) -> None:
    """The samples as a PNG grid, a sketch in the terminal, or their mean and spread."""
    if grid:
        from ..tools.png import image_grid, write_png
        rows = _row_labels(req.labels, len(x), grid_cols)
        write_png(grid, image_grid(x, grid_cols, sampler.spec.value_range, grid_scale, row_labels=rows))
        click.echo(f"grid of {len(x)} images ({grid_cols} per row{', labelled by class' if rows else ''}) -> {grid}",
                   err=True)
    elif not out and not logprob_out:
        if x.ndim == 2 and x.shape[1] == 2:
            from ..tools.plot import ascii_scatter
            click.echo(ascii_scatter(x))
        else:
            click.echo(f"mean {float(x.mean()):.4f}  std {float(x.std()):.4f} (use --out to keep them)")


def _row_labels(labels, n: int, cols: int) -> list | None:
    """The class of each grid row when every image of the row has the same one (else None)."""
    if labels is None:
        return None
    y = np.broadcast_to(np.asarray(labels), (n,))
    rows = [y[a:a + cols] for a in range(0, n, cols)]
    return [int(r[0]) for r in rows] if all((r == r[0]).all() for r in rows) else None


def _check_outputs(**paths) -> None:
    """Each output writable, named with the suffix of what is written there, and all different."""
    suffixes = {"out": ".npy", "logprob": ".npy", "plot": ".png", "grid": ".png"}
    seen: dict = {}
    for option, path in paths.items():
        if not path:
            continue
        if not path.lower().endswith(suffixes[option]):
            raise click.BadParameter(f"{path!r}: this option writes {suffixes[option]} (name the file so)",
                                     param_hint=f"--{option}")
        real = os.path.realpath(path)
        if real in seen:
            raise click.UsageError(f"--{seen[real]} and --{option} name the same file {path!r}")
        seen[real] = option
        check_writable(path)


def dims_of(spec, bound) -> dict:
    """The sizes a request bound to the file's symbols (from its data shape)."""
    return {d: b for d, b in zip(spec.data_shape, bound.data_shape) if isinstance(d, str)}


def _describe_conditioning(req) -> str:
    labels = req.options["labels"]
    if labels is None:
        return f", guidance {req.guidance:g}" if req.guidance != 1.0 else ""
    what = f"class {labels}" if np.ndim(labels) == 0 else f"labels over {len(np.unique(labels))} classes"
    return f", {what}, guidance {req.guidance:g}"


def _run(sampler, req, out, start, stop, progress, logprob, in_memory):
    """Sample and write; returns (the SampleResult when held in memory, else None; non-finite report)."""
    if in_memory or not out:
        r = sampler.solve(req)
        if logprob:
            save_npy(logprob, r.logprob)
            click.echo(f"log density of {len(r.samples):,} samples -> {logprob}: "
                       f"{describe_logp(sampler, r.logprob, r.nfe, req.divergence, req.probes, req.spec.dim)}", err=True)
        if out:
            save_npy(out, r.samples)
        return r, r.nonfinite
    return None, _sample_streamed(sampler, req, out, start, stop, progress)


def _sample_streamed(sampler, req, out, start, stop, progress) -> list:
    """Solve chunk by chunk into a temporary .npy renamed into place at the end."""
    report = Progress(stop - start, "sampling", sys.stderr.isatty() if progress is None else progress)
    nonfinite = []
    with NpyStream(out, (stop - start, *req.spec.data_shape)) as stream:
        for _, r in sampler.solve_chunks(req.rows(start, stop)):
            nonfinite += r.nonfinite
            stream.write(r.samples)
            report.update(len(r.samples))
        stream.commit()
    report.close()
    return nonfinite
