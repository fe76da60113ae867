"""Training a conditioned task: the conditional flow-matching loss on the straight (ot) path,
with the conditions (through the task's condition stage, trained jointly) fed to the velocity,
a share of rows trained on their null conditions for classifier-free guidance, and the loss
counted on the valid (unmasked) values only. Adam with cosine decay and an EMA of the weights
whose decay warms up over the first steps (a plain EMA at 0.999 still holds 22% of the random
initial weights after 1500 steps)."""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from ..checkpoint import save_checkpoint
from ..recipe import Recipe
from . import TASKS
from .base import TaskModel

# the recipe fields a task run uses; the others (path, coupling, ...) are the moons recipe's
USED = ("steps", "batch_size", "lr", "seed", "width", "depth", "ema")
DATA_WEIGHT_FLOOR = 0.05    # a data-predicting model's loss weight is at most 1 / 0.05^2


def task_recipe(name: str, explicit: dict) -> Recipe:
    """The task's defaults, with the options given explicitly on top."""
    unused = sorted(k for k in explicit if k not in USED)
    if unused:
        raise ValueError(f"--data {name} trains with {', '.join('--' + k.replace('_', '-') for k in USED)}; "
                         f"{', '.join('--' + k.replace('_', '-') for k in unused)} do not apply to it")
    return replace(Recipe(), **{**TASKS[name].defaults, **explicit}).validate()


def loss_of(model: TaskModel, x1: torch.Tensor, request: dict, dropout: float, gen: torch.Generator) -> torch.Tensor:
    """The conditional flow-matching loss of one batch."""
    n = len(x1)
    drop = torch.rand(n, generator=gen) < dropout
    conds = model.conditions(request, drop)
    mask = conds.get(model.mask_name) if model.mask_name else None
    x0 = torch.randn(x1.shape, generator=gen)
    if mask is not None:
        x0 = x0 * mask
    t = torch.rand(n, generator=gen) * (1 - model.t_floor)
    tt = t.reshape(-1, *[1] * (x1.dim() - 1))
    xt = (1 - tt) * x0 + tt * x1
    v = model(xt, t, conds)
    if model.predicts_data:      # |x1_hat - x1|^2 / (1 - t)^2 is the velocity's error; capped near t = 1
        err = ((xt + (1 - tt) * v - x1) / (1 - tt).clamp(min=DATA_WEIGHT_FLOOR)) ** 2
    else:
        err = (v - (x1 - x0)) ** 2
    if mask is None:
        return err.mean()
    full = torch.broadcast_to(mask, err.shape)
    return (err * full).sum() / full.sum().clamp(min=1)


def fit_task(name: str, recipe: Recipe, *, progress: bool | None = None, threads: int | None = None,
             out: str | None = None) -> tuple[TaskModel, dict]:
    """Train the task `name` (TASKS) by `recipe` (see task_recipe); write the checkpoint to `out`."""
    from ..progress import progress_bar
    task, r = TASKS[name], recipe
    if threads is not None:
        torch.set_num_threads(int(threads))
    torch.manual_seed(r.seed)
    rng, gen = np.random.default_rng(r.seed), torch.Generator().manual_seed(r.seed)
    architecture = {"type": "task", "task": name, "width": r.width, "depth": r.depth}
    model = task.build(architecture)
    opt = torch.optim.Adam(model.parameters(), lr=r.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, r.steps)
    averaged = {k: v.detach().clone() for k, v in model.state_dict().items()} if r.ema else None
    bar, recent, start = progress_bar(r.steps, progress), [], time.perf_counter()
    for step in range(r.steps):
        x1, request = task.draw(r.batch_size, rng)
        loss = loss_of(model, torch.from_numpy(x1), {k: torch.from_numpy(v) for k, v in request.items()},
                       task.dropout, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if averaged is not None:      # the decay warms up, (1 + k) / (10 + k), so short runs forget their start
            decay = min(r.ema, (1 + step) / (10 + step))
            with torch.no_grad():
                for k, v in model.state_dict().items():
                    if v.is_floating_point():
                        averaged[k].mul_(decay).add_(v, alpha=1 - decay)
                    else:
                        averaged[k].copy_(v)
        recent = (recent + [loss.item()])[-100:]
        if bar is not None:
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{np.mean(recent):.4f}")
    if bar is not None:
        bar.close()
    if averaged is not None:
        model.load_state_dict(averaged)
    model.eval()
    config = {"architecture": architecture, "path": {"name": "ot", "sigma_min": 0.0}, "dataset": name,
              "data_shape": list(task.data_shape), "steps": r.steps, "final_loss": round(float(np.mean(recent)), 6),
              "train_seconds": round(time.perf_counter() - start, 2), "batch_size": r.batch_size, "lr": r.lr,
              "seed": r.seed, "optimizer": "adam", "recipe": r.to_dict()}
    if task.value_range:
        config["value_range"] = task.value_range
    if out is not None:
        save_checkpoint(out, model, config)
    return model, config
