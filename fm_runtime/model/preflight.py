"""Pre-flight: the memory a graph is bound to take, read from the file alone before onnxruntime
sees it. onnxruntime folds constants while it builds a session, so a 400-byte file whose
ConstantOfShape, Expand, Tile, Range, Resize or Concat chain makes gigabytes would take them at
load, before any budget check of ours could run.

Every tensor gets a lower bound on its shape (a symbolic dimension counts as 1; an op this module
does not model leaves its outputs unknown, so the bound never overstates). Small values are
followed too: exact ones from constants, and lower bounds from the shapes of the inputs (Shape of
x at one row), carried only through ops that keep them lower bounds (Add, Max, Min, Mul of
non-negative values, Sub of an exact value, Cast, Concat), so `Expand(1, Shape(x) * 20000)` is
sized at load like a constant shape. A tensor whose bound
exceeds the allowance (an eighth of it for a tensor made from the inputs, which every row of a call
makes again), or constant-only tensors that together exceed it, refuse the file with
ResourceError (exit 9) naming the node. The allowance is contract.json's `static_bytes_floor` or
`static_bytes_per_file_byte` times the file's size, whichever is larger, and never more than the
process's memory limit (--max-memory) when one is set.
"""
from __future__ import annotations

import numpy as np

from ..definitions import CONTRACT
from ..errors import ModelError, ResourceError
from . import onnx_wire as wire

LIMITS = CONTRACT["limits"]
UNARY = {"Identity", "Neg", "Abs", "Relu", "Sigmoid", "Tanh", "Exp", "Log", "Sqrt", "Sin", "Cos", "Erf", "Not",
         "Softmax", "LogSoftmax", "Elu", "LeakyRelu", "Floor", "Ceil", "Round", "Reciprocal", "Sign", "Dropout",
         "Softplus", "HardSigmoid", "Gelu", "IsNaN", "IsInf", "CastLike", "Clip"}
BINARY = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Equal", "Less", "Greater", "LessOrEqual",
          "GreaterOrEqual", "And", "Or", "Xor", "Mod", "Where", "Sum", "Mean", "BitShift", "PRelu"}
PER_ROW_SHARE = 8
NUMPY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Max": np.maximum, "Min": np.minimum}


def allowance(file_bytes: int) -> int:
    """Bytes the static parts of a graph of this size may take."""
    allowed = max(LIMITS["static_bytes_floor"], LIMITS["static_bytes_per_file_byte"] * file_bytes)
    try:
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_DATA)
        if soft != resource.RLIM_INFINITY:
            allowed = min(allowed, soft)
    except (ImportError, ValueError, OSError):
        pass
    return allowed


def check_graph_memory(data: bytes, where: str, allowed: int | None = None, allow_loops: bool = False) -> None:
    """Refuse a model whose graph is bound to allocate more than `allowed` bytes (default:
    allowance(len(data))) before onnxruntime is given it (ResourceError), or that holds a Loop
    the file does not bound, unless `allow_loops` (ModelError)."""
    allowed = allowance(len(data)) if allowed is None else allowed
    try:
        graphs = wire.model_graphs(data)
    except (wire.WireError, RecursionError):
        return      # not protobuf: onnxruntime refuses it with the message that says what it is
    for g in graphs:
        _check(g, where, allowed)
        if not allow_loops:
            _check_loops(g, where, {}, 1)


def _check_loops(g: wire.Graph, where: str, outer: dict, trips: int) -> None:
    """Every Loop (at any depth) must run a trip count the file fixes (a constant), and nested
    loops together at most limits.max_loop_trips times; If and Scan end by themselves."""
    consts = {**outer, **{k: t.value for k, t in g.initializers.items() if t.value is not None}}
    for n in g.nodes:
        if n.op == "Constant" and isinstance(n.attrs.get("value"), wire.Tensor) and n.outputs:
            consts[n.outputs[0]] = n.attrs["value"].value
        runs = trips
        if n.op == "Loop" and n.domain in ("", "ai.onnx"):
            m = consts.get(n.inputs[0]) if n.inputs and n.inputs[0] else None
            name = n.outputs[0] if n.outputs else n.op
            if m is None or np.size(m) != 1:
                raise ModelError(f"{where}: its Loop node making {name!r} has no trip count the file fixes, so "
                                 "it may run forever; refused (load it with allow_loops=True, or fm-run "
                                 "--allow-loops, only if you trust the file's producer)")
            runs = trips * max(int(np.ravel(m)[0]), 0)
            if runs > LIMITS["max_loop_trips"]:
                together = " (nested loops counted together)" if trips > 1 else ""
                raise ModelError(f"{where}: its Loop node making {name!r} runs {runs:,} times{together}, more "
                                 f"than the {LIMITS['max_loop_trips']:,} a file may loop; "
                                 "refused (allow_loops=True or fm-run --allow-loops lifts this for a trusted file)")
        for value in n.attrs.values():
            for sub in value if isinstance(value, list) else [value]:
                if isinstance(sub, wire.Graph):
                    _check_loops(sub, where, consts, runs)


def _broadcast(*shapes):
    rank = max(len(s) for s in shapes)
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in shapes]
    return tuple(max(d) for d in zip(*padded))


def _count(shape) -> int:
    return int(np.prod([max(int(d), 0) for d in shape], dtype=object)) if shape else 1


def _itemsize(dtype: int) -> int:
    return wire.DTYPES.get(dtype, (None, 4))[1] or 4


class _Bounds:
    """Lower-bound shapes, item sizes, small values and constness of the tensors of one graph."""

    def __init__(self, g: wire.Graph):
        self.shape, self.size, self.value, self.const = {}, {}, {}, set()
        self.lower = set()          # names whose value is a lower bound (from the inputs' shapes), not exact
        for name, dims in g.inputs.items():
            if dims is not None:
                self.shape[name] = tuple(d if isinstance(d, int) and d > 0 else 1 for d in dims)
                self.size[name] = 4
        for name, t in g.initializers.items():
            if t.external or _count(t.dims) * _itemsize(t.dtype) > max(t.stored, 64):
                continue        # dims its data does not fill: onnxruntime refuses the file as malformed
            self.put(name, tuple(max(d, 0) for d in t.dims), _itemsize(t.dtype), t.value, const=True)

    def put(self, name, shape, itemsize, value=None, const=False, lower=False):
        self.shape[name], self.size[name] = tuple(int(d) for d in shape), itemsize
        if value is not None and value.size <= wire.SMALL:
            self.value[name] = value
            if lower:
                self.lower.add(name)
        if const:
            self.const.add(name)

    def ints(self, name, exact=False) -> list[int] | None:
        """The small integer value of `name`; None when unknown, or only a lower bound and `exact`."""
        v = self.value.get(name)
        if v is None or v.dtype.kind not in "iu" or (exact and name in self.lower):
            return None
        return [int(x) for x in v.reshape(-1)]


def _infer(n: wire.Node, b: _Bounds):
    """(shape, itemsize, value) of n's first output, or None when this module cannot bound it."""
    if n.op == "Constant":
        return _constant(n)
    o = _Operands(n, b)
    if n.op in UNARY or n.op in BINARY or n.op == "Cast":
        return _elementwise(n, b, o)
    if n.op in ("Concat", "Shape", "Unsqueeze", "Squeeze"):
        return _rearranged(n, b, o)
    if n.op in ("ConstantOfShape", "Expand", "Tile", "Range", "Resize"):
        return _sized_by_values(n, b, o)
    if n.op in ("Gemm", "MatMul"):
        return _product(n, b, o)
    return None


class _Operands:
    """What the bounds know of a node's inputs: the names, whether every named one has a shape,
    the first one's shape (None: unknown) and item size, and their small values (None: unknown)."""

    def __init__(self, n: wire.Node, b: _Bounds):
        self.ins = [i for i in n.inputs]
        self.known = all(i in b.shape for i in self.ins if i)
        self.first = b.shape.get(self.ins[0]) if self.ins and self.ins[0] else None
        self.size = b.size.get(self.ins[0], 4) if self.ins else 4
        self.vals = [b.value.get(i) for i in self.ins]
        self.lower = [i in b.lower for i in self.ins]


def _constant(n: wire.Node):
    """A Constant node's tensor, from whichever value attribute it holds."""
    t = n.attrs.get("value")
    if isinstance(t, wire.Tensor):
        return tuple(max(d, 0) for d in t.dims), _itemsize(t.dtype), t.value
    for key in ("value_ints", "value_floats"):
        if isinstance(n.attrs.get(key), list):
            v = np.array(n.attrs[key], dtype=np.int64 if key == "value_ints" else np.float32)
            return v.shape, v.itemsize, v
    if isinstance(n.attrs.get("value_int"), int):
        return (), 8, np.array(n.attrs["value_int"], dtype=np.int64)
    return None


def _elementwise(n: wire.Node, b: _Bounds, o: _Operands):
    """Unary ops and Cast keep their input's shape; binary ops broadcast theirs (Add, Sub, Mul, Max
    and Min of known values computed, as Identity and Cast pass theirs on)."""
    ins, first, vals = o.ins, o.first, o.vals
    if n.op in UNARY and first is not None:
        return first, o.size, vals[0] if n.op == "Identity" else None
    if n.op == "Cast" and first is not None:
        to = n.attrs.get("to", 1)
        v = vals[0].astype(wire.DTYPES[to][0]) if vals[0] is not None and wire.DTYPES.get(to, (None,))[0] else None
        return first, _itemsize(to), v
    if n.op in BINARY and ins and o.known:
        shape = _broadcast(*(b.shape[i] for i in ins if i))
        v = None
        if n.op in NUMPY and all(x is not None for x in vals) and _keeps_bounds(n.op, vals, o.lower):
            v = NUMPY[n.op](*vals)
        return shape, max(b.size[i] for i in ins if i), v
    return None


def _keeps_bounds(op: str, vals: list, lower: list) -> bool:
    """Whether op of these values is a lower bound of op of the true values, some of which these
    only bound from below."""
    if not any(lower):
        return True
    if op == "Mul":
        return all(bool(np.all(x >= 0)) for x in vals)
    return op in ("Add", "Max", "Min") or (op == "Sub" and not lower[1])


def _rearranged(n: wire.Node, b: _Bounds, o: _Operands):
    """Ops whose output shape their inputs' shapes give: Concat, Shape (of a constant), Unsqueeze, Squeeze."""
    ins, first, size, vals = o.ins, o.first, o.size, o.vals
    if n.op == "Concat" and ins and o.known:
        shapes = [b.shape[i] for i in ins if i]
        rank = len(shapes[0])
        if rank == 0 or any(len(s) != rank for s in shapes):
            return None
        axis = n.attrs.get("axis", 0) % rank
        shape = list(shapes[0])
        shape[axis] = sum(s[axis] for s in shapes)
        v = np.concatenate(vals, axis) if all(x is not None for x in vals) and all(x.ndim == rank for x in vals) else None
        return tuple(shape), size, v
    if n.op == "Shape" and first is not None:        # exact of a constant, else a lower bound
        dims = first[n.attrs.get("start", 0):n.attrs.get("end", len(first))]
        return (len(dims),), 8, np.array(dims, dtype=np.int64)
    if n.op in ("Unsqueeze", "Squeeze") and first is not None:
        axes = b.ints(ins[1], exact=True) if len(ins) > 1 and ins[1] else n.attrs.get("axes")
        if axes is None:
            return None
        shape = list(first)
        if n.op == "Unsqueeze":
            rank = len(shape) + len(axes)
            for a in sorted(a % rank for a in axes):
                shape.insert(a, 1)
        else:
            shape = [d for k, d in enumerate(shape) if k not in {a % max(len(shape), 1) for a in axes}]
        return tuple(shape), size, vals[0].reshape(shape) if vals[0] is not None else None
    return None


def _sized_by_values(n: wire.Node, b: _Bounds, o: _Operands):
    """Ops whose output size input values give, the ones a tiny file can blow up with:
    ConstantOfShape, Expand, Tile, Range, Resize."""
    ins, first, size, vals = o.ins, o.first, o.size, o.vals
    if n.op == "ConstantOfShape":
        shape = b.ints(ins[0]) if ins else None
        t = n.attrs.get("value")
        return (tuple(max(d, 0) for d in shape), _itemsize(t.dtype) if isinstance(t, wire.Tensor) else 4,
                None) if shape is not None else None
    if n.op == "Expand" and len(ins) > 1:
        shape = b.ints(ins[1])
        return (_broadcast(first or (), tuple(max(d, 1) for d in shape)), size, None) if shape is not None else None
    if n.op == "Tile" and first is not None and len(ins) > 1:
        reps = b.ints(ins[1])
        if reps is None or len(reps) != len(first):
            return None
        return tuple(d * max(r, 0) for d, r in zip(first, reps)), size, None
    if n.op == "Range" and len(ins) == 3 and all(v is not None and v.size == 1 for v in vals) and not any(o.lower):
        start, limit, delta = (float(v.reshape(-1)[0]) for v in vals)
        count = max(int(np.ceil((limit - start) / delta)), 0) if delta and np.isfinite([start, limit, delta]).all() else 0
        return (count,), size, None
    if n.op == "Resize" and first is not None:
        sizes = b.ints(ins[3]) if len(ins) > 3 and ins[3] else None
        scales = vals[2] if len(ins) > 2 and ins[2] else None
        if sizes is not None and len(sizes) == len(first):
            return tuple(max(d, 0) for d in sizes), size, None
        if scales is not None and scales.size == len(first) and np.isfinite(scales).all():
            return tuple(int(np.floor(d * max(float(s), 0.0))) for d, s in zip(first, scales.reshape(-1))), size, None
    return None


def _product(n: wire.Node, b: _Bounds, o: _Operands):
    """Gemm and MatMul: rows of the first operand by columns of the second (batch dimensions broadcast)."""
    ins, size = o.ins, o.size
    if len(ins) > 1 and all(i in b.shape for i in ins[:2]):
        a, c = b.shape[ins[0]], b.shape[ins[1]]
        if n.op == "Gemm" and len(a) == 2 and len(c) == 2:
            return (a[1] if n.attrs.get("transA") else a[0], c[0] if n.attrs.get("transB") else c[1]), size, None
        if n.op == "MatMul" and len(a) >= 1 and len(c) >= 2:
            return (*_broadcast(a[:-2], c[:-2]), *(a[-2:-1] if len(a) > 1 else ()), c[-1]), size, None
    return None


def _check(g: wire.Graph, where: str, allowed: int) -> None:
    b = _Bounds(g)
    for name in g.inputs.keys() - g.initializers.keys():    # what a caller feeds, again for every row
        nbytes = _count(b.shape.get(name, ())) * 4
        if nbytes > allowed // PER_ROW_SHARE:
            raise ResourceError(f"{where}: its input {name!r} takes at least {_describe(nbytes)} for one row, more "
                                f"than the {_describe(allowed // PER_ROW_SHARE)} a file of this size may take there "
                                "(refused before loading)")
    folded = 0
    for n in g.nodes:
        try:
            out = _infer(n, b)
        except (ValueError, TypeError, OverflowError, ZeroDivisionError, IndexError, KeyError):
            out = None
        if out is None or not n.outputs or not n.outputs[0]:
            continue
        shape, itemsize, value = out
        nbytes = _count(shape) * itemsize
        const = bool(n.inputs) and all(i in b.const for i in n.inputs if i) or n.op == "Constant"
        # a tensor made from the inputs is made again for every row a call holds: at one row it
        # may take an eighth of the allowance
        limit = allowed if const else allowed // PER_ROW_SHARE
        if nbytes > limit:
            raise ResourceError(f"{where}: its {n.op} node making {n.outputs[0]!r} takes at least "
                                f"{_describe(nbytes)}{'' if const else ' for one row'}, more than the "
                                f"{_describe(limit)} a file of this size may take there (refused before loading)")
        if const:
            folded += nbytes
            if folded > allowed:
                raise ResourceError(f"{where}: its constants fold into at least {_describe(folded)} (at "
                                    f"{n.op} node {n.outputs[0]!r}), more than the {_describe(allowed)} a file "
                                    "of this size may take for its graph (refused before loading)")
        lower = not const and (n.op == "Shape" or any(i in b.lower for i in n.inputs if i))
        b.put(n.outputs[0], shape, itemsize, value if isinstance(value, np.ndarray) else None, const=const, lower=lower)


def _describe(nbytes: int) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:,.1f} {unit}"
    return f"{nbytes} bytes"
