"""The model-file contract: what an fm-runtime ONNX file declares and how the runtime reads it.

Written down for people in docs/contract.md; this module is its only reader on the runtime side,
and the exporter writes metadata through `build_metadata` so both sides share the key names.
"""
from __future__ import annotations

import json
from typing import Any

from . import contract_values
from .errors import ModelError
from .graph_io import check_graph, io_table, plain_spec
from .schedules import parse_schedule
from .spec import NAMES, ModelSpec
from .solvers import DEFAULT_SOLVER, DEFAULT_STEPS, MAX_STEPS, SOLVERS, nfe

# 2 added class labels (fm.num_classes, input y); 3 the time schedule (fm.default_schedule) other
# than uniform. A file declares the lowest version whose features it uses.
FORMAT_VERSION = 3
PREFIX = "fm."
KINDS = ("velocity", "baked")
PREDICTIONS = ("velocity",)
__all__ = ["FORMAT_VERSION", "ModelSpec", "build_metadata", "read_spec", "read_selftest", "with_divergence", "put_metadata", "write_metadata",
           "divergence_problem", "describe_variant", "io_table"]

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
    "default_schedule": (str, ()),
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


def build_metadata(*, data_shape, path: dict, prediction: str = "velocity",
                   default_solver: str = DEFAULT_SOLVER, default_steps: int = DEFAULT_STEPS,
                   default_schedule=None, training: dict | None = None, architecture: dict | None = None,
                   producer: dict | None = None, baked: dict | None = None, num_classes: int = 0,
                   value_range: list | None = None, divergence: dict | None = None,
                   graph_names: tuple[str, str, str] = (NAMES.x, NAMES.t, NAMES.v)) -> dict[str, str]:
    """The fm.* metadata_props of a model file (values JSON-encoded). With `baked`
    ({"solver", "steps"}) the file is a baked sampler with input z and output x. num_classes > 0:
    the velocity graph takes labels y, id num_classes meaning "no label" (contract version 2).
    graph_names: the velocity graph's (x, t, v) names, for graphs fm-export did not name.
    default_schedule: the time schedule (schedules.py) used when none is asked for, or for a
    baked file the one it was built with; other than uniform, the file declares version 3."""
    schedule = parse_schedule(default_schedule)
    names = ({"input_z": NAMES.z, "output_x": NAMES.samples, "baked": {**baked, "nfe": nfe(baked["solver"], baked["steps"])}}
             if baked else dict(zip(("input_x", "input_t", "output_v"), graph_names)))
    if baked:
        default_solver, default_steps = baked["solver"], baked["steps"]
    default_steps = schedule.steps or default_steps
    values = {
        "format_version": 1, "kind": "baked" if baked else "velocity",
        "data_shape": [int(s) for s in data_shape], **names, "prediction": prediction, "path": path,
        "default_solver": default_solver, "default_steps": int(default_steps),
        "default_schedule": str(schedule),
        "training": training or {}, "architecture": architecture or {}, "producer": producer or {},
    }
    if num_classes:
        values.update(format_version=2, num_classes=int(num_classes), null_class=int(num_classes), input_y=NAMES.y)
    if not schedule.uniform:
        values["format_version"] = 3
    if value_range:
        values["value_range"] = [float(v) for v in value_range]
    if divergence:
        values["divergence"] = divergence
    return {PREFIX + k: json.dumps(v) for k, v in values.items()}


def read_selftest(where: str, metadata: dict[str, str]) -> dict:
    """The fm.selftest probe of a graph's own metadata ({} when it has none)."""
    raw = metadata.get(PREFIX + "selftest")
    return {} if raw is None else _value(where, "selftest", raw)


def _value(where: str, key: str, raw: str):
    """One key's value, its size, JSON and shape checked (contract_values)."""
    value, problem = contract_values.decode(key, raw)
    if problem:
        raise ModelError(f"{where}: metadata {PREFIX}{key} {problem}")
    return value


def with_divergence(metadata: dict[str, str], divergence: dict) -> dict[str, str]:
    """The same metadata_props with fm.divergence set to `divergence`."""
    return {**metadata, PREFIX + "divergence": json.dumps(divergence)}


def put_metadata(props, key: str, value) -> None:
    """Set one contract key in an ONNX model's metadata_props (replacing it; value None removes
    it): the one way the exporter changes a key after build_metadata."""
    if key not in _KEYS:
        raise KeyError(f"{PREFIX}{key} is not a contract key")
    for p in [p for p in props if p.key == PREFIX + key]:
        props.remove(p)
    if value is not None:
        props.add(key=PREFIX + key, value=json.dumps(value))


def write_metadata(props, metadata: dict[str, str]) -> None:
    """Replace all metadata_props of an ONNX model with `metadata` (from build_metadata)."""
    del props[:]
    for k, v in metadata.items():
        props.add(key=k, value=v)


def _decode(where: str, metadata: dict[str, str], kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, (typ, required_for) in _KEYS.items():
        raw = metadata.get(PREFIX + key)
        if raw is None:
            if kind in required_for:
                raise ModelError(f"{where}: metadata key {PREFIX + key} is missing")
            continue
        value = _value(where, key, raw)
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise ModelError(f"{where}: metadata {PREFIX + key} should be {getattr(typ, '__name__', typ)}, "
                             f"got {type(value).__name__} {raw[:60]!r}")
        out[key] = value
    return out


def _decode_kind(where: str, metadata: dict[str, str]) -> str:
    raw = metadata.get(PREFIX + "kind")
    if raw is None:
        raise ModelError(f"{where}: metadata key {PREFIX}kind is missing")
    kind, problem = contract_values.decode("kind", raw)
    kind = raw if problem else kind
    if kind not in KINDS:
        raise ModelError(f"{where}: fm.kind {kind!r} is not one of {', '.join(KINDS)}")
    return kind


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
        version, problem = contract_values.decode("format_version", metadata[PREFIX + "format_version"])
        if problem:
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
            if baked.get("solver") not in SOLVERS or not 1 <= baked.get("steps", 0) <= MAX_STEPS:
                raise ModelError(f"{where}: fm.baked must name a known solver and 1 to {MAX_STEPS} steps")
            solver, steps = baked["solver"], baked["steps"]
            if baked.setdefault("nfe", nfe(solver, steps)) != nfe(solver, steps):
                raise ModelError(f"{where}: fm.baked says {baked['nfe']} NFE, but {solver}:{steps} takes "
                                 f"{nfe(solver, steps)}")
        try:
            schedule = parse_schedule(m.get("default_schedule", "uniform"))
        except ValueError as e:
            raise ModelError(f"{where}: fm.default_schedule: {e}") from None
        if schedule.steps not in (None, steps):
            raise ModelError(f"{where}: fm.default_schedule has {schedule.steps} steps but the file's steps are {steps}")
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
        spec = ModelSpec(tuple(shape), x_name or m.get("input_x", NAMES.x), t_name or m.get("input_t", NAMES.t),
                         m.get("output_v", NAMES.v), kind=kind, z_name=m.get("input_z", NAMES.z),
                         out_name=m.get("output_x", NAMES.samples), baked=baked, selftest=m.get("selftest", {}),
                         variant=m.get("variant", {}), prediction=m["prediction"], path=m["path"],
                         default_solver=solver, default_steps=steps, default_schedule=str(schedule),
                         training=m.get("training", {}), architecture=m.get("architecture", {}),
                         producer=m.get("producer", {}), format_version=version,
                         num_classes=classes, null_class=m.get("null_class", classes),
                         y_name=m.get("input_y", NAMES.y), value_range=tuple(vr) if vr else None,
                         divergence=m.get("divergence", {}))
        if data_shape is not None and tuple(data_shape) != spec.data_shape:
            raise ModelError(f"{where}: the file declares data shape {list(spec.data_shape)}, "
                             f"not {list(data_shape)}")
    else:
        spec = plain_spec(where, inputs, outputs, data_shape, x_name, t_name)
    check_graph(where, spec, inputs, outputs)
    spec.source = where
    return spec


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
