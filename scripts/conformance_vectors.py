"""Write the shared conformance vectors in tests/conformance/ (JSON, checked in): what both
runtimes, Python (tests/runtime/test_conformance.py) and JavaScript (js/test/conformance.test.mjs),
must do with the same inputs. No torch is needed to read or run them.

- metadata.json: fm.* metadata plus a graph's inputs and outputs -> the spec fields, or the
  refusal as {error class, key, field} (never the message text, which each language words).
  The expectations are written here by hand, case by case.
- schedules.json: a schedule and a step count -> its float64 time grid, or a refusal.
- tableaus.json: every fixed-step solver on dx/dt = t - x (float32) -> the float32 state,
  bit for bit; the flow-map solver (jump) on the stand-in map u(x, s, t) = (s + t) - x.
- metadata.json also holds flow-map files (fm.input_s, contract version 5).
- noise.json: the seeded noise stream (solve/noise.py): seed, rows [start, stop), row size ->
  the float32 values, bit for bit; seeds past 2**32 and 2**53, rows in a later block, a start
  in mid-block.
- requests.json: sampling requests to the shipped moons model or to cond.onnx (a tiny
  conditioned graph written here with onnx alone: v = x / 2 + mu, data [2, T]) -> the refusal
  as {error class, key, field}. Arrays are {"dims", "data"}; "nan" stands for NaN.
The grids and tableau results are computed by the Python runtime when this script runs; rerun
it only when a change is meant to change them (`python scripts/conformance_vectors.py`).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fm_runtime.model.contract import build_metadata
from fm_runtime.solve.schedules import parse_schedule
from fm_runtime.solve.solvers import SOLVERS, integrate_inplace

OUT = Path(__file__).resolve().parents[1] / "tests" / "conformance"

VELOCITY_IO = ({"x": {"type": "tensor(float)", "shape": ["batch", 2]}, "t": {"type": "tensor(float)", "shape": ["batch"]}},
               {"v": {"type": "tensor(float)", "shape": ["batch", 2]}})
LABELLED_IO = ({**VELOCITY_IO[0], "y": {"type": "tensor(int64)", "shape": ["batch"]}}, VELOCITY_IO[1])
BAKED_IO = ({"z": {"type": "tensor(float)", "shape": ["batch", 2]}}, {"x": {"type": "tensor(float)", "shape": ["batch", 2]}})
BASE = build_metadata(data_shape=[2], path={"name": "ot", "sigma_min": 0.0})
LABELLED = build_metadata(data_shape=[2], path={"name": "ot"}, num_classes=3)
BAKED = build_metadata(data_shape=[2], path={"name": "ot"}, baked={"solver": "heun", "steps": 4})
MAP_IO = ({**VELOCITY_IO[0], "s": {"type": "tensor(float)", "shape": ["batch"]}}, VELOCITY_IO[1])
MAP = build_metadata(data_shape=[2], path={"name": "ot"}, input_s="s", default_solver="jump", default_steps=1)
BAKED_MAP = build_metadata(data_shape=[2], path={"name": "ot"}, baked={"solver": "jump", "steps": 2})
COND_INPUTS = [{"name": "mu", "dtype": "float32", "shape": [4, "T"], "role": "condition", "null": "zeros"},
               {"name": "mask", "dtype": "float32", "shape": [1, "T"], "role": "mask"},
               {"name": "spks", "dtype": "float32", "shape": [3], "role": "condition", "null": "zeros"}]
COND = build_metadata(data_shape=[4, "T"], path={"name": "ot"}, inputs=COND_INPUTS,
                      symbols={"T": {"min": 4, "max": 512, "multiple_of": 4}, "L": {"max": 128}})
COND_IO = ({"x": {"type": "tensor(float)", "shape": ["batch", 4, "T"]}, "t": {"type": "tensor(float)", "shape": ["batch"]},
            "mu": {"type": "tensor(float)", "shape": ["batch", 4, "T"]},
            "mask": {"type": "tensor(float)", "shape": ["batch", 1, "T"]},
            "spks": {"type": "tensor(float)", "shape": ["batch", 3]}},
           {"v": {"type": "tensor(float)", "shape": ["batch", 4, "T"]}})

BAKED_COND_INPUTS = [{k: v for k, v in i.items() if k != "null"} for i in COND_INPUTS] + [
    {"name": "guidance_scale", "dtype": "float32", "shape": [], "role": "guidance"}]
BAKED_COND = build_metadata(data_shape=[4, "T"], path={"name": "ot"}, baked={"solver": "midpoint", "steps": 4},
                            inputs=BAKED_COND_INPUTS, symbols={"T": {"min": 4, "max": 512, "multiple_of": 4}})
BAKED_COND_IO = ({"z": COND_IO[0]["x"], **{k: v for k, v in COND_IO[0].items() if k not in ("x", "t")},
                  "guidance_scale": {"type": "tensor(float)", "shape": ["batch"]}}, {"x": COND_IO[1]["v"]})


def stage_with(**change) -> str:
    """An fm.condition_stage for the conditioned file (tokens [L] -> mu, mask), with fields changed
    (None removes one); the graph bytes are a placeholder: the reader checks the declaration first."""
    stage = {"onnx_base64": "AAAA", "inputs": [{"name": "tokens", "dtype": "int64", "shape": ["L"]}],
             "outputs": ["mu", "mask"], **change}
    return json.dumps({k: v for k, v in stage.items() if v is not None})


def inputs_with(i: int, **change) -> str:
    """fm.inputs of the conditioned file with input i changed (a value None removes the field)."""
    items = [dict(x) for x in COND_INPUTS]
    items[i] = {k: v for k, v in {**items[i], **change}.items() if v is not None}
    return json.dumps(items)


def case(name, changes=None, base=BASE, io=VELOCITY_IO, spec=None, error=None, key=None, field=None, options=None):
    """One metadata vector: base metadata with `changes` (key -> raw JSON text, None removes it)."""
    meta = dict(base)
    for k, raw in (changes or {}).items():
        if raw is None:
            meta.pop("fm." + k, None)
        else:
            meta["fm." + k] = raw
    out = {"name": name, "metadata": meta, "inputs": io[0], "outputs": io[1]}
    if options:
        out["options"] = options
    out["expect"] = {"spec": spec} if error is None else {"error": error, "key": key, "field": field}
    return out


def metadata_cases() -> list[dict]:
    deep = "[" * 20 + "]" * 20
    return [
        case("a velocity file", spec={"kind": "velocity", "data_shape": [2], "format_version": 1, "default_solver": "midpoint",
                                      "default_steps": 8, "default_schedule": "uniform", "num_classes": 0, "t_rank": 1}),
        case("a labelled file", base=LABELLED, io=LABELLED_IO,
             spec={"kind": "velocity", "format_version": 2, "num_classes": 3, "null_class": 3, "y_name": "y"}),
        case("a baked file", base=BAKED, io=BAKED_IO,
             spec={"kind": "baked", "default_solver": "heun", "default_steps": 4, "z_name": "z", "out_name": "x"}),
        case("a file's own defaults", {"default_solver": '"rk4"', "default_steps": "3", "default_schedule": '"shift:3"',
                                       "format_version": "3"},
             spec={"default_solver": "rk4", "default_steps": 3, "default_schedule": "shift:3", "format_version": 3}),
        case("a flow-map file", base=MAP, io=MAP_IO,
             spec={"kind": "velocity", "s_name": "s", "default_solver": "jump", "default_steps": 1, "format_version": 5}),
        case("a flow map read as a velocity file's other solvers", {"default_solver": '"rk4"'}, base=MAP, io=MAP_IO,
             spec={"s_name": "s", "default_solver": "rk4"}),
        case("a baked conditioned file", base=BAKED_COND, io=BAKED_COND_IO,
             spec={"kind": "baked", "format_version": 4, "data_shape": [4, "T"], "default_steps": 4}),
        case("a baked conditioned file that declares a null", {"inputs": json.dumps(
            [{**BAKED_COND_INPUTS[0], "null": "zeros"}, *BAKED_COND_INPUTS[1:]])}, base=BAKED_COND, io=BAKED_COND_IO,
             error="ModelError", key="fm.inputs", field="null"),
        case("a baked conditioned file that hides an input", {"inputs": json.dumps(BAKED_COND_INPUTS[1:])},
             base=BAKED_COND, io=BAKED_COND_IO, error="ModelError", key=None, field="mu"),
        case("a baked conditioned file whose input is another dtype", {"inputs": json.dumps(
            [{**BAKED_COND_INPUTS[0], "dtype": "int64"}, *BAKED_COND_INPUTS[1:]])}, base=BAKED_COND, io=BAKED_COND_IO,
             error="ModelError", key=None, field="mu"),
        case("a baked flow map", base=BAKED_MAP, io=BAKED_IO,
             spec={"kind": "baked", "default_solver": "jump", "default_steps": 2, "s_name": None}),
        case("a flow map in a version 4 file", {"format_version": "4"}, base=MAP, io=MAP_IO, error="ModelError",
             key="fm.input_s", field=None),
        case("jump as a velocity file's default", {"default_solver": '"jump"', "format_version": "5"}, error="ModelError",
             key="fm.default_solver", field=""),
        case("a start-time input name of a number", {"input_s": "3"}, base=MAP, io=MAP_IO, error="ModelError",
             key="fm.input_s", field=""),
        case("a start-time input the graph lacks", base=MAP, io=VELOCITY_IO, error="ModelError", key=None, field="s"),
        case("a start-time input of int64", base=MAP, io=({**VELOCITY_IO[0], "s": {"type": "tensor(int64)", "shape": ["batch"]}},
                                                         VELOCITY_IO[1]), error="ModelError", key=None, field="s"),
        case("a start-time input of another width than t", base=MAP,
             io=({**VELOCITY_IO[0], "t": {"type": "tensor(float)", "shape": ["batch", 1]},
                  "s": {"type": "tensor(float)", "shape": ["batch", 3]}}, VELOCITY_IO[1]),
             error="ModelError", key=None, field="s"),
        case("a baked flow map declares version 5", base=BAKED_MAP, io=BAKED_IO, spec={"format_version": 5}),
        case("a start-time input named t", {"input_s": '"t"'}, base=MAP, io=VELOCITY_IO, error="ModelError", key=None,
             field="t"),
        case("t as [batch, 1]", io=({**VELOCITY_IO[0], "t": {"type": "tensor(float)", "shape": ["batch", 1]}}, VELOCITY_IO[1]),
             spec={"t_rank": 2}),
        case("an unknown key is ignored", {"made_up_key": '{"anything": [1, 2]}'}, spec={"kind": "velocity"}),
        case("a newer contract version", {"format_version": "99"}, error="ModelError", key="fm.format_version", field=""),
        case("format version zero", {"format_version": "0"}, error="ModelError", key="fm.format_version", field=""),
        case("kind missing", {"kind": None}, error="ModelError", key="fm.kind", field=""),
        case("an unknown kind", {"kind": '"sampler"'}, error="ModelError", key="fm.kind", field=""),
        case("data shape missing", {"data_shape": None}, error="ModelError", key="fm.data_shape", field=""),
        case("data shape of text", {"data_shape": '"2"'}, error="ModelError", key="fm.data_shape", field=""),
        case("data shape of nine dimensions", {"data_shape": "[1,1,1,1,1,1,1,1,1]"}, error="ModelError", key="fm.data_shape", field=""),
        case("data shape past the limit", {"data_shape": "[65536, 65536]"}, error="ModelError", key="fm.data_shape", field=""),
        case("data shape against the graph", {"data_shape": "[3]"}, error="ModelError", key=None, field="x"),
        case("not JSON", {"path": "{name: ot}"}, error="ModelError", key="fm.path", field=""),
        case("nested too deep", {"training": deep}, error="ModelError", key="fm.training", field=""),
        case("an input name that is a number", {"input_x": "7"}, error="ModelError", key="fm.input_x", field=""),
        case("a time input name that is empty", {"input_t": '""'}, error="ModelError", key="fm.input_t", field=""),
        case("a velocity output name that is a list", {"output_v": '["v"]'}, error="ModelError", key="fm.output_v", field=""),
        case("a label input name too long", {"input_y": json.dumps("y" * 300)}, base=LABELLED, io=LABELLED_IO,
             error="ModelError", key="fm.input_y", field=""),
        case("negative classes", {"num_classes": "-1"}, base=LABELLED, io=LABELLED_IO,
             error="ModelError", key="fm.num_classes", field=""),
        case("a producer that is a list", {"producer": "[1]"}, error="ModelError", key="fm.producer", field=""),
        case("an input the graph lacks", {"input_x": '"state"'}, error="ModelError", key=None, field="state"),
        case("a prediction this runtime cannot use", {"prediction": '"x1"'}, error="ModelError", key="fm.prediction", field=""),
        case("an unknown default solver", {"default_solver": '"rk45"'}, error="ModelError", key="fm.default_solver", field=""),
        case("default steps zero", {"default_steps": "0"}, error="ModelError", key="fm.default_steps", field=""),
        case("default steps past the limit", {"default_steps": "100001"}, error="ModelError", key="fm.default_steps", field=""),
        case("a schedule out of range", {"default_schedule": '"sway:5"', "format_version": "3"}, error="ModelError",
             key="fm.default_schedule", field=""),
        case("an explicit grid of other steps", {"default_schedule": '"times:0,0.5,1"', "format_version": "3"},
             error="ModelError", key="fm.default_schedule", field=""),
        case("baked steps of text", {"baked": '{"solver": "heun", "steps": "4"}'}, base=BAKED, io=BAKED_IO,
             error="ModelError", key="fm.baked", field="steps"),
        case("baked without steps", {"baked": '{"solver": "heun"}'}, base=BAKED, io=BAKED_IO,
             error="ModelError", key="fm.baked", field="steps"),
        case("baked with an unknown solver", {"baked": '{"solver": "leapfrog", "steps": 4}'}, base=BAKED, io=BAKED_IO,
             error="ModelError", key="fm.baked", field="solver"),
        case("baked NFE that lies", {"baked": '{"solver": "heun", "steps": 4, "nfe": 4}'}, base=BAKED, io=BAKED_IO,
             error="ModelError", key="fm.baked", field="nfe"),
        case("a baked input name of a number", {"input_z": "1"}, base=BAKED, io=BAKED_IO,
             error="ModelError", key="fm.input_z", field=""),
        case("a baked output the graph lacks", {"output_x": '"samples"'}, base=BAKED, io=BAKED_IO,
             error="ModelError", key=None, field="samples"),
        case("a baked output name of null", {"output_x": "null"}, base=BAKED, io=BAKED_IO,
             error="ModelError", key="fm.output_x", field=""),
        case("baked missing for a baked file", {"baked": None}, base=BAKED, io=BAKED_IO,
             error="ModelError", key="fm.baked", field=""),
        case("a variant cost that is not a number", {"variant": '{"vs_fp32": {"size_bytes": 1, "max_dev": "big", "mean_dev": 0}}'},
             error="ModelError", key="fm.variant", field="vs_fp32.max_dev"),
        case("a variant cost field missing", {"variant": '{"vs_fp32": {"size_bytes": 1, "max_dev": 0}}'},
             error="ModelError", key="fm.variant", field="vs_fp32.mean_dev"),
        case("a self-test with text in its arrays", {"selftest": '{"inputs": {"x": [["a"]]}, "output": [[0]]}'},
             error="ModelError", key="fm.selftest", field="inputs"),
        case("an architecture width of zero", {"architecture": '{"type": "mlp", "width": 0}'},
             error="ModelError", key="fm.architecture", field="width"),
        case("an unnamed field too long", {"training": json.dumps({"note": "x" * 5000})},
             error="ModelError", key="fm.training", field="note"),
        case("a value range the wrong way round", {"value_range": "[1, -1]"}, error="ModelError", key="fm.value_range", field=""),
        case("a value range past float range", {"value_range": "[0, " + "9" * 400 + "]"}, error="ModelError",
             key="fm.value_range", field="[1]"),
        case("a null class past the classes", {"null_class": "7"}, base=LABELLED, io=LABELLED_IO,
             error="ModelError", key="fm.null_class", field=""),
        case("labels of float", base=LABELLED, io=({**LABELLED_IO[0], "y": {"type": "tensor(float)", "shape": ["batch"]}},
                                                    LABELLED_IO[1]), error="ModelError", key=None, field="y"),
        case("a divergence graph of neither form", {"divergence": '{"input_e": "e"}'}, error="ModelError",
             key="fm.divergence", field=""),
        case("a default solver that is adaptive", {"default_solver": '"dopri5"'}, error="ModelError",
             key="fm.default_solver", field=""),
        case("baked with an adaptive solver", {"baked": '{"solver": "dopri5", "steps": 4}'}, base=BAKED, io=BAKED_IO,
             error="ModelError", key="fm.baked", field="solver"),
        case("baked steps past the limit", {"baked": '{"solver": "heun", "steps": 100001}'}, base=BAKED, io=BAKED_IO,
             error="ModelError", key="fm.baked", field="steps"),
        case("a value range of one number", {"value_range": "[1]"}, error="ModelError", key="fm.value_range", field=""),
        case("a value range of equal ends", {"value_range": "[0, 0.0]"}, error="ModelError", key="fm.value_range",
             field=""),
        case("a null class without classes is ignored", {"num_classes": None, "input_y": None, "null_class": "7"},
             base=LABELLED, spec={"num_classes": 0, "null_class": 7}),
        case("an empty divergence is none", {"divergence": "{}"}, spec={"divergence": {}}),
        case("a key newer than the file", {"default_schedule": '"shift:3"'}, error="ModelError",
             key="fm.default_schedule", field=None),
        case("classes in a version 1 file", {"format_version": "1"}, base=LABELLED, io=LABELLED_IO, error="ModelError",
             key="fm.num_classes", field=None),
        case("a newer key holding its default", {"num_classes": "0", "inputs": "[]"}, spec={"format_version": 1}),
        case("conditions in a version 3 file", {"format_version": "3"}, base=COND, io=COND_IO, error="ModelError",
             key="fm.symbols", field=None),
        case("an input nobody feeds", io=({**VELOCITY_IO[0], "mask": {"type": "tensor(float)", "shape": ["batch"]}},
                                         VELOCITY_IO[1]), error="ModelError", key=None, field="mask"),
        case("t of rank three", io=({**VELOCITY_IO[0], "t": {"type": "tensor(float)", "shape": ["batch", 1, 1]}}, VELOCITY_IO[1]),
             error="ModelError", key=None, field="t"),
        case("x of float16", io=({**VELOCITY_IO[0], "x": {"type": "tensor(float16)", "shape": ["batch", 2]}}, VELOCITY_IO[1]),
             error="ModelError", key=None, field="x"),
        case("a conditioned file", base=COND, io=COND_IO,
             spec={"kind": "velocity", "format_version": 4, "data_shape": [4, "T"],
                   "symbols": {"T": {"min": 4, "max": 512, "multiple_of": 4}, "L": {"max": 128}}}),
        case("a symbol nobody declares", {"symbols": "{}"}, base=COND, io=COND_IO, error="ModelError",
             key="fm.symbols", field="T"),
        case("a symbol bound the wrong way round", {"symbols": '{"T": {"min": 9, "max": 4}}'}, base=COND, io=COND_IO,
             error="ModelError", key="fm.symbols", field="T"),
        case("a symbol bound of zero", {"symbols": '{"T": {"min": 0}}'}, base=COND, io=COND_IO,
             error="ModelError", key="fm.symbols", field="T.min"),
        case("a symbol of another spelling", {"symbols": '{"T": {}, "2T": {}}'}, base=COND, io=COND_IO,
             error="ModelError", key="fm.symbols", field="2T"),
        case("a range on a float32 input", {"inputs": inputs_with(0, range=[0, 9])}, base=COND, io=COND_IO,
             error="ModelError", key="fm.inputs", field="[0].range"),
        case("a range whose low is above its high", {"condition_stage": stage_with(
            inputs=[{"name": "tokens", "dtype": "int64", "shape": ["L"], "range": [9, 0]}])}, base=COND, io=COND_IO,
             error="ModelError", key="fm.condition_stage", field="inputs[0].range"),
        case("a condition stage with no inputs", {"condition_stage": stage_with(inputs=[])}, base=COND, io=COND_IO,
             error="ModelError", key="fm.condition_stage", field="inputs"),
        case("a range of three numbers", {"inputs": inputs_with(0, range=[0, 1, 2])}, base=COND, io=COND_IO,
             error="ModelError", key="fm.inputs", field="[0].range"),
        case("an unknown role", {"inputs": inputs_with(0, role="context")}, base=COND, io=COND_IO,
             error="ModelError", key="fm.inputs", field="[0].role"),
        case("an input without a dtype", {"inputs": inputs_with(2, dtype=None)}, base=COND, io=COND_IO,
             error="ModelError", key="fm.inputs", field="[2].dtype"),
        case("an input shape with a bad symbol", {"inputs": inputs_with(0, shape=[4, "T-1"])}, base=COND, io=COND_IO,
             error="ModelError", key="fm.inputs", field="[0].shape"),
        case("an input named twice", {"inputs": inputs_with(2, name="mu")}, base=COND, io=COND_IO,
             error="ModelError", key="fm.inputs", field="[2].name"),
        case("an input named x", {"inputs": inputs_with(2, name="x")}, base=COND, io=COND_IO,
             error="ModelError", key="fm.inputs", field="[2].name"),
        case("a null on a mask", {"inputs": inputs_with(1, null="zeros")}, base=COND, io=COND_IO,
             error="ModelError", key="fm.inputs", field="[1].null"),
        case("a stored null", {"inputs": inputs_with(2, null="stored"), "null_values": json.dumps({"spks": [0.1, 0.2, 0.3]})},
             base=COND, io=COND_IO, spec={"kind": "velocity", "format_version": 4}),
        case("a stored null along a symbol", {"inputs": inputs_with(0, null="stored"),
                                              "null_values": json.dumps({"mu": [[1], [2], [3], [4]]})},
             base=COND, io=COND_IO, spec={"kind": "velocity", "format_version": 4}),
        case("a stored null that is not stored", {"inputs": inputs_with(2, null="stored")}, base=COND, io=COND_IO,
             error="ModelError", key="fm.inputs", field="[2].null"),
        case("a stored null of another shape", {"inputs": inputs_with(2, null="stored"),
                                                "null_values": json.dumps({"spks": [0.1, 0.2]})},
             base=COND, io=COND_IO, error="ModelError", key="fm.null_values", field="spks"),
        case("a stored null spread over a symbol", {"inputs": inputs_with(0, null="stored"),
                                                    "null_values": json.dumps({"mu": [[1, 2]] * 4})},
             base=COND, io=COND_IO, error="ModelError", key="fm.null_values", field="mu"),
        case("a ragged stored null", {"inputs": inputs_with(2, null="stored"),
                                      "null_values": json.dumps({"spks": [[0.1], 0.2, 0.3]})},
             base=COND, io=COND_IO, error="ModelError", key="fm.null_values", field="spks"),
        case("a stored null for an input without", {"null_values": json.dumps({"spks": [0.1, 0.2, 0.3]})},
             base=COND, io=COND_IO, error="ModelError", key="fm.null_values", field="spks"),
        case("stored nulls of text", {"inputs": inputs_with(2, null="stored"), "null_values": json.dumps({"spks": "abc"})},
             base=COND, io=COND_IO, error="ModelError", key="fm.null_values", field=""),
        case("an unknown kind of null", {"inputs": inputs_with(2, null="learned")}, base=COND, io=COND_IO,
             error="ModelError", key="fm.inputs", field="[2].null"),
        case("a null from a stage that does not make it", {"inputs": inputs_with(2, null="stage"),
                                                           "condition_stage": stage_with()},
             base=COND, io=COND_IO, error="ModelError", key="fm.inputs", field="[2].null"),
        case("a mask of another rank", {"inputs": inputs_with(1, shape=["T"])}, base=COND, io=COND_IO,
             error="ModelError", key="fm.inputs", field="[1].shape"),
        case("too many inputs", {"inputs": json.dumps([{"name": f"c{i}", "dtype": "float32", "shape": [], "role": "static"}
                                                         for i in range(40)])}, base=COND, io=COND_IO,
             error="ModelError", key="fm.inputs", field=""),
        case("an input the graph lacks", base=COND, io=({k: v for k, v in COND_IO[0].items() if k != "spks"}, COND_IO[1]),
             error="ModelError", key=None, field="spks"),
        case("an input of another dtype in the graph", base=COND,
             io=({**COND_IO[0], "spks": {"type": "tensor(int64)", "shape": ["batch", 3]}}, COND_IO[1]),
             error="ModelError", key=None, field="spks"),
        case("an input of another size in the graph", base=COND,
             io=({**COND_IO[0], "spks": {"type": "tensor(float)", "shape": ["batch", 5]}}, COND_IO[1]),
             error="ModelError", key=None, field="spks"),
        case("a stage that provides an undeclared input", {"condition_stage": stage_with(outputs=["mu", "pitch"])},
             base=COND, io=COND_IO, error="ModelError", key="fm.condition_stage", field="outputs[1]"),
        case("a stage input named like a condition", {"condition_stage": stage_with(inputs=[
            {"name": "spks", "dtype": "int64", "shape": ["L"]}])}, base=COND, io=COND_IO, error="ModelError",
             key="fm.condition_stage", field="inputs[0].name"),
        case("a stage input with an undeclared symbol", {"condition_stage": stage_with(inputs=[
            {"name": "tokens", "dtype": "int64", "shape": ["N"]}])}, base=COND, io=COND_IO, error="ModelError",
             key="fm.condition_stage", field="inputs[0].shape"),
        case("a stage without its graph", {"condition_stage": stage_with(onnx_base64=None)}, base=COND, io=COND_IO,
             error="ModelError", key="fm.condition_stage", field="onnx_base64"),
        case("a stage that provides nothing", {"condition_stage": stage_with(outputs=7)}, base=COND, io=COND_IO,
             error="ModelError", key="fm.condition_stage", field="outputs"),
        case("no metadata: the graph tells", base={}, spec={"kind": "velocity", "data_shape": [2], "format_version": None}),
        case("no metadata and no static shape", base={},
             io=({"x": {"type": "tensor(float)", "shape": ["batch", "d"]}, "t": VELOCITY_IO[0]["t"]},
                 {"v": {"type": "tensor(float)", "shape": ["batch", "d"]}}), error="ModelError", key=None, field=None),
        case("no metadata, shape given", base={}, options={"data_shape": [5]},
             io=({"x": {"type": "tensor(float)", "shape": ["batch", "d"]}, "t": VELOCITY_IO[0]["t"]},
                 {"v": {"type": "tensor(float)", "shape": ["batch", "d"]}}), spec={"data_shape": [5]}),
    ]


def schedule_cases() -> list[dict]:
    out = []
    for spec, steps in [("uniform", 4), ("shift:3", 4), ("shift:0.25", 5), ("sway:-1", 6), ("sway:1.75", 3),
                        ("cosine", 7), ("times:0,0.1,0.5,1", 3), ("uniform", 1),
                        ("times:0,0.5,0.9999999999999999", 2), ("times:1e-9,0.5,0.99999994", 2)]:
        out.append({"schedule": spec, "steps": steps, "grid": parse_schedule(spec).grid(steps, 0.0, 1.0)})
    for spec in ["shift:0", "shift:-2", "shift:1e7", "shift:1e-320", "shift:5e-7", "sway:2", "sway:-1.5", "times:0,0.5,0.4,1", "times:0.1,1", "times:0,0.5,0.99999",
                 "times:0", "warp:2", "cosine:2", "shift", "shift:nan", ""]:
        out.append({"schedule": spec, "error": "ValueError"})
    return out


def noise_cases() -> list[dict]:
    from fm_runtime.solve.noise import BLOCK, noise_rows
    out = []
    for seed, start, stop, dim in [(0, 0, 64, 2), (1, 0, 7, 64), (2**32 + 5, 0, 16, 3), (2**53 + 1, 10, 20, 2),
                                   (2**63 - 1, 0, 8, 2), (7, BLOCK - 3, BLOCK + 3, 2), (123, 2 * BLOCK + 100, 2 * BLOCK + 104, 5)]:
        out.append({"seed": str(seed), "start": start, "stop": stop, "dim": dim,
                    "values": [float(v) for v in noise_rows(seed, start, stop, (dim,)).ravel()]})
    return out


def tableau_cases() -> list[dict]:
    x0 = np.array([1.0, -2.0, 0.5, 3.25], dtype=np.float32)

    def field(x, t):
        return np.float32(t) - x

    def flow_map(x, st):        # a jump's (s, t): the stand-in map u = (s + t) - x, in float32
        return np.float32(np.float32(st[0]) + np.float32(st[1])) - x

    out = []
    for solver in SOLVERS:
        kind = "s + t - x" if SOLVERS[solver].evaluates == "map" else "t - x"
        for steps, schedule in [(1, None), (3, None), (4, "shift:3")]:
            x, nfe = integrate_inplace(flow_map if kind != "t - x" else field, x0.copy(), steps, solver, schedule=schedule)
            out.append({"solver": solver, "steps": steps, "schedule": schedule, "field": kind,
                        "x0": [float(v) for v in x0], "x": [float(v) for v in x], "nfe": nfe})
    return out


def cond_model() -> bytes:
    """v = x / 2 + mu over x, mu [B, 2, T], with a mask [B, 1, T] and a speaker vector [B, 3] the
    graph takes and ignores: the request checks need the declaration, not a network."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    from fm_runtime.model.contract import write_metadata
    vi = h.make_tensor_value_info
    graph = h.make_graph(
        [h.make_node("Mul", ["x", "half"], ["hx"]), h.make_node("Add", ["hx", "mu"], ["v"])], "cond",
        [vi("x", T.FLOAT, ["B", 2, "T"]), vi("t", T.FLOAT, ["B"]), vi("mu", T.FLOAT, ["B", 2, "T"]),
         vi("mask", T.FLOAT, ["B", 1, "T"]), vi("spks", T.FLOAT, ["B", 3])],
        [vi("v", T.FLOAT, ["B", 2, "T"])], [h.make_tensor("half", T.FLOAT, [], [0.5])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=9)
    inputs = [{"name": "mu", "dtype": "float32", "shape": [2, "T"], "role": "condition", "null": "zeros"},
              {"name": "mask", "dtype": "float32", "shape": [1, "T"], "role": "mask"},
              {"name": "spks", "dtype": "float32", "shape": [3], "role": "condition", "null": "zeros"}]
    write_metadata(model.metadata_props, build_metadata(data_shape=[2, "T"], path={"name": "ot"}, inputs=inputs,
                                                        symbols={"T": {"min": 4, "max": 64, "multiple_of": 4}}))
    onnx.checker.check_model(model)
    return model.SerializeToString()


def arr(shape, value=0.5, nan_at=None) -> dict:
    data = [value] * int(np.prod(shape))
    if nan_at is not None:
        data[nan_at] = "nan"
    return {"dims": list(shape), "data": data}


def request_cases() -> list[dict]:
    def refused(name, model, request, error, key, field=None):
        return {"name": name, "model": model, "request": request, "expect": {"error": error, "key": key, "field": field}}
    ok = {"mu": arr([2, 8]), "spks": arr([3])}
    return [
        refused("n of zero", "moons", {"n": 0}, "UsageError", "n"),
        refused("n of a fraction", "moons", {"n": 1.5}, "UsageError", "n"),
        refused("neither n nor noise", "moons", {}, "UsageError", "n"),
        refused("steps of zero", "moons", {"n": 2, "steps": 0}, "UsageError", "steps"),
        refused("steps of a fraction", "moons", {"n": 2, "steps": 2.5}, "UsageError", "steps"),
        refused("steps past the limit", "moons", {"n": 2, "steps": 100001}, "UsageError", "steps"),
        refused("an unknown solver", "moons", {"n": 2, "solver": "rk45"}, "UsageError", "solver"),
        refused("jump on a velocity model", "moons", {"n": 2, "solver": "jump"}, "UsageError", "solver"),
        refused("an unknown schedule", "moons", {"n": 2, "schedule": "warp:2"}, "UsageError", "schedule"),
        refused("a time grid of other steps", "moons", {"n": 2, "steps": 3, "schedule": "times:0,1"}, "UsageError", "schedule"),
        refused("guidance without labels", "moons", {"n": 2, "guidance": 2}, "UsageError", "guidance"),
        refused("guidance of text", "moons", {"n": 2, "guidance": "a"}, "UsageError", "guidance"),
        refused("guidance past 1000", "moons", {"n": 2, "guidance": 5000}, "UsageError", "guidance"),
        refused("labels for an unconditional file", "moons", {"n": 2, "labels": 1}, "UsageError", "labels"),
        refused("a negative seed", "moons", {"n": 2, "seed": -1}, "UsageError", "seed"),
        refused("noise with NaN", "moons", {"noise": arr([2, 2], nan_at=3)}, "InputError", "noise"),
        refused("noise and n that disagree", "moons", {"n": 3, "noise": arr([2, 2])}, "InputError", "noise"),
        refused("conditions for a file without", "moons", {"n": 2, "cond": {"mu": arr([2])}}, "UsageError", "cond"),
        refused("dims for a file without", "moons", {"n": 2, "dims": {"T": 4}}, "UsageError", "dims"),
        refused("a condition left out", "cond", {"n": 2, "cond": {"spks": arr([3])}}, "UsageError", "cond", "mu"),
        refused("an unknown condition", "cond", {"n": 2, "cond": {**ok, "nope": arr([3])}}, "UsageError", "cond", "nope"),
        refused("a negative prompt without guidance", "cond", {"n": 2, "cond": ok, "null_cond": {"mu": arr([2, 8])}},
                "UsageError", "null_cond"),
        refused("a negative prompt for the mask", "cond", {"n": 2, "cond": ok, "guidance": 2.0,
                                                          "null_cond": {"mask": arr([1, 8])}}, "UsageError", "null_cond", "mask"),
        refused("a negative prompt of another length", "cond", {"n": 2, "cond": ok, "guidance": 2.0,
                                                               "null_cond": {"mu": arr([2, 4])}}, "InputError", "null_cond", "mu"),
        refused("a condition with NaN", "cond", {"n": 2, "cond": {**ok, "mu": arr([2, 8], nan_at=5)}}, "InputError",
                "cond", "mu"),
        refused("a condition of another size", "cond", {"n": 2, "cond": {**ok, "mu": arr([3, 8])}}, "InputError",
                "cond", "mu"),
        refused("a condition of another rank", "cond", {"n": 2, "cond": {**ok, "spks": arr([1, 1, 3])}}, "InputError",
                "cond", "spks"),
        refused("symbols that disagree", "cond", {"n": 2, "cond": {**ok, "mask": arr([1, 12], 1.0)}}, "UsageError",
                "dims", "T"),
        refused("dims that disagree with a condition", "cond", {"n": 2, "cond": ok, "dims": {"T": 12}}, "UsageError",
                "dims", "T"),
        refused("a length not a multiple", "cond", {"n": 2, "cond": {**ok, "mu": arr([2, 10])}}, "UsageError", "dims", "T"),
        refused("a length past the maximum", "cond", {"n": 2, "cond": {**ok, "mu": arr([2, 68])}}, "UsageError", "dims", "T"),
        refused("an unknown symbol", "cond", {"n": 2, "cond": ok, "dims": {"Q": 4}}, "UsageError", "dims", "Q"),
        refused("per-row conditions that disagree on rows", "cond",
                {"cond": {"mu": arr([2, 2, 8]), "spks": arr([3, 3])}}, "UsageError", "cond"),
        refused("guidance on two calls of a kind", "cond", {"n": 2, "cond": ok, "guidance": 2, "guidance_calls": "three"},
                "UsageError", "guidance_calls"),
        refused("a guidance interval past 1", "cond", {"n": 2, "cond": ok, "guidance": 2, "guidance_interval": [0.5, 1.5]},
                "UsageError", "guidance_interval"),
        refused("a guidance interval backwards", "cond", {"n": 2, "cond": ok, "guidance": 2, "guidance_interval": [0.8, 0.2]},
                "UsageError", "guidance_interval"),
        refused("a guidance interval of one time", "cond", {"n": 2, "cond": ok, "guidance": 2, "guidance_interval": [0.5]},
                "UsageError", "guidance_interval"),
        refused("n and per-row conditions that disagree", "cond", {"n": 3, "cond": {"mu": arr([2, 2, 8]), "spks": arr([3])}},
                "UsageError", "n"),
    ]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "cond.onnx").write_bytes(cond_model())
    for name, cases in [("metadata", metadata_cases()), ("schedules", schedule_cases()), ("tableaus", tableau_cases()), ("noise", noise_cases()),
                        ("requests", request_cases())]:
        (OUT / f"{name}.json").write_text(json.dumps(cases, indent=1) + "\n")
        print(f"{OUT / name}.json: {len(cases)} cases")


if __name__ == "__main__":
    main()
