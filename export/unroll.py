"""A baked sampler made from the exported velocity graph: the fixed-step solve unrolled in ONNX.

Tracing the whole solve through torch.export costs seconds per evaluation it unrolls (5.5 s for
the moons MLP at midpoint:4, minutes for a U-Net at 8 steps); the velocity graph is exported once
anyway. `unroll` copies that graph once per evaluation (the weights are shared, not copied) and
writes the solver's arithmetic between the copies by running fm_runtime's own `integrate` on
symbolic tensors: the same tableau, the same operations in the same order as the torch
BakedSampler it stands for, against which export.onnx_export then checks the file. Each
evaluation's t is a constant broadcast to the batch, which export.fold then folds.

A conditioned network's extra inputs (contract version 4) become the baked graph's inputs under
their own names, read by every copy. A mask multiplies the noise and every velocity, as the
runtime's loop does. With guidance baked in (`Guide.scale`), each evaluation runs the copy once on
2B rows, the conditions beside their nulls (zeros, or the stored null broadcast), and combines the
halves as v_u + w (v_c - v_u) with w the graph input `Guide.scale`, one weight per row.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fm_runtime.model.spec import NAMES
from fm_runtime.solve.solvers import integrate


@dataclass
class Guide:
    """What a conditioned baked graph feeds every evaluation: the velocity graph's extra inputs
    (contract version 4 items: name, dtype, shape, role), and with guidance baked in, the name of
    the weight input and each guided condition's null (None: zeros; else an array shaped as the
    input with 1 along each symbol)."""

    inputs: list[dict]
    scale: str | None = None
    nulls: dict[str, np.ndarray | None] = field(default_factory=dict)


class _Graph:
    """Nodes and constants being written, and the velocity graph to copy per evaluation."""

    def __init__(self, velocity: onnx.ModelProto, guide: Guide | None = None):
        self.velocity, self.nodes, self.consts, self.evals = velocity.graph, [], [], 0
        self.weights = {i.name for i in velocity.graph.initializer}
        self.batch = self.node("Shape", [NAMES.z], end=1)
        guide = guide or Guide([])
        mask = next((i["name"] for i in guide.inputs if i["role"] == "mask"), None)
        self.mask, self.scale, self.rows = mask, guide.scale, self.batch
        self.fed = {i["name"]: i["name"] for i in guide.inputs}     # what each copy reads for each input
        if guide.scale:         # both halves in one call: conditions then nulls, every other input twice
            self.halves = self.node("Concat", [self.batch, self.batch], axis=0)
            self.rows = self.node("Mul", [self.batch, self.const(2, np.int64)])
            self.fed = {n: self.node("Concat", [n, self._null(n, guide.nulls[n], guide.inputs) if n in guide.nulls
                                               else n], axis=0) for n in self.fed}
            rank = len(next(i for i in velocity.graph.input if i.name == NAMES.x).type.tensor_type.shape.dim)
            self.w = self.node("Reshape", [guide.scale, self.const(np.array([-1] + [1] * (rank - 1)), np.int64)])

    def _null(self, name: str, stored, inputs: list[dict]) -> str:
        """The null of condition `name` for every row: zeros of its shape, or the stored null expanded."""
        shape = self.node("Shape", [name])
        if stored is None:
            dtype = next(i["dtype"] for i in inputs if i["name"] == name)
            zero = helper.make_tensor("zero", TensorProto.INT64 if dtype == "int64" else TensorProto.FLOAT, [1], [0])
            return self.node("ConstantOfShape", [shape], value=zero)
        return self.node("Expand", [self.const(np.asarray(stored)[None]), shape])

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = f"bake/{len(self.nodes)}_{op}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def const(self, value, dtype=np.float32) -> str:
        name = f"bake/c{len(self.consts)}"
        self.consts.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def start(self) -> str:
        """The noise, zero outside the mask."""
        return self.node("Mul", [NAMES.z, self.mask]) if self.mask else NAMES.z

    def velocity_at(self, x: str, t) -> str:
        """The velocity at (x, t), guided and masked as the graph's inputs say."""
        if not self.scale:
            v = self._copy(x, t)
        else:
            both = self.node("Concat", [x, x], axis=0)
            out = f"bake/{len(self.nodes)}_Split"
            vc, vu = out + "/c", out + "/u"
            self.nodes.append(helper.make_node("Split", [self._copy(both, t), self.halves], [vc, vu], name=out, axis=0))
            v = self.node("Add", [vu, self.node("Mul", [self.w, self.node("Sub", [vc, vu])])])
        return self.node("Mul", [v, self.mask]) if self.mask else v

    def _copy(self, x: str, t) -> str:
        """The velocity graph's nodes, renamed for this evaluation, reading x, the conditions and
        t [rows] = t (a flow map: s and t [rows] from a jump's (s, t), or s = t for one time)."""
        k, self.evals = self.evals, self.evals + 1
        s, t = (float(t[0]), float(t[1])) if isinstance(t, tuple) else (float(t), float(t))
        names = {NAMES.x: x, NAMES.t: self.node("Expand", [self.const(t), self.rows]), **self.fed}
        names[NAMES.s] = names[NAMES.t] if s == t else self.node("Expand", [self.const(s), self.rows])

        def name(n: str) -> str:
            return n if not n or n in self.weights else names.setdefault(n, f"e{k}/{n}")
        for n in self.velocity.node:
            copy = onnx.NodeProto()
            copy.CopyFrom(n)
            copy.input[:] = [name(i) for i in n.input]
            copy.output[:] = [name(o) for o in n.output]
            copy.name = f"e{k}/{n.name}"
            self.nodes.append(copy)
        return name(NAMES.v)


class _Tensor:
    """A symbolic float32 tensor: + and * (by a Python number) write Add and Mul nodes."""

    def __init__(self, g: _Graph, name: str):
        self.g, self.name = g, name

    def __add__(self, other: "_Tensor") -> "_Tensor":
        return _Tensor(self.g, self.g.node("Add", [self.name, other.name]))

    def __rmul__(self, scale: float) -> "_Tensor":
        return _Tensor(self.g, self.g.node("Mul", [self.name, self.g.const(scale)]))


def unrollable(velocity: onnx.ModelProto, extras: tuple[str, ...] = ()) -> bool:
    """Whether the velocity graph can be copied per evaluation: inputs x and t (and s), then the
    `extras`, output v, no subgraphs (whose outer names would need renaming too) and no local
    functions."""
    g = velocity.graph
    names = [i.name for i in g.input if i.name not in {w.name for w in g.initializer}]
    return (names in ([NAMES.x, NAMES.t, *extras], [NAMES.x, NAMES.t, NAMES.s, *extras])
            and [o.name for o in g.output] == [NAMES.v] and not velocity.functions
            and not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                        for n in g.node for a in n.attribute))


def unroll(velocity: onnx.ModelProto, solver: str, steps: int, schedule=None, guide: Guide | None = None) -> onnx.ModelProto:
    """The baked graph z (, conditions, guidance weight) -> x of `steps` steps of `solver` on the
    grid of `schedule`."""
    g = _Graph(velocity, guide)
    x = integrate(lambda s, t: _Tensor(g, g.velocity_at(s.name, t)), _Tensor(g, g.start()), steps, solver,
                  schedule=schedule).x
    g.nodes.append(helper.make_node("Identity", [x.name], [NAMES.samples], name="bake/out"))
    src = velocity.graph
    z = onnx.ValueInfoProto()
    z.CopyFrom(next(i for i in src.input if i.name == NAMES.x))
    z.name = NAMES.z
    out = onnx.ValueInfoProto()
    out.CopyFrom(src.output[0])
    out.name = NAMES.samples
    extra = [i for i in src.input if i.name in g.fed]
    if guide and guide.scale:
        batch = z.type.tensor_type.shape.dim[0]
        extra.append(helper.make_tensor_value_info(guide.scale, TensorProto.FLOAT, [batch.dim_param or batch.dim_value or None]))
    graph = helper.make_graph(g.nodes, "baked", [z, *extra], [out], [*src.initializer, *g.consts])
    model = helper.make_model(graph, opset_imports=list(velocity.opset_import), ir_version=velocity.ir_version)
    model.producer_name, model.producer_version = velocity.producer_name, velocity.producer_version
    return model
