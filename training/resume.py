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
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise _error(f"{p}: the checkpoint holds no training state to resume from; "
                              "checkpoints written with --checkpoint-every K do")
    return state


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
    net.load_state_dict(state["model"])
    if averaged is not None:
        averaged.load_state_dict(state["ema"])
    opt.load_state_dict(state["optimizer"])
    if sched is not None:
        sched.load_state_dict(state["scheduler"])
    stream.load_state(state["stream"])
    torch.set_rng_state(state["torch_rng"])


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
