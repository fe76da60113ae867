"""A request's extra inputs (contract version 4): every condition the file declares checked
against its dtype and rank and made per-row, and every symbol of the shapes bound once, from the
conditions, the noise and the request's dims (request.py builds the Request around them)."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..definitions import CONTRACT
from ..errors import ModelError, ResourceError
from ..model.schema import MAX_DIM, MAX_SYMBOL
from ..model.spec import ModelSpec
from .options import bad_input, usage

STAGE_KEY = CONTRACT["prefix"] + "condition_stage"


def bind_inputs(spec: ModelSpec, where: str, cond, dims, noise, n: int | None, what: str = "noise"):
    """(the spec with its symbols bound, the extra inputs {name: (array of its dtype, whether it
    has the batch axis)}, the rows they fix or None): every input the file declares given (a mask
    may be left out: all ones), none it does not, each of its declared dtype and rank with or
    without the batch axis, finite; every symbol bound once, from the inputs, the noise and
    `dims`, all agreeing and within the file's bounds."""
    cond, dims = mapping(cond, "cond"), mapping(dims, "dims")
    if not spec.inputs and not spec.symbolic:
        if cond or dims:
            raise usage("cond" if cond else "dims", f"{where} declares no conditions or symbols; it takes no "
                                                    f"{'cond' if cond else 'dims'} ({', '.join(cond or dims)})")
        return spec, {}, None
    declared = _declared(spec, where, cond)
    symbols = Symbols(spec, where, dims, what)
    arrays, rows = {}, None
    for name, value in cond.items():
        arrays[name], batch = symbols.condition(declared[name], value)
        rows = _agree_rows(rows, batch, name) if batch is not None else rows
    if noise is not None and len(np.shape(noise)) == 1 + len(spec.data_shape):
        symbols.bind(np.shape(noise)[1:], spec.data_shape, what, None)
    if rows == 0:
        raise usage("cond", "the per-row conditions have no rows (give at least one)")
    if n is not None and rows is not None and n != rows:
        raise usage("n", f"n = {n} but the per-row conditions have {rows} rows")
    spec = symbols.bound_spec()
    for item in spec.inputs:          # a mask left out: every position valid
        if item["role"] == "mask" and item["name"] not in arrays:
            arrays[item["name"]] = (np.ones(item["shape"], np.float32), False)
    return spec, arrays, rows


def _declared(spec: ModelSpec, where: str, cond: dict) -> dict[str, dict]:
    """The file's inputs by name, once the request's conditions name only those and leave out
    none but a mask or a guidance input."""
    declared = {i["name"]: i for i in spec.inputs}
    unknown = sorted(set(cond) - set(declared))
    if unknown:
        raise usage("cond", field=unknown[0], message=f"{where} has no input {unknown[0]!r}; its conditions are "
                                                      f"{', '.join(declared) or 'none'}")
    missing = [k for k, i in declared.items() if k not in cond and i["role"] not in ("mask", "guidance")]
    staged = spec.stage.get("outputs", ()) if spec.stage else ()
    if missing and missing[0] in staged:        # what the request gives is the stage's inputs
        inputs = ", ".join(f"{i['name']} ({i['dtype']} [{', '.join(map(str, i['shape']))}])" for i in spec.stage["inputs"])
        raise usage("cond", field=missing[0], message=f"{where} needs {inputs}: its condition stage makes "
                                                      f"{missing[0]!r} from them (or give {missing[0]!r} itself, "
                                                      f"{_describe(declared[missing[0]])})")
    if missing:
        raise usage("cond", field=missing[0], message=f"{where} needs the condition {missing[0]!r} "
                                                      f"({_describe(declared[missing[0]])})")
    return declared


class Symbols:
    """The sizes a request binds to the file's symbols, each with where it came from (dims, a
    condition, the noise): bound once, every later source agreeing."""

    def __init__(self, spec: ModelSpec, where: str, dims: dict, what: str):
        self.spec, self.where, self.what = spec, where, what
        self.bound: dict[str, tuple[int, str]] = {}
        for name, size in dims.items():
            if name not in spec.symbols:
                raise usage("dims", field=name, message=f"{where} has no symbol {name!r}; its symbols are "
                                                        f"{', '.join(spec.symbols) or 'none'}")
            if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
                raise usage("dims", field=name, message=f"dims {name} must be a whole number, got {size!r}")
            self.bound[name] = (int(size), "dims")

    def bind(self, shape, decl, source: str, name: str | None) -> None:
        """Bind the symbols of `decl` to the sizes of `shape` (fixed sizes must match)."""
        for got, want in zip(shape, decl):
            if isinstance(want, str):
                if want in self.bound and self.bound[want][0] != got:
                    raise usage("dims", field=want, message=f"the symbols disagree: {self.bound[want][1]} gives {want} = "
                                                            f"{self.bound[want][0]}, {source} gives {want} = {got}")
                self.bound.setdefault(want, (int(got), source))
            elif got != want:
                raise bad_input("cond" if name else self.what, field=name,
                                message=f"{source} has shape {list(shape)}, expected {list(decl)}")

    def condition(self, item: dict, value) -> tuple[tuple[np.ndarray, bool], int | None]:
        """((the condition as an array of its dtype, whether it has the batch axis), its rows or
        None), its symbols bound."""
        name, arr, decl = item["name"], _as_array(item, value), item["shape"]
        if arr.ndim not in (len(decl), len(decl) + 1):
            raise bad_input("cond", field=name, message=f"condition {name!r} has shape {list(arr.shape)}; expected "
                                                        f"[{_dims(decl)}] for every row or [n, {_dims(decl)}] per row")
        batched = arr.ndim == len(decl) + 1
        self.bind(arr.shape[1:] if batched else arr.shape, decl, f"condition {name!r}", name)
        return (arr, batched), len(arr) if batched else None

    def bound_spec(self) -> ModelSpec:
        """The spec with every symbol bound, each within the file's bounds and every row within
        the runtime's size limit."""
        spec, where = self.spec, self.where
        for name in spec.symbols:
            if name in self.bound:
                _check_size(spec, where, name, self.bound[name][0])
            elif name in spec.data_shape or any(name in i["shape"] for i in spec.inputs):
                raise usage("dims", field=name, message=f"nothing binds the symbol {name}: give dims={{'{name}': ...}} "
                                                        f"(fm-run: --dim {name}=N)")
        bound = spec.bind({k: v[0] for k, v in self.bound.items()})
        for shape in (bound.data_shape, *(i["shape"] for i in bound.inputs)):
            size = int(np.prod(shape, dtype=np.float64))
            if size > MAX_DIM:
                raise ResourceError(f"{where}: with {', '.join(f'{k} = {v[0]:,}' for k, v in self.bound.items())} one "
                                    f"row has {size:,} values; this runtime takes at most {MAX_DIM:,}")
        return bound


def mapping(value, key: str) -> dict:
    """A request's cond or dims as a dict by name (None: empty)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise usage(key, f"{key} must be a dict by name, e.g. {key}={{'mu': ...}}, got {type(value).__name__}")
    return dict(value)


def per_row(arrays: dict, n: int) -> dict:
    """Each input as [n, *shape]: one given without the batch axis (a view) applies to every row."""
    return {name: arr if batched else np.broadcast_to(arr, (n, *arr.shape)) for name, (arr, batched) in arrays.items()}


def _as_array(item: dict, value) -> np.ndarray:
    """A condition as an array of its declared dtype: float32 from any real numbers, finite;
    int64 from integers."""
    name, arr, floats = item["name"], np.asarray(value), item["dtype"] == "float32"
    if arr.dtype.kind not in ("fiu" if floats else "iu") or arr.dtype == bool:
        raise bad_input("cond", field=name, message=f"condition {name!r} must be {item['dtype']} "
                        f"{'numbers' if floats else 'integers'}, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise bad_input("cond", field=name, message=f"condition {name!r} holds {int(arr.max())}, past int64")
    arr = arr.astype(np.float32 if floats else np.int64, copy=False)
    if floats and not np.isfinite(arr).all():
        raise bad_input("cond", field=name, message=f"condition {name!r} contains NaN or Inf")
    if "range" in item and arr.size:
        (low, high), bad = item["range"], arr[(arr < item["range"][0]) | (arr > item["range"][1])]
        if bad.size:
            raise bad_input("cond", field=name, message=f"condition {name!r} holds the id {int(bad[0])}; this file takes "
                                                        f"{low}..{high}")
    return arr


def _check_size(spec: ModelSpec, where: str, name: str, size: int) -> None:
    """A symbol's size within the file's bounds for it."""
    bounds = spec.symbols[name]
    low, high, step = bounds.get("min", 1), bounds.get("max", MAX_SYMBOL), bounds.get("multiple_of", 1)
    if not low <= size <= high or size % step:
        raise usage("dims", field=name, message=f"{name} = {size} is outside what {where} takes: {low} <= {name} <= {high}"
                    + (f", a multiple of {step}" if step > 1 else ""))


def _agree_rows(rows, got: int, name: str) -> int:
    if rows is not None and rows != got:
        raise usage("cond", f"the per-row conditions disagree on rows: {rows} and {got} ({name!r})")
    return got


def _dims(shape) -> str:
    return ", ".join(map(str, shape))


def _describe(item: dict) -> str:
    return f"{item['dtype']} [{_dims(item['shape'])}], role {item['role']}"


def through_stage(spec: ModelSpec, where: str, cond: dict | None, run, guided: bool = False) -> tuple[dict | None, dict]:
    """(the request's conditions with the condition stage's inputs (token ids, observations, ...)
    replaced by what the stage makes of them, the nulls the stage makes): `run(feed) -> outputs`
    runs the stage's graph once for the whole request. Inputs given without the batch axis run as
    one row and their outputs apply to every row; with it, each row gets its own. A `guided`
    request whose file takes a null from the stage runs the null request (every stage input
    zeros: token id 0 is padding, so the empty prompt) in the same call, as more rows. Without the
    stage's inputs the request gives the stage's outputs itself, and nothing runs."""
    stage = spec.stage
    names = [i["name"] for i in stage.get("inputs", ())]
    staged_nulls = [i["name"] for i in spec.inputs if i.get("null") == "stage"]
    cond = mapping(cond, "cond") or None
    if not cond or not any(k in cond for k in names):
        if guided and staged_nulls:
            raise usage("cond", f"{where}: the null of {staged_nulls[0]!r} comes from the condition stage; for guidance "
                        f"give the stage's inputs ({', '.join(names)})", staged_nulls[0])
        return cond, {}
    missing = [k for k in names if k not in cond]
    if missing:
        raise usage("cond", f"{where}: the condition stage needs {', '.join(names)}; {missing[0]!r} is missing", missing[0])
    both = [k for k in stage["outputs"] if k in cond]
    if both:
        raise usage("cond", f"{where}: {both[0]!r} comes from the condition stage; give the stage's inputs "
                    f"({', '.join(names)}) or {both[0]!r}, not both", both[0])
    feed, batched, rows = _stage_feed(spec, where, cond)
    with_nulls = guided and bool(staged_nulls)
    if with_nulls:
        feed = {k: np.concatenate([v, np.zeros_like(v)]) for k, v in feed.items()}
    made = {k: v for k, v in cond.items() if k not in names}
    nulls = {}
    for name, out in _stage_outputs(spec, where, run(feed), 2 * rows if with_nulls else rows):
        made[name] = out[:rows] if batched else out[0]
        if with_nulls and name in staged_nulls:
            nulls[name] = out[rows:] if batched else out[rows]
    return made, nulls


def _stage_feed(spec: ModelSpec, where: str, cond: dict) -> tuple[dict, bool, int]:
    """(the condition stage's feed, whether its inputs have the batch axis, the rows they give):
    each input of its dtype and rank, its symbols within the file's bounds, all agreeing."""
    feed, batched = {}, None
    for item in spec.stage["inputs"]:
        name, arr = item["name"], _as_array(item, cond[item["name"]])
        has_rows = arr.ndim == len(item["shape"]) + 1
        if not has_rows and arr.ndim != len(item["shape"]):
            raise bad_input("cond", f"condition {name!r} has shape {list(arr.shape)}; expected [{_dims(item['shape'])}] "
                            f"or [n, {_dims(item['shape'])}]", name)
        if batched is not None and batched != has_rows:
            raise usage("cond", "the condition stage's inputs must all have the batch axis or none", name)
        batched = has_rows
        arr = arr if has_rows else arr[None]
        for got, want in zip(arr.shape[1:], item["shape"]):
            if isinstance(want, str):
                _check_size(spec, where, want, got)
            elif got != want:
                raise bad_input("cond", f"condition {name!r} has shape {list(arr.shape)}, expected [{_dims(item['shape'])}]", name)
        feed[name] = np.ascontiguousarray(arr)
    counts = {len(v) for v in feed.values()}
    if len(counts) > 1:
        raise usage("cond", f"the condition stage's per-row inputs disagree on rows: {sorted(counts)}")
    rows = counts.pop()
    if rows == 0:
        raise usage("cond", "the condition stage's inputs have no rows (give at least one)")
    return feed, bool(batched), rows


def _stage_outputs(spec: ModelSpec, where: str, outputs, rows: int):
    """(name, output) of each of the stage's outputs, refused unless of its declared dtype and
    rank with `rows` rows."""
    declared = {i["name"]: i for i in spec.inputs}
    for name, out in zip(spec.stage["outputs"], outputs):
        item, out = declared[name], np.asarray(out)
        if out.ndim != len(item["shape"]) + 1 or out.shape[0] != rows or out.dtype != np.dtype(item["dtype"]):
            raise ModelError(f"{where}: the condition stage returned {name} as {out.dtype} {list(out.shape)} for {rows} "
                             f"rows; fm.inputs declares {item['dtype']} [{rows}, {_dims(item['shape'])}]", key=STAGE_KEY)
        yield name, out


def given_nulls(spec: ModelSpec, where: str, given: dict, inputs: dict, n: int) -> dict:
    """A request's own nulls (null_cond: a negative prompt's conditions, after the condition stage
    when it gave the stage's inputs) as [n, *shape]: each names a condition of the file and has
    the request's shape for it, per row or for every row."""
    out = {}
    for name, value in given.items():
        item = next((i for i in spec.inputs if i["name"] == name and i["role"] == "condition"), None)
        if item is None:
            conditions = [i["name"] for i in spec.inputs if i["role"] == "condition"]
            raise usage("null_cond", f"{where}: null_cond names {name!r}, which is not a condition of this file "
                        f"({', '.join(conditions) or 'it has none'})", name)
        arr, want = _as_array(item, value), inputs[name].shape[1:]
        if arr.shape == want:
            arr = np.broadcast_to(arr, (n, *want))
        if arr.shape != (n, *want):
            raise bad_input("null_cond", f"{where}: the null of {name!r} has shape {list(arr.shape)}; the request's "
                            f"{name!r} is [{n}, {', '.join(map(str, want))}] (or give one row: "
                            f"[{', '.join(map(str, want))}])", name)
        out[name] = arr
    return out


def null_rows(spec: ModelSpec, inputs: dict, staged: dict, n: int) -> dict:
    """What the unconditional half of a guided call feeds for each condition with a null, as
    [n, *shape] (views where they broadcast): zeros, the file's stored null (broadcast along its
    symbols) or the condition stage's output for the null request (`staged`, from through_stage)."""
    nulls = {}
    for item in spec.inputs:
        kind, name = item.get("null"), item["name"]
        if kind == "zeros":
            nulls[name] = np.broadcast_to(np.zeros((), inputs[name].dtype), inputs[name].shape)
        elif kind == "stored":
            nulls[name] = np.broadcast_to(spec.null_values[name], inputs[name].shape)
        elif kind == "stage":
            arr = np.asarray(staged[name])
            arr = arr if arr.ndim == len(item["shape"]) + 1 else arr[None]
            if arr.shape[1:] != inputs[name].shape[1:]:
                raise bad_input("cond", f"the condition stage made the null {name!r} of shape {list(arr.shape[1:])}, "
                                f"not the request's {list(inputs[name].shape[1:])}", name)
            nulls[name] = np.broadcast_to(arr, inputs[name].shape)
    return nulls
