"""fm-run: sample and inspect flow-matching model files (numpy + onnxruntime only)."""
from __future__ import annotations

import json
import sys
import time

import click

from . import __version__
from .errors import run_cli
from .io import check_writable, load_array, save_npy
from .sampler import Sampler, load
from .solvers import SOLVERS, time_grid

_model_arg = click.argument("model", required=False, type=click.Path(dir_okay=True))


def _plain_model_options(f):
    f = click.option("--t-name", help="Name of the time input, for a plain ONNX without metadata.")(f)
    f = click.option("--x-name", help="Name of the state input, for a plain ONNX without metadata.")(f)
    f = click.option("--dim", type=click.IntRange(min=1),
                     help="Data dimension, for a plain ONNX whose graph does not fix it.")(f)
    return f


def _load(model, provider="cpu", dim=None, x_name=None, t_name=None, threads=None, tile=None,
          cuda_graph=False) -> Sampler:
    try:
        return load(model, provider, data_shape=dim, x_name=x_name, t_name=t_name, threads=threads,
                    tile=tile, cuda_graph=cuda_graph)
    except ValueError as e:
        raise click.UsageError(str(e)) from None


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


@cli.command()
@_model_arg
@click.option("-n", "--num", "n", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Number of samples (ignored when --noise gives the starting points).")
@click.option("--steps", type=click.IntRange(min=1),
              help="Solver steps on the uniform grid 0 -> 1 [default: the model's, else 8].")
@click.option("--solver", type=click.Choice(sorted(SOLVERS)),
              help="Fixed-step solver [default: the model's, else midpoint].")
@click.option("--seed", type=int, help="Seed for the starting noise (numpy PCG64); random if omitted.")
@click.option("--noise", type=click.Path(dir_okay=False),
              help="Start from this .npy array [n, *shape] instead of drawing noise.")
@click.option("--out", type=click.Path(dir_okay=False),
              help="Write samples here as .npy (float32 [n, *shape]). Without it, 2-D samples are "
                   "sketched in the terminal.")
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
def sample(model, n, steps, solver, seed, noise, out, plot, provider, threads, tile, cuda_graph, dim,
           x_name, t_name):
    """Integrate the model's velocity from noise (t = 0) to data (t = 1).

    \b
    Examples:
      fm-run sample -n 1000 --seed 0 --out samples.npy
      fm-run sample moons.onnx --noise z.npy --steps 4 --solver rk4 --out x.npy
      fm-run sample plain.onnx --dim 2 -n 500 --out x.npy
    """
    for path in (out, plot):
        if path:
            check_writable(path)
    if plot:
        from .plot import require_matplotlib
        require_matplotlib()
    z = load_array(noise, "noise") if noise else None
    if cuda_graph and provider.lower() not in ("cuda", "cudaexecutionprovider"):
        raise click.UsageError("--cuda-graph needs --provider cuda")
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
    start = time.perf_counter()
    result = sampler.sample(n, steps, solver, seed=seed, noise=z, return_trajectory=bool(plot))
    elapsed = time.perf_counter() - start
    x, traj = result if plot else (result, None)
    if out:
        save_npy(out, x)
    if plot:
        from .plot import trajectory_figure
        trajectory_figure(plot, traj, time_grid(steps))
    click.echo(f"{len(x)} samples of shape {list(sampler.data_shape)}: {solver}, {steps} steps, "
               f"{sampler.last_nfe} NFE, {elapsed * 1e3:.1f} ms on {sampler.providers[0]}"
               + (f" -> {out}" if out else "") + (f", figure -> {plot}" if plot else ""), err=True)
    if not out:
        if x.ndim == 2 and x.shape[1] == 2:
            from .plot import ascii_scatter
            click.echo(ascii_scatter(x))
        else:
            click.echo(f"mean {float(x.mean()):.4f}  std {float(x.std()):.4f} (use --out to keep them)")


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
        "default_nfe": s.nfe(), "training": spec.training, "architecture": spec.architecture,
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
@click.option("--steps", type=click.IntRange(min=1), help="Steps for a velocity model [default: the model's].")
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
