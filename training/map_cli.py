"""fm-train's flow-map commands: `distill TEACHER --out MAP` and what `fit --model flow-map` runs
(training.flowmap). Torch and the training modules load only when one of these runs."""
from __future__ import annotations

import tempfile
from pathlib import Path

import click

from fm_runtime.tools.io import check_writable
from fm_runtime.tools.options import watched_limits

MODELS = ("velocity", "flow-map")
MAP_METHODS = ("distill", "meanflow")


@click.command()
@watched_limits
@click.argument("teacher", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Flow-map checkpoint to write.")
@click.option("--steps", type=click.IntRange(min=1),
              help="Optimiser steps [default: per dataset; 2-D toys 2000 (~15 s), tasks 1500-4000].")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Teacher trajectories per step [default: 2048 for 2-D toys, the task's batch for tasks].")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True),
              help="Adam learning rate, decayed by a cosine [default: 2e-3 for 2-D toys, 5e-4 for images and tasks].")
@click.option("--teacher-steps", type=click.IntRange(4, 256), default=16, show_default=True,
              help="Midpoint steps of the teacher's trajectories; the map learns jumps between their grid "
                   "times (a multiple of 4 keeps the 1-, 2- and 4-jump grids on it).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the trajectories and the training.")
@click.option("--threads", type=click.IntRange(1, 256), default=1, show_default=True, help="torch intra-op threads.")
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: on a terminal].")
def distill(teacher, out, steps, batch_size, lr, teacher_steps, seed, threads, progress):
    """Distil a velocity checkpoint into a flow map u(x, s, t), sampled in one or a few jumps
    x <- x + (t - s) u(x, s, t). The map starts as the teacher (one jump = one Euler step) and
    regresses the teacher's own trajectories: jumps between their grid times, with extra rows on
    the 1-, 2- and 4-jump grids and on s = t (the instantaneous velocity). Conditioned teachers
    are distilled at guidance 1 with the usual share of null conditions, so guidance still works
    per request on the map.

    \b
    Examples:
      fm-train fit --data moons --out moons.ckpt
      fm-train distill moons.ckpt --out moons-map.ckpt
      fm-train sample moons-map.ckpt --steps 1 -n 1000 --out x.npy
      fm-train distill reach.ckpt --out reach-map.ckpt && fm-train score reach-map.ckpt
    """
    from .flowmap import distill as run_distill

    check_writable(out)
    _, config = run_distill(teacher, _map_recipe(teacher, steps=steps, batch_size=batch_size, lr=lr,
                                                 teacher_steps=teacher_steps, seed=seed),
                            progress=progress, threads=threads, out=out)
    _report(config, out)


def _map_recipe(teacher: str, **given):
    from .checkpoint import load_checkpoint
    from .flowmap import default_recipe

    dataset = load_checkpoint(teacher)[1]["dataset"]
    try:
        return default_recipe(dataset, **{k: v for k, v in given.items() if v is not None})
    except ValueError as e:
        raise click.UsageError(str(e)) from None


def _report(config: dict, out: str) -> None:
    f = config["flow_map"]
    click.echo(f"flow map of {config['dataset']} ({f['method']}): {f['steps']} steps in {f['seconds']:.1f} s, "
               f"final loss {config['final_loss']:.5f} -> {out}", err=True)


def fit_map(ctx, dataset: str, out: str, method: str, teacher_out: str | None, progress, threads: int,
            map_steps: int | None = None) -> None:
    """fit --model flow-map: distill (a velocity teacher trained by the usual recipe, then distilled
    with the dataset's map defaults) or meanflow (a map from scratch by the recipe's options)."""
    from .data import TASK_DATA
    from .flowmap import default_recipe, meanflow
    from .flowmap import distill as run_distill

    if method == "meanflow":
        if teacher_out or map_steps:
            raise click.UsageError("--teacher-out and --map-steps go with --map-method distill (meanflow trains no "
                                   "teacher; --steps is its own)")
        r = _teacher_recipe(ctx, dataset)
        _, config = meanflow(dataset, steps=r.steps, batch_size=r.batch_size, lr=r.lr, width=r.width, depth=r.depth,
                             activation=r.activation, conditional=r.conditional and dataset not in TASK_DATA,
                             seed=r.seed, progress=progress, threads=threads, out=out)
        return _report(config, out)
    with tempfile.TemporaryDirectory() as tmp:
        teacher = teacher_out or str(Path(tmp) / "teacher.ckpt")
        if teacher_out:
            check_writable(teacher_out)
        seconds = _fit_teacher(ctx, dataset, teacher, progress, threads)
        given = {"seed": ctx.params["seed"], **({"steps": map_steps} if map_steps else {})}
        _, config = run_distill(teacher, default_recipe(dataset, **given), progress=progress, threads=threads, out=out)
    click.echo(f"teacher of {dataset}: {seconds:.1f} s" + (f" -> {teacher_out}" if teacher_out else ""), err=True)
    _report(config, out)


def _teacher_recipe(ctx, dataset: str):
    """The velocity recipe fit would use (a task's: its defaults under the options given)."""
    from dataclasses import fields

    from click.core import ParameterSource

    from .data import TASK_DATA
    from .recipe import Recipe
    from .tasks.fit import task_recipe

    recipe_fields = {f.name for f in fields(Recipe)}
    if dataset not in TASK_DATA:
        return Recipe(**{k: v for k, v in ctx.params.items() if k in recipe_fields}).validate()
    explicit = {k: v for k, v in ctx.params.items() if k in recipe_fields
                and ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
    try:
        return task_recipe(dataset, explicit)
    except ValueError as e:
        raise click.UsageError(str(e)) from None


def _fit_teacher(ctx, dataset: str, out: str, progress, threads: int) -> float:
    """Train the velocity teacher to `out` as fit --model velocity would; its training seconds."""
    from .data import TASK_DATA
    from .tasks.fit import fit_task
    from .train import fit as train_fit

    recipe = _teacher_recipe(ctx, dataset)
    if dataset in TASK_DATA:
        _, config = fit_task(dataset, recipe, progress=progress, threads=threads, out=out)
    else:
        _, config = train_fit(dataset, recipe, progress=progress, threads=threads, out=out)
    return float(config["train_seconds"])
