"""A baked sampler made from the exported velocity graph: the fixed-step solve unrolled in ONNX.

Tracing the whole solve through torch.export costs seconds per evaluation it unrolls (5.5 s for
the moons MLP at midpoint:4, minutes for a U-Net at 8 steps); the velocity graph is exported once
anyway. `unroll` copies that graph once per evaluation (the weights are shared, not copied) and
writes the solver's arithmetic between the copies by running fm_runtime's own `integrate` on
symbolic tensors: the same tableau, the same operations in the same order as the torch
BakedSampler it stands for, against which export.onnx_export then checks the file. Each
evaluation's t is a constant broadcast to the batch, which export.fold then folds.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from fm_runtime.model.spec import NAMES
from fm_runtime.solve.solvers import integrate


class _Graph:
    """Nodes and constants being written, and the velocity graph to copy per evaluation."""

    def __init__(self, velocity: onnx.ModelProto):
        self.velocity, self.nodes, self.consts, self.evals = velocity.graph, [], [], 0
        self.weights = {i.name for i in velocity.graph.initializer}
        self.batch = self.node("Shape", [NAMES.z], end=1)

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = f"bake/{len(self.nodes)}_{op}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def const(self, value: float) -> str:
        name = f"bake/c{len(self.consts)}"
        self.consts.append(numpy_helper.from_array(np.array(value, np.float32), name))
        return name

    def velocity_at(self, x: str, t) -> str:
        """The velocity graph's nodes, renamed for this evaluation, reading x and t [B] = t (a flow
        map: s and t [B] from a jump's (s, t), or s = t for one time)."""
        k, self.evals = self.evals, self.evals + 1
        s, t = (float(t[0]), float(t[1])) if isinstance(t, tuple) else (float(t), float(t))
        names = {NAMES.x: x, NAMES.t: self.node("Expand", [self.const(t), self.batch])}
        names[NAMES.s] = names[NAMES.t] if s == t else self.node("Expand", [self.const(s), self.batch])

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


def unrollable(velocity: onnx.ModelProto) -> bool:
    """Whether the velocity graph can be copied per evaluation: inputs x and t only, output v,
    no subgraphs (whose outer names would need renaming too) and no local functions."""
    g = velocity.graph
    return ([i.name for i in g.input if i.name not in {w.name for w in g.initializer}] in ([NAMES.x, NAMES.t],
                                                                                       [NAMES.x, NAMES.t, NAMES.s])
            and [o.name for o in g.output] == [NAMES.v] and not velocity.functions
            and not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                        for n in g.node for a in n.attribute))


def unroll(velocity: onnx.ModelProto, solver: str, steps: int, schedule=None) -> onnx.ModelProto:
    """The baked graph z -> x of `steps` steps of `solver` on the grid of `schedule`."""
    g = _Graph(velocity)
    x = integrate(lambda s, t: _Tensor(g, g.velocity_at(s.name, t)), _Tensor(g, NAMES.z), steps, solver,
                  schedule=schedule).x
    g.nodes.append(helper.make_node("Identity", [x.name], [NAMES.samples], name="bake/out"))
    src = velocity.graph
    z = onnx.ValueInfoProto()
    z.CopyFrom(next(i for i in src.input if i.name == NAMES.x))
    z.name = NAMES.z
    out = onnx.ValueInfoProto()
    out.CopyFrom(src.output[0])
    out.name = NAMES.samples
    graph = helper.make_graph(g.nodes, "baked", [z], [out], [*src.initializer, *g.consts])
    model = helper.make_model(graph, opset_imports=list(velocity.opset_import), ir_version=velocity.ir_version)
    model.producer_name, model.producer_version = velocity.producer_name, velocity.producer_version
    return model
