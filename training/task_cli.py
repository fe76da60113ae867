"""fm-train's commands for the conditioned tasks (training.tasks): `fit --data TASK` and `score`.
The tasks' modules (and torch) load only when one of these runs."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import click

from fm_runtime.errors import InputError
from fm_runtime.tools.io import atomic_write, check_writable

from .recipe import Recipe


def fit_task(ctx, dataset: str, out: str, progress, threads: int, extras) -> None:
    """fm-train fit --data TASK: the task's defaults under the options given on the command line."""
    from click.core import ParameterSource

    from .tasks.fit import fit_task as train
    from .tasks.fit import task_recipe
    if extras:
        raise click.UsageError(f"--data {dataset} trains in one process without --nproc, --checkpoint-every, "
                               "--resume or --loss-log")
    explicit = {k: v for k, v in ctx.params.items() if k in {f.name for f in fields(Recipe)}
                and ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
    try:
        recipe = task_recipe(dataset, explicit)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    _, config = train(dataset, recipe, progress=progress, threads=threads, out=out)
    click.echo(f"trained {dataset}: {recipe.steps} steps in {config['train_seconds']:.1f} s, final loss "
               f"{config['final_loss']:.4f} -> {out}", err=True)



@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-n", "--num", "n", type=click.IntRange(min=10, max=100_000),
              help="Requests per cell [default: reach 1000, tts 200, digits-text 50 per prompt].")
@click.option("--baseline", is_flag=True, help="reach: also train and score an MSE regression net of the same size.")
@click.option("--plot", type=click.Path(dir_okay=False),
              help="Draw it: reach, 32 paths over the obstacle; tts, mels beside their templates; digits-text, a "
                   "PNG grid with one row per number word.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the scores as JSON.")
def score(model, n, baseline, plot, json_out):
    """Score a conditioned task's model file (fm-train fit --data reach|tts|digits-text, then
    fm-export) with its task metric, sampling it with fm_runtime on held-out requests (a .ckpt
    checkpoint: in torch): reach, success and left share at 1, 2, 4, 10 NFE; tts, token and
    speaker accuracy and frame error at guidance 1 and 2 for three lengths; digits-text, a
    classifier's hit rate per prompt at guidance 1 and 3. A flow map (fit --model flow-map,
    distill) is scored at 1, 2 and 4 jumps.

    \b
    Examples:
      fm-train score reach.onnx --baseline --plot reach.png
      fm-train score tts.onnx --plot tts.png
      fm-train score digits-text.onnx --plot prompts.png --json scores.json
      fm-train score reach-map.ckpt
    """
    import json

    from .tasks.native import open_sampler
    from .tasks.score import SCORES
    from .tasks.score import score as score_model
    for path in (json_out, plot):
        if path:
            check_writable(path)
    if plot:
        from fm_runtime.tools.plot import require_matplotlib
        require_matplotlib()
    task = open_sampler(model).spec.training.get("dataset")
    if not isinstance(task, str) or task not in SCORES:     # fm.training is free-form: anything may be there
        raise InputError(f"{model}: trained on {task!r}, not a task fm-train score knows ({', '.join(SCORES)})")
    if baseline and task != "reach":
        raise click.UsageError("--baseline applies to reach models")
    options = {"n": n} if n else {}
    result = score_model(model, plot=plot, **options, **({"baseline": True} if baseline else {}))
    click.echo(json.dumps(result, indent=1))
    if json_out:
        atomic_write(json_out, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=2)))
