"""The model-file contract: what an fm-runtime ONNX file declares and how the runtime reads it.

The facts (keys, schemas, which kinds require what, limits, names) are data in contract.json
(definitions.py); docs/contract.md explains them for people. This module is their only reader on
the runtime side, and the exporter writes metadata through `build_metadata` so both sides share
the key names.
"""
from __future__ import annotations

import copy
import json
from typing import Any

from ..definitions import CONTRACT, KEYS
from ..errors import ModelError, show
from ..solve.schedules import parse_schedule
from ..solve.solvers import DEFAULT_SOLVER, DEFAULT_STEPS, nfe
from . import schema
from .extra_inputs import read_conditions, read_nulls, read_stage, refuse
from .graph_io import check_graph, io_table, plain_spec
from .spec import NAMES, ModelSpec

FORMAT_VERSION: int = CONTRACT["format_version"]
PREFIX: str = CONTRACT["prefix"]
__all__ = ["FORMAT_VERSION", "ModelSpec", "build_metadata", "read_spec", "read_selftest", "with_divergence", "put_metadata",
           "write_metadata", "divergence_problem", "describe_variant", "io_table"]


def build_metadata(*, data_shape, path: dict, prediction: str = "velocity",
                   default_solver: str = DEFAULT_SOLVER, default_steps: int = DEFAULT_STEPS,
                   default_schedule=None, training: dict | None = None, architecture: dict | None = None,
                   producer: dict | None = None, baked: dict | None = None, num_classes: int = 0,
                   value_range: list | None = None, divergence: dict | None = None,
                   inputs: list[dict] | None = None, symbols: dict | None = None, stage: dict | None = None,
                   null_values: dict | None = None, graph_names: tuple[str, str, str] = (NAMES.x, NAMES.t, NAMES.v),
                   input_s: str | None = None) -> dict[str, str]:
    """The fm.* metadata_props of a model file (values JSON-encoded). With `baked`
    ({"solver", "steps"}) the file is a baked sampler with input z and output x. num_classes > 0:
    the velocity graph takes labels y, id num_classes meaning "no label" (contract version 2).
    graph_names: the velocity graph's (x, t, v) names, for graphs fm-export did not name.
    default_schedule: the time schedule (schedules.py) used when none is asked for, or for a
    baked file the one it was built with; other than uniform, the file declares version 3.
    inputs / symbols: named extra inputs and the symbols of their shapes (version 4);
    fm.format_version is the lowest version whose keys the file uses (lowest_version);
    null_values {name: array}: the nulls stored in the file; stage: the condition stage;
    input_s: a flow map's start-time input (version 5; the graph returns u(x, s, t))."""
    schedule = parse_schedule(default_schedule)
    names = ({"input_z": NAMES.z, "output_x": NAMES.samples, "baked": {**baked, "nfe": nfe(baked["solver"], baked["steps"])}}
             if baked else dict(zip(("input_x", "input_t", "output_v"), graph_names)))
    if baked:
        default_solver, default_steps = baked["solver"], baked["steps"]
    default_steps = schedule.steps or default_steps
    values = {
        "kind": "baked" if baked else "velocity",
        "data_shape": [s if isinstance(s, str) else int(s) for s in data_shape], **names, "prediction": prediction, "path": path,
        "default_solver": default_solver, "default_steps": int(default_steps),
        "default_schedule": str(schedule),
        "training": training or {}, "architecture": architecture or {}, "producer": producer or {},
    }
    if num_classes:
        values.update(num_classes=int(num_classes), null_class=int(num_classes), input_y=NAMES.y)
    if inputs or symbols:
        values.update(inputs=[dict(i, shape=list(i["shape"])) for i in inputs or []],
                      symbols=symbols or {})
    if null_values:
        values["null_values"] = {k: v.tolist() if hasattr(v, "tolist") else v for k, v in null_values.items()}
    if stage:
        values["condition_stage"] = stage
    if input_s and not baked:
        values["input_s"] = input_s
    if value_range:
        values["value_range"] = [float(v) for v in value_range]
    if divergence:
        values["divergence"] = divergence
    return {PREFIX + k: json.dumps(v) for k, v in {"format_version": lowest_version(values), **values}.items()}


def lowest_version(values: dict[str, Any]) -> int:
    """The contract version a file with these values declares: the lowest whose features it uses,
    each key's "since" unless it holds its default (which a reader that ignores it assumes), and
    its solver's "since" (a baked jump file needs a reader that knows jump)."""
    solver = CONTRACT["solvers"]["methods"].get(values.get("default_solver"), {})
    return max([KEYS[k]["since"] for k, v in values.items() if "default" not in KEYS[k] or v != KEYS[k]["default"]]
               + [solver.get("since", 1)])


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


def _decode(where: str, metadata: dict[str, str], kind: str, version: int) -> dict[str, Any]:
    """Every contract key the file has, decoded and checked against its schema (which fixes its
    JSON type); a key its kind requires must be there, and a key newer than the file's version
    must hold its default (what a reader of that version, which ignores the key, assumes)."""
    out: dict[str, Any] = {}
    for key, entry in KEYS.items():
        raw = metadata.get(PREFIX + key)
        if raw is None:
            if kind in entry["required_for"]:
                raise refuse(where, key, f"metadata key {PREFIX + key} is missing")
            continue
        out[key] = _value(where, key, raw)
        if entry["since"] > version and ("default" not in entry or out[key] != entry["default"]):
            raise refuse(where, key, f"{PREFIX}{key} needs contract version {entry['since']}; the file declares "
                         f"{version}", None)
    return out


def _with_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """The file's values with each absent key's contract.json "default" (or "default_from": the
    value of another key)."""
    out = {**{k: copy.deepcopy(e["default"]) for k, e in KEYS.items() if "default" in e}, **values}
    out.update({k: out.get(e["default_from"]) for k, e in KEYS.items() if "default_from" in e and k not in values})
    return out


def _derived(where: str, m: dict[str, Any], kind: str) -> None:
    """The rules that need code rather than contract.json's data: a baked file's solve is its
    default solver and steps, and its NFE is what that solve costs.
    mirrors: js/src/contract.mjs derived()."""
    if kind != "baked":
        return
    baked = m["baked"]
    solver, steps = baked["solver"], baked["steps"]
    if baked.setdefault("nfe", nfe(solver, steps)) != nfe(solver, steps):
        raise refuse(where, "baked", f"fm.baked says {baked['nfe']} NFE, but {solver}:{steps} takes "
                     f"{nfe(solver, steps)}", "nfe")
    m["default_solver"], m["default_steps"] = solver, steps


def _decode_version(where: str, metadata: dict[str, str]) -> int:
    if PREFIX + "format_version" not in metadata:
        raise refuse(where, "format_version", "metadata has fm.* keys but no fm.format_version")
    version, problem = schema.decode("format_version", metadata[PREFIX + "format_version"])
    if problem:
        raise refuse(where, "format_version", "fm.format_version must be a positive integer, "
                     f"got {show(metadata[PREFIX + 'format_version'])}")
    if version > FORMAT_VERSION:
        raise refuse(where, "format_version", f"contract version {version} is newer than this runtime "
                     f"understands ({FORMAT_VERSION}); upgrade fm-runtime")
    return version


def _decode_kind(where: str, metadata: dict[str, str]) -> str:
    raw = metadata.get(PREFIX + "kind")
    if raw is None:
        raise refuse(where, "kind", f"metadata key {PREFIX}kind is missing")
    return _value(where, "kind", raw)


def _read_declared(where: str, metadata: dict[str, str], x_name: str | None, t_name: str | None) -> ModelSpec:
    """The spec of a file with fm.* metadata: each key's schema, the contract's rules between keys
    (contract.json "rules") and the few that need code (_derived), then the extra inputs."""
    version = _decode_version(where, metadata)
    kind = _decode_kind(where, metadata)
    m = _with_defaults(_decode(where, metadata, kind, version))
    _derived(where, m, kind)
    broken = schema.rule_problem(m)
    if broken:
        raise refuse(where, broken[0], broken[2], broken[1])
    shape, classes = m["data_shape"], m["num_classes"]
    taken = {m["input_z"]} if kind == "baked" else {NAMES.y if classes else None, m["input_x"], m["input_t"], m["input_s"]}
    extra, symbols = read_conditions(where, m, shape, kind, taken)
    stage = read_stage(where, m["condition_stage"], extra, symbols)
    nulls = read_nulls(where, m["null_values"], extra, stage)
    vr = m["value_range"]
    return ModelSpec(tuple(shape), x_name or m["input_x"], t_name or m["input_t"], m["output_v"], kind=kind,
                     s_name=m["input_s"] if kind == "velocity" else None,
                     z_name=m["input_z"], out_name=m["output_x"], baked=m["baked"], selftest=m["selftest"],
                     variant=m["variant"], prediction=m["prediction"], prob_path=m["path"],
                     default_solver=m["default_solver"], default_steps=m["default_steps"],
                     default_schedule=str(parse_schedule(m["default_schedule"])), training=m["training"],
                     architecture=m["architecture"], producer=m["producer"], format_version=version,
                     num_classes=classes, null_class=m["null_class"], y_name=m["input_y"],
                     value_range=tuple(vr) if vr else None, divergence=m["divergence"], inputs=extra,
                     symbols=symbols, stage=stage, null_values=nulls)


def read_spec(where: str, metadata: dict[str, str], inputs: dict, outputs: dict, *,
              data_shape: tuple[int, ...] | None = None, x_name: str | None = None,
              t_name: str | None = None) -> ModelSpec:
    """Build a ModelSpec from metadata plus the graph's inputs/outputs.

    `inputs`/`outputs` map names to (onnx type string, shape list with None/str for dynamic dims),
    as onnxruntime reports them. Keyword overrides stand in for missing metadata.
    """
    if any(k.startswith(PREFIX) for k in metadata):
        spec = _read_declared(where, metadata, x_name, t_name)
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
