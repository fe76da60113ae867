"""The checkpoint format: weights plus a JSON-able config (loadable with weights_only=True),
and the training state kept beside them for --resume (training.resume fills and reads it)."""
from __future__ import annotations

import io
import math
from pathlib import Path

import torch

from fm_runtime.errors import ModelError, NumericalError
from fm_runtime.tools.io import atomic_write

from .nets import build_network
from .paths import PredictionToVelocity, build_path

CHECKPOINT_FORMAT = "fm-runtime-checkpoint"
CHECKPOINT_VERSION = 1
STATE_KEY = "training_state"        # the resumable training state (training.resume.capture)


class CheckpointError(ModelError):
    """A checkpoint that cannot be used; the message says why."""


def inner_network(model: torch.nn.Module) -> torch.nn.Module:
    """The trained network inside a prediction-to-velocity wrapper (or the model itself)."""
    return model.inner if isinstance(model, PredictionToVelocity) else model


def save_checkpoint(path: str | Path, model: torch.nn.Module, config: dict,
                    training_state: dict | None = None) -> None:
    """Weights plus a JSON-able config, written atomically; loads with weights_only=True.
    training_state (training.resume.capture) is kept beside them for --resume."""
    state = {k: v.detach().cpu().contiguous() for k, v in inner_network(model).state_dict().items()}
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:     # every trainer saves through here: no checkpoint of weights that sample only NaN
        raise NumericalError(f"{path}: weight {bad} is NaN or infinite; nothing written (the training diverged: try a "
                             "lower learning rate)")
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": config, "state_dict": state}
    if training_state is not None:
        payload[STATE_KEY] = training_state
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))


_REQUIRED = {"architecture": dict, "path": dict, "dataset": str, "data_shape": list, "steps": int,
             "final_loss": (int, float)}


# Sizes an architecture may name. Each of width, depth, heads, patch, dim and num_classes costs
# the network at least that many weights, so none can exceed the weights the checkpoint holds;
# one sample may hold at most MAX_SAMPLE values (16 MiB of float32, the runtime's per-row share
# of its smallest memory allowance): a conv net's weights do not grow with its image size.
_SIZED = ("width", "depth", "heads", "patch", "dim", "num_classes")
MAX_SAMPLE = 1 << 22


def _rebuild(p: Path, config: dict, weights) -> torch.nn.Module:
    """The network config["architecture"] describes, with the checkpoint's weights; refused
    (CheckpointError naming the field) before any memory is taken when the two disagree."""
    if not isinstance(weights, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in weights.items()):
        raise CheckpointError(f"{p}: checkpoint field 'state_dict' is not a dict of named tensors")
    held = sum(v.numel() for v in weights.values())
    arch, shape = config["architecture"], config["data_shape"]
    for key in _SIZED:
        value = arch.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= held:
            raise CheckpointError(f"{p}: checkpoint architecture {key!r} is {value!r}: not a size the "
                                  f"{held} weights it holds can have")
    sizes = [d for d in shape if not (isinstance(d, str) and d.isidentifier())]     # names: a task's symbols
    if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in sizes) \
            or math.prod(sizes) > MAX_SAMPLE:
        raise CheckpointError(f"{p}: checkpoint data_shape {shape!r} is not the shape of one sample "
                              f"(positive sizes or symbol names, at most {MAX_SAMPLE} values)")
    try:
        with torch.device("meta"):              # shapes only: nothing allocated
            skeleton = _build(arch)
        want = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
        have = {k: tuple(v.shape) for k, v in weights.items()}
        if want != have:
            odd = sorted(set(want) ^ set(have)) or [k for k in want if want[k] != have[k]]
            raise ValueError(f"{len(have)} weight tensors where the architecture has {len(want)}; first "
                             f"difference: {odd[0]} {have.get(odd[0])} vs {want.get(odd[0])}")
        model = _build(arch)
        model.load_state_dict(weights)
    except (KeyError, ValueError, RuntimeError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{p}: checkpoint does not match its architecture "
                              f"({' '.join(str(e).split())[:200]})") from None
    return model


def _build(arch: dict) -> torch.nn.Module:
    if arch.get("type") == "task":      # a conditioned task (training.tasks)
        from .tasks import build_model
        return build_model(arch)
    return build_network(arch)


def load_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """Load a checkpoint (weights_only=True: no code runs) and rebuild its network in eval mode."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found" if not p.exists() else f"{p}: not a file")
    if p.suffix.lower() in (".onnx", ".ort"):
        raise CheckpointError(f"{p}: a model file, not a training checkpoint; sample it with fm-run sample {p} "
                              f"(fm-run info {p} describes it)")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{p}: not a readable checkpoint ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{p}: not an fm-train checkpoint; for a network trained elsewhere give its code and "
                              f"these weights: fm-export --module PKG.MODULE:FACTORY --weights {p} --data-shape SHAPE "
                              "--out model.onnx (docs/deploy.md)")
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
    model = _rebuild(p, config, payload.get("state_dict"))
    try:
        path = build_path(config["path"])
        prediction = config.get("prediction", "velocity")
        if prediction != "velocity":
            model = PredictionToVelocity(model, path, prediction)
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"{p}: checkpoint config 'path' or 'prediction' is not usable "
                              f"({' '.join(str(e).split())[:200]})") from None
    return model.eval(), config
