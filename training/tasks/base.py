"""What a conditioned task is: its file's signature (the contract version 4 declaration fm-export
writes), its training data, its networks, and its defaults."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn


class TaskModel(nn.Module):
    """A velocity network and the optional condition stage that feeds it. `conditions` maps a
    request (the stage's inputs, or the conditions themselves) to the velocity's extra inputs,
    with the rows in `drop` given their null (classifier-free guidance training); `forward(x, t,
    conds)` is the velocity. `mask_name`: the extra input that masks the data, if any;
    `predicts_data`: the velocity network predicts the clean data x1_hat and returns
    (x1_hat - x) / max(1 - t, t_floor), and training draws t below 1 - t_floor and weighs x1_hat's
    error as the velocity's, capped near t = 1."""

    mask_name: str | None = None
    predicts_data = False       # the velocity is (x1_hat - x) / max(1 - t, t_floor): fit weighs x1_hat's error
    t_floor = 0.0

    def __init__(self, velocity: nn.Module, stage: nn.Module | None, architecture: dict):
        super().__init__()
        self.velocity, self.stage, self.architecture = velocity, stage, architecture
        self.config = architecture          # what checkpoints store as config["architecture"]

    def conditions(self, request: dict[str, torch.Tensor], drop: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, t: torch.Tensor, conds: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.velocity(x=x, t=t, **conds)


class _FlowMapForward:
    """A task's flow map: its velocity module is u(x, s, t, **conds), the average velocity from s to t."""

    flow_map = True

    def forward(self, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor, conds: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.velocity(x=x, s=s, t=t, **conds)


_MAP_CLASSES: dict[type, type] = {}


def model_class(cls: type, architecture: dict) -> type:
    """cls, or its flow-map twin (forward(x, s, t, conds)) when the architecture is a flow map."""
    if not architecture.get("flow_map"):
        return cls
    if cls not in _MAP_CLASSES:
        _MAP_CLASSES[cls] = type(cls.__name__ + "Map", (_FlowMapForward, cls), {})
    return _MAP_CLASSES[cls]


def map_call(call: str) -> str:
    """A task's call string with the flow map's start time s placed just before t ("x,t,obs" -> "x,s,t,obs")."""
    names = call.split(",")
    at = names.index("t")
    return ",".join(names[:at] + ["s"] + names[at:])


@dataclass(frozen=True)
class Task:
    """A conditioned task. draw(n, rng) -> (x1 [n, *shape] float32, request {name: array}) draws
    training pairs (the request as fm-run would give it: the stage's inputs, or the conditions);
    build(architecture) -> TaskModel; the export fields are export_velocity's (data_shape, inputs,
    call, nulls, symbols) and the condition stage's declaration (stage_inputs, stage_outputs)."""

    name: str
    data_shape: list
    inputs: dict
    call: str
    draw: Callable[[int, np.random.Generator], tuple[np.ndarray, dict]]
    build: Callable[[dict], TaskModel]
    defaults: dict
    nulls: dict = field(default_factory=dict)
    symbols: dict = field(default_factory=dict)
    stage_inputs: dict = field(default_factory=dict)
    stage_outputs: tuple = ()
    dropout: float = 0.0             # share of rows trained with their null conditions (guidance)
    value_range: list | None = None
    default_steps: int = 10          # the file's default solver steps
    default_solver: str = "euler"
    about: str = ""

    def export_options(self, model: TaskModel) -> dict:
        """export_velocity's keyword options for this task's trained model (a flow map: the call
        with s before t, and one jump by default)."""
        is_map = getattr(model, "flow_map", False)
        options = dict(data_shape=self.data_shape, inputs=self.inputs, call=map_call(self.call) if is_map else self.call,
                       nulls=self.nulls, symbols=self.symbols, value_range=self.value_range,
                       default_steps=1 if is_map else self.default_steps,
                       default_solver="jump" if is_map else self.default_solver)
        if self.stage_inputs:
            options["condition"] = {"module": model.stage, "inputs": self.stage_inputs, "outputs": list(self.stage_outputs)}
        return options


def mlp(sizes: list[int], act=nn.SiLU) -> nn.Sequential:
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), act()]
    return nn.Sequential(*layers[:-1])
