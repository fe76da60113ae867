"""fm-train: train flow-matching models and sample them with the torch reference sampler."""
from __future__ import annotations

import os
import sys
import time
from dataclasses import fields
from pathlib import Path

import click
import numpy as np

from fm_runtime.errors import InputError
from fm_runtime.solve.noise import noise_rows
from fm_runtime.solve.solvers import MAX_STEPS, VELOCITY_SOLVERS
from fm_runtime.tools.io import atomic_write, check_writable, load_array, save_npy
from fm_runtime.tools.options import FiniteRange, watched_limits
from fm_runtime.tools.runner import run_cli

from .data import DATASETS, TASK_DATA
from .map_cli import MAP_METHODS, MODELS, distill, fit_map
from .recipe import Recipe
from .task_cli import fit_task, score


def recipe_options(f):
    """fit's recipe options, one per Recipe field, from the field's own metadata (help, choices,
    range, flag): the recipe's defaults and descriptions are written once, in training/recipe.py."""
    for spec in reversed(fields(Recipe)):
        m = spec.metadata
        flag = m["flag"] or "--" + spec.name.replace("_", "-")
        if spec.type == "bool":
            f = click.option(flag, spec.name, is_flag=True, default=spec.default, help=m["help"])(f)
            continue
        if m["choices"] is not None:
            kind = click.Choice(list(m["choices"]))
        elif spec.type == "int":
            kind = int if m["low"] is None and m["high"] is None else click.IntRange(m["low"], m["high"], min_open=m["low_open"], max_open=m["high_open"])
        else:       # finite too: a range lets NaN through
            kind = FiniteRange(m["low"], m["high"], min_open=m["low_open"], max_open=m["high_open"])
        f = click.option(flag, spec.name, type=kind, default=spec.default, show_default=True, help=m["help"])(f)
    return f


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """Train flow-matching velocity networks (PyTorch) and sample them natively.

    \b
    Examples:
      fm-train fit --data moons --steps 10000 --out moons.ckpt
      fm-train reflow moons.ckpt --out moons-reflow.ckpt
      fm-train distill moons.ckpt --out moons-map.ckpt
      fm-train sample moons.ckpt --noise z.npy --steps 8 --solver midpoint --out native.npy
    """


@cli.command()
@watched_limits
@click.option("--data", "dataset", type=click.Choice([*DATASETS, *TASK_DATA]), default="moons", show_default=True,
              help="Toy dataset, generated in code; or a conditioned task (reach: waypoints around an obstacle; "
                   "tts: a toy TTS decoder with a condition stage; digits-text: digits from a text prompt), trained "
                   "with its own networks and defaults.")
@recipe_options
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Checkpoint to write (weights + JSON config).")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar with the running loss [default: on a terminal].")
@click.option("--threads", type=click.IntRange(1, 256), default=1, show_default=True,
              help="torch intra-op threads. For these small networks one thread measured best: 300 "
                   "default moons steps took 3.0 s on 1 thread and 2.8 s on 2 on a quiet 2-core machine, "
                   "7.1 s against 18.1 s on a busy one; try more only for large image networks.")
@click.option("--nproc", type=click.IntRange(1, 1024),
              help="Train in this many processes on this machine (torchrun --standalone; "
                   "DistributedDataParallel, gloo on CPU, nccl on GPUs). --batch-size is the global batch.")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also write --out every K steps, with the state --resume needs (0: only at the end, "
                   "without it). A process restarted by torchrun --max-restarts continues from it.")
@click.option("--resume", type=click.Path(dir_okay=False),
              help="Continue the run saved in this checkpoint (written with --checkpoint-every) with the "
                   "same options; with --lr-schedule constant, --steps may be larger.")
@click.option("--loss-log", type=click.Path(dir_okay=False), help="Write the loss of every step as CSV.")
@click.option("--model", "model_kind", type=click.Choice(MODELS), default="velocity", show_default=True,
              help="velocity: a velocity network, solved in steps. flow-map: a flow map u(x, s, t) sampled in "
                   "one or a few jumps: a velocity teacher trained by this recipe, then distilled (fm-train distill).")
@click.option("--map-method", type=click.Choice(MAP_METHODS), default="distill", show_default=True,
              help="With --model flow-map: distill (teacher, then distillation; measured best) or meanflow "
                   "(from scratch by MeanFlow's identity, with this recipe's steps, batch and lr).")
@click.option("--teacher-out", type=click.Path(dir_okay=False),
              help="With --model flow-map: also keep the velocity teacher's checkpoint here.")
@click.option("--map-steps", type=click.IntRange(min=1),
              help="With --model flow-map --map-method distill: distillation steps [default: fm-train distill's].")
@click.pass_context
def fit(ctx, dataset, out, progress, threads, nproc, checkpoint_every, resume, loss_log, model_kind, map_method,
        teacher_out, map_steps, **options):
    """Train with the conditional flow-matching loss. The defaults are the recipe measured best on
    moons (benchmarks/bench_recipes.py): the tutorial's network size with SiLU, batch 2048, lr 3e-3
    with cosine decay, EMA 0.999, about 40 CPU seconds. The tutorial's own recipe is
    --batch-size 256 --lr 1e-2 --lr-schedule constant --ema 0 --activation elu.

    \b
    Examples:
      fm-train fit --data moons --out moons.ckpt
      fm-train fit --data moons --batch-size 256 --lr 1e-2 --lr-schedule constant --ema 0 --activation elu --out tutorial.ckpt
      fm-train fit --data 8gaussians --width 128 --sigma-min 0.01 --out g8.ckpt
      fm-train fit --data moons --path vp --out moons-vp.ckpt
      fm-train fit --data moons --coupling ot --out moons-otcfm.ckpt
      fm-train fit --data moons --conditional --out moons-cond.ckpt
      fm-train fit --data digits --conditional --width 512 --activation silu --out digits.ckpt
      fm-train fit --data moons --nproc 2 --checkpoint-every 1000 --out moons.ckpt
      fm-train fit --data reach --model flow-map --teacher-out reach.ckpt --out reach-map.ckpt
    """
    from . import distributed
    from .train import fit as train_fit

    check_writable(out)
    if model_kind == "flow-map":
        if nproc or checkpoint_every or resume or loss_log:
            raise click.UsageError("--model flow-map trains in one process without --nproc, --checkpoint-every, "
                                   "--resume or --loss-log")
        return fit_map(ctx, dataset, out, map_method, teacher_out, progress, threads, map_steps)
    if teacher_out or map_steps or map_method != "distill":
        raise click.UsageError("--teacher-out, --map-steps and --map-method go with --model flow-map")
    if dataset in TASK_DATA:
        return fit_task(ctx, dataset, out, progress, threads, nproc or checkpoint_every or resume or loss_log)
    recipe = Recipe(**options)
    if nproc and not distributed.launched():
        if recipe.batch_size % nproc:
            raise click.BadParameter(f"the global batch {recipe.batch_size} must be a multiple of --nproc {nproc}",
                                     param_hint="--batch-size")
        if resume:      # refuse here, where the exit status is ours, not torchrun's
            from .resume import check_compatible, read
            check_compatible(read(resume), recipe.to_dict(), resume)
        return distributed.launch_fit(ctx, nproc, out if checkpoint_every else None)
    model, config = train_fit(dataset, recipe, progress=progress, threads=threads, out=out,
                              checkpoint_every=checkpoint_every, resume=resume, loss_log=loss_log)
    if distributed.rank() == 0:
        click.echo(f"trained {dataset}: {recipe.steps} steps in {config['train_seconds']:.1f} s, final loss "
                   f"{config['final_loss']:.4f} -> {out}", err=True)
    elif distributed.launched():
        # the run is complete and only process 0 writes: leave without the interpreter's teardown,
        # where torch's gloo threads were seen to abort under load ("terminate called without an
        # active exception"), failing a run whose checkpoint was already written
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


@cli.command()
@watched_limits
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("-n", "--num", "n", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Number of samples when no --noise is given.")
@click.option("--seed", type=int, help="Seed for the noise, the same stream fm-run draws [default: 0].")
@click.option("--noise", type=click.Path(dir_okay=False), help="Start from this .npy noise [n, *shape].")
@click.option("--steps", type=click.IntRange(1, MAX_STEPS), default=8, show_default=True,
              help="Solver steps on the uniform grid 0 -> 1.")
@click.option("--solver", type=click.Choice(sorted(VELOCITY_SOLVERS)), default="midpoint", show_default=True,
              help="Fixed-step solver (a flow-map checkpoint always jumps: --steps jumps).")
@click.option("--schedule", metavar="NAME[:S]", help="Time schedule, as in fm-run sample [default: uniform].")
@click.option("--times", metavar="T0,...,1", help="Explicit time grid, as in fm-run sample.")
@click.option("--class", "label", type=int, help="Class-conditional checkpoints: the class of every sample.")
@click.option("--guidance", type=float, default=1.0, show_default=True,
              help="Classifier-free guidance weight, as in fm-run sample.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Samples .npy to write.")
def sample(checkpoint, n, seed, noise, steps, solver, schedule, times, label, guidance, out):
    """Sample a checkpoint with the torch-native reference sampler (the runtime's parity target).

    \b
    Examples:
      fm-train sample moons.ckpt --noise z.npy --steps 8 --solver midpoint --out native.npy
      fm-train sample moons.ckpt -n 1000 --seed 0 --out native.npy
      fm-train sample moons.ckpt --noise z.npy --steps 2 --schedule shift:0.5 --out native.npy
      fm-train sample moons-map.ckpt --noise z.npy --steps 1 --out jumped.npy
    """
    from fm_runtime.tools.options import schedule_of

    from .checkpoint import load_checkpoint
    from .sample import jump_sample
    from .sample import sample as native_sample

    check_writable(out)
    grid = schedule_of(schedule, times)
    if grid is not None and grid.steps:
        if steps != 8 and steps != grid.steps:
            raise click.BadParameter(f"--times makes {grid.steps} steps, not {steps}", param_hint="--steps")
        steps = grid.steps
    model, config = load_checkpoint(checkpoint)
    if config["architecture"].get("type") == "task":
        raise InputError(f"{checkpoint}: a {config['dataset']} task checkpoint takes conditions: score it with "
                         "fm-train score, or export it and sample with fm-run sample --cond")
    shape = tuple(config["data_shape"])
    if noise:
        z = load_array(noise, "noise", kinds="f")
        if z.ndim != 1 + len(shape) or tuple(z.shape[1:]) != shape:
            raise InputError(f"{noise}: noise has shape {list(z.shape)}, expected [n, {', '.join(map(str, shape))}]")
    else:
        z = noise_rows(0 if seed is None else seed, 0, n, shape)
    classes = config.get("num_classes", 0)
    if label is not None and not 0 <= label <= classes:
        raise InputError(f"--class {label} is out of range for this checkpoint ("
                         + (f"classes 0..{classes - 1}, {classes} = no label)" if classes else "not class-conditional)"))
    start = time.perf_counter()
    labels = None if label is None else np.full(len(z), label)
    if config.get("model") == "flow-map":       # a flow map jumps: x <- x + (t - s) u(x, s, t)
        solver = "jump"
        x = jump_sample(model, z, steps, labels=labels, guidance=guidance, schedule=grid)
    else:
        x = native_sample(model, z, steps, solver, labels=labels, guidance=guidance, schedule=grid)
    save_npy(out, x)
    click.echo(f"{len(x)} samples: {solver}, {steps} steps in {(time.perf_counter() - start) * 1e3:.1f} ms "
               f"(torch) -> {out}", err=True)


@cli.command()
@watched_limits
@click.argument("teacher", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Student checkpoint to write.")
@click.option("--pairs", type=click.IntRange(min=2048), default=200_000, show_default=True,
              help="(noise, teacher sample) pairs drawn once through the runtime and trained on.")
@click.option("--steps", type=click.IntRange(min=1), default=4_000, show_default=True, help="Student optimiser steps.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True,
              help="Adam learning rate (cosine decay; the student starts from the teacher's weights).")
@click.option("--teacher-steps", type=click.IntRange(1, MAX_STEPS), default=16, show_default=True,
              help="Midpoint steps of the teacher's solve for each pair.")
@click.option("--distil", metavar="SOLVER:STEPS",
              help="Then train the student through this one solve (e.g. midpoint:1) so that it alone lands "
                   "on the teacher's sample; the student is then best at exactly that solve.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the pairs and the training.")
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: on a terminal].")
def reflow(teacher, out, pairs, steps, lr, teacher_steps, distil, seed, progress):
    """Reflow (rectified flow): train a student on the teacher's own (noise, sample) pairs, so its
    trajectories are straighter and few steps suffice. Run it again on the student for 2-reflow.
    The defaults are the ones measured best on moons (benchmarks/bench_few_step.py); reflowing a
    default moons model takes about 40 CPU seconds.

    \b
    Examples:
      fm-train fit --data moons --out moons.ckpt
      fm-train reflow moons.ckpt --out moons-r1.ckpt
      fm-train reflow moons-r1.ckpt --out moons-r2.ckpt                  # 2-reflow
      fm-train reflow moons.ckpt --distil euler:1 --out moons-1step.ckpt
    """
    from .checkpoint import save_checkpoint
    from .reflow import ReflowRecipe
    from .reflow import reflow as run_reflow

    check_writable(out)
    if distil:
        solver, _, n = distil.partition(":")
        if solver not in VELOCITY_SOLVERS or not n.isdigit() or not 1 <= int(n) <= 16:
            raise click.BadParameter(f"expected SOLVER:STEPS with 1 <= STEPS <= 16, e.g. midpoint:1; got {distil!r}",
                                     param_hint="--distil")
    recipe = ReflowRecipe(pairs=pairs, steps=steps, lr=lr, teacher_steps=teacher_steps, distil=distil, seed=seed)
    model, config = run_reflow(teacher, recipe, progress=progress)
    save_checkpoint(out, model, config)
    r = config["reflow"]
    click.echo(f"reflow round {r['round']} of {teacher}: {pairs:,} pairs in {r['pair_seconds']:.1f} s, {steps} steps"
               + (f" + distilled to {distil}" if distil else "") + f" in {config['train_seconds']:.1f} s "
               f"(with the teachers: {config['total_train_seconds']:.1f} s), final loss {config['final_loss']:.4f} "
               f"-> {out}", err=True)


@cli.command(name="eval")
@watched_limits
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-n", "--num", "n", type=click.IntRange(min=50, max=20_000), default=2000, show_default=True,
              help="Samples per draw (and data points to compare with).")
@click.option("--repeats", type=click.IntRange(1, 10), default=2, show_default=True,
              help="Independent noise/data draws averaged per cell.")
@click.option("--solver", "solvers", type=click.Choice(sorted(VELOCITY_SOLVERS)), multiple=True,
              help="Solvers to tabulate; repeat for several [default: all; a flow map: its jumps].")
@click.option("--max-nfe", type=click.IntRange(1, 1024), default=64, show_default=True,
              help="Largest number of network evaluations in the table (powers of two from 1).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the table as JSON.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Draw distance against NFE to this PNG.")
def evaluate(model, n, repeats, solvers, max_nfe, json_out, plot):
    """Sample quality against fresh data: energy distance (and sliced W2 in --json) for each
    solver and number of network evaluations, beside the noise floor (two independent data draws: what a perfect sampler scores).

    MODEL is a checkpoint (.ckpt: the torch reference sampler) or a model file (the runtime).

    \b
    Examples:
      fm-train eval moons.ckpt
      fm-train eval moons.onnx --solver midpoint --max-nfe 16 --plot nfe.png
    """
    import json

    from .evaluate import format_table, nfe_table, plot_table, sampler_for

    for path in (json_out, plot):
        if path:
            check_writable(path)
    if plot:
        from fm_runtime.tools.plot import require_matplotlib
        require_matplotlib()
    sample, info = sampler_for(model)
    if info["dataset"] not in DATASETS:
        raise InputError(f"{model}: trained on {info['dataset']!r}, which has no data generator to compare with")
    nfes = [2**k for k in range(max_nfe.bit_length()) if 2**k <= max_nfe]
    if info["baked"]:
        nfes, solvers = [info["baked"]["nfe"]], [info["baked"]["solver"]]
    elif info.get("flow_map"):
        solvers = ["jump"]
    result = nfe_table(sample, info["dataset"], n, nfes, list(solvers) or None, repeats=repeats)
    click.echo(format_table(result))
    if json_out:
        atomic_write(json_out, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=2)))
    if plot:
        plot_table(result, plot)


cli.add_command(score)
cli.add_command(distill)


def main(argv: list[str] | None = None) -> None:
    # supervised as fm-run is: Ctrl-C, SIGTERM and --timeout end a run within seconds (training
    # stops at a step boundary; the checkpoints --checkpoint-every wrote stay)
    sys.exit(run_cli(cli, "fm-train", argv, supervised=True))


if __name__ == "__main__":
    main()
