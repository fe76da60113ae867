"""An fm-train checkpoint (or a model and its checkpoint config) to one verified ONNX file: what
the checkpoint says about the network (data shape, path, classes, the task's inputs, the training
summary) becomes export.export_velocity's arguments, and its dataset the data that measures a
smaller variant's quality."""
from __future__ import annotations

from pathlib import Path

import torch

from export import variants
from export.errors import ExportError
from export.onnx_export import ExportReport, export_velocity

from .checkpoint import inner_network, load_checkpoint
from .data import DATASETS, fresh_data
from .tasks import TASKS

_TRAINING_KEYS = ("dataset", "steps", "batch_size", "lr", "optimizer", "seed", "final_loss", "coupling",
                  "prediction", "lr_schedule", "ema", "label_dropout")


def export_model(model: torch.nn.Module, config: dict, out: str | Path, **kwargs) -> ExportReport:
    """Export a network trained by fm-train with its checkpoint config (export_velocity's
    keyword options apply)."""
    missing = [k for k in ("data_shape", "path") if k not in config]
    if missing:
        raise ExportError(f"the checkpoint config has no {' or '.join(missing)}; for a network not "
                          "trained by fm-train use export_velocity(net, out, data_shape=...)")
    if config.get("architecture", {}).get("type") == "task":       # a conditioned task (training.tasks)
        task = TASKS[config["dataset"]]
        return export_velocity(model.velocity.eval(), out, path=config["path"], architecture=config["architecture"],
                               training={k: config[k] for k in _TRAINING_KEYS if k in config},
                               **{**task.export_options(model), **kwargs})
    inner = inner_network(model)
    classes = int(getattr(inner, "num_classes", 0))
    dataset = config.get("dataset")
    reduced = (kwargs.get("precision", "fp32"), kwargs.get("quantize"), kwargs.get("fmt", "onnx")) != ("fp32", None, "onnx")
    if reduced and dataset in DATASETS and "reference_data" not in kwargs:
        kwargs["reference_data"] = (fresh_data(dataset, variants.QUALITY_SAMPLES, 2024),
                                    fresh_data(dataset, variants.QUALITY_SAMPLES, 2025))
    times = "x,s,t" if getattr(inner, "flow_map", False) else "x,t"     # a flow map: u(x, s, t[, y])
    return export_velocity(
        model.eval(), out, data_shape=config["data_shape"], call=times + ",y" if classes else times,
        num_classes=classes, path=config["path"], architecture=config.get("architecture", {}),
        training={k: config[k] for k in _TRAINING_KEYS if k in config},
        value_range=config.get("value_range"), **kwargs)


def export_checkpoint(checkpoint: str | Path, out: str | Path, **kwargs) -> ExportReport:
    model, config = load_checkpoint(checkpoint)
    return export_model(model, config, out, **kwargs)
