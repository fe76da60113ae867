"""The training loop and checkpoints."""
from __future__ import annotations

import io
import math
import time
from collections import deque
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from fm_runtime.errors import ModelError
from fm_runtime.io import atomic_write

from .data import DATASETS, NUM_CLASSES, VALUE_RANGE, sample_data, sample_labelled
from .nets import VelocityConv, VelocityDiT, VelocityMLP, VelocityUNet, build_network
from .couplings import COUPLINGS
from .paths import PREDICTIONS, TIME_SAMPLING, PredictionToVelocity, build_path, cfm_loss
from .recipe import Recipe

CHECKPOINT_FORMAT = "fm-runtime-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(ModelError):
    """A checkpoint that cannot be used; the message says why."""


# The default recipe was chosen by measurement on moons (benchmarks/bench_recipes.py); see recipe.py.


def fit(dataset: str = "moons", recipe: Recipe | None = None, *, progress: bool | None = None,
        threads: int | None = None, **options) -> tuple[torch.nn.Module, dict]:
    """Train a velocity network on `dataset` with the conditional flow-matching loss (Adam) by
    `recipe` (training.recipe.Recipe; keyword options override its fields, e.g. steps=500):
    a probability path (paths.PATHS; sigma_min applies to "ot") with independent or
    minibatch-OT coupling. lr_schedule "cosine" decays the learning rate to 0 over the run;
    ema > 0 keeps an exponential moving average of the weights (decay `ema`) and returns it;
    grad_clip > 0 clips the gradient norm; time_sampling "logit-normal" draws t = sigmoid(N(0, 1))
    instead of U[0, 1). prediction "x1" or "noise" trains the network to predict data or noise;
    the returned model converts to velocity (PredictionToVelocity). conditional=True trains on the
    dataset's class labels (data.NUM_CLASSES), replacing each label by the "no label" id with
    probability `label_dropout`, so one network is both conditional and unconditional
    (classifier-free guidance). Deterministic for a given seed. The checkpoint config keeps the
    recipe (config["recipe"]). threads: torch intra-op threads for the run (None: leave torch's
    setting; fm-train fit uses 1, which measured fastest for these small networks)."""
    recipe = replace(recipe or Recipe(), **options) if options else (recipe or Recipe())
    Recipe.of(**recipe.to_dict())
    (steps, batch_size, lr, seed, width, depth, activation, net, path, sigma_min, coupling, lr_schedule,
     ema, grad_clip, time_sampling, prediction, conditional, label_dropout) = recipe.to_dict().values()
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; choose one of: {', '.join(PREDICTIONS)}")
    if lr_schedule not in ("constant", "cosine") or time_sampling not in TIME_SAMPLING or not 0 <= ema < 1:
        raise ValueError(f"bad recipe: lr_schedule={lr_schedule!r}, time_sampling={time_sampling!r}, ema={ema}")
    if coupling not in COUPLINGS:
        raise ValueError(f"unknown coupling {coupling!r}; choose one of: {', '.join(COUPLINGS)}")
    prob_path = build_path({"name": path, "sigma_min": sigma_min} if path == "ot" else {"name": path})
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    if steps < 1 or batch_size < 1 or lr <= 0:
        raise ValueError("steps and batch_size must be >= 1 and lr > 0")
    num_classes = NUM_CLASSES.get(dataset, 0) if conditional else 0
    if conditional and not num_classes:
        raise ValueError(f"dataset {dataset!r} has no class labels; conditional training needs one of: "
                         f"{', '.join(NUM_CLASSES)}")
    if not 0 <= label_dropout < 1:
        raise ValueError(f"label_dropout must be in [0, 1), got {label_dropout}")
    if threads is not None:
        torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    data_rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    data_shape = sample_data(dataset, 2, np.random.default_rng(0)).shape[1:]
    if net in ("conv", "unet", "dit") and len(data_shape) != 3:
        raise ValueError(f"--net {net} is for images [C, H, W]; {dataset} has data shape {list(data_shape)}")
    if net == "conv":
        model = VelocityConv(data_shape, width, depth, activation, num_classes)
    elif net == "unet":
        model = VelocityUNet(data_shape, width, num_classes)
    elif net == "dit":
        model = VelocityDiT(data_shape, width, depth, num_classes=num_classes)
    elif net == "mlp":
        model = VelocityMLP(math.prod(data_shape), width, depth, activation, num_classes, data_shape)
    else:
        raise ValueError(f"unknown network {net!r}; choose mlp, conv, unet or dit")
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if lr_schedule == "cosine" else None
    averaged = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(ema)) if ema else None
    recent: deque[float] = deque(maxlen=100)
    start = time.perf_counter()
    bar = _progress(steps, progress)
    for step in range(steps):
        x1, y = sample_labelled(dataset, batch_size, data_rng)
        x1, y = torch.from_numpy(x1), torch.from_numpy(y) if num_classes else None
        if y is not None and label_dropout:
            y = torch.where(torch.rand(batch_size, generator=gen) < label_dropout, num_classes, y)
        loss = cfm_loss(model, prob_path, x1, gen, coupling, time_sampling, prediction, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        if sched is not None:
            sched.step()
        if averaged is not None:
            averaged.update_parameters(model)
        recent.append(loss.item())
        if bar is not None:
            bar.update(1)
            if step % 50 == 0 or step == steps - 1:
                bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}")
    if bar is not None:
        bar.close()
    if averaged is not None:
        model.load_state_dict(averaged.module.state_dict())
    model.eval()
    if prediction != "velocity":
        model = PredictionToVelocity(model, prob_path, prediction).eval()
    config = {
        "architecture": _network(model).config,
        "path": prob_path.config(),
        "coupling": coupling,
        "prediction": prediction,
        "dataset": dataset,
        "data_shape": [int(s) for s in data_shape],
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "optimizer": "adam",
        "lr_schedule": lr_schedule,
        "ema": ema,
        "grad_clip": grad_clip,
        "time_sampling": time_sampling,
        "seed": seed,
        **({"num_classes": num_classes, "label_dropout": label_dropout} if num_classes else {}),
        **({"value_range": VALUE_RANGE[dataset]} if dataset in VALUE_RANGE else {}),
        "recipe": recipe.to_dict(),
        "final_loss": round(sum(recent) / len(recent), 6),
        "train_seconds": round(time.perf_counter() - start, 2),
        "torch_version": str(torch.__version__),
    }
    return model, config


def _progress(total: int, enabled: bool | None):
    if enabled is False:
        return None
    from tqdm.auto import tqdm
    # enabled=None: show only on a terminal
    return tqdm(total=total, desc="training", unit="step", disable=None if enabled is None else False,
                dynamic_ncols=True, leave=True)


def _network(model: torch.nn.Module) -> torch.nn.Module:
    """The trained network inside a prediction-to-velocity wrapper (or the model itself)."""
    return model.inner if isinstance(model, PredictionToVelocity) else model


def save_checkpoint(path: str | Path, model: torch.nn.Module, config: dict) -> None:
    """Weights plus a JSON-able config, written atomically; loads with weights_only=True."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": config,
               "state_dict": {k: v.detach().cpu().contiguous() for k, v in _network(model).state_dict().items()}}
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
