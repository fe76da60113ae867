"""Forward-mode differentiation of an ONNX velocity graph, whatever network it holds.

`divergence_graph` turns a velocity graph v(x, t[, y]) into the graph the runtime's
log-likelihood needs, (x, t[, y], e) -> (v, J_x v . e_k for each of K tangents e_k), by adding
to every node that depends on x the node(s) that carry a tangent through it (`jvp_rules.RULES`,
one small rule per operator). Nothing here knows the architecture, so it serves any exported
network and any plain velocity ONNX file; an operator without a rule is named, never guessed.

The network runs once on the B rows given (the primal); the K tangents of each row run as B*K
rows through the tangent nodes, which see a per-row primal tensor repeated K times where a rule
needs it (broadcast where it meets a tangent elementwise, jvp_broadcast.py; else an Expand). So it costs one evaluation of the network plus K
tangent passes, and needs nothing of the graph but a dynamic batch axis.
"""
from __future__ import annotations

import heapq

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fm_runtime.model.spec import NAMES

from .fold import drop_dead
from .jvp_broadcast import broadcast_repeats
from .jvp_builder import Builder, attr
from .jvp_rules import NO_TANGENT, RULES

PREFIX = "f/"                   # every tensor of the velocity graph is renamed into this namespace
REP = "r/"                      # ... and a per-row tensor with each of its rows repeated K times into this one


def covered_ops() -> list[str]:
    """Operators the transform differentiates (plus those whose outputs carry no derivative)."""
    return sorted(set(RULES) | NO_TANGENT)


def unsupported_ops(model: onnx.ModelProto, x_name: str) -> list[str]:
    """Operators on a path from x that the transform has no rule for (empty: it covers the graph)."""
    graph = _inlined(model).graph
    depends = {x_name}
    missing: set[str] = set()
    for node in graph.node:
        if any(i in depends for i in node.input):
            if node.op_type not in RULES and node.op_type not in NO_TANGENT:
                missing.add(node.op_type if not node.domain else f"{node.domain}.{node.op_type}")
            if node.op_type not in NO_TANGENT:
                depends.update(o for o in node.output if o)
    return sorted(missing)


def _inlined(model: onnx.ModelProto) -> onnx.ModelProto:
    if model.functions:
        from onnx import inliner
        return inliner.inline_local_functions(model)
    return model


def _prepared(model: onnx.ModelProto) -> onnx.ModelProto:
    """Local functions inlined and shapes inferred (the rules use ranks and shapes where known)."""
    model = _inlined(model)
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:   # shapes are an optimisation only: the rules fall back to runtime shapes
        return model


def divergence_graph(model: onnx.ModelProto, *, x_name: str, t_name: str, v_name: str,
                     y_name: str | None = None, t_rank: int = 1, extras: tuple[str, ...] = ()) -> onnx.ModelProto:
    """(x [B, *s], t [B][, y [B]][, extras...], e [B, K, *s]) -> (v [B, *s], jv [B, K, *s]) for the
    velocity graph `model` (inputs x_name, t_name[, y_name] with t of rank t_rank, the extra inputs
    `extras` [B, ...] of contract version 4, output v_name). The result's inputs are named x, t, e
    (labels and extras keep their names) and its outputs v, jv, whatever the velocity graph calls
    them. Raises NotImplementedError naming the operators it has no rule for."""
    missing = unsupported_ops(model, x_name)
    if missing:
        raise NotImplementedError(", ".join(missing))
    src = _prepared(model)
    g = src.graph
    ren = (lambda n: PREFIX + n if n else n)
    types = {ren(vi.name): vi.type for vi in [*g.value_info, *g.input, *g.output]}
    x_in, t_in, e_in = "x_in", "t_in", "e_in"
    # the primal: the velocity graph once, on the B rows given
    row_inputs = {ren(x_name): x_in, ren(t_name): t_in, **({ren(y_name): "y_in"} if y_name else {}),
                  **{ren(n): f"{n}_in" for n in extras}}
    x_dims = types[ren(x_name)].tensor_type.shape.dim if ren(x_name) in types else []
    b = Builder(shapes={**types, **{REP + n: t for n, t in types.items()}}, rep=REP, rows_first=set(row_inputs),
                ones={ren(n) for n in _all_ones(g)},
                batch=x_dims[0].dim_param if x_dims else "")
    for inner, outer in row_inputs.items():
        if inner == ren(t_name) and t_rank != 1:
            b.op("Unsqueeze", outer, b.ints([1]), out=inner)
        else:
            b.alias(inner, outer)
    per_row = set(row_inputs)
    for node in g.node:
        if any(ren(i) in per_row for i in node.input):
            per_row.update(ren(o) for o in node.output if o)
    rep = (lambda n: REP + n if n in per_row else n)
    # the tangents: K per row, on B*K rows; the rules see the per-row tensors under REP names
    # (the primal's rows each repeated K times), made only where a rule uses them (_repeated)
    b.tangent[rep(ren(x_name))] = b.op("Reshape", e_in, b.op("Concat", b.ints([-1]), b.op("Shape", x_in, start=1), axis=0))
    for node in g.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.input[:] = [ren(i) for i in node.input]
        copy.output[:] = [ren(o) for o in node.output]
        copy.name = ren(node.name) if node.name else ""
        b.nodes.append(copy)
        b.made.update((o, copy) for o in copy.output if o)
        if node.op_type not in NO_TANGENT and any(b.tangent.get(rep(i)) for i in copy.input):
            seen = onnx.NodeProto()
            seen.CopyFrom(copy)
            seen.input[:] = [rep(i) for i in copy.input]
            seen.output[:] = [rep(o) for o in copy.output]
            for out, tan in zip(seen.output, RULES[node.op_type](b, seen)):
                if out and tan:
                    b.tangent[out] = tan
    v = ren(v_name)
    dv_rows = b.tangent.get(rep(v))
    if dv_rows is None:     # v does not depend on x at all: J = 0
        dv_rows = b.op("Mul", rep(v), b.const(0.0))
    b.alias("v_out", v)
    b.op("Reshape", dv_rows, b.op("Shape", e_in), out="jv_out")
    repeats = _repeated(b, per_row, e_in)
    b.nodes[:] = _topological(b.nodes)
    # outer names: identity nodes keep the graph's public names free of the internal ones
    b.nodes[:0] = [helper.make_node("Identity", [outer], [inner], name=f"in:{outer}") for outer, inner in
                   ((NAMES.x, x_in), (NAMES.t, t_in), (NAMES.e, e_in), (y_name, "y_in"),
                                         *((n, f"{n}_in") for n in extras)) if outer]
    b.nodes += [helper.make_node("Identity", ["v_out"], [NAMES.v], name="out:v"),
                helper.make_node("Identity", ["jv_out"], [NAMES.jv], name="out:jv")]
    inputs = {i.name: i for i in g.input}
    x_type = inputs[x_name].type.tensor_type
    dims = ["batch"] + [d.dim_value or d.dim_param or None for d in x_type.shape.dim[1:]]
    new_inputs = [helper.make_tensor_value_info(NAMES.x, TensorProto.FLOAT, dims),
                  helper.make_tensor_value_info(NAMES.t, TensorProto.FLOAT, ["batch"])]
    if y_name:
        new_inputs.append(helper.make_tensor_value_info(y_name, TensorProto.INT64, ["batch"]))
    for name in extras:
        kind = inputs[name].type.tensor_type
        new_inputs.append(helper.make_tensor_value_info(name, kind.elem_type, ["batch"] + [
            d.dim_value or d.dim_param or None for d in kind.shape.dim[1:]]))
    new_inputs.append(helper.make_tensor_value_info(NAMES.e, TensorProto.FLOAT, ["batch", "probes", *dims[1:]]))
    outputs = [helper.make_tensor_value_info(NAMES.v, TensorProto.FLOAT, dims),
               helper.make_tensor_value_info(NAMES.jv, TensorProto.FLOAT, ["batch", "probes", *dims[1:]])]
    initializers = []
    for init in g.initializer:
        copy = TensorProto()
        copy.CopyFrom(init)
        copy.name = ren(init.name)
        initializers.append(copy)
    initializers += [numpy_helper.from_array(a, n) for n, a in b.constants.items()]
    graph = helper.make_graph(b.nodes, "velocity_jvp", new_inputs, outputs, initializers)
    out = helper.make_model(graph, opset_imports=list(src.opset_import), ir_version=src.ir_version)
    out.producer_name, out.producer_version = src.producer_name, src.producer_version
    drop_dead(out, list(out.graph.node))        # tangents a rule computed but did not use
    broadcast_repeats(out, repeats, _topological)
    return out


def _all_ones(g: onnx.GraphProto) -> list[str]:
    """The graph's constant tensors (initializers, Constant nodes) whose every value is 1."""
    named = [(t.name, t) for t in g.initializer]
    named += [(n.output[0], a.t) for n in g.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    return [name for name, t in named if 0 < int(np.prod(t.dims)) <= 1 << 16 and np.all(numpy_helper.to_array(t) == 1)]


def _repeated(b: Builder, per_row: set, e_in: str) -> dict[str, str]:
    """Define every REP name the rules used: that per-row tensor with each row repeated K times
    (B*K rows, row b*K + k, like the tangents). Where its first axis is the batch (the symbol of
    x's first axis, and no other axis), by an Expand of the primal; else by running its producer
    again on repeated inputs (shape arithmetic, the rare tensor whose rows sit on another axis).
    Returns the expanded ones, REP name -> primal name (jvp_broadcast.py drops the copies it can)."""
    producer = {o: n for n in b.nodes for o in n.output if o}
    defined = set(producer)
    batch_leading = (lambda name: b.primal(REP + name) is not None)      # noqa: E731
    todo = [i for n in b.nodes for i in n.input if i.startswith(REP) and i not in defined]
    expanded = {}
    while todo:
        r = todo.pop()
        if r in defined:
            continue
        name, defined_now = r[len(REP):], [r]
        node = producer[name]
        if batch_leading(name) and sum(1 for o in node.output if o) == 1:
            rest = b.op("Shape", name, start=1)
            grown = b.op("Expand", b.op("Unsqueeze", name, b.ints([1])),
                         b.op("Concat", b.op("Shape", e_in, end=2), rest, axis=0))
            b.op("Reshape", grown, b.op("Concat", b.ints([-1]), rest, axis=0), out=r)
            expanded[r] = name
        elif node.op_type == "Shape" and batch_leading(node.input[0]) and attr(node, "start", 0) == 0 \
                and attr(node, "end") is None:      # [B, ...] -> [B*K, ...] without the tensor itself
            rows = b.op("Mul", b.op("Shape", node.input[0], end=1), b.op("Shape", e_in, start=1, end=2))
            b.op("Concat", rows, b.op("Shape", node.input[0], start=1), axis=0, out=r)
        else:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.input[:] = [REP + i if i in per_row else i for i in node.input]
            copy.output[:] = [REP + o if o else o for o in node.output]
            copy.name = REP + node.name if node.name else ""
            b.nodes.append(copy)
            defined_now = list(copy.output)
            todo.extend(i for i in copy.input if i.startswith(REP) and i not in defined)
        defined.update(defined_now)
    return expanded


def _topological(nodes: list) -> list:
    """The nodes in an order where each comes after the producers of its inputs, otherwise as given."""
    made_by = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    waits = [{made_by[x] for x in n.input if x in made_by} for n in nodes]
    users: dict[int, list[int]] = {}
    for i, deps in enumerate(waits):
        for j in deps:
            users.setdefault(j, []).append(i)
    left = [len(d) for d in waits]
    ready = [i for i, c in enumerate(left) if c == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(nodes[i])
        for u in users.get(i, ()):
            left[u] -= 1
            if not left[u]:
                heapq.heappush(ready, u)
    if len(order) != len(nodes):
        raise NotImplementedError("a graph with a cycle")
    return order
