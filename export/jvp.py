"""Forward-mode differentiation of an ONNX velocity graph, whatever network it holds.

`divergence_graph` turns a velocity graph v(x, t[, y]) into the graph the runtime's
log-likelihood needs, (x, t[, y], e) -> (v, J_x v . e_k for each of K tangents e_k), by adding
to every node that depends on x the node(s) that carry a tangent through it (`jvp_rules.RULES`,
one small rule per operator). Nothing here knows the architecture, so it serves any exported
network and any plain velocity ONNX file; an operator without a rule is named, never guessed.

The K tangents are handled by repeating each row K times (x, t, y -> B*K rows) and running the
differentiated graph once on B*K rows: it costs K evaluations of the network plus K tangent
passes, and needs nothing of the graph but a dynamic batch axis.
"""
from __future__ import annotations

import onnx
from onnx import TensorProto, helper, numpy_helper

from fm_runtime.model.spec import NAMES

from .jvp_builder import Builder
from .jvp_rules import NO_TANGENT, RULES

PREFIX = "f/"                   # every tensor of the velocity graph is renamed into this namespace


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
    b = Builder(shapes={ren(vi.name): vi.type for vi in [*g.value_info, *g.input, *g.output]})
    # repeat every row K times: x, t, y -> [B*K, ...]; e -> [B*K, *s]
    x_in, t_in, e_in = "x_in", "t_in", "e_in"
    shape_e = b.op("Shape", e_in)
    b_k = b.op("Shape", e_in, end=2)
    flat = b.op("Concat", b.ints([-1]), b.op("Shape", x_in, start=1), axis=0)
    b.alias(ren(x_name), b.op("Reshape", b.op("Expand", b.op("Unsqueeze", x_in, b.ints([1])), shape_e), flat))
    t_rows = b.op("Reshape", b.op("Expand", b.op("Unsqueeze", t_in, b.ints([1])), b_k), b.ints([-1]))
    b.alias(ren(t_name), t_rows if t_rank == 1 else b.op("Unsqueeze", t_rows, b.ints([1])))
    if y_name:
        b.alias(ren(y_name), b.op("Reshape", b.op("Expand", b.op("Unsqueeze", "y_in", b.ints([1])), b_k), b.ints([-1])))
    for name in extras:                 # every row of each extra input K times, like x
        rest = b.op("Shape", f"{name}_in", start=1)
        grown = b.op("Expand", b.op("Unsqueeze", f"{name}_in", b.ints([1])), b.op("Concat", b_k, rest, axis=0))
        b.alias(ren(name), b.op("Reshape", grown, b.op("Concat", b.ints([-1]), rest, axis=0)))
    b.tangent[ren(x_name)] = b.op("Reshape", e_in, flat)
    for node in g.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.input[:] = [ren(i) for i in node.input]
        copy.output[:] = [ren(o) for o in node.output]
        copy.name = ren(node.name) if node.name else ""
        b.nodes.append(copy)
        if node.op_type not in NO_TANGENT and any(b.tangent.get(i) for i in copy.input):
            for out, tan in zip(copy.output, RULES[node.op_type](b, copy)):
                if out and tan:
                    b.tangent[out] = tan
    v_rows, dv_rows = ren(v_name), b.tangent.get(ren(v_name))
    if dv_rows is None:     # v does not depend on x at all: J = 0
        dv_rows = b.op("Mul", v_rows, b.const(0.0))
    b.op("Gather", b.op("Reshape", v_rows, shape_e), b.ints(0), axis=1, out="v_out")
    b.op("Reshape", dv_rows, shape_e, out="jv_out")
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
    return out
