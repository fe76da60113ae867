"""The checkpoint format: weights plus a JSON-able config (loadable with weights_only=True),
and the training state kept beside them for --resume (training.resume fills and reads it)."""
from __future__ import annotations

import io
from pathlib import Path

import torch

from fm_runtime.cli.io import atomic_write
from fm_runtime.errors import ModelError

from .nets import build_network
from .paths import PredictionToVelocity, build_path

CHECKPOINT_FORMAT = "fm-runtime-checkpoint"
CHECKPOINT_VERSION = 1
STATE_KEY = "training_state"        # the resumable training state (training.resume.capture)


class CheckpointError(ModelError):
    """A checkpoint that cannot be used; the message says why."""


def _network(model: torch.nn.Module) -> torch.nn.Module:
    """The trained network inside a prediction-to-velocity wrapper (or the model itself)."""
    return model.inner if isinstance(model, PredictionToVelocity) else model


def save_checkpoint(path: str | Path, model: torch.nn.Module, config: dict,
                    training_state: dict | None = None) -> None:
    """Weights plus a JSON-able config, written atomically; loads with weights_only=True.
    training_state (training.resume.capture) is kept beside them for --resume."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": config,
               "state_dict": {k: v.detach().cpu().contiguous() for k, v in _network(model).state_dict().items()}}
    if training_state is not None:
        payload[STATE_KEY] = training_state
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))


_REQUIRED = {"architecture": dict, "path": dict, "dataset": str, "data_shape": list, "steps": int,
             "final_loss": (int, float)}


def load_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """Load a checkpoint (weights_only=True: no code runs) and rebuild its network in eval mode."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found" if not p.exists() else f"{p}: not a file")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{p}: not a readable checkpoint ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{p}: not an fm-runtime checkpoint")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{p}: checkpoint version {payload.get('version')!r} is not supported "
                              f"(this version reads {CHECKPOINT_VERSION})")
    config = payload.get("config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{p}: checkpoint has no config")
    for key, typ in _REQUIRED.items():
        if key not in config:
            raise CheckpointError(f"{p}: checkpoint config is missing {key!r}")
        if not isinstance(config[key], typ) or isinstance(config[key], bool):
            raise CheckpointError(f"{p}: checkpoint config {key!r} has the wrong type "
                                  f"({type(config[key]).__name__})")
    try:
        if config["architecture"].get("type") == "task":      # a conditioned task (training.tasks)
            from .tasks import build_model
            model = build_model(config["architecture"])
        else:
            model = build_network(config["architecture"])
        path = build_path(config["path"])
        model.load_state_dict(payload["state_dict"])
        prediction = config.get("prediction", "velocity")
        if prediction != "velocity":
            model = PredictionToVelocity(model, path, prediction)
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"{p}: checkpoint does not match its architecture "
                              f"({' '.join(str(e).split())[:200]})") from None
    return model.eval(), config
