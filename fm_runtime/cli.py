"""fm-run: sample and inspect flow-matching model files (numpy + onnxruntime only)."""
from __future__ import annotations

import json
import os
import sys
import time

import click

from . import __version__
from .contract import describe_variant
from .errors import NumericalError, run_cli
from .io import NpyStream, Progress, check_space, check_writable, load_array, save_npy
from .noise import new_seed
from .sampler import CHUNK_ROWS, Sampler, load
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
@click.option("-n", "--num", "n", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Number of samples (ignored when --noise gives the starting points).")
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
def sample(model, n, steps, solver, seed, noise, out, shard, keep_partial, progress, plot, provider,
           threads, tile, cuda_graph, dim, x_name, t_name):
    """Integrate the model's velocity from noise (t = 0) to data (t = 1).

    \b
    Examples:
      fm-run sample -n 1000 --seed 0 --out samples.npy
      fm-run sample moons.onnx --noise z.npy --steps 4 --solver rk4 --out x.npy
      fm-run sample moons.onnx -n 100000000 --seed 1 --out big.npy      # streamed, bounded memory
      fm-run sample moons.onnx -n 100000000 --seed 1 --shard 2/8 --out part2.npy
      fm-run sample plain.onnx --dim 2 -n 500 --out x.npy
    """
    shard_ik = _parse_shard(shard)
    if n > MAX_ROWS:
        raise click.BadParameter(f"{n} rows is more than this tool handles ({MAX_ROWS:.0e})", param_hint="-n")
    if noise and shard_ik:
        raise click.UsageError("--shard splits a seeded run; it does not apply to --noise")
    if cuda_graph and provider.lower() not in ("cuda", "cudaexecutionprovider"):
        raise click.UsageError("--cuda-graph needs --provider cuda")
    for path in (out, plot):
        if path:
            check_writable(path)
    if plot:
        from .plot import require_matplotlib
        require_matplotlib()
    z = load_array(noise, "noise", kinds="f") if noise else None
    sampler = _load(model, provider, dim, x_name, t_name, threads, tile, cuda_graph)
    if z is not None:
        z = sampler.check_noise(z)
        n = len(z)
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
    if out:
        check_space(out, rows * row_bytes + 4096)
    elif rows * row_bytes * (4 if plot else 3) * (steps + 1 if plot else 1) > MEMORY_FRACTION * _physical_memory():
        raise click.UsageError(f"{rows:,} samples do not fit in memory here; write them with --out "
                               "(streamed in chunks)" + (" and drop --plot" if plot else ""))
    if seed is None and z is None:
        seed = new_seed()
    clock = time.perf_counter()
    try:
        x = _run(sampler, z, n, out, plot, start, stop, seed, steps, solver, keep_partial, progress)
    except NumericalError as e:
        raise NumericalError(f"{e}; nothing written (--keep-partial writes the samples anyway)") from None
    elapsed = time.perf_counter() - clock
    what = f"rows {start:,}..{stop - 1:,} of a {n:,}-row run" if shard_ik else f"{rows:,} samples"
    click.echo(f"{what} of shape {list(sampler.data_shape)}: {solver}, {steps} steps, "
               f"{sampler.nfe(steps, solver)} NFE, {elapsed * 1e3:.1f} ms on {sampler.providers[0]}"
               + (f", seed {seed}" if z is None else "")
               + (f" -> {out}" if out else "") + (f", figure -> {plot}" if plot else ""), err=True)
    if sampler.nonfinite:
        where = min(sampler.nonfinite)[2]
        raise NumericalError(f"{sampler.path}: the solve produced NaN/Inf {where}; kept as asked "
                             f"(--keep-partial){' in ' + out if out else ''}")
    if not out:
        if x.ndim == 2 and x.shape[1] == 2:
            from .plot import ascii_scatter
            click.echo(ascii_scatter(x))
        else:
            click.echo(f"mean {float(x.mean()):.4f}  std {float(x.std()):.4f} (use --out to keep them)")


def _run(sampler, z, n, out, plot, start, stop, seed, steps, solver, keep_partial, progress):
    """Sample, write, plot; returns the samples when they were held in memory."""
    if plot or (z is not None and not out):
        result = sampler.sample(n, steps, solver, seed=seed, noise=z, return_trajectory=bool(plot),
                                keep_partial=keep_partial)
        x, traj = result if plot else (result, None)
        if out:
            save_npy(out, x)
        if plot:
            from .plot import trajectory_figure
            trajectory_figure(plot, traj, time_grid(steps))
        return x
    if out:
        _sample_streamed(sampler, z, out, start, stop, seed, steps, solver, keep_partial, progress)
        return None
    return sampler.sample(n, steps, solver, seed=seed, keep_partial=keep_partial)


def _sample_streamed(sampler, z, out, start, stop, seed, steps, solver, keep_partial, progress):
    """Solve chunk by chunk into a temporary .npy renamed into place at the end."""
    report = Progress(stop - start, "sampling", sys.stderr.isatty() if progress is None else progress)
    nonfinite = []
    with NpyStream(out, (stop - start, *sampler.data_shape)) as stream:
        if z is not None:
            chunks = ((a, sampler.sample(noise=z[a:a + CHUNK_ROWS], steps=steps, solver=solver,
                                         keep_partial=keep_partial)) for a in range(0, len(z), CHUNK_ROWS))
        else:
            chunks = sampler.sample_chunks(start, stop, seed, steps, solver, keep_partial=keep_partial)
        for _, x in chunks:
            nonfinite += sampler.nonfinite
            stream.write(x)
            report.update(len(x))
        stream.commit()
    report.close()
    sampler.nonfinite = nonfinite


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
        "producer": spec.producer,
    }
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
