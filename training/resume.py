"""Training state for resuming: everything a run needs to continue as if it had never stopped.

A checkpoint written every K steps (fm-train fit --checkpoint-every K) is an ordinary checkpoint
(weights of the model as trained so far, the EMA's when there is one, and its config, so it
exports and samples like a final one) plus one more entry, "training_state": the raw weights,
the EMA, Adam's moments, the learning-rate schedule, the data stream's generator states (or, for
the per-step stream, nothing but the step), the global RNG, the step and the recent losses.
Everything in it is tensors and plain data, so it loads with torch.load(weights_only=True).

What may change on resume: --steps, to extend a finished run with a constant learning rate (a
cosine schedule is fixed by its length, so it must stay), and --threads; nothing else.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from . import distributed
from .checkpoint import STATE_KEY, CheckpointError


def _error(message: str) -> Exception:
    return CheckpointError(message)


def capture(step: int, net: torch.nn.Module, averaged, opt, sched, stream, recent: list[float],
            seconds: float, recipe: dict, world_size: int, run_id: str) -> dict:
    def cpu(sd: dict) -> dict:
        return {k: v.detach().cpu().clone() if torch.is_tensor(v) else v for k, v in sd.items()}
    return {"step": step, "recipe": dict(recipe), "stream": stream.state(), "model": cpu(net.state_dict()),
            "ema": None if averaged is None else cpu(averaged.state_dict()),
            "optimizer": opt.state_dict(), "scheduler": None if sched is None else sched.state_dict(),
            "torch_rng": torch.get_rng_state(), "recent": list(recent), "seconds": seconds,
            "world_size": world_size, "run_id": run_id}


def read(path: str | Path) -> dict:
    """The training state stored in checkpoint `path` (CheckpointError if there is none)."""
    p = Path(path)
    if not p.is_file():
        raise _error(f"{p}: checkpoint to resume not found")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise _error(f"{p}: not a readable checkpoint ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:200]})") from None
    state = payload.get(STATE_KEY) if isinstance(payload, dict) else None
    if not isinstance(state, dict):
        raise _error(f"{p}: the checkpoint holds no training state to resume from; "
                              "checkpoints written with --checkpoint-every K do")
    for field, ok, want in _FIELDS:
        if not ok(state.get(field)):
            raise _error(f"{p}: training state field {field!r} is not {want} "
                         f"(found {type(state.get(field)).__name__}); the checkpoint cannot be resumed")
    return state


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 62


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _weights(v) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in v.items())


_FIELDS = (   # (field, check, what it must be): everything restore() and the loop read
    ("step", _count, "a step count"),
    ("recipe", lambda v: isinstance(v, dict) and _count(v.get("steps")) and isinstance(v.get("lr_schedule"), str),
     "the run's options"),
    ("stream", lambda v: isinstance(v, dict) and v.get("kind") in ("sequential", "per-step"), "a data stream state"),
    ("model", _weights, "a dict of named tensors"),
    ("ema", lambda v: v is None or _weights(v), "a dict of named tensors or none"),
    ("optimizer", lambda v: isinstance(v, dict) and isinstance(v.get("state"), dict)
     and isinstance(v.get("param_groups"), list), "an optimizer state"),
    ("scheduler", lambda v: v is None or isinstance(v, dict), "a schedule state or none"),
    ("torch_rng", lambda v: torch.is_tensor(v) and v.dtype == torch.uint8 and v.dim() == 1, "a byte tensor"),
    ("recent", lambda v: isinstance(v, list) and all(_number(x) for x in v), "a list of losses"),
    ("seconds", lambda v: _number(v) and v >= 0, "a duration"),
    ("world_size", lambda v: _count(v) and v >= 1, "a process count"),
)


def check_compatible(state: dict, recipe: dict, where: str) -> None:
    """Refuse to resume under options that would not continue the same run."""
    saved = state["recipe"]
    changed = sorted(k for k in set(saved) | set(recipe) if k != "steps" and saved.get(k) != recipe.get(k))
    if changed:
        raise _error(f"{where}: the run to resume was trained with other options: "
                              + ", ".join(f"{k} {saved.get(k)!r} (now {recipe.get(k)!r})" for k in changed))
    if recipe["steps"] < state["step"]:
        raise _error(f"{where}: the checkpoint is at step {state['step']}, past --steps {recipe['steps']}")
    if recipe["lr_schedule"] == "cosine" and recipe["steps"] != saved["steps"]:
        raise _error(f"{where}: a cosine learning-rate schedule is fixed by its length "
                              f"({saved['steps']} steps); resume with --steps {saved['steps']}, or train "
                              "with --lr-schedule constant to extend runs")


def restore(state: dict, net: torch.nn.Module, averaged, opt, sched, stream) -> None:
    """Put the saved state into the run's objects; a part that does not fit them is a
    CheckpointError naming that field, raised before the run takes a step."""
    parts = [("model", net.load_state_dict), ("ema", averaged and averaged.load_state_dict),
             ("optimizer", opt.load_state_dict), ("scheduler", sched and sched.load_state_dict),
             ("stream", stream.load_state), ("torch_rng", torch.set_rng_state)]
    for field, put in parts:
        if put is None:
            continue
        if state[field] is None:
            raise _error(f"training state field {field!r} is empty, but this run needs one; the checkpoint "
                         "cannot be resumed")
        try:
            put(state[field])
            if field == "optimizer":
                _check_moments(opt)
        except (KeyError, ValueError, RuntimeError, TypeError, IndexError, OverflowError) as e:
            raise _error(f"training state field {field!r} does not fit this run "
                         f"({type(e).__name__}: {' '.join(str(e).split())[:160]}); the checkpoint cannot be "
                         "resumed") from None


def _check_moments(opt) -> None:
    """Adam's saved moments must have their parameters' shapes (load_state_dict does not look)."""
    for group in opt.param_groups:
        for param in group["params"]:
            for name, value in opt.state.get(param, {}).items():
                if not torch.is_tensor(value) or (value.dim() and value.shape != param.shape) or value.numel() == 0:
                    raise ValueError(f"optimizer {name} of shape {getattr(value, 'shape', type(value).__name__)} "
                                     f"for a parameter of shape {tuple(param.shape)}")


def restarted(out) -> dict | None:
    """After torchrun restarted the processes: the training state this job last wrote to `out`
    (its run id must be this job's, so a stale file from another run is never taken)."""
    if not out or not distributed.restart_count() or not Path(out).is_file():
        return None
    try:
        state = read(out)
    except Exception:
        return None
    if state.get("run_id") != distributed.run_id():
        return None
    if distributed.rank() == 0:
        logging.getLogger(__name__).warning("restart %d: resuming from %s at step %d",
                                            distributed.restart_count(), out, state["step"])
    return state


class LossLog:
    """A CSV of the global loss at every step ("step,loss", steps counted from 1), appended as
    training goes; a resumed run first drops the rows past its checkpoint's step."""

    def __init__(self, path: str | Path, first_step: int):
        self.path, self.step = Path(path), first_step
        kept = []
        if first_step and self.path.is_file():
            for line in self.path.read_text().splitlines()[1:]:
                if line.split(",")[0].isdigit() and int(line.split(",")[0]) <= first_step:
                    kept.append(line + "\n")
        self.fh = open(self.path, "w")
        self.fh.write("step,loss\n" + "".join(kept))
        self.fh.flush()

    def write(self, losses: list[float]) -> None:
        for loss in losses:
            self.step += 1
            self.fh.write(f"{self.step},{loss!r}\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()
