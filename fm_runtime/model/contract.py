"""The model-file contract: what an fm-runtime ONNX file declares and how the runtime reads it.

The facts (keys, schemas, which kinds require what, limits, names) are data in contract.json
(definitions.py); docs/contract.md explains them for people. This module is their only reader on
the runtime side, and the exporter writes metadata through `build_metadata` so both sides share
the key names.
"""
from __future__ import annotations

import json
from typing import Any

from ..definitions import CONTRACT, KEYS
from ..errors import ModelError, show
from ..solve.schedules import parse_schedule
from ..solve.solvers import DEFAULT_SOLVER, DEFAULT_STEPS, MAX_STEPS, SOLVERS, nfe
from . import schema
from .extra_inputs import read_conditions, read_nulls, read_stage, refuse
from .graph_io import check_graph, io_table, plain_spec
from .spec import NAMES, ModelSpec

# A file declares the lowest version whose features it uses (each key's "since" in contract.json:
# 2 class labels, 3 a time schedule other than uniform).
FORMAT_VERSION: int = CONTRACT["format_version"]
PREFIX: str = CONTRACT["prefix"]
KINDS: tuple[str, ...] = tuple(CONTRACT["kinds"])
PREDICTIONS: tuple[str, ...] = tuple(CONTRACT["predictions"])
__all__ = ["FORMAT_VERSION", "ModelSpec", "build_metadata", "read_spec", "read_selftest", "with_divergence", "put_metadata",
           "write_metadata", "divergence_problem", "describe_variant", "io_table"]


def build_metadata(*, data_shape, path: dict, prediction: str = "velocity",
                   default_solver: str = DEFAULT_SOLVER, default_steps: int = DEFAULT_STEPS,
                   default_schedule=None, training: dict | None = None, architecture: dict | None = None,
                   producer: dict | None = None, baked: dict | None = None, num_classes: int = 0,
                   value_range: list | None = None, divergence: dict | None = None,
                   inputs: list[dict] | None = None, symbols: dict | None = None, stage: dict | None = None,
                   null_values: dict | None = None, graph_names: tuple[str, str, str] = (NAMES.x, NAMES.t, NAMES.v)) -> dict[str, str]:
    """The fm.* metadata_props of a model file (values JSON-encoded). With `baked`
    ({"solver", "steps"}) the file is a baked sampler with input z and output x. num_classes > 0:
    the velocity graph takes labels y, id num_classes meaning "no label" (contract version 2).
    graph_names: the velocity graph's (x, t, v) names, for graphs fm-export did not name.
    default_schedule: the time schedule (schedules.py) used when none is asked for, or for a
    baked file the one it was built with; other than uniform, the file declares version 3.
    inputs / symbols: named extra inputs and the symbols of their shapes (version 4);
    null_values {name: array}: the nulls stored in the file; stage: the condition stage."""
    schedule = parse_schedule(default_schedule)
    names = ({"input_z": NAMES.z, "output_x": NAMES.samples, "baked": {**baked, "nfe": nfe(baked["solver"], baked["steps"])}}
             if baked else dict(zip(("input_x", "input_t", "output_v"), graph_names)))
    if baked:
        default_solver, default_steps = baked["solver"], baked["steps"]
    default_steps = schedule.steps or default_steps
    values = {
        "format_version": 1, "kind": "baked" if baked else "velocity",
        "data_shape": [s if isinstance(s, str) else int(s) for s in data_shape], **names, "prediction": prediction, "path": path,
        "default_solver": default_solver, "default_steps": int(default_steps),
        "default_schedule": str(schedule),
        "training": training or {}, "architecture": architecture or {}, "producer": producer or {},
    }
    if num_classes:
        values.update(format_version=2, num_classes=int(num_classes), null_class=int(num_classes), input_y=NAMES.y)
    if not schedule.uniform:
        values["format_version"] = 3
    if inputs or symbols:
        values.update(format_version=4, inputs=[dict(i, shape=list(i["shape"])) for i in inputs or []],
                      symbols=symbols or {})
    if null_values:
        values["null_values"] = {k: v.tolist() if hasattr(v, "tolist") else v for k, v in null_values.items()}
    if stage:
        values["condition_stage"] = stage
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
    """One key's value, its size, JSON and shape checked (schema.py)."""
    value, problem = schema.decode(key, raw)
    if problem:
        raise ModelError(f"{where}: metadata {PREFIX}{key} {schema.describe(problem)}", key=PREFIX + key,
                         field=problem[0])
    return value


def with_divergence(metadata: dict[str, str], divergence: dict) -> dict[str, str]:
    """The same metadata_props with fm.divergence set to `divergence`."""
    return {**metadata, PREFIX + "divergence": json.dumps(divergence)}


def put_metadata(props, key: str, value) -> None:
    """Set one contract key in an ONNX model's metadata_props (replacing it; value None removes
    it): the one way the exporter changes a key after build_metadata."""
    if key not in KEYS:
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
    """Every contract key the file has, decoded and checked against its schema (which fixes its
    JSON type); a key its kind requires must be there."""
    out: dict[str, Any] = {}
    for key, entry in KEYS.items():
        raw = metadata.get(PREFIX + key)
        if raw is None:
            if kind in entry["required_for"]:
                raise refuse(where, key, f"metadata key {PREFIX + key} is missing")
            continue
        out[key] = _value(where, key, raw)
    return out


def _decode_kind(where: str, metadata: dict[str, str]) -> str:
    raw = metadata.get(PREFIX + "kind")
    if raw is None:
        raise refuse(where, "kind", f"metadata key {PREFIX}kind is missing")
    kind, problem = schema.decode("kind", raw)
    kind = raw if problem else kind
    if kind not in KINDS:
        raise refuse(where, "kind", f"fm.kind {show(kind)} is not one of {', '.join(KINDS)}")
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
            raise refuse(where, "format_version", "metadata has fm.* keys but no fm.format_version")
        version, problem = schema.decode("format_version", metadata[PREFIX + "format_version"])
        if problem:
            raise refuse(where, "format_version", "fm.format_version must be a positive integer, "
                          f"got {show(metadata[PREFIX + 'format_version'])}")
        if version > FORMAT_VERSION:
            raise refuse(where, "format_version", f"contract version {version} is newer than this runtime "
                          f"understands ({FORMAT_VERSION}); upgrade fm-runtime")
        kind = _decode_kind(where, metadata)
        m = _decode(where, metadata, kind)
        if m["prediction"] not in PREDICTIONS:
            raise refuse(where, "prediction", f"fm.prediction {show(m['prediction'])} is not supported "
                          f"(supported: {', '.join(PREDICTIONS)})")
        shape = m["data_shape"]
        solver = m.get("default_solver", DEFAULT_SOLVER)
        if solver not in SOLVERS:
            raise refuse(where, "default_solver", f"fm.default_solver {show(solver)} is not a known solver")
        steps = m.get("default_steps", DEFAULT_STEPS)
        if not 1 <= steps <= MAX_STEPS:
            raise refuse(where, "default_steps", f"fm.default_steps must be between 1 and {MAX_STEPS}, got {steps}")
        baked = m.get("baked", {})
        if kind == "baked":
            if baked.get("solver") not in SOLVERS or not 1 <= baked.get("steps", 0) <= MAX_STEPS:
                raise refuse(where, "baked", f"fm.baked must name a known solver and 1 to {MAX_STEPS} steps",
                              "solver" if baked.get("solver") not in SOLVERS else "steps")
            solver, steps = baked["solver"], baked["steps"]
            if baked.setdefault("nfe", nfe(solver, steps)) != nfe(solver, steps):
                raise refuse(where, "baked", f"fm.baked says {baked['nfe']} NFE, but {solver}:{steps} takes "
                              f"{nfe(solver, steps)}", "nfe")
        try:
            schedule = parse_schedule(m.get("default_schedule", "uniform"))
        except ValueError as e:
            raise refuse(where, "default_schedule", f"fm.default_schedule: {e}") from None
        if schedule.steps not in (None, steps):
            raise refuse(where, "default_schedule",
                          f"fm.default_schedule has {schedule.steps} steps but the file's steps are {steps}")
        classes = m.get("num_classes", 0)
        if classes < 0 or (classes and m.get("null_class", classes) not in range(classes + 1)):
            raise refuse(where, "null_class", "fm.num_classes must be >= 0 and fm.null_class one of 0..num_classes, "
                          f"got {classes} and {m.get('null_class')}")
        div = m.get("divergence", {})
        if div and not (isinstance(div.get("onnx_base64"), str) or (
                isinstance(div.get("unsupported_ops"), list) and all(isinstance(o, str) for o in div["unsupported_ops"]))):
            raise refuse(where, "divergence", "fm.divergence must hold onnx_base64 (a string) or unsupported_ops "
                          "(a list of operator names)")
        vr = m.get("value_range")
        if vr is not None and (len(vr) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                       for v in vr) or not vr[0] < vr[1]):
            raise refuse(where, "value_range", f"fm.value_range must be [low, high] with low < high, got {show(vr)}")
        extra, symbols = read_conditions(where, m, shape, kind, {NAMES.y if classes else None,
                                                               m.get("input_x", NAMES.x), m.get("input_t", NAMES.t)})
        stage = read_stage(where, m.get("condition_stage", {}), extra, symbols)
        nulls = read_nulls(where, m.get("null_values", {}), extra, stage)
        spec = ModelSpec(tuple(shape), x_name or m.get("input_x", NAMES.x), t_name or m.get("input_t", NAMES.t),
                         m.get("output_v", NAMES.v), kind=kind, z_name=m.get("input_z", NAMES.z),
                         out_name=m.get("output_x", NAMES.samples), baked=baked, selftest=m.get("selftest", {}),
                         variant=m.get("variant", {}), prediction=m["prediction"], prob_path=m["path"],
                         default_solver=solver, default_steps=steps, default_schedule=str(schedule),
                         training=m.get("training", {}), architecture=m.get("architecture", {}),
                         producer=m.get("producer", {}), format_version=version,
                         num_classes=classes, null_class=m.get("null_class", classes),
                         y_name=m.get("input_y", NAMES.y), value_range=tuple(vr) if vr else None,
                         divergence=m.get("divergence", {}), inputs=extra, symbols=symbols, stage=stage,
                         null_values=nulls)
        if data_shape is not None and not spec.symbolic and tuple(data_shape) != spec.data_shape:
            raise refuse(where, "data_shape", f"the file declares data shape {list(spec.data_shape)}, "
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
    if spec.variant.get("precision", "fp32") != "fp32" or spec.variant.get("quantize") or \
            spec.variant.get("format", "onnx") != "onnx":
        return (f"{where} is a reduced {describe_variant(spec.variant).split(':')[0]} file, which leaves the "
                "divergence graph out; compute log-likelihoods with the float32 .onnx export")
    if spec.inputs:
        return (f"{where} takes conditions ({', '.join(i['name'] for i in spec.inputs)}) and carries no divergence "
                "graph; re-export it with fm-export (which adds one), --add-divergence takes files without conditions")
    if g.get("unsupported_ops"):
        ops = ", ".join(map(str, g["unsupported_ops"]))[:200]
        return (f"{where}: no log-likelihoods for this network: it uses {ops}, which fm-export's divergence "
                "transform has no rule for (sampling works)")
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
