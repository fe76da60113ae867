"""ModelSpec: everything the runtime knows about a model file once its contract is read
(contract.read_spec fills it; nothing else writes it)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..definitions import CONTRACT
from ..solve.solvers import DEFAULT_SOLVER, DEFAULT_STEPS


@dataclass(frozen=True)
class GraphNames:
    """The names fm-export gives graph inputs and outputs (contract.json "graph_names"); a file may
    declare others (fm.input_*), except in the divergence graph, whose names are always these."""

    x: str          # velocity graph: state input
    t: str          # velocity graph: time input
    v: str          # velocity graph: velocity output
    y: str          # velocity graph: class labels
    z: str          # baked graph: noise input
    samples: str    # baked graph: samples output
    e: str          # divergence graph: tangent vectors
    jv: str         # divergence graph: Jacobian-vector products


NAMES = GraphNames(**CONTRACT["graph_names"])


@dataclass
class ModelSpec:
    """Everything the runtime needs to sample a model file, read from metadata and graph."""

    data_shape: tuple[int, ...]
    x_name: str = NAMES.x
    t_name: str = NAMES.t
    v_name: str = NAMES.v
    t_rank: int = 1                     # t fed as [B] (1) or [B, 1] (2)
    kind: str = "velocity"              # or "baked": the graph is the whole solve, z -> x
    z_name: str = NAMES.z
    out_name: str = NAMES.samples
    baked: dict[str, Any] = field(default_factory=dict)   # {"solver", "steps", "nfe"}
    selftest: dict[str, Any] = field(default_factory=dict)  # {"inputs", "output", "atol"}
    variant: dict[str, Any] = field(default_factory=dict)   # {"precision", "quantize", "format", "vs_fp32"}
    prediction: str = "velocity"
    prob_path: dict[str, Any] = field(default_factory=lambda: {"name": "unknown"})   # fm.path: the probability path
    default_solver: str = DEFAULT_SOLVER
    default_steps: int = DEFAULT_STEPS
    default_schedule: str = "uniform"   # schedules.py; a baked file's is the one it was built with
    training: dict[str, Any] = field(default_factory=dict)
    architecture: dict[str, Any] = field(default_factory=dict)
    producer: dict[str, Any] = field(default_factory=dict)
    format_version: int | None = None   # None: a plain ONNX without fm.* metadata
    num_classes: int = 0                # > 0: the velocity graph also takes labels y [B] int64
    null_class: int = 0                 # the label id meaning "no label" (num_classes)
    y_name: str = NAMES.y
    value_range: tuple[float, float] | None = None   # image data: the range a pixel spans
    divergence: dict[str, Any] = field(default_factory=dict)   # the JVP graph for log-likelihoods
    source: str = ""                    # the file it was read from, for messages

    @property
    def dim(self) -> int:
        d = 1
        for s in self.data_shape:
            d *= s
        return d
