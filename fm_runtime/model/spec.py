"""ModelSpec: everything the runtime knows about a model file once its contract is read
(contract.read_spec fills it; nothing else writes it)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..definitions import CONTRACT, KEYS


@dataclass(frozen=True)
class GraphNames:
    """The names fm-export gives graph inputs and outputs (contract.json "graph_names"); a file may
    declare others (fm.input_*), except in the divergence graph, whose names are always these."""

    x: str          # velocity graph: state input
    t: str          # velocity graph: time input (a flow map's end time)
    s: str          # flow-map graph: start-time input
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

    data_shape: tuple[int | str, ...]   # sizes, or symbols (T) a request binds (see bind)
    x_name: str = NAMES.x
    t_name: str = NAMES.t
    v_name: str = NAMES.v
    t_rank: int = 1                     # t fed as [B] (1) or [B, 1] (2); a flow map's s likewise
    s_name: str | None = None           # a flow map's start-time input (contract version 5); None: a velocity file
    kind: str = "velocity"              # or "baked": the graph is the whole solve, z -> x
    z_name: str = NAMES.z
    out_name: str = NAMES.samples
    baked: dict[str, Any] = field(default_factory=dict)   # {"solver", "steps", "nfe"}
    selftest: dict[str, Any] = field(default_factory=dict)  # {"inputs", "output", "atol"}
    variant: dict[str, Any] = field(default_factory=dict)   # {"precision", "quantize", "format", "vs_fp32"}
    prediction: str = "velocity"
    prob_path: dict[str, Any] = field(default_factory=lambda: {"name": "unknown"})   # fm.path: the probability path
    default_solver: str = KEYS["default_solver"]["default"]     # contract.json: a key's default
    default_steps: int = KEYS["default_steps"]["default"]
    default_schedule: str = KEYS["default_schedule"]["default"]  # schedules.py; a baked file's: the one it was built with
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
    # contract version 4: named extra inputs ({"name", "dtype", "shape", "role", "null"?}, shape
    # without the batch axis) and the symbols their shapes and data_shape share ({"min", "max",
    # "multiple_of"}, each optional)
    inputs: tuple[dict[str, Any], ...] = ()
    symbols: dict[str, dict[str, int]] = field(default_factory=dict)
    # a condition stage: a second graph run once per request that maps its inputs (token ids, ...)
    # to some of `inputs` ({"onnx_base64", "inputs": [{"name", "dtype", "shape"}], "outputs"})
    stage: dict[str, Any] = field(default_factory=dict)
    # the nulls stored in the file (fm.null_values): {name: array shaped as the input, 1 per symbol}
    null_values: dict[str, Any] = field(default_factory=dict)

    @property
    def flow_map(self) -> bool:
        """Whether the graph is a flow map u(x, s, t) (fm.input_s) rather than a velocity v(x, t)."""
        return self.s_name is not None

    @property
    def symbolic(self) -> bool:
        """Whether shapes name symbols a request must bind (bind() gives the concrete spec)."""
        return any(isinstance(d, str) for d in self.data_shape) or \
            any(isinstance(d, str) for i in self.inputs for d in i["shape"])

    def bind(self, dims: dict[str, int]) -> "ModelSpec":
        """This spec with every symbol replaced by its size in `dims` (checked by the caller)."""
        if not self.symbolic:
            return self

        def sized(shape):
            return tuple(dims[d] if isinstance(d, str) else d for d in shape)
        return replace(self, data_shape=sized(self.data_shape),
                       inputs=tuple({**i, "shape": sized(i["shape"])} for i in self.inputs))

    def input(self, role: str) -> dict[str, Any] | None:
        """The (one) extra input with this role, or None."""
        return next((i for i in self.inputs if i["role"] == role), None)

    def row_rank(self, name: str) -> int:
        """Dimensions of one row of the extra or condition-stage input `name` (-1: no such input),
        so an array of that rank + 1 carries the batch axis."""
        items = (*self.inputs, *self.stage.get("inputs", ()))
        return next((len(i["shape"]) for i in items if i["name"] == name), -1)

    @property
    def guidable(self) -> bool:
        """Whether guidance has something to weigh besides labels: a condition with a null, or a
        guidance input that takes the weight itself."""
        return any(i.get("null") or i["role"] == "guidance" for i in self.inputs)

    @property
    def dim(self) -> int:
        if any(isinstance(d, str) for d in self.data_shape):
            raise ValueError(f"the data shape {list(self.data_shape)} has symbols; bind them first")
        d = 1
        for s in self.data_shape:
            d *= s
        return d
