"""The shape of every contract value, checked before the runtime uses it: an interpreter of the
schemas in contract.json (definitions.KEYS), so that a file whose metadata is valid JSON of the
wrong shape (a field missing or of another type, nesting thousands deep, a number no shape can
have) is refused with one line naming the key and the field, never met later as an internal error.
js/src/schema.mjs interprets the same file with the same messages.

Schema forms (a small JSON-Schema subset): "type" string | integer | number | object | array |
null, or a list of them; "minimum"/"maximum" for integers (a number, or a dotted path into
contract.json such as "solvers.max_steps"); "enum" for strings (a list, or a dotted path to a list
or to an object whose keys are the choices, "enum_where" keeping the entries whose fields match);
"properties" (checked in order), "required" and "one_of" (a non-empty object holds at least one
of these) for objects, other fields checked against "values" when given, else allowed and bounded
as free-form info; "items", "minItems", "maxItems" and "increasing" (each item greater than the
one before) for arrays; "format" for the checks a type cannot say: name, data_shape and shape
(sizes or symbols such as T, bound per request), tensor, tensors, base64, schedule. A key without
a schema is free-form info.

Rules between keys are data too (contract.json "rules", checked by `rule_problem` once every key
has its value or its default): {"key": K, "at_most" | "at_least": OTHER, "when": W} compares two
numbers (K and OTHER may name a field, "architecture.width"; the rule applies when both are there
and, with "when", W's value is not 0, empty or null); {"key": K, "steps_agree_with": OTHER}: a
schedule that fixes its own number of steps has OTHER's; {"key": K, "needs": OTHER, "kinds": [...],
"when_in": ENUM}: in a file of those kinds, a value of K among ENUM's choices (an "enum" form) needs
OTHER set (a flow-map solver as the default needs the flow map's start-time input).
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

from ..definitions import CONTRACT, KEYS, LIMITS
from ..solve.schedules import parse_schedule

MAX_RANK = LIMITS["max_rank"]             # data dimensions (numpy holds 64 with batch and time axes)
MAX_SIDE = LIMITS["max_side"]
MAX_DIM = LIMITS["max_dim"]               # values per sample: 1 GiB of float32 per row
MAX_DEPTH = LIMITS["max_depth"]           # nesting of any value
MAX_TEXT = LIMITS["max_text"]             # characters in a string inside a value
MAX_NAME = LIMITS["max_name"]
DEFAULT_MAX_BYTES = LIMITS["max_bytes"]
MAX_BYTES = {k: v["max_bytes"] for k, v in KEYS.items() if "max_bytes" in v}
MAX_SYMBOL = LIMITS["max_symbol"]
MAX_FLOAT_INT = 2 ** LIMITS["max_float_int_log2"]   # integers beyond this do not fit a float64


def _show(v) -> str:
    try:
        text = json.dumps(v) if not isinstance(v, float) or math.isfinite(v) else str(v)
    except (RecursionError, ValueError):
        return "a value nested too deep to show"
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v) -> str | None:
    """A number a float64 can hold (integers too: a 400-digit one would overflow later)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or \
            (abs(v) > MAX_FLOAT_INT if isinstance(v, int) else not math.isfinite(v)):
        return f"must be a finite number, got {_show(v)}"
    return None


def _integer(v, low: int, high: int) -> str | None:
    if not _is_int(v) or not low <= v <= high:
        return f"must be an integer from {low} to {high}, got {_show(v)}"
    return None


def _name(v) -> str | None:
    if not isinstance(v, str) or not 0 < len(v) <= MAX_NAME:
        return f"must be a graph input/output name (text, 1-{MAX_NAME} characters), got {_show(v)}"
    return None


SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")


def is_symbol(v) -> bool:
    """A dimension named by a symbol (T, L, ...) that each request binds."""
    return isinstance(v, str) and SYMBOL.fullmatch(v) is not None


def _shape_of(v, low: int) -> str | None:
    if not isinstance(v, list) or not low <= len(v) <= MAX_RANK or \
            any(not is_symbol(s) and _integer(s, 1, MAX_SIDE) for s in v):
        return f"must be a list of {low} to {MAX_RANK} positive integers or symbols (like T), got {_show(v)}"
    sizes = math.prod(s for s in v if not is_symbol(s))
    if sizes > MAX_DIM:
        return f"declares {sizes:,} values per sample; this runtime takes at most {MAX_DIM:,}"
    return None


def _data_shape(v) -> str | None:
    return _shape_of(v, 1)


def _shape(v) -> str | None:
    """The shape of one row of an extra input (a per-row scalar is [])."""
    return _shape_of(v, 0)


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


def nested_shape(v) -> tuple[int, ...] | None:
    """The shape of a nested list of numbers (a number: ()), None when it is ragged or too deep."""
    shape, level = [], [v]
    while level and isinstance(level[0], list):
        if len(shape) >= MAX_RANK or any(not isinstance(a, list) or len(a) != len(level[0]) for a in level):
            return None
        shape.append(len(level[0]))
        level = [b for a in level for b in a]
    return tuple(shape) if not any(isinstance(a, list) for a in level) else None


def _tensors(v) -> str | None:
    if not isinstance(v, dict) or not v:
        return f"must map input names to arrays, got {_show(v)}"
    return next((f"{k} {p}" for k, p in ((k, _name(k) or _tensor(a)) for k, a in v.items()) if p), None)


def _base64(v) -> str | None:
    return None if isinstance(v, str) else f"must be text (base64), got {_show(v)}"


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


def _schedule(v) -> str | None:
    """A time schedule (solve/schedules.py) this runtime can build."""
    if not isinstance(v, str) or len(v) > MAX_TEXT:
        return f"must be a schedule (text such as uniform or shift:3), got {_show(v)}"
    try:
        parse_schedule(v)
    except ValueError as e:
        return f"is not a schedule this runtime can build: {e}"
    return None


FORMATS = {"name": _name, "data_shape": _data_shape, "shape": _shape, "tensor": _tensor, "tensors": _tensors,
           "base64": _base64, "schedule": _schedule}
_TYPE_OK = {"string": lambda v: isinstance(v, str), "null": lambda v: v is None,
            "integer": _is_int, "number": lambda v: _number(v) is None,
            "object": lambda v: isinstance(v, dict), "array": lambda v: isinstance(v, list)}
_TYPE_WORD = {"string": "text", "null": "null", "integer": "an integer", "object": "an object", "array": "a list"}


def lookup(path: str):
    """The value at a dotted path into contract.json ("solvers.max_steps")."""
    value = CONTRACT
    for part in path.split("."):
        value = value[part]
    return value


def _bound(b):
    return lookup(b) if isinstance(b, str) else b


def choices(schema: dict) -> list[str]:
    """The strings an "enum" allows: its list, or the keys of the object it names (those whose
    fields match "enum_where")."""
    found = lookup(schema["enum"]) if isinstance(schema["enum"], str) else schema["enum"]
    if isinstance(found, dict):
        where = schema.get("enum_where", {})
        return [k for k, v in found.items() if all(v.get(f) == want for f, want in where.items())]
    return list(found)


def _text_problem(value: str, schema: dict) -> str | None:
    if len(value) > MAX_TEXT:
        return f"holds a text of {len(value):,} characters (at most {MAX_TEXT})"
    if "enum" in schema and value not in choices(schema):
        return f"must be one of {', '.join(choices(schema))}, got {_show(value)}"
    return None


def _list_problem(value: list, schema: dict, field: str) -> tuple[str, str] | None:
    if len(value) > schema.get("maxItems", len(value)):
        return field, f"holds {len(value):,} items (at most {schema['maxItems']})"
    for i, item in enumerate(value):
        found = _problem(item, schema["items"], f"{field}[{i}]")
        if found:
            return found
    if len(value) < schema.get("minItems", 0):
        return field, f"holds {len(value):,} items (at least {schema['minItems']}), got {_show(value)}"
    if schema.get("increasing") and any(a >= b for a, b in zip(value, value[1:])):
        return field, f"must be increasing (each item greater than the one before), got {_show(value)}"
    return None


def _object_problem(value: dict, schema: dict, field: str) -> tuple[str, str] | None:
    properties, required = schema.get("properties", {}), schema.get("required", ())
    for name, sub in properties.items():
        if name in value:
            found = _problem(value[name], sub, f"{field}.{name}")
        else:
            found = (f"{field}.{name}", "is missing") if name in required else None
        if found:
            return found
    one_of = schema.get("one_of", ())
    if value and one_of and not any(name in value for name in one_of):
        return field, f"must hold {' or '.join(one_of)}, got {_show(value)}"
    for name, item in value.items():     # fields the schema does not name: "values", or described only
        if name in properties:
            continue
        found = _problem(item, schema["values"], f"{field}.{name}") if "values" in schema else _info(item)
        if isinstance(found, tuple):
            return found
        if found:
            return f"{field}.{name}", found
    return None


def _problem(value, schema: dict, field: str) -> tuple[str, str] | None:
    """(field path, what is wrong) for the first mismatch, or None."""
    types = [schema["format"]] if "format" in schema else \
        schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    if "format" in schema or types in (["number"], ["integer"]):
        found = FORMATS[schema["format"]](value) if "format" in schema else _number(value) if types == ["number"] \
            else _integer(value, _bound(schema["minimum"]), _bound(schema["maximum"]))
        return (field, found) if found else None
    if not any(_TYPE_OK[t](value) for t in types):
        return field, f"must be {' or '.join(_TYPE_WORD[t] for t in types)}, got {_show(value)}"
    if isinstance(value, str):
        found = _text_problem(value, schema)
        return (field, found) if found else None
    if isinstance(value, list):
        return _list_problem(value, schema, field)
    return _object_problem(value, schema, field) if isinstance(value, dict) else None


def decode(key: str, raw: str) -> tuple[Any, tuple[str, str] | None]:
    """(value, (field, problem) or None) for one key's raw metadata text: size, JSON and shape
    checked (field "" where the whole value is at fault)."""
    limit = MAX_BYTES.get(key, DEFAULT_MAX_BYTES)
    if len(raw) > limit:
        return None, ("", f"is {len(raw):,} bytes, more than the {limit:,} this key may hold")
    try:
        value = json.loads(raw)
    except RecursionError:
        return None, ("", f"is nested more than {MAX_DEPTH} levels deep")
    except ValueError as e:          # not JSON, or an integer too long for Python to read
        return None, ("", f"is not valid JSON ({str(e)[:80]}): {_show(raw)}")
    return value, problem(key, value)


def problem(key: str, value) -> tuple[str, str] | None:
    """(field, what is wrong) with `value` for contract key `key`; field "" is the value itself.
    None: nothing is wrong."""
    schema = KEYS.get(key, {}).get("schema")
    found = ("", _info(value)) if schema is None else _problem(value, schema, "")
    if found is None or found[1] is None:
        return None
    return found[0].lstrip("."), found[1]


def describe(found: tuple[str, str]) -> str:
    """A problem as the one line of text it is reported in: "steps must be ..."."""
    field, what = found
    return f"{field} {what}" if field else what


def check(key: str, value) -> str | None:
    """What is wrong with `value` for contract key `key`, as text (None: nothing)."""
    found = problem(key, value)
    return describe(found) if found else None


RULES: list[dict] = CONTRACT.get("rules", [])


def _at(values: dict, path: str):
    """The value at "key" or "key.field" in a file's values (None when it is not there)."""
    key, *fields = path.split(".")
    value = values.get(key)
    for name in fields:
        value = value.get(name) if isinstance(value, dict) else None
    return value


def _rule_text(rule: dict, value, other) -> str | None:
    """What is wrong with `value` under one rule, against the value `other` it names."""
    if "at_most" in rule and value > other:
        return f"must be at most fm.{rule['at_most']} ({_show(other)}), got {_show(value)}"
    if "at_least" in rule and value < other:
        return f"must be at least fm.{rule['at_least']} ({_show(other)}), got {_show(value)}"
    if "steps_agree_with" in rule and parse_schedule(value).steps not in (None, other):
        return (f"fixes {parse_schedule(value).steps} steps, but the file's steps (fm.{rule['steps_agree_with']}) "
                f"are {_show(other)}")
    return None


def rule_problem(values: dict) -> tuple[str, str, str] | None:
    """(key, field, what is wrong) for the first of contract.json's "rules" that `values` (every
    key's value or default, each already fitting its schema) break; None: they keep them all.
    js/src/schema.mjs ruleProblem reads the same rules."""
    for rule in RULES:
        if "needs" in rule:
            value = _at(values, rule["key"])
            if values.get("kind") in rule["kinds"] and value in choices(rule["when_in"]) and \
                    _at(values, rule["needs"]) is None:
                return rule["key"], "", f"fm.{rule['key']} {_show(value)} needs fm.{rule['needs']}, which this file does not set"
            continue
        other_path = rule.get("at_most") or rule.get("at_least") or rule.get("steps_agree_with")
        value, other = _at(values, rule["key"]), _at(values, other_path)
        if value is None or other is None or ("when" in rule and not _at(values, rule["when"])):
            continue
        found = _rule_text(rule, value, other)
        if found:
            key, _, field = rule["key"].partition(".")
            return key, field, f"fm.{rule['key']} {found}"
    return None
