"""The shape of every contract value, checked before the runtime uses it.

Part of the contract module (contract.py decodes the keys and calls `check`): each key's JSON
value is matched against a small schema, so a file whose metadata is valid JSON of the wrong
shape (a field missing or of another type, nesting thousands deep, a number no shape can have)
is refused with one line naming the key and the field, never met later as an internal error.

Schema forms: a type or tuple of types (int never matches bool); a dict {field: schema}, a
field ending in "?" optional, other fields allowed and checked as INFO; [schema] a list of
items; a function value -> problem text or None.
"""
from __future__ import annotations

import json
import math
from typing import Any

MAX_RANK = 8                    # data dimensions (numpy holds 64 with batch and time axes)
MAX_SIDE = 2**31 - 1
MAX_DIM = 2**28                 # values per sample: 1 GiB of float32 per row
MAX_DEPTH = 12                  # nesting of any value
MAX_TEXT = 4096                 # characters in a string inside a value
MAX_BYTES = {"selftest": 64 << 20, "divergence": 1 << 30}
DEFAULT_MAX_BYTES = 1 << 20
MAX_NAME = 256
MAX_FLOAT_INT = 2**1023         # integers beyond this do not fit a float64


def _number(v) -> str | None:
    """A number a float64 can hold (integers too: a 400-digit one would overflow later)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or \
            (abs(v) > MAX_FLOAT_INT if isinstance(v, int) else not math.isfinite(v)):
        return f"must be a finite number, got {_show(v)}"
    return None


def _name(v) -> str | None:
    if not isinstance(v, str) or not 0 < len(v) <= MAX_NAME:
        return f"must be a graph input/output name (text, 1-{MAX_NAME} characters), got {_show(v)}"
    return None


def _count(low: int, high: int):
    def check(v) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            return f"must be an integer from {low} to {high}, got {_show(v)}"
        return None
    return check


def _data_shape(v) -> str | None:
    if not isinstance(v, list) or not 1 <= len(v) <= MAX_RANK or any(_count(1, MAX_SIDE)(s) for s in v):
        return f"must be a list of 1 to {MAX_RANK} positive integers, got {_show(v)}"
    if math.prod(v) > MAX_DIM:
        return f"declares {math.prod(v):,} values per sample; this runtime takes at most {MAX_DIM:,}"
    return None


def _tensor(v) -> str | None:
    """A nested list of numbers (a self-test array)."""
    stack = [v]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif _number(item):
            return f"must hold arrays of numbers, found {_show(item)}"
    return None


def _info(v) -> str | None:
    """Free-form description (training, producer, ...): JSON of bounded nesting and text."""
    stack = [(v, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"is nested more than {MAX_DEPTH} levels deep"
        if isinstance(item, str) and len(item) > MAX_TEXT:
            return f"holds a text of {len(item):,} characters (at most {MAX_TEXT})"
        if isinstance(item, dict):
            stack.extend((x, depth + 1) for x in item.values())
        elif isinstance(item, list):
            stack.extend((x, depth + 1) for x in item)
    return None


def _blob(v) -> str | None:
    return None if isinstance(v, str) else f"must be text (base64), got {_show(v)}"


def _tensors(v) -> str | None:
    if not isinstance(v, dict) or not v:
        return f"must map input names to arrays, got {_show(v)}"
    return next((f"{k} {p}" for k, p in ((k, _name(k) or _tensor(a)) for k, a in v.items()) if p), None)


POSITIVE = _count(1, 2**31 - 1)
SCHEMA: dict[str, Any] = {
    "format_version": _count(1, 2**31 - 1),
    "kind": str,
    "data_shape": _data_shape,
    "input_x": _name, "input_t": _name, "output_v": _name, "input_z": _name, "output_x": _name,
    "input_y": _name,
    "baked": {"solver": str, "steps": POSITIVE, "nfe?": POSITIVE},
    "prediction": str,
    "path": {"name?": str},
    "default_solver": str,
    "default_schedule": str,
    "default_steps": POSITIVE,
    "training": {}, "producer": {},
    "architecture": {"type?": str, "dim?": POSITIVE, "width?": POSITIVE, "depth?": POSITIVE},
    "selftest": {"inputs": _tensors, "output": _tensor, "atol?": _number},
    "variant": {"precision?": str, "quantize?": (str, type(None)), "format?": str,
                "vs_fp32?": {"size_bytes": _number, "max_dev": _number, "mean_dev": _number,
                             "energy_distance?": _number, "energy_distance_fp32?": _number,
                             "noise_floor?": _number}},
    "num_classes": _count(0, 2**31 - 2),
    "null_class": _count(0, 2**31 - 1),
    "value_range": [_number],
    "divergence": {"onnx_base64?": _blob, "unsupported_ops?": [str], "input_e?": _name, "output_jv?": _name},
}


def _show(v) -> str:
    try:
        text = json.dumps(v) if not isinstance(v, float) or math.isfinite(v) else str(v)
    except (RecursionError, ValueError):
        return "a value nested too deep to show"
    return text if len(text) <= 60 else text[:57] + "..."


def _problem(value, schema, field: str) -> tuple[str, str] | None:
    """(field path, what is wrong) for the first mismatch, or None."""
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return field, f"must be an object, got {_show(value)}"
        for key, sub in schema.items():
            name = key.rstrip("?")
            if name not in value:
                if not key.endswith("?"):
                    return f"{field}.{name}", "is missing"
                continue
            found = _problem(value[name], sub, f"{field}.{name}")
            if found:
                return found
        named = {k.rstrip("?") for k in schema}
        for key, item in value.items():     # fields the schema does not name: described only
            found = None if key in named else _info(item)
            if found:
                return f"{field}.{key}", found
        return None
    if isinstance(schema, list):
        if not isinstance(value, list):
            return field, f"must be a list, got {_show(value)}"
        for i, item in enumerate(value):
            found = _problem(item, schema[0], f"{field}[{i}]")
            if found:
                return found
        return None
    if callable(schema) and not isinstance(schema, type):
        found = schema(value)
        return (field, found) if found else None
    types = schema if isinstance(schema, tuple) else (schema,)
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        want = " or ".join("null" if t is type(None) else {"str": "text", "int": "an integer"}.get(t.__name__, t.__name__)
                           for t in types)
        return field, f"must be {want}, got {_show(value)}"
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return field, f"holds a text of {len(value):,} characters (at most {MAX_TEXT})"
    return None


def decode(key: str, raw: str) -> tuple[Any, str | None]:
    """(value, problem) for one key's raw metadata text: size, JSON and shape checked."""
    limit = MAX_BYTES.get(key, DEFAULT_MAX_BYTES)
    if len(raw) > limit:
        return None, f"is {len(raw):,} bytes, more than the {limit:,} this key may hold"
    try:
        value = json.loads(raw)
    except RecursionError:
        return None, f"is nested more than {MAX_DEPTH} levels deep"
    except ValueError as e:          # not JSON, or an integer too long for Python to read
        return None, f"is not valid JSON ({str(e)[:80]}): {_show(raw)}"
    return value, check(key, value)


def check(key: str, value) -> str | None:
    """What is wrong with `value` for contract key `key` (None: nothing)."""
    found = _info(value) if key not in SCHEMA else _problem(value, SCHEMA[key], "")
    if found is None:
        return None
    if isinstance(found, str):
        return found
    field, what = found
    return f"{field.lstrip('.')} {what}" if field else what
