"""Graph passes at export: fold constant time columns of a first layer into its bias.

A network fed cat(t, x) (or cat(x, t)) computes its first layer as Gemm(Concat(t·1, x), W, b).
In a baked sampler every step's t is a constant of the graph, broadcast to the batch by
Expand + Reshape, so each evaluation spends three nodes and a copy of x on a column whose
contribution is the same for every row: W[:, t] · t. `fold_time_columns` rewrites such a Gemm
to Gemm(x, W[:, x], b + t · W[:, t]) and drops the nodes nothing reads any more (the exported
file is then checked against torch as always; tests/test_fast_modes.py checks the fold itself).

`fold_time_branches` goes further in a baked graph: whatever each evaluation computes from its
time alone (a time embedding, its MLP, every block's adaLN modulation: 36 of a DiT's 122 nodes
per evaluation) is computed once at export and stored, one row of it; the nodes that mix it with
x broadcast that row over the batch. A value that does not broadcast that way stays computed,
and a folded graph that does not give the unfolded graph's samples is not used.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper


def attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def fold_time_columns(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every foldable first-layer Gemm folded (the model itself when none is)."""
    g = model.graph
    sources = Sources(g)
    new_inits, replaced = [], {}
    weights: dict[tuple, str] = {}
    for n in g.node:
        match = _foldable(n, sources)
        if match is None:
            continue
        cat, w, b, values, j, width = match
        starts = np.cumsum([0] + [1 if k != j else width for k in range(len(values))])
        keep = np.arange(starts[j], starts[j] + width)
        bias = _folded_bias(w, b, values, starts, j)
        key = (n.input[1], int(starts[j]), width)
        if key not in weights:
            weights[key] = f"fold/{n.input[1]}/{starts[j]}:{width}"
            new_inits.append(numpy_helper.from_array(np.ascontiguousarray(w[keep]).astype(w.dtype), weights[key]))
        bias_name = f"fold/{n.output[0]}/bias"
        new_inits.append(numpy_helper.from_array(bias.astype(w.dtype), bias_name))
        replaced[n.output[0]] = helper.make_node("Gemm", [cat.input[j], weights[key], bias_name], list(n.output),
                                                 name=f"fold/{n.output[0]}")
    if not replaced:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = [replaced.get(n.output[0], n) if n.output else n for n in out.graph.node]
    out.graph.initializer.extend(new_inits)
    drop_dead(out, nodes)
    _skip_noop_reshapes(out)
    return out


class Sources:
    """Where a graph's values come from: its initializers, the node making each, the nodes reading
    each and how many readers each has (a graph output counts as one)."""

    def __init__(self, g: onnx.GraphProto):
        self.inits = {i.name: i for i in g.initializer}
        self.made = {o: n for n in g.node for o in n.output}
        self.users: dict[str, list] = {}
        for n in g.node:
            for i in n.input:
                self.users.setdefault(i, []).append(n)
        self.readers = {name: len(users) for name, users in self.users.items()}
        for o in g.output:
            self.readers[o.name] = self.readers.get(o.name, 0) + 1

    def const(self, name):
        """The value of an initializer or Constant node; None for anything computed."""
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        n = self.made.get(name)
        if n is not None and n.op_type == "Constant" and "value" in attrs(n):
            return numpy_helper.to_array(attrs(n)["value"])
        return None

    def scalar(self, name: str) -> float | None:
        """A float32 constant of one value, as a float."""
        v = self.const(name)
        return float(v.reshape(())) if v is not None and v.size == 1 and v.dtype == np.float32 else None

    def op(self, name: str, op_type: str, sole: bool = True):
        """The node making `name` when it is an `op_type` (and, with sole, `name` has one reader)."""
        n = self.made.get(name)
        return n if n is not None and n.op_type == op_type and (not sole or self.readers.get(name) == 1) else None

    def reader(self, name: str, op_type: str):
        """The one node reading `name`, when it is an `op_type` reading it as its first input."""
        users = self.users.get(name, [])      # a graph output has a reader that is no node
        ok = len(users) == 1 == self.readers.get(name) and users[0].op_type == op_type and users[0].input[0] == name
        return users[0] if ok else None

    def row_constant(self, name):
        """The value every row of this [B, 1] column holds, when it is a broadcast constant."""
        n = self.made.get(name)
        if n is not None and n.op_type == "Reshape":
            shape = self.const(n.input[1])
            if shape is None or list(shape) != [-1, 1]:
                return None
            n = self.made.get(n.input[0])
        elif n is not None and n.op_type == "Unsqueeze":
            n = self.made.get(n.input[0])
        if n is None or n.op_type != "Expand":
            return None
        c = self.const(n.input[0])
        return float(c.reshape(-1)[0]) if c is not None and c.size == 1 else None


def _foldable(n, sources: Sources) -> tuple | None:
    """For a Gemm(Concat(blocks), W, b) whose Concat only it reads and whose blocks are all constant
    columns but one (x): (the Concat, W as [K, out], b, each block's constant (None for x), x's
    block index, its width). None for any other node."""
    if n.op_type != "Gemm" or n.domain or n.input[0] not in sources.made:
        return None
    cat, a = sources.made[n.input[0]], attrs(n)
    if cat.op_type != "Concat" or sources.readers.get(cat.output[0]) != 1 or a.get("transA", 0) \
            or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0 or attrs(cat).get("axis") not in (-1, 1):
        return None
    w = sources.const(n.input[1])
    b = sources.const(n.input[2]) if len(n.input) > 2 and n.input[2] else None
    if w is None or w.ndim != 2 or (b is not None and b.ndim > 1):
        return None
    w = w.T if a.get("transB", 0) else w              # [K, out]
    values = [sources.row_constant(i) for i in cat.input]
    free = [j for j, v in enumerate(values) if v is None]
    if len(free) != 1 or len(values) < 2:
        return None
    j = free[0]
    width = w.shape[0] - (len(values) - 1)            # each constant block is one column
    if width < 1:
        return None
    return cat, w, b, values, j, width


def _folded_bias(w: np.ndarray, b, values: list, starts, j: int) -> np.ndarray:
    """b + the constant columns' contribution: each constant times its row of W."""
    bias = (np.zeros(w.shape[1], w.dtype) if b is None else np.broadcast_to(b, (w.shape[1],)).astype(w.dtype)).copy()
    for k, v in enumerate(values):
        if k != j:
            bias += np.float32(v) * w[starts[k]]
    return bias


def _skip_noop_reshapes(model: onnx.ModelProto) -> None:
    """Reshape(v, [-1, k]) of a v that is already [batch, k] (the x block a folded Gemm now reads
    directly): its readers read v instead."""
    try:
        shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
                  for v in (*onnx.shape_inference.infer_shapes(model).graph.value_info, *model.graph.input)}
    except Exception:       # shape inference is an optimisation here, never a requirement
        return
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    alias = {}
    for n in model.graph.node:
        target = inits.get(n.input[1]) if n.op_type == "Reshape" and len(n.input) > 1 else None
        have = shapes.get(n.input[0]) if target is not None else None
        if have is not None and len(have) == 2 and have[1] and list(target) == [-1, have[1]] \
                and n.output[0] not in {o.name for o in model.graph.output}:
            alias[n.output[0]] = alias.get(n.input[0], n.input[0])
    if alias:
        for n in model.graph.node:
            n.input[:] = [alias.get(i, i) for i in n.input]
        drop_dead(model, list(model.graph.node))


def reads(node) -> set[str]:
    """What a node reads: its inputs, and the outer names its subgraphs (If, Loop, Scan) read."""
    names = {i for i in node.input if i}
    for a in node.attribute:
        for g in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
            for inner in g.node:
                names |= reads(inner)
    return names


def drop_dead(model: onnx.ModelProto, nodes: list) -> None:
    """Make `nodes` (in topological order) the graph's, without those the graph outputs do not
    depend on, and keep only the initializers the rest read."""
    needed = {o.name for o in model.graph.output}
    kept = []
    for n in reversed(nodes):
        if any(o in needed for o in n.output) or not n.output:
            kept.append(n)
            needed |= reads(n)
    del model.graph.node[:]
    model.graph.node.extend(reversed(kept))
    used = [i for i in model.graph.initializer if i.name in needed]
    del model.graph.initializer[:]
    model.graph.initializer.extend(used)


BROADCAST = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min"}   # read a [1, ...] row for [B, ...] alike
FOLD_BYTES = 64 << 20        # what the stored time values of a whole baked graph may take


def _batch_only(g: onnx.GraphProto) -> set[str]:
    """Tensors whose values depend on nothing but the batch size of the first input (z): the
    constants, z's shape where the rest of it is fixed, and what nodes compute from those."""
    z = g.input[0]
    fixed = all(d.HasField("dim_value") for d in z.type.tensor_type.shape.dim[1:])
    out = {i.name for i in g.initializer}
    for n in g.node:
        a = attrs(n)
        seed = n.op_type == "Constant" or (n.op_type == "Shape" and n.input[0] == z.name
                                            and (fixed or (a.get("start", 0) == 0 and a.get("end") == 1)))
        pure = n.input and all(i in out for i in n.input if i) and not n.op_type.startswith("Random") \
            and not any(x.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for x in n.attribute)
        if seed or pure:
            out.update(n.output)
    return out


def _run(model: onnx.ModelProto, outputs: list[str], feed: dict) -> list[np.ndarray]:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.extend(onnx.ValueInfoProto(name=o) for o in outputs)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run([model.graph.output[0].name, *outputs], feed)


def fold_time_branches(model: onnx.ModelProto, feed) -> onnx.ModelProto:
    """The baked graph with what depends on time alone stored (the model itself when nothing
    folds). feed(b): an example feed of b rows."""
    g = model.graph
    static, sources = _batch_only(g), Sources(g)
    bounds = sorted({i for n in g.node if not set(n.output) <= static for i in n.input
                     if i in static and i in sources.made and sources.made[i].op_type not in ("Shape", "Constant")})
    if not bounds:
        return model
    try:
        (_, *one), (_, *two) = _run(model, bounds, feed(1)), _run(model, bounds, feed(2))
    except Exception:       # an optimisation, never a requirement: the export's own checks follow
        return model
    stored, total = {}, 0
    for name, a, b in zip(bounds, one, two):
        same = a.shape == b.shape and np.array_equal(a, b)
        row = a.ndim and a.shape[0] == 1 and b.shape == (2, *a.shape[1:]) and (b == a).all() \
            and all(r.op_type in BROADCAST for r in sources.users[name] if not set(r.output) <= static)
        if (same or row) and total + a.nbytes <= FOLD_BYTES:
            stored[name], total = a, total + a.nbytes
    if not stored:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.initializer.extend(numpy_helper.from_array(v, f"time/{k}") for k, v in stored.items())
    for n in out.graph.node:        # the nodes mixing time with x read the row; the rest keep theirs
        if not set(n.output) <= static:
            n.input[:] = [f"time/{i}" if i in stored else i for i in n.input]
    drop_dead(out, list(out.graph.node))
    check = feed(3)
    want, got = (_run(m, [], check)[0] for m in (model, out))
    return out if got.shape == want.shape and np.allclose(got, want, rtol=1e-4, atol=1e-5 * float(np.abs(want).max())) \
        else model


def _row(sources: Sources, node, name: str, width: int) -> np.ndarray | None:
    """The other input of a binary `node` besides `name`, as [width], when it is a constant that
    varies along the last axis only."""
    other = [i for i in node.input if i != name]
    c = sources.const(other[0]) if len(other) == 1 else None
    return c.reshape(width).astype(np.float32) if c is not None and c.size == width and c.shape[-1:] == (width,) \
        and c.dtype == np.float32 else None


def fold_norm_affine(model: onnx.ModelProto) -> onnx.ModelProto:
    """LayerNormalization(x) * A + B with A and B constant rows (a baked graph's stored adaLN
    modulation) as one LayerNormalization(x, scale * A, bias * A + B): two nodes fewer each."""
    g = model.graph
    sources, inits, renamed = Sources(g), [], {}
    for ln in [n for n in g.node if n.op_type == "LayerNormalization" and attrs(n).get("axis", -1) == -1]:
        scale = sources.const(ln.input[1])
        bias = sources.const(ln.input[2]) if len(ln.input) > 2 and ln.input[2] else np.zeros_like(scale)
        if scale is None or bias is None or scale.ndim != 1 or len(ln.output) != 1:
            continue
        end, width = ln.output[0], scale.shape[0]
        for op in ("Mul", "Add"):
            n = sources.users.get(end, [None])[0] if sources.readers.get(end) == 1 else None
            row = _row(sources, n, end, width) if n is not None and n.op_type == op else None
            if row is None:
                continue
            scale, bias = (scale * row, bias * row) if op == "Mul" else (scale, bias + row)
            end = n.output[0]
        if end == ln.output[0]:
            continue
        stem = f"norm/{ln.output[0]}"
        inits += [numpy_helper.from_array(scale.astype(np.float32), f"{stem}/scale"),
                  numpy_helper.from_array(bias.astype(np.float32), f"{stem}/bias")]
        folded = onnx.NodeProto()
        folded.CopyFrom(ln)
        folded.input[:], folded.output[:], folded.name = [ln.input[0], f"{stem}/scale", f"{stem}/bias"], [end], stem
        renamed[id(ln)] = folded
    if not renamed:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    made = {f.output[0] for f in renamed.values()}       # the Add (or Mul) that made each is dropped
    out.graph.initializer.extend(inits)
    drop_dead(out, [renamed.get(id(n), n) for n in g.node if id(n) in renamed or not set(n.output) & made])
    return out
