"""A request's extra inputs (contract version 4): every condition the file declares checked
against its dtype and rank and made per-row, and every symbol of the shapes bound once, from the
conditions, the noise and the request's dims (request.py builds the Request around them)."""
from __future__ import annotations

import numpy as np

from ..errors import InputError, UsageError
from ..model.schema import MAX_SYMBOL
from ..model.spec import ModelSpec


def usage(key: str, message: str = "", field: str | None = None) -> UsageError:
    """A refused request argument: `key` names it (n, steps, cond, ...), `field` what inside it."""
    return UsageError(message, key=key, field=field)


def bad_input(key: str, message: str = "", field: str | None = None) -> InputError:
    """An unusable array of a request (noise, data, a condition)."""
    return InputError(message, key=key, field=field)


def bind_inputs(spec: ModelSpec, where: str, cond, dims, noise, n: int | None, what: str = "noise"):
    """(the spec with its symbols bound, the extra inputs {name: (array of its dtype, whether it
    has the batch axis)}, the rows they fix or None): every input the file declares given (a mask may be left out: all ones), none
    it does not, each of its declared dtype and rank with or without the batch axis, finite;
    every symbol bound once, from the inputs, the noise and `dims`, all agreeing and within the
    file's bounds."""
    cond, dims = dict(cond or {}), dict(dims or {})
    if not spec.inputs and not spec.symbolic:
        if cond or dims:
            raise usage("cond" if cond else "dims", f"{where} declares no conditions or symbols; it takes no "
                             f"{'cond' if cond else 'dims'} ({', '.join(cond or dims)})")
        return spec, {}, None
    declared = {i["name"]: i for i in spec.inputs}
    unknown = sorted(set(cond) - set(declared))
    if unknown:
        raise usage("cond", field=unknown[0], message=f"{where} has no input {unknown[0]!r}; its conditions are "
                         f"{', '.join(declared) or 'none'}")
    missing = [k for k, i in declared.items() if k not in cond and i["role"] not in ("mask", "guidance")]
    if missing:
        raise usage("cond", field=missing[0], message=f"{where} needs the condition {missing[0]!r} ({_describe(declared[missing[0]])})")
    bound: dict[str, tuple[int, str]] = {}
    for name, size in dims.items():
        if name not in spec.symbols:
            raise usage("dims", field=name, message=f"{where} has no symbol {name!r}; its symbols are {', '.join(spec.symbols) or 'none'}")
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
            raise usage("dims", field=name, message=f"dims {name} must be a whole number, got {size!r}")
        bound[name] = (int(size), "dims")
    arrays, rows = {}, None

    def bind(shape, decl, source, name):
        for got, want in zip(shape, decl):
            if isinstance(want, str):
                if want in bound and bound[want][0] != got:
                    raise usage("dims", field=want, message=f"the symbols disagree: {bound[want][1]} gives {want} = {bound[want][0]}, "
                                     f"{source} gives {want} = {got}")
                bound.setdefault(want, (int(got), source))
            elif got != want:
                raise bad_input("cond" if name else what, field=name, message=f"{source} has shape {list(shape)}, expected {list(decl)}")

    for name, value in cond.items():
        item, arr = declared[name], np.asarray(value)
        if item["dtype"] == "float32":
            if arr.dtype.kind not in "fiu" or arr.dtype == bool:
                raise bad_input("cond", field=name, message=f"condition {name!r} must be float32 numbers, got dtype {arr.dtype}")
            arr = arr.astype(np.float32, copy=False)
            if not np.isfinite(arr).all():
                raise bad_input("cond", field=name, message=f"condition {name!r} contains NaN or Inf")
        elif arr.dtype.kind not in "iu":
            raise bad_input("cond", field=name, message=f"condition {name!r} must be integers (int64), got dtype {arr.dtype}")
        else:
            arr = arr.astype(np.int64, copy=False)
        decl = item["shape"]
        if arr.ndim == len(decl) + 1:
            rows = _agree_rows(rows, len(arr), name)
            bind(arr.shape[1:], decl, f"condition {name!r}", name)
        elif arr.ndim == len(decl):
            bind(arr.shape, decl, f"condition {name!r}", name)
        else:
            raise bad_input("cond", field=name, message=f"condition {name!r} has shape {list(arr.shape)}; expected [{_dims(decl)}] for every "
                             f"row or [n, {_dims(decl)}] per row")
        arrays[name] = (arr, arr.ndim == len(decl) + 1)
    if noise is not None:
        shape = np.shape(noise)
        if len(shape) == 1 + len(spec.data_shape):
            bind(shape[1:], spec.data_shape, what, None)
    if n is not None and rows is not None and n != rows:
        raise usage("n", f"n = {n} but the per-row conditions have {rows} rows")
    for name, bounds in spec.symbols.items():
        if name not in bound:
            if any(name in i["shape"] or name in spec.data_shape for i in spec.inputs) or name in spec.data_shape:
                raise usage("dims", field=name, message=f"nothing binds the symbol {name}: give dims={{'{name}': ...}} (fm-run: --dim {name}=N)")
            continue
        size = bound[name][0]
        low, high, step = bounds.get("min", 1), bounds.get("max", MAX_SYMBOL), bounds.get("multiple_of", 1)
        if not low <= size <= high or size % step:
            raise usage("dims", field=name, message=f"{name} = {size} is outside what {where} takes: {low} <= {name} <= {high}"
                             + (f", a multiple of {step}" if step > 1 else ""))
    spec = spec.bind({k: v[0] for k, v in bound.items()})
    for item in spec.inputs:          # a mask left out: every position valid
        if item["role"] == "mask" and item["name"] not in arrays:
            arrays[item["name"]] = (np.ones(item["shape"], np.float32), False)
    return spec, arrays, rows


def per_row(arrays: dict, n: int) -> dict:
    """Each input as [n, *shape]: one given without the batch axis (a view) applies to every row."""
    return {name: arr if batched else np.broadcast_to(arr, (n, *arr.shape)) for name, (arr, batched) in arrays.items()}


def _agree_rows(rows, got: int, name: str) -> int:
    if rows is not None and rows != got:
        raise usage("cond", f"the per-row conditions disagree on rows: {rows} and {got} ({name!r})")
    return got


def _dims(shape) -> str:
    return ", ".join(map(str, shape))


def _describe(item: dict) -> str:
    return f"{item['dtype']} [{_dims(item['shape'])}], role {item['role']}"


