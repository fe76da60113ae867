"""The model-file contract: what an fm-runtime ONNX file declares and how the runtime reads it.

Written down for people in docs/contract.md; this module is its only reader on the runtime side,
and the exporter writes metadata through `build_metadata` so both sides share the key names.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .errors import ModelError
from .solvers import DEFAULT_SOLVER, DEFAULT_STEPS, MAX_STEPS, SOLVERS, nfe

FORMAT_VERSION = 2      # 2 added class labels (fm.num_classes, input y); files without them say 1
PREFIX = "fm."
KINDS = ("velocity", "baked")
PREDICTIONS = ("velocity",)

# key -> (JSON-decoded type, required for which kinds)
_ALL, _VELOCITY, _BAKED = KINDS, ("velocity",), ("baked",)
_KEYS: dict[str, tuple[type | tuple[type, ...], tuple[str, ...]]] = {
    "format_version": (int, _ALL),
    "kind": (str, _ALL),
    "data_shape": (list, _ALL),
    "input_x": (str, _VELOCITY),
    "input_t": (str, _VELOCITY),
    "output_v": (str, _VELOCITY),
    "input_z": (str, _BAKED),
    "output_x": (str, _BAKED),
    "baked": (dict, _BAKED),
    "prediction": (str, _ALL),
    "path": (dict, _ALL),
    "default_solver": (str, ()),
    "default_steps": (int, ()),
    "training": (dict, ()),
    "architecture": (dict, ()),
    "producer": (dict, ()),
    "selftest": (dict, ()),
    "variant": (dict, ()),
    "num_classes": (int, ()),
    "null_class": (int, ()),
    "input_y": (str, ()),
    "value_range": (list, ()),
    "divergence": (dict, ()),
}


@dataclass
class ModelSpec:
    """Everything the runtime needs to sample a model file, read from metadata and graph."""

    data_shape: tuple[int, ...]
    x_name: str = "x"                   # velocity graph: state input
    t_name: str = "t"                   # velocity graph: time input
    v_name: str = "v"                   # velocity graph: velocity output
    t_rank: int = 1                     # t fed as [B] (1) or [B, 1] (2)
    kind: str = "velocity"              # or "baked": the graph is the whole solve, z -> x
    z_name: str = "z"                   # baked graph: noise input
    out_name: str = "x"                 # baked graph: samples output
    baked: dict[str, Any] = field(default_factory=dict)   # {"solver", "steps", "nfe"}
    selftest: dict[str, Any] = field(default_factory=dict)  # {"inputs", "output", "atol"}
    variant: dict[str, Any] = field(default_factory=dict)   # {"precision", "quantize", "format", "vs_fp32"}
    prediction: str = "velocity"
    path: dict[str, Any] = field(default_factory=lambda: {"name": "unknown"})
    default_solver: str = DEFAULT_SOLVER
    default_steps: int = DEFAULT_STEPS
    training: dict[str, Any] = field(default_factory=dict)
    architecture: dict[str, Any] = field(default_factory=dict)
    producer: dict[str, Any] = field(default_factory=dict)
    format_version: int | None = None   # None: a plain ONNX without fm.* metadata
    num_classes: int = 0                # > 0: the velocity graph also takes labels y [B] int64
    null_class: int = 0                 # the label id meaning "no label" (num_classes)
    y_name: str = "y"
    value_range: tuple[float, float] | None = None   # image data: the range a pixel spans
    divergence: dict[str, Any] = field(default_factory=dict)   # the JVP graph for log-likelihoods

    @property
    def dim(self) -> int:
        d = 1
        for s in self.data_shape:
            d *= s
        return d


def build_metadata(*, data_shape, path: dict, prediction: str = "velocity",
                   default_solver: str = DEFAULT_SOLVER, default_steps: int = DEFAULT_STEPS,
                   training: dict | None = None, architecture: dict | None = None,
                   producer: dict | None = None, baked: dict | None = None, num_classes: int = 0,
                   value_range: list | None = None, divergence: dict | None = None,
                   graph_names: tuple[str, str, str] = ("x", "t", "v")) -> dict[str, str]:
    """The fm.* metadata_props of a model file (values JSON-encoded). With `baked`
    ({"solver", "steps"}) the file is a baked sampler with input z and output x. num_classes > 0:
    the velocity graph takes labels y, id num_classes meaning "no label" (contract version 2).
    graph_names: the velocity graph's (x, t, v) names, for graphs fm-export did not name."""
    names = ({"input_z": "z", "output_x": "x", "baked": {**baked, "nfe": nfe(baked["solver"], baked["steps"])}}
             if baked else dict(zip(("input_x", "input_t", "output_v"), graph_names)))
    if baked:
        default_solver, default_steps = baked["solver"], baked["steps"]
    values = {
        "format_version": 1, "kind": "baked" if baked else "velocity",
        "data_shape": [int(s) for s in data_shape], **names, "prediction": prediction, "path": path,
        "default_solver": default_solver, "default_steps": int(default_steps),
        "training": training or {}, "architecture": architecture or {}, "producer": producer or {},
    }
    if num_classes:
        values.update(format_version=2, num_classes=int(num_classes), null_class=int(num_classes), input_y="y")
    if value_range:
        values["value_range"] = [float(v) for v in value_range]
    if divergence:
        values["divergence"] = divergence
    return {PREFIX + k: json.dumps(v) for k, v in values.items()}


def with_divergence(metadata: dict[str, str], divergence: dict) -> dict[str, str]:
    """The same metadata_props with fm.divergence set to `divergence`."""
    return {**metadata, PREFIX + "divergence": json.dumps(divergence)}


def _decode(where: str, metadata: dict[str, str], kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, (typ, required_for) in _KEYS.items():
        raw = metadata.get(PREFIX + key)
        if raw is None:
            if kind in required_for:
                raise ModelError(f"{where}: metadata key {PREFIX + key} is missing")
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            raise ModelError(f"{where}: metadata {PREFIX + key} is not valid JSON: {raw[:60]!r}") from None
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise ModelError(f"{where}: metadata {PREFIX + key} should be {getattr(typ, '__name__', typ)}, "
                             f"got {type(value).__name__} {raw[:60]!r}")
        out[key] = value
    return out


def io_table(args) -> dict:
    """{name: (type, shape)} of onnxruntime's NodeArg list (session.get_inputs()/get_outputs())."""
    return {a.name: (a.type, list(a.shape)) for a in args}


def _decode_kind(where: str, metadata: dict[str, str]) -> str:
    raw = metadata.get(PREFIX + "kind")
    if raw is None:
        raise ModelError(f"{where}: metadata key {PREFIX}kind is missing")
    try:
        kind = json.loads(raw)
    except json.JSONDecodeError:
        kind = raw
    if kind not in KINDS:
        raise ModelError(f"{where}: fm.kind {kind!r} is not one of {', '.join(KINDS)}")
    return kind


def _graph_io(where: str, name: str, ios: dict, role: str):
    if name not in ios:
        raise ModelError(f"{where}: the graph has no {role} named {name!r} "
                         f"(it has: {', '.join(ios) or 'none'})")
    return ios[name]


def read_spec(where: str, metadata: dict[str, str], inputs: dict, outputs: dict, *,
              data_shape: tuple[int, ...] | None = None, x_name: str | None = None,
              t_name: str | None = None) -> ModelSpec:
    """Build a ModelSpec from metadata plus the graph's inputs/outputs.

    `inputs`/`outputs` map names to (onnx type string, shape list with None/str for dynamic dims),
    as onnxruntime reports them. Keyword overrides stand in for missing metadata.
    """
    has_fm = any(k.startswith(PREFIX) for k in metadata)
    if has_fm:
        if PREFIX + "format_version" not in metadata:
            raise ModelError(f"{where}: metadata has fm.* keys but no fm.format_version")
        try:
            version = json.loads(metadata[PREFIX + "format_version"])
        except json.JSONDecodeError:
            version = None
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ModelError(f"{where}: fm.format_version must be a positive integer, "
                             f"got {metadata[PREFIX + 'format_version']!r}")
        if version > FORMAT_VERSION:
            raise ModelError(f"{where}: contract version {version} is newer than this runtime "
                             f"understands ({FORMAT_VERSION}); upgrade fm-runtime")
        kind = _decode_kind(where, metadata)
        m = _decode(where, metadata, kind)
        if m["prediction"] not in PREDICTIONS:
            raise ModelError(f"{where}: fm.prediction {m['prediction']!r} is not supported "
                             f"(supported: {', '.join(PREDICTIONS)})")
        shape = m["data_shape"]
        if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
            raise ModelError(f"{where}: fm.data_shape must be a list of positive integers, got {shape!r}")
        solver = m.get("default_solver", DEFAULT_SOLVER)
        if solver not in SOLVERS:
            raise ModelError(f"{where}: fm.default_solver {solver!r} is not a known solver")
        steps = m.get("default_steps", DEFAULT_STEPS)
        if not 1 <= steps <= MAX_STEPS:
            raise ModelError(f"{where}: fm.default_steps must be between 1 and {MAX_STEPS}, got {steps}")
        baked = m.get("baked", {})
        if kind == "baked":
            if (baked.get("solver") not in SOLVERS or not isinstance(baked.get("steps"), int)
                    or not 1 <= baked["steps"] <= MAX_STEPS):
                raise ModelError(f"{where}: fm.baked must name a known solver and steps >= 1, got {baked!r}")
            solver, steps = baked["solver"], baked["steps"]
        classes = m.get("num_classes", 0)
        if classes < 0 or (classes and m.get("null_class", classes) not in range(classes + 1)):
            raise ModelError(f"{where}: fm.num_classes must be >= 0 and fm.null_class one of 0..num_classes, "
                             f"got {classes} and {m.get('null_class')}")
        div = m.get("divergence", {})
        if div and not (isinstance(div.get("onnx_base64"), str) or (
                isinstance(div.get("unsupported_ops"), list) and all(isinstance(o, str) for o in div["unsupported_ops"]))):
            raise ModelError(f"{where}: fm.divergence must hold onnx_base64 (a string) or unsupported_ops "
                             "(a list of operator names)")
        vr = m.get("value_range")
        if vr is not None and (len(vr) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                       for v in vr) or not vr[0] < vr[1]):
            raise ModelError(f"{where}: fm.value_range must be [low, high] with low < high, got {vr!r}")
        spec = ModelSpec(tuple(shape), x_name or m.get("input_x", "x"), t_name or m.get("input_t", "t"),
                         m.get("output_v", "v"), kind=kind, z_name=m.get("input_z", "z"),
                         out_name=m.get("output_x", "x"), baked=baked, selftest=m.get("selftest", {}),
                         variant=m.get("variant", {}), prediction=m["prediction"], path=m["path"],
                         default_solver=solver, default_steps=steps,
                         training=m.get("training", {}), architecture=m.get("architecture", {}),
                         producer=m.get("producer", {}), format_version=version,
                         num_classes=classes, null_class=m.get("null_class", classes),
                         y_name=m.get("input_y", "y"), value_range=tuple(vr) if vr else None,
                         divergence=m.get("divergence", {}))
        if data_shape is not None and tuple(data_shape) != spec.data_shape:
            raise ModelError(f"{where}: the file declares data shape {list(spec.data_shape)}, "
                             f"not {list(data_shape)}")
    else:
        spec = _plain_spec(where, inputs, outputs, data_shape, x_name, t_name)
    _check_graph(where, spec, inputs, outputs)
    return spec


def _plain_spec(where, inputs, outputs, data_shape, x_name, t_name) -> ModelSpec:
    """A velocity ONNX with no fm.* metadata: infer what the graph shows, ask for the rest."""
    names = list(inputs)
    if x_name is None or t_name is None:
        if len(names) != 2:
            raise ModelError(f"{where}: no fm.* metadata and the graph has {len(names)} inputs "
                             f"({', '.join(names)}); pass --x-name and --t-name")
        if x_name is None and t_name is None:
            # t is the input shaped [B] or [B, 1]; x is the other one
            t_like = [n for n in names if len(inputs[n][1]) == 1
                      or (len(inputs[n][1]) == 2 and inputs[n][1][1] == 1)]
            if "x" in names and "t" in names:
                x_name, t_name = "x", "t"
            elif len(t_like) == 1:
                t_name = t_like[0]
                x_name = next(n for n in names if n != t_name)
            else:
                raise ModelError(f"{where}: no fm.* metadata and cannot tell which of the inputs "
                                 f"{', '.join(names)} is x and which is t; pass --x-name and --t-name")
        elif x_name is None:
            x_name = next(n for n in names if n != t_name)
        else:
            t_name = next(n for n in names if n != x_name)
    x_shape = _graph_io(where, x_name, inputs, "input")[1]
    if data_shape is None:
        static = x_shape[1:]
        if not static or not all(isinstance(s, int) for s in static):
            raise ModelError(f"{where}: no fm.* metadata and the graph does not fix the data shape "
                             f"(input {x_name!r} has shape {x_shape}); pass --dim")
        data_shape = tuple(static)
    if len(outputs) != 1:
        raise ModelError(f"{where}: no fm.* metadata and the graph has {len(outputs)} outputs; "
                         "a velocity model has exactly one")
    return ModelSpec(tuple(data_shape), x_name, t_name, next(iter(outputs)))


def _check_graph(where: str, spec: ModelSpec, inputs: dict, outputs: dict) -> None:
    if spec.kind == "baked":
        _check_baked_graph(where, spec, inputs, outputs)
    else:
        _check_velocity_graph(where, spec, inputs, outputs)


def _check_shape(where: str, role: str, name: str, shape: list, data_shape: tuple[int, ...]) -> None:
    want = len(data_shape) + 1
    if len(shape) != want:
        raise ModelError(f"{where}: {role} {name!r} has rank {len(shape)}, expected {want} "
                         f"([batch, {', '.join(map(str, data_shape))}])")
    for got, exp in zip(shape[1:], data_shape):
        if isinstance(got, int) and got != exp:
            raise ModelError(f"{where}: {role} {name!r} has shape {shape}, but the data shape "
                             f"is {list(data_shape)}")


def _check_baked_graph(where: str, spec: ModelSpec, inputs: dict, outputs: dict) -> None:
    """A baked sampler takes noise z [B, *shape] and gives samples x [B, *shape], float32."""
    z_type, z_shape = _graph_io(where, spec.z_name, inputs, "input")
    x_type, x_shape = _graph_io(where, spec.out_name, outputs, "output")
    for role, name, typ in (("input", spec.z_name, z_type), ("output", spec.out_name, x_type)):
        if typ != "tensor(float)":
            raise ModelError(f"{where}: {role} {name!r} is {typ}; a baked sampler uses float32 (tensor(float))")
    extra = [n for n in inputs if n != spec.z_name]
    if extra:
        raise ModelError(f"{where}: the graph has inputs this runtime does not feed: {', '.join(extra)}")
    _check_shape(where, "input", spec.z_name, z_shape, spec.data_shape)
    _check_shape(where, "output", spec.out_name, x_shape, spec.data_shape)


def _check_velocity_graph(where: str, spec: ModelSpec, inputs: dict, outputs: dict) -> None:
    """The graph must take x [B, *shape] and t [B] or [B, 1] as float32 and give v like x."""
    x_type, x_shape = _graph_io(where, spec.x_name, inputs, "input")
    t_type, t_shape = _graph_io(where, spec.t_name, inputs, "input")
    v_type, v_shape = _graph_io(where, spec.v_name, outputs, "output")
    for role, name, typ in (("input", spec.x_name, x_type), ("input", spec.t_name, t_type),
                            ("output", spec.v_name, v_type)):
        if typ != "tensor(float)":
            raise ModelError(f"{where}: {role} {name!r} is {typ}; a velocity model uses float32 (tensor(float))")
    fed = (spec.x_name, spec.t_name) + ((spec.y_name,) if spec.num_classes else ())
    if spec.num_classes:
        y_type, y_shape = _graph_io(where, spec.y_name, inputs, "input")
        if y_type != "tensor(int64)" or len(y_shape) != 1:
            raise ModelError(f"{where}: label input {spec.y_name!r} is {y_type} {y_shape}; expected int64 [batch]")
    extra = [n for n in inputs if n not in fed]
    if extra:
        raise ModelError(f"{where}: the graph has inputs this runtime does not feed: {', '.join(extra)}")
    _check_shape(where, "input", spec.x_name, x_shape, spec.data_shape)
    _check_shape(where, "output", spec.v_name, v_shape, spec.data_shape)
    if len(t_shape) == 1:
        spec.t_rank = 1
    elif len(t_shape) == 2 and (t_shape[1] == 1 or not isinstance(t_shape[1], int)):
        spec.t_rank = 2
    else:
        raise ModelError(f"{where}: input {spec.t_name!r} has shape {t_shape}; expected [batch] or [batch, 1]")


def divergence_problem(spec: ModelSpec, where: str) -> str | None:
    """Why this file cannot give log-likelihoods, with what would help; None when it can."""
    g = spec.divergence
    if spec.kind == "baked":
        return (f"{where} is a baked sampler, which has no velocity to differentiate; use the velocity "
                "model (fm-export without --bake)")
    if isinstance(g.get("onnx_base64"), str):
        return None
    if g.get("unsupported_ops"):
        ops = ", ".join(map(str, g["unsupported_ops"]))[:200]
        return (f"{where}: no log-likelihoods for this network: it uses {ops}, which fm-export's divergence "
                "transform has no rule for (sampling works)")
    if spec.variant.get("precision", "fp32") != "fp32" or spec.variant.get("quantize") or \
            spec.variant.get("format", "onnx") != "onnx":
        return (f"{where} is a reduced {describe_variant(spec.variant).split(':')[0]} file, which leaves the "
                "divergence graph out; compute log-likelihoods with the float32 .onnx export")
    return (f"{where} carries no divergence graph (fm.divergence); add one with "
            f"`fm-export --add-divergence {where} --out NEW.onnx`")


def describe_variant(v: dict) -> str:
    """What a file's precision/format costs, as fm-export measured it (fm.variant)."""
    if not v:
        return "fp32/onnx"
    text = f"{v.get('precision', 'fp32')}{'+' + v['quantize'] if v.get('quantize') else ''}/{v.get('format', 'onnx')}"
    m = v.get("vs_fp32")
    if m:
        text += (f": {m['size_bytes'] / 1024:.1f} KiB; vs float32 on the same noise: sample deviation max "
                 f"{m['max_dev']:.2e}, mean {m['mean_dev']:.2e}")
        if "energy_distance" in m:
            text += (f"; energy distance to data {m['energy_distance']:.2e} (float32 "
                     f"{m['energy_distance_fp32']:.2e}, noise floor {m['noise_floor']:.2e})")
    return text
