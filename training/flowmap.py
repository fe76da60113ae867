"""Flow maps: networks u(x, s, t) that jump from time s to t in one evaluation,
x_t = x_s + (t - s) u(x_s, s, t), with u(x, t, t) the instantaneous velocity.

Two ways to train one:
- distill (the default): from a trained velocity checkpoint. The map starts as the teacher (its
  net plus a zero-initialised path from the gap t - s, so one jump is one Euler step), then
  regresses u(x_s, s, t) onto (x_t - x_s) / (t - s) between points of the teacher's own
  trajectories (midpoint solves on a uniform grid, cached in chunks and refreshed as training
  goes), with a share of the rows on the jumps a sampler makes (1, 2 and 4 jumps) and a share on
  the diagonal s = t regressed onto the teacher's velocity. Conditioned models are distilled at
  guidance 1 with the usual share of rows on their null conditions, so guidance still works per
  request on the map.
- meanflow: from scratch on data, by MeanFlow's identity written in this repository's time
  (0 = noise, 1 = data, the map evaluated at its start x_s): d/ds [(t - s) u(x_s, s, t)] = -v(x_s, s)
  along a trajectory gives u = v + (t - s) du/ds, du/ds the forward-mode derivative with tangent
  (v, 1, 0) on (x, s, t) (torch.func.jvp); the target is held constant (stop-gradient), v is
  the conditional velocity x1 - x0 of the straight path, 75% of the rows sit at s = t (plain flow
  matching) and each row's error is weighed by MeanFlow's adaptive weight. (MeanFlow's own
  paper writes the same identity as u = v - (t - r) du/dt, tangent (v, 0, 1), for its time that
  runs from data at 0 to noise at 1 and its map evaluated at the later time.)
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .checkpoint import CheckpointError, inner_network, load_checkpoint, save_checkpoint
from .data import DATASETS, NUM_CLASSES, sample_labelled
from .nets import FlowMapMLP, build_network
from .progress import progress_bar

METHODS = ("distill", "meanflow")


@dataclass(frozen=True)
class MapRecipe:
    """How a map is trained; per-dataset defaults in DEFAULTS (measured in
    benchmarks/bench_flowmap_training.py)."""
    steps: int = 2000
    batch_size: int = 2048
    lr: float = 2e-3                # Adam with cosine decay to 0
    teacher_steps: int = 16         # midpoint steps of the teacher's trajectories (a multiple of 4)
    pool: int = 16                  # chunks of batch_size trajectories kept
    refresh: int = 8                # one chunk redrawn every `refresh` steps
    jump_share: float = 0.4         # rows on the jumps of a 1-, 2- or 4-jump sampler
    diagonal_share: float = 0.2     # rows at s = t, regressed onto the teacher's velocity
    seed: int = 0

    def validate(self) -> "MapRecipe":
        if min(self.steps, self.batch_size, self.teacher_steps, self.pool, self.refresh) < 1 or self.lr <= 0:
            raise ValueError("steps, batch_size, teacher_steps, pool and refresh must be >= 1 and lr > 0")
        if not 0 <= self.jump_share + self.diagonal_share <= 1 or min(self.jump_share, self.diagonal_share) < 0:
            raise ValueError("jump_share and diagonal_share must be >= 0 and add up to at most 1")
        return self


_TASK = dict(lr=5e-4, pool=32, refresh=16, jump_share=0.6, diagonal_share=0.1)
DEFAULTS = {
    "reach": dict(_TASK, steps=4000, batch_size=256),
    "tts": dict(_TASK, steps=2000, batch_size=64),
    "digits-text": dict(_TASK, steps=2000, batch_size=256),
    "digits": dict(_TASK, steps=2000, batch_size=256),
}


def default_recipe(dataset: str, **explicit) -> MapRecipe:
    """The map recipe for `dataset` (2-D toys: MapRecipe's own defaults), with `explicit` on top."""
    return replace(MapRecipe(), **{**DEFAULTS.get(dataset, {}), **explicit}).validate()


# ---- the two kinds of models: plain networks (labels) and tasks (conditions from a stage) ----

class _Kind:
    """What the two kinds share: the teacher's velocity and the map's jump, each called with the
    condition as the model takes it (labels, or the conditions dict)."""

    @staticmethod
    def velocity(model, x, t, cond):
        return model(x, t, cond)

    @staticmethod
    def average(model, x, s, t, cond):
        return model(x, s, t, cond)


class _Plain(_Kind):
    """A plain network v(x, t, y) / u(x, s, t, y); the condition is the label tensor (or None)."""

    def __init__(self, config: dict):
        self.dataset, self.shape = config["dataset"], tuple(config["data_shape"])
        self.num_classes = config.get("num_classes", 0)
        self.dropout = config.get("label_dropout", 0.0) if self.num_classes else 0.0

    def draw(self, n: int, rng: np.random.Generator, model, with_data: bool = False):
        """(x1 or None, condition) for n rows: labels with the dropout share set to "no label"."""
        x1, y = sample_labelled(self.dataset, n, rng)
        cond = None
        if self.num_classes:
            y = np.where(rng.random(n) < self.dropout, self.num_classes, y)
            cond = torch.from_numpy(y)
        return (torch.from_numpy(x1) if with_data else None), cond

    @staticmethod
    def mask(cond):
        return None

    @staticmethod
    def trained(model) -> list:
        return list(model.parameters())


class _Tasked(_Kind):
    """A task model (training.tasks): conditions from its stage, with the dropout share on nulls."""

    def __init__(self, config: dict, mask_name: str | None):
        from .tasks import TASKS
        self.task, self.mask_name = TASKS[config["dataset"]], mask_name
        self.dataset, self.dropout = config["dataset"], self.task.dropout

    def draw(self, n: int, rng: np.random.Generator, model, with_data: bool = False):
        x1, request = self.task.draw(n, rng)
        drop = torch.from_numpy(rng.random(n) < self.dropout)
        conds = model.conditions({k: torch.from_numpy(v) for k, v in request.items()}, drop)
        return (torch.from_numpy(x1) if with_data else None), conds

    def mask(self, conds):
        return conds.get(self.mask_name) if self.mask_name else None

    @staticmethod
    def trained(model) -> list:
        return list(model.velocity.parameters())      # the condition stage stays the teacher's


def _kind(config: dict, model) -> _Plain | _Tasked:
    return _Tasked(config, model.mask_name) if config["architecture"].get("type") == "task" else _Plain(config)


def map_architecture(architecture: dict) -> dict:
    """The architecture of the flow map of a velocity net: the same plus "flow_map": true."""
    if architecture.get("type") not in ("mlp", "task"):
        raise CheckpointError(f"flow maps are built on mlp networks and task models, not {architecture.get('type')!r}")
    return {**architecture, "flow_map": True}


def map_from_teacher(teacher: torch.nn.Module, config: dict) -> torch.nn.Module:
    """The flow map of a velocity model, starting as it: its weights copied in, the gap path at zero,
    so u(x, s, t) = v(x, s) until trained."""
    arch = map_architecture(config["architecture"])
    if arch["type"] == "task":
        from .tasks import build_model
        student = build_model(arch)
    else:
        student = build_network(arch)
    missing, unexpected = student.load_state_dict(inner_network(teacher).state_dict(), strict=False)
    if unexpected or any(".gap." not in "." + k for k in missing):
        raise CheckpointError(f"the map does not hold the teacher's weights (missing {missing}, unexpected {unexpected})")
    return student


# ---- distillation ----

@dataclass
class _Chunk:
    traj: torch.Tensor          # [K + 1, n, *shape]: the teacher's states at the grid times
    vel: torch.Tensor           # [K + 1, n, *shape]: its velocity there
    cond: object                # labels [n], None, or the conditions dict


@torch.no_grad()
def _teacher_chunk(teacher, kind, n: int, steps: int, rng: np.random.Generator, gen: torch.Generator) -> _Chunk:
    """n teacher trajectories by the midpoint rule on the uniform grid of `steps` steps."""
    _, cond = kind.draw(n, rng, teacher)
    x = torch.randn((n, *_row_shape(kind, cond)), generator=gen)
    mask = kind.mask(cond)
    if mask is not None:
        x = x * mask
    h = 1.0 / steps
    traj, vel = [x], []
    for i in range(steps):
        t = torch.full((n,), i * h)
        k1 = kind.velocity(teacher, x, t, cond)
        k2 = kind.velocity(teacher, x + 0.5 * h * k1, t + 0.5 * h, cond)
        x = x + h * k2
        traj.append(x)
        vel.append(k1)
    vel.append(kind.velocity(teacher, x, torch.ones(n), cond))
    return _Chunk(torch.stack(traj), torch.stack(vel), cond)


def _row_shape(kind, cond) -> tuple:
    """One sample's shape; a task with a length axis takes it from its mask or its conditions."""
    if isinstance(kind, _Plain):
        return kind.shape
    shape = list(kind.task.data_shape)
    named = [d for d in shape if isinstance(d, str)]
    if named:           # tts: [16, T], T from the mask [n, 1, T]
        length = kind.mask(cond).shape[-1]
        shape = [length if isinstance(d, str) else d for d in shape]
    return tuple(shape)


def _pairs(n: int, steps: int, r: MapRecipe, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid indices (i, j), i <= j, for n rows: the jumps of 1-, 2- and 4-jump samplers, the
    diagonal, and random pairs."""
    u = torch.rand(n, generator=gen)
    i = torch.randint(0, steps, (n,), generator=gen)
    j = i + 1 + (torch.rand(n, generator=gen) * (steps - i).float()).long().clamp(max=steps - 1 - i)
    jumps = torch.tensor([k for k in (1, 1, 2, 4) if steps % k == 0])
    k = jumps[torch.randint(0, len(jumps), (n,), generator=gen)]
    stride = steps // k
    first = (torch.rand(n, generator=gen) * k).long() * stride
    on_jump = u < r.jump_share
    i, j = torch.where(on_jump, first, i), torch.where(on_jump, first + stride, j)
    diagonal = (u >= r.jump_share) & (u < r.jump_share + r.diagonal_share)
    d = torch.randint(0, steps + 1, (n,), generator=gen)
    return torch.where(diagonal, d, i), torch.where(diagonal, d, j)


def _masked_mse(err: torch.Tensor, mask) -> torch.Tensor:
    if mask is None:
        return err.mean()
    full = torch.broadcast_to(mask, err.shape)
    return (err * full).sum() / full.sum().clamp(min=1)


def distill_loss(student, kind, chunk: _Chunk, steps: int, r: MapRecipe, gen: torch.Generator) -> torch.Tensor:
    """The regression of u(x_s, s, t) onto the teacher's (x_t - x_s) / (t - s) (its velocity at s = t)."""
    n = chunk.traj.shape[1]
    i, j = _pairs(n, steps, r, gen)
    rows = torch.arange(n)
    xs, xt, v = chunk.traj[i, rows], chunk.traj[j, rows], chunk.vel[i, rows]
    s, t = i.float() / steps, j.float() / steps
    gap = (t - s).reshape(-1, *[1] * (xs.dim() - 1))
    target = torch.where(gap > 0, (xt - xs) / gap.clamp(min=1e-9), v)
    u = kind.average(student, xs, s, t, chunk.cond)
    return _masked_mse((u - target) ** 2, kind.mask(chunk.cond))


def distill(teacher_path: str | Path, recipe: MapRecipe | None = None, *, progress: bool | None = None,
            threads: int | None = None, out: str | Path | None = None) -> tuple[torch.nn.Module, dict]:
    """Distil the velocity checkpoint at `teacher_path` into a flow map (see the module's note);
    returns (map, config) and writes the checkpoint to `out`."""
    teacher, tconfig = load_checkpoint(teacher_path)
    if tconfig.get("model") == "flow-map":
        raise CheckpointError(f"{teacher_path}: is already a flow map; distill takes a velocity checkpoint")
    if tconfig.get("prediction", "velocity") != "velocity":
        raise CheckpointError(f"{teacher_path}: predicts {tconfig['prediction']!r}; distill takes a teacher that "
                              "predicts velocity (the map copies its weights)")
    r = (recipe or default_recipe(tconfig["dataset"])).validate()
    if threads is not None:
        torch.set_num_threads(int(threads))
    torch.manual_seed(r.seed)
    rng, gen = np.random.default_rng([r.seed, 7]), torch.Generator().manual_seed(r.seed)
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = map_from_teacher(teacher, tconfig).train()
    kind = _kind(tconfig, teacher)
    start = time.perf_counter()
    chunks = max(1, min(r.pool, r.steps // r.refresh))       # a short run keeps only the chunks it can use
    pool = [_teacher_chunk(teacher, kind, r.batch_size, r.teacher_steps, rng, gen) for _ in range(chunks)]
    teacher_seconds = time.perf_counter() - start
    opt = torch.optim.Adam(kind.trained(student), lr=r.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, r.steps)
    bar, recent = progress_bar(r.steps, progress), []
    for step in range(r.steps):
        if step and step % r.refresh == 0:
            clock = time.perf_counter()
            pool[(step // r.refresh) % chunks] = _teacher_chunk(teacher, kind, r.batch_size, r.teacher_steps, rng, gen)
            teacher_seconds += time.perf_counter() - clock
        chunk = pool[int(torch.randint(0, chunks, (1,), generator=gen))]
        loss = distill_loss(student, kind, chunk, r.teacher_steps, r, gen)
        _step(opt, sched, loss)
        recent = (recent + [loss.item()])[-100:]
        _tick(bar, step, recent)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    figures = {"method": "distill", "teacher": str(teacher_path), "teacher_solver": "midpoint",
               "teacher_train_seconds": tconfig.get("train_seconds"), "teacher_sampling_seconds": round(teacher_seconds, 2),
               **asdict(r), "seconds": round(seconds, 2)}
    config = map_config(tconfig, student, figures, float(np.mean(recent)))
    if out is not None:
        save_checkpoint(out, student, config)
    return student.eval(), config


def map_config(base: dict, student, figures: dict, final_loss: float) -> dict:
    """A map checkpoint's config: the velocity config it derives from, marked as a flow map."""
    keep = {k: v for k, v in base.items() if k not in ("recipe", "coupling", "time_sampling", "ema", "lr_schedule")}
    return {**keep, "model": "flow-map", "architecture": inner_network(student).config, "prediction": "velocity",
            "steps": figures["steps"], "batch_size": figures["batch_size"], "lr": figures["lr"],
            "final_loss": round(final_loss, 6), "train_seconds": figures["seconds"], "flow_map": figures}


def _step(opt, sched, loss: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()


def _tick(bar, step: int, recent: list) -> None:
    if bar is not None:
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(recent):.4f}")


# ---- MeanFlow, from scratch ----

def meanflow_loss(model, kind, x1: torch.Tensor, cond, diagonal_share: float, gen: torch.Generator) -> torch.Tensor:
    """MeanFlow's regression in this repository's time: u(x_s, s, t) onto the constant
    v + (t - s) du/ds (forward mode, tangent (v, 1, 0) on (x, s, t)) on the straight path."""
    n = len(x1)
    mask = kind.mask(cond)
    x0 = torch.randn(x1.shape, generator=gen)
    if mask is not None:
        x0 = x0 * mask
    a, b = torch.rand(n, generator=gen), torch.rand(n, generator=gen)
    s, t = torch.minimum(a, b), torch.maximum(a, b)
    s = torch.where(torch.rand(n, generator=gen) < diagonal_share, t, s)
    view = (-1, *[1] * (x1.dim() - 1))
    xs = (1 - s.reshape(view)) * x0 + s.reshape(view) * x1
    u, target = meanflow_target(lambda x, s_, t_: kind.average(model, x, s_, t_, cond), xs, s, t, x1 - x0)
    err = (u - target) ** 2
    # MeanFlow's adaptive weight (power 1): each row's error over its own size, held constant;
    # without it the target, which holds the net's own derivative, runs away
    full = err if mask is None else err * torch.broadcast_to(mask, err.shape)
    per_row = full.flatten(1).sum(1) / (1 if mask is None else torch.broadcast_to(mask, err.shape).flatten(1).sum(1).clamp(min=1))
    return (per_row / (per_row.detach() + 1e-3)).mean()


def meanflow_target(average, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor, v: torch.Tensor):
    """(u(x, s, t), its MeanFlow target v + (t - s) du/ds, held constant): du/ds is the derivative
    along the trajectory through x at s, forward mode with tangent (v, 1, 0) on (x, s, t)."""
    u, du_ds = torch.func.jvp(average, (x, s, t), (v, torch.ones_like(s), torch.zeros_like(t)))
    return u, (v + (t - s).reshape(-1, *[1] * (x.dim() - 1)) * du_ds).detach()


def fresh_map(dataset: str, width: int, depth: int, activation: str = "silu", conditional: bool = False):
    """An untrained map for `dataset` (plain datasets: FlowMapMLP; tasks: the task's map) and its
    velocity-config skeleton."""
    from .tasks import TASKS
    if dataset in TASKS:
        arch = {"type": "task", "task": dataset, "width": width, "depth": depth, "flow_map": True}
        task = TASKS[dataset]
        config = {"dataset": dataset, "data_shape": list(task.data_shape), "path": {"name": "ot", "sigma_min": 0.0},
                  **({"value_range": task.value_range} if task.value_range else {})}
        return task.build(arch), {**config, "architecture": arch}
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}")
    num_classes = NUM_CLASSES.get(dataset, 0) if conditional else 0
    shape = sample_labelled(dataset, 2, 0)[0].shape[1:]
    model = FlowMapMLP(math.prod(shape), width, depth, activation, num_classes, shape)
    config = {"dataset": dataset, "data_shape": list(shape), "path": {"name": "ot", "sigma_min": 0.0},
              **({"num_classes": num_classes, "label_dropout": 0.2} if num_classes else {})}
    return model, {**config, "architecture": model.config}


def meanflow(dataset: str, steps: int = 3000, batch_size: int = 2048, lr: float = 1e-3, width: int = 64,
             depth: int = 3, activation: str = "silu", conditional: bool = False, diagonal_share: float = 0.75,
             seed: int = 0, *, progress: bool | None = None, threads: int | None = None,
             out: str | Path | None = None) -> tuple[torch.nn.Module, dict]:
    """Train a flow map from scratch with MeanFlow (see meanflow_loss); Adam with cosine decay."""
    if threads is not None:
        torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    rng, gen = np.random.default_rng([seed, 11]), torch.Generator().manual_seed(seed)
    model, config = fresh_map(dataset, width, depth, activation, conditional)
    kind = _kind(config, model)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    bar, recent, start = progress_bar(steps, progress), [], time.perf_counter()
    for step in range(steps):
        x1, cond = kind.draw(batch_size, rng, model, with_data=True)
        loss = meanflow_loss(model, kind, x1, cond, diagonal_share, gen)
        _step(opt, sched, loss)
        recent = (recent + [loss.item()])[-100:]
        _tick(bar, step, recent)
    if bar is not None:
        bar.close()
    figures = {"method": "meanflow", "steps": steps, "batch_size": batch_size, "lr": lr,
               "diagonal_share": diagonal_share, "seed": seed, "seconds": round(time.perf_counter() - start, 2)}
    config = map_config(config, model, figures, float(np.mean(recent)))
    if out is not None:
        save_checkpoint(out, model, config)
    return model.eval(), config

