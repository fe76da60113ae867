"""The contract's version 4 keys beyond their schemas: fm.inputs and fm.symbols (named extra
inputs, their roles and nulls, the symbols their shapes share with the data) and
fm.condition_stage (the graph run once per request that provides some of them). contract.py
reads them through these functions, as js/src/contract.mjs does through its own."""
from __future__ import annotations

import numpy as np

from ..definitions import CONTRACT
from ..errors import ModelError
from . import schema

PREFIX = CONTRACT["prefix"]


def refuse(where: str, key: str, what: str, field: str | None = "") -> ModelError:
    """A metadata value that fits its schema but not the rest of the file or this runtime."""
    return ModelError(f"{where}: {what}", key=PREFIX + key, field=field)


def check_range(where: str, key: str, item: dict, field: str) -> None:
    """An input's declared range of ids: an int64 input's, low <= high."""
    if "range" in item and (item["dtype"] != "int64" or item["range"][0] > item["range"][1]):
        raise refuse(where, key, f"{item['name']!r} declares the range {item['range']}: only an int64 input has one, "
                                 "[low, high] with low <= high", field + ".range")


def read_conditions(where: str, m: dict, shape: list, kind: str, taken: set) -> tuple[tuple, dict]:
    """fm.inputs and fm.symbols (contract version 4), beyond their schema: names unique and apart
    from x, t and y (a baked file's: z); none with a null in a baked file; every symbol declared, with min <= max; a null only for a condition; a mask
    float32 and shaped to broadcast over the data; a guidance input one float32 per row."""
    symbols, inputs = m.get("symbols", {}), m.get("inputs", [])
    if kind == "baked" and (any("null" in i for i in inputs) or m.get("null_values")):
        raise refuse(where, "inputs", "a baked file guides inside its graph (its guidance input takes the weight); its "
                                      "conditions declare no nulls", "null")
    for name, bounds in symbols.items():
        if not schema.is_symbol(name):
            raise refuse(where, "symbols", f"fm.symbols names {name!r}, which is not a symbol (letters, digits, _)", name)
        if bounds.get("min", 1) > bounds.get("max", schema.MAX_SYMBOL):
            raise refuse(where, "symbols", f"fm.symbols {name}: min {bounds['min']} is above max {bounds['max']}", name)
    seen = set()
    for i, item in enumerate(inputs):
        field = f"[{i}]"
        if item["name"] in seen or item["name"] in taken:
            raise refuse(where, "inputs", f"fm.inputs names {item['name']!r} twice (or as x, t or y)", field + ".name")
        seen.add(item["name"])
        if "null" in item and item["role"] != "condition":
            raise refuse(where, "inputs", f"fm.inputs {item['name']!r}: only a condition has a null value", field + ".null")
        if item.get("null") == "stored" and item["name"] not in m.get("null_values", {}):
            raise refuse(where, "inputs", f"fm.inputs {item['name']!r}: its null is stored but fm.null_values has no "
                          f"{item['name']!r}", field + ".null")
        if item["role"] == "mask" and (item["dtype"] != "float32" or len(item["shape"]) != len(shape) or any(
                d != 1 and d != s for d, s in zip(item["shape"], shape))):
            raise refuse(where, "inputs", f"fm.inputs {item['name']!r}: a mask is float32 with the data's rank, each "
                          f"dimension 1 or the data's ({list(shape)}), got {item['dtype']} {item['shape']}", field + ".shape")
        check_range(where, "inputs", item, field)
        if item["role"] == "guidance" and (item["dtype"] != "float32" or item["shape"]):
            raise refuse(where, "inputs", f"fm.inputs {item['name']!r}: a guidance input is one float32 per row "
                          "(shape [])", field + ".shape")
    for role in ("mask", "guidance"):
        if sum(item["role"] == role for item in inputs) > 1:
            raise refuse(where, "inputs", f"fm.inputs has more than one {role} input")
    used = {d for d in shape if isinstance(d, str)} | {d for item in inputs for d in item["shape"] if isinstance(d, str)}
    missing = sorted(used - set(symbols))
    if missing:
        raise refuse(where, "symbols", f"the shapes use {', '.join(missing)}, which fm.symbols does not declare", missing[0])
    return tuple({**item, "shape": tuple(item["shape"])} for item in inputs), symbols


def read_nulls(where: str, stored: dict, inputs: tuple, stage: dict) -> dict:
    """fm.null_values beyond its schema: {name: float32 array} for every condition whose null is
    "stored", shaped as the input with each symbol's dimension 1 (it broadcasts along it); a null
    "stage" names an output of the condition stage."""
    declared = {i["name"]: i for i in inputs}
    for name in stored:
        if declared.get(name, {}).get("null") != "stored":
            raise refuse(where, "null_values", f"fm.null_values holds {name!r}, which no input of fm.inputs "
                          "declares with null \"stored\"", name)
    values = {}
    for name, value in stored.items():
        item, want = declared[name], tuple(1 if isinstance(d, str) else d for d in declared[name]["shape"])
        shape = schema.nested_shape(value)
        if shape != want:
            raise refuse(where, "null_values", f"fm.null_values {name!r} has shape "
                          f"{list(shape) if shape is not None else 'ragged'}, expected {list(want)} (the input's, 1 for each "
                          "symbol)", name)
        raw = np.asarray(value, np.float64).reshape(want)
        if item["dtype"] == "float32":
            with np.errstate(over="ignore"):
                arr = raw.astype(np.float32)
            bad = not np.isfinite(arr).all()
        else:
            arr = raw.astype(np.int64)
            bad = not (np.abs(raw) < 2.0**53).all() or not np.array_equal(arr, raw)
        if bad:
            raise refuse(where, "null_values", f"fm.null_values {name!r} holds values that are not {item['dtype']} "
                          "(past float32's range, or not whole numbers below 2**53)", name)
        values[name] = arr
    for i, item in enumerate(inputs):
        if item.get("null") == "stage" and item["name"] not in stage.get("outputs", ()):
            raise refuse(where, "inputs", f"fm.inputs {item['name']!r}: its null comes from the condition stage, "
                          "which does not provide it", f"[{i}].null")
    return values


def read_stage(where: str, stage: dict, inputs: tuple, symbols: dict) -> dict:
    """fm.condition_stage beyond its schema: it provides declared inputs, once each; its own
    inputs are new names whose symbols fm.symbols declares."""
    if not stage:
        return {}
    declared = {i["name"] for i in inputs}
    for i, name in enumerate(stage["outputs"]):
        if name not in declared or stage["outputs"].index(name) != i:
            raise refuse(where, "condition_stage", f"fm.condition_stage provides {name!r}, which is not an input of "
                          "fm.inputs (or is named twice)", f"outputs[{i}]")
    for i, item in enumerate(stage["inputs"]):
        if item["name"] in declared or [j["name"] for j in stage["inputs"]].index(item["name"]) != i:
            raise refuse(where, "condition_stage", f"fm.condition_stage input {item['name']!r} is named twice "
                          "(or as an input of fm.inputs)", f"inputs[{i}].name")
        check_range(where, "condition_stage", item, f"inputs[{i}]")
        unknown = [d for d in item["shape"] if isinstance(d, str) and d not in symbols]
        if unknown:
            raise refuse(where, "condition_stage", f"fm.condition_stage input {item['name']!r} uses {unknown[0]}, "
                          "which fm.symbols does not declare", f"inputs[{i}].shape")
    return {**stage, "inputs": [{**i, "shape": tuple(i["shape"])} for i in stage["inputs"]]}
