"""The Builder the forward-mode rules write with (jvp_rules.py): fresh names, constants, shapes
known from shape inference, and the tangent of every tensor that has one."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

FLOATS = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}


class Builder:
    """Emits nodes and constants with fresh names; holds the tangent of each tensor."""

    def __init__(self, shapes: dict, batch: str = "", rows_first: set | None = None, rep: str = "r/",
                 ones: set | None = None):
        self.nodes: list = []
        self.ones = set(ones or ())   # constant tensors of the graph whose every value is 1
        self.made: dict = {}          # primal tensor name -> the node that computes it
        self.constants: dict[str, np.ndarray] = {}
        self.tangent: dict[str, str] = {}
        self.shapes = shapes          # tensor name -> onnx TypeProto, where shape inference knew it
        self.batch = batch            # the symbol of the batch axis ("" when it has none)
        self.rows_first = set(rows_first or ())   # tensors known to hold the batch on their first axis
        self.rep = rep                # prefix of a per-row tensor repeated K times (jvp.py)
        self._count = 0

    def fresh(self, hint: str = "d") -> str:
        self._count += 1
        return f"jvp/{hint}{self._count}"

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs) -> str:
        name = out or self.fresh(op_type)
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], name=f"node:{name}", **attrs))
        return name

    def ops(self, op_type: str, inputs: list[str], n_out: int, **attrs) -> list[str]:
        names = [self.fresh(op_type) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=f"node:{names[0]}", **attrs))
        return names

    def alias(self, name: str, src: str) -> None:
        self.nodes.append(helper.make_node("Identity", [src], [name], name=f"node:{name}"))

    def const(self, value: float, like: str | None = None) -> str:
        dtype = {TensorProto.DOUBLE: np.float64, TensorProto.FLOAT16: np.float16}.get(self.elem_type(like), np.float32)
        name = self.fresh("c")
        self.constants[name] = np.array(value, dtype)
        return name

    def ints(self, values) -> str:
        name = self.fresh("i")
        self.constants[name] = np.array(values, np.int64)
        return name

    def elem_type(self, name: str | None) -> int | None:
        t = self.shapes.get(name) if name else None
        return t.tensor_type.elem_type if t is not None and t.HasField("tensor_type") else None

    def rank(self, name: str) -> int | None:
        t = self.shapes.get(name)
        if t is None or not t.tensor_type.HasField("shape"):
            return None
        return len(t.tensor_type.shape.dim)

    def _dims(self, name: str):
        t = self.shapes.get(name)
        if t is None or not t.tensor_type.HasField("shape"):
            return None
        dims = [d.dim_value if d.HasField("dim_value") else d.dim_param or None for d in t.tensor_type.shape.dim]
        return None if None in dims else dims

    def fit(self, tangent: str, primal: str, out: str) -> str:
        """The tangent of `primal`, broadcast to the shape of `out` where they may differ."""
        a, b = self._dims(primal), self._dims(out)
        if a is not None and a == b:
            return tangent
        return self.expand(tangent, out)

    def expand(self, tangent: str, out: str) -> str:
        return self.op("Expand", tangent, self.op("Shape", out))

    def zeros_like(self, name: str) -> str:
        zero = helper.make_tensor("value", self.elem_type(name) or TensorProto.FLOAT, [1], [0.0])
        return self.op("ConstantOfShape", self.op("Shape", name), value=zero)

    def primal(self, name: str) -> str | None:
        """The tensor on the B rows the network runs on, for a rule's repeated name, where its first
        axis is the batch (so that the rule may compute there once and repeat()); else None."""
        if not name.startswith(self.rep):
            return None
        name = name[len(self.rep):]
        if name in self.rows_first:
            return name
        t = self.shapes.get(name)
        if not self.batch or t is None or not t.tensor_type.HasField("shape"):
            return None
        dims = [d.dim_param for d in t.tensor_type.shape.dim]
        return name if dims and dims[0] == self.batch and self.batch not in dims[1:] else None

    def repeat(self, name: str) -> str:
        """A tensor computed from primal() tensors, with the batch first, as the tangents see it:
        each row K times (jvp.py makes it where used)."""
        self.rows_first.add(name)
        return self.rep + name

    def unrep(self, name: str) -> str:
        """The primal name of a (possibly repeated) tensor name."""
        return name[len(self.rep):] if name.startswith(self.rep) else name

    def tan(self, name: str) -> str | None:
        return self.tangent.get(name) if name else None


def attr(node, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def add_all(b: Builder, terms: list[str]) -> str | None:
    out = None
    for term in terms:
        out = term if out is None else b.op("Add", out, term)
    return out
