"""fm-run: sample and inspect flow-matching model files (numpy + onnxruntime only)."""
from __future__ import annotations

import json
import os
import sys
import time

import click
import numpy as np

from . import __version__
from .contract import describe_variant, divergence_problem
from .errors import NumericalError, run_cli
from .io import NpyStream, Progress, check_space, check_writable, load_array, save_npy
from .noise import new_seed
from .sampler import CHUNK_ROWS, Sampler, label_rows, load
from .solvers import MAX_STEPS, SOLVERS, time_grid

_model_arg = click.argument("model", required=False, type=click.Path(dir_okay=True))


def _plain_model_options(f):
    f = click.option("--t-name", help="Name of the time input, for a plain ONNX without metadata.")(f)
    f = click.option("--x-name", help="Name of the state input, for a plain ONNX without metadata.")(f)
    f = click.option("--dim", type=click.IntRange(min=1),
                     help="Data dimension, for a plain ONNX whose graph does not fix it.")(f)
    return f


def _load(model, provider="cpu", dim=None, x_name=None, t_name=None, threads=None, tile=None,
          cuda_graph=False) -> Sampler:
    return load(model, provider, data_shape=dim, x_name=x_name, t_name=t_name, threads=threads,
                tile=tile, cuda_graph=cuda_graph)


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
    """


MAX_ROWS = 10**12                 # beyond this, -n is surely a typo
MEMORY_FRACTION = 0.5             # in-memory results may use at most this share of RAM


def _parse_shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    i, _, k = value.partition("/")
    if not (i.isdigit() and k.isdigit()) or not 0 <= int(i) < int(k):
        raise click.BadParameter(f"expected I/K with 0 <= I < K, e.g. 0/4; got {value!r}",
                                 param_hint="--shard")
    return int(i), int(k)


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


@cli.command()
@_model_arg
@click.option("-n", "--num", "n", type=click.IntRange(min=1),
              help="Number of samples [default: 1000; with --grid and a conditional model, "
                   "one row of --grid-cols per class] (ignored when --noise gives the starting points).")
@click.option("--steps", type=click.IntRange(1, MAX_STEPS),
              help="Solver steps on the uniform grid 0 -> 1 [default: the model's, else 8].")
@click.option("--solver", type=click.Choice(sorted(SOLVERS)),
              help="Fixed-step solver [default: the model's, else midpoint].")
@click.option("--seed", type=click.IntRange(min=0),
              help="Seed for the starting noise; a random one (printed) if omitted.")
@click.option("--noise", type=click.Path(dir_okay=False),
              help="Start from this .npy array [n, *shape] instead of drawing noise.")
@click.option("--out", type=click.Path(dir_okay=False),
              help="Write samples here as .npy (float32 [n, *shape]), streamed in chunks so memory "
                   "stays bounded for any n. Without it, 2-D samples are sketched in the terminal.")
@click.option("--shard", metavar="I/K",
              help="Produce only shard I of K (0-based) of the seeded run of -n rows: rows "
                   "[I*n//K, (I+1)*n//K). Concatenating shards 0..K-1 gives the full run.")
@click.option("--keep-partial", is_flag=True,
              help="If the solve turns NaN/Inf, still write the samples (those rows non-finite); "
                   "the exit code is 5 either way.")
@click.option("--progress/--no-progress", default=None,
              help="Progress on stderr for long runs [default: when stderr is a terminal].")
@click.option("--plot", type=click.Path(dir_okay=False),
              help="Draw the 1x9 trajectory figure (noise -> data) to this PNG; needs the plot extra.")
@click.option("--class", "label", type=int,
              help="Class-conditional models: the class of every sample (see fm-run info for the classes).")
@click.option("--labels", type=click.Path(dir_okay=False),
              help="Class-conditional models: a .npy of n integer labels, one per sample.")
@click.option("--guidance", type=float, default=1.0, show_default=True,
              help="Classifier-free guidance weight w: v = v_uncond + w (v_cond - v_uncond); 1 is the "
                   "plain conditional model, 0 the unconditional one, > 1 sharper classes.")
@click.option("--logprob", type=click.Path(dir_okay=False),
              help="Also write the log density of each sample (nats, float64 [n] .npy), computed in "
                   "the same forward solve; prints the mean in nats and bits per dimension.")
@click.option("--divergence", type=click.Choice(["auto", "exact", "hutchinson"]), default="auto", show_default=True,
              help="How --logprob gets the divergence: exact (all D directions), hutchinson "
                   "(--probes random probes), auto (exact up to 16 dimensions).")
@click.option("--probes", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="Hutchinson probes per sample.")
@click.option("--grid", type=click.Path(dir_okay=False),
              help="Image models: write the samples as a PNG grid (one row per class for a "
                   "conditional model without --class/--labels).")
@click.option("--grid-cols", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="Images per row of --grid.")
@click.option("--provider", default="cpu", show_default=True,
              help="onnxruntime execution provider: cpu, cuda, tensorrt, ... (or a full name).")
@click.option("--threads", type=click.IntRange(min=1),
              help="Worker threads solving tiles of the batch in parallel [default: all cores].")
@click.option("--tile", type=click.IntRange(min=0),
              help="Rows per tile on CPU (0: the whole batch in one call) [default: 2048].")
@click.option("--cuda-graph", is_flag=True,
              help="With --provider cuda and a baked file: capture the solve as a CUDA graph and "
                   "replay it (one capture per batch size).")
@_plain_model_options
def sample(model, n, steps, solver, seed, noise, out, shard, keep_partial, progress, plot, label, labels,
           guidance, logprob, divergence, probes, grid, grid_cols, provider, threads, tile, cuda_graph,
           dim, x_name, t_name):
    """Integrate the model's velocity from noise (t = 0) to data (t = 1).

    \b
    Examples:
      fm-run sample -n 1000 --seed 0 --out samples.npy
      fm-run sample moons.onnx --noise z.npy --steps 4 --solver rk4 --out x.npy
      fm-run sample moons.onnx -n 100000000 --seed 1 --out big.npy      # streamed, bounded memory
      fm-run sample moons.onnx -n 100000000 --seed 1 --shard 2/8 --out part2.npy
      fm-run sample plain.onnx --dim 2 -n 500 --out x.npy
      fm-run sample moons-cond.onnx --class 1 --guidance 2 -n 500 --out upper.npy
      fm-run sample moons.onnx -n 1000 --seed 0 --out x.npy --logprob logp.npy
      fm-run sample digits.onnx --guidance 2 --grid digits.png       # one row per class
    """
    shard_ik = _parse_shard(shard)
    if label is not None and labels:
        raise click.UsageError("give --class or --labels, not both")
    if grid and (plot or shard_ik):
        raise click.UsageError("--grid cannot be combined with --plot or --shard")
    if logprob and (plot or shard_ik):
        raise click.UsageError("--logprob cannot be combined with --plot or --shard")
    if n is not None and n > MAX_ROWS:
        raise click.BadParameter(f"{n} rows is more than this tool handles ({MAX_ROWS:.0e})", param_hint="-n")
    if noise and shard_ik:
        raise click.UsageError("--shard splits a seeded run; it does not apply to --noise")
    if cuda_graph and provider.lower() not in ("cuda", "cudaexecutionprovider"):
        raise click.UsageError("--cuda-graph needs --provider cuda")
    for path in (out, plot, logprob, grid):
        if path:
            check_writable(path)
    if plot:
        from .plot import require_matplotlib
        require_matplotlib()
    z = load_array(noise, "noise", kinds="f") if noise else None
    y = load_array(labels, "labels", kinds="iu", dtype=np.int64) if labels else None
    sampler = _load(model, provider, dim, x_name, t_name, threads, tile, cuda_graph)
    _check_conditioning(sampler, label, y, guidance, logprob, grid)
    if grid and sampler.num_classes and label is None and y is None:
        y = np.repeat(np.arange(sampler.num_classes), grid_cols)   # one row per class
        if n is None and z is None:
            n = len(y)
    if z is not None:
        z = sampler.check_noise(z)
        n = len(z)
    n = 1000 if n is None else n
    if grid and n > 10_000:
        raise click.UsageError(f"--grid draws every sample; {n:,} is too many for one picture (max 10 000)")
    cond = {"labels": label if y is None else y, "guidance": guidance}
    if cond["labels"] is not None:
        sampler.check_labels(cond["labels"], n)
    if sampler.baked:
        if plot:
            raise click.UsageError("--plot needs the trajectory; a baked sampler returns final samples only")
        try:
            sampler.check_baked(steps, solver, False)
        except ValueError as e:
            raise click.UsageError(str(e)) from None
    steps = steps or sampler.spec.default_steps
    solver = solver or sampler.spec.default_solver
    start, stop = (shard_ik[0] * n // shard_ik[1], (shard_ik[0] + 1) * n // shard_ik[1]) if shard_ik else (0, n)
    rows = stop - start
    row_bytes = 4 * sampler.spec.dim
    in_memory = bool(plot or logprob or grid or (z is not None and not out))
    if out:
        check_space(out, rows * row_bytes + 4096)
    if (in_memory or not out) and rows * row_bytes * (4 if plot else 3) * (steps + 1 if plot else 1) > MEMORY_FRACTION * _physical_memory():
        raise click.UsageError(f"{rows:,} samples do not fit in memory here; write them with --out "
                               "(streamed in chunks)" + (" and drop --plot" if plot else ""))
    if seed is None and z is None:
        seed = new_seed()
    clock = time.perf_counter()
    try:
        x = _run(sampler, z, n, out, plot, start, stop, seed, steps, solver, keep_partial, progress, cond,
                 logprob and {"path": logprob, "divergence": divergence, "probes": probes}, in_memory)
    except NumericalError as e:
        raise NumericalError(f"{e}; nothing written (--keep-partial writes the samples anyway)") from None
    elapsed = time.perf_counter() - clock
    what = f"rows {start:,}..{stop - 1:,} of a {n:,}-row run" if shard_ik else f"{rows:,} samples"
    click.echo(f"{what} of shape {list(sampler.data_shape)}: {solver}, {steps} steps, "
               f"{sampler.nfe(steps, solver)} NFE, {elapsed * 1e3:.1f} ms on {sampler.providers[0]}"
               + (f", seed {seed}" if z is None else "")
               + (f" -> {out}" if out else "") + (f", figure -> {plot}" if plot else "")
               + _describe_conditioning(sampler, cond), err=True)
    if sampler.nonfinite:
        where = min(sampler.nonfinite)[2]
        raise NumericalError(f"{sampler.path}: the solve produced NaN/Inf {where}; kept as asked "
                             f"(--keep-partial){' in ' + out if out else ''}")
    if grid:
        from .png import image_grid, write_png
        write_png(grid, image_grid(x, grid_cols, sampler.spec.value_range))
        click.echo(f"grid of {len(x)} images ({grid_cols} per row) -> {grid}", err=True)
    elif not out and not logprob:
        if x.ndim == 2 and x.shape[1] == 2:
            from .plot import ascii_scatter
            click.echo(ascii_scatter(x))
        else:
            click.echo(f"mean {float(x.mean()):.4f}  std {float(x.std()):.4f} (use --out to keep them)")


def _check_conditioning(sampler, label, labels, guidance, logprob, grid) -> None:
    """Refuse, before any work, class options a model cannot take and outputs it cannot make."""
    if (label is not None or labels is not None) and not sampler.num_classes:
        raise click.UsageError(f"{sampler.path} is not class-conditional; --class/--labels do not apply")
    if guidance != 1.0 and label is None and labels is None and not (grid and sampler.num_classes):
        raise click.UsageError("--guidance needs --class or --labels (or --grid with a conditional model, "
                               "which draws every class)")
    problem = logprob and divergence_problem(sampler.spec, sampler.path)
    if problem:
        raise click.UsageError(problem)
    if grid:
        from .png import is_image_shape
        if not is_image_shape(sampler.data_shape):
            raise click.UsageError(f"--grid needs image data ([H, W] or [C, H, W]); this model's data "
                                   f"shape is {list(sampler.data_shape)}")


def _describe_conditioning(sampler, cond) -> str:
    labels = cond["labels"]
    if labels is None:
        return ""
    what = f"class {labels}" if np.ndim(labels) == 0 else f"labels over {len(np.unique(labels))} classes"
    return f", {what}, guidance {cond['guidance']:g}"


def _run(sampler, z, n, out, plot, start, stop, seed, steps, solver, keep_partial, progress, cond,
         logprob, in_memory):
    """Sample, write, plot; returns the samples when they were held in memory."""
    if in_memory:
        if z is None:
            z = sampler.noise(n, seed)
        if logprob:
            x, logp = sampler.sample(noise=z, steps=steps, solver=solver, return_logprob=True,
                                     divergence=logprob["divergence"], probes=logprob["probes"], **cond)
            save_npy(logprob["path"], logp)
            click.echo(f"log density of {len(x):,} samples -> {logprob['path']}: "
                       f"{_describe_logp(sampler, logp, logprob['divergence'], logprob['probes'])}", err=True)
        else:
            result = sampler.sample(noise=z, steps=steps, solver=solver, return_trajectory=bool(plot),
                                    keep_partial=keep_partial, **cond)
            x, traj = result if plot else (result, None)
            if plot:
                from .plot import trajectory_figure
                trajectory_figure(plot, traj, time_grid(steps))
        if out:
            save_npy(out, x)
        return x
    if out:
        _sample_streamed(sampler, z, out, start, stop, seed, steps, solver, keep_partial, progress, cond)
        return None
    return sampler.sample(n, steps, solver, seed=seed, keep_partial=keep_partial, **cond)


def _sample_streamed(sampler, z, out, start, stop, seed, steps, solver, keep_partial, progress, cond):
    """Solve chunk by chunk into a temporary .npy renamed into place at the end."""
    report = Progress(stop - start, "sampling", sys.stderr.isatty() if progress is None else progress)
    nonfinite = []
    with NpyStream(out, (stop - start, *sampler.data_shape)) as stream:
        if z is not None:
            chunks = ((a, sampler.sample(noise=z[a:a + CHUNK_ROWS], steps=steps, solver=solver,
                                         keep_partial=keep_partial, guidance=cond["guidance"],
                                         labels=label_rows(cond["labels"], a, a + CHUNK_ROWS)))
                      for a in range(0, len(z), CHUNK_ROWS))
        else:
            chunks = sampler.sample_chunks(start, stop, seed, steps, solver, keep_partial=keep_partial, **cond)
        for _, x in chunks:
            nonfinite += sampler.nonfinite
            stream.write(x)
            report.update(len(x))
        stream.commit()
    report.close()
    sampler.nonfinite = nonfinite


@cli.command()
@click.argument("model", type=click.Path(dir_okay=True))
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False),
              help="Write log p(x) of each row here (nats, float64 [n] .npy).")
@click.option("--steps", type=click.IntRange(1, MAX_STEPS),
              help="Solver steps from data (t = 1) back to noise (t = 0) [default: the model's].")
@click.option("--solver", type=click.Choice(sorted(SOLVERS)), help="Fixed-step solver [default: the model's].")
@click.option("--class", "label", type=int, help="Class-conditional models: log p(x | class) for every row.")
@click.option("--labels", type=click.Path(dir_okay=False), help="Class-conditional models: a .npy of one label per row.")
@click.option("--guidance", type=float, default=1.0, show_default=True,
              help="Density of the guided field v_u + w (v_c - v_u) (1: the conditional model).")
@click.option("--divergence", type=click.Choice(["auto", "exact", "hutchinson"]), default="auto", show_default=True,
              help="exact: trace over all D directions; hutchinson: --probes random probes per row "
                   "(unbiased, cheaper for high D); auto: exact up to 16 dimensions.")
@click.option("--probes", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="Hutchinson probes per row.")
@click.option("--probe-seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the Hutchinson probes (row r uses default_rng([seed, r])).")
@click.option("--provider", default="cpu", show_default=True, help="onnxruntime execution provider.")
def logprob(model, data, out, steps, solver, label, labels, guidance, divergence, probes, probe_seed, provider):
    """Log-likelihood of each row of DATA (.npy [n, *shape]) under MODEL, by the instantaneous
    change of variables: the data is integrated back to noise while the divergence of the
    velocity is accumulated, log p(x) = log N(x_0) - int_0^1 div v dt. Prints the mean in nats
    and bits per dimension.

    \b
    Examples:
      fm-run logprob moons.onnx points.npy --out logp.npy
      fm-run logprob digits.onnx images.npy --divergence hutchinson --probes 4 --class 3
    """
    if label is not None and labels:
        raise click.UsageError("give --class or --labels, not both")
    if out:
        check_writable(out)
    x = load_array(data, "data", kinds="f")
    y = load_array(labels, "labels", kinds="iu", dtype=np.int64) if labels else None
    sampler = _load(model, provider)
    _check_conditioning(sampler, label, y, guidance, True, None)
    clock = time.perf_counter()
    logp = sampler.log_prob(x, steps, solver, labels=label if y is None else y, guidance=guidance,
                            divergence=divergence, probes=probes, probe_seed=probe_seed)
    if out:
        save_npy(out, logp)
    click.echo(f"{len(x):,} rows of shape {list(sampler.data_shape)}: "
               f"{_describe_logp(sampler, logp, divergence, probes)}, {time.perf_counter() - clock:.2f} s"
               + (f" -> {out}" if out else ""), err=True)
    if not out:
        click.echo("\n".join(f"{v:.6f}" for v in logp[:20]) + (f"\n... ({len(logp) - 20} more; use --out)"
                                                               if len(logp) > 20 else ""))


def _describe_logp(sampler, logp, divergence: str, probes: int) -> str:
    from .likelihood import resolve_method
    d, m = sampler.spec.dim, float(logp.mean())
    method = resolve_method(divergence, d)
    how = "exact divergence" if method == "exact" else f"Hutchinson divergence, {probes} probe{'s' * (probes > 1)}"
    return (f"mean log p {m:.4f} nats ({m / d:.4f} nats/dim; negative log-likelihood "
            f"{-m / d / np.log(2):.4f} bits/dim), {how}, {sampler.last_nfe} evaluations")


@cli.command()
@_model_arg
@click.option("--json", "as_json", is_flag=True, help="Print the declaration as JSON.")
@_plain_model_options
def info(model, as_json, dim, x_name, t_name):
    """Show what a model file declares: shape, path, defaults, training summary.

    \b
    Examples:
      fm-run info                 # the shipped moons model
      fm-run info moons.onnx --json
    """
    s = _load(model, "cpu", dim, x_name, t_name)
    spec = s.spec
    d = {
        "file": s.path, "contract_version": spec.format_version,
        "kind": spec.kind + (f" ({spec.baked['solver']}:{spec.baked['steps']}, {spec.baked['nfe']} NFE in one call)"
                             if s.baked else ""),
        "data_shape": list(spec.data_shape),
        "inputs": ({"z": spec.z_name} if s.baked else
                   {"x": spec.x_name, "t": spec.t_name + ("[B,1]" if spec.t_rank == 2 else "[B]")}),
        "output": spec.out_name if s.baked else spec.v_name, "prediction": spec.prediction, "path": spec.path,
        "default_solver": spec.default_solver, "default_steps": spec.default_steps,
        "default_nfe": s.nfe(), "variant": describe_variant(spec.variant), "training": spec.training,
        "architecture": spec.architecture,
        "classes": (f"{spec.num_classes} (labels 0..{spec.num_classes - 1}; {spec.null_class} = no label, "
                    "classifier-free guidance)") if spec.num_classes else "none (unconditional)",
        "log_likelihood": (f"no: {divergence_problem(spec, s.path)}" if divergence_problem(spec, s.path)
                           else "yes (divergence graph inside)"),
        "producer": spec.producer,
    }
    if spec.value_range:
        d["value_range"] = list(spec.value_range)
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    if spec.format_version is None:
        click.echo("(plain ONNX without fm.* metadata: shape and names inferred or given)")
    width = max(map(len, d))
    for k, v in d.items():
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items()) or "-"
        click.echo(f"{k:<{width}}  {v}")


@cli.command()
@_model_arg
@click.option("--steps", type=click.IntRange(1, MAX_STEPS), help="Steps for a velocity model [default: the model's].")
@click.option("--solver", type=click.Choice(sorted(SOLVERS)), help="Solver for a velocity model [default: the model's].")
@click.option("--batch", "batches", type=click.IntRange(min=1), multiple=True,
              help="Batch size to time; repeat the option for several [default: 1, 256, 100000].")
@_plain_model_options
def bench(model, steps, solver, batches, dim, x_name, t_name):
    """Time sampling on this machine: median of repeated runs after warm-up, per runtime mode.

    Modes: the default (tiles of 2048 rows over all cores) and one call on the whole batch. For
    the comparison with torch eager on the same weights, run benchmarks/bench_sampling.py.

    \b
    Examples:
      fm-run bench
      fm-run bench moons-mid8.onnx --batch 1 --batch 4096
    """
    from .bench import bench_table, matmul_gflops, mlp_flops_per_eval

    probe = _load(model, "cpu", dim, x_name, t_name)
    steps = probe.spec.baked.get("steps") if probe.baked else (steps or probe.spec.default_steps)
    solver = probe.spec.baked.get("solver") if probe.baked else (solver or probe.spec.default_solver)
    modes = {"tiled (default)": {}, "whole batch": {"tile": 0, "threads": 1}}
    rows = bench_table(lambda kw: _load(model, "cpu", dim, x_name, t_name, **kw), modes,
                       batches or (1, 256, 100_000), steps, solver)
    per_eval = mlp_flops_per_eval(probe.spec.architecture)
    rate = matmul_gflops() if per_eval else None
    click.echo(f"{probe.path}: {probe.spec.kind}, {solver} {steps} steps ({probe.nfe(steps, solver)} NFE)"
               + (f"; float32 matmul {rate:.0f} GFLOP/s measured" if rate else ""))
    for r in rows:
        line = f"  batch {r['batch']:>7}  {r['mode']:<16} {r['seconds'] * 1e3:10.3f} ms"
        if rate:
            bound = per_eval * probe.nfe(steps, solver) * r["batch"] / (rate * 1e9)
            line += f"   {r['seconds'] / bound:6.1f}x the arithmetic bound"
        click.echo(line)


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_cli(cli, "fm-run", argv))


if __name__ == "__main__":
    main()
