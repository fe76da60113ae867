"""One forward-mode rule per ONNX operator: given a node whose inputs carry tangents, emit the
nodes that compute its outputs' tangents (used by jvp.py).

A tangent always has exactly its primal's shape; a missing tangent means zero. Each rule takes
the Builder and the node (inputs and outputs already renamed) and returns one tangent name per
output, or None where an output carries no derivative.
"""
from __future__ import annotations

import math

from onnx import helper

from .jvp_builder import FLOATS, Builder, add_all, attr
from .jvp_norms import batch_norm, instance_norm, layer_norm

# outputs carry no derivative (integer, boolean or piecewise-constant results)
NO_TANGENT = {"Shape", "Size", "Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Not",
              "And", "Or", "Xor", "ArgMax", "ArgMin", "NonZero", "Sign", "Floor", "Ceil", "Round",
              "IsNaN", "IsInf", "ConstantOfShape", "Range", "Constant", "EyeLike", "OneHot"}
def _linear_in_first(b: Builder, node):
    """Ops linear in input 0 whose other inputs are indices, shapes or axes: same op on the tangent."""
    if any(b.tan(i) for i in node.input[1:]):
        raise NotImplementedError(f"{node.op_type} with a differentiable non-data input")
    inputs = [b.tan(node.input[0]), *node.input[1:]]
    if node.op_type == "Pad" and len(inputs) > 2:
        inputs[2] = ""                       # the tangent of a constant pad value is 0
    outs = b.ops(node.op_type, inputs, len(node.output), **{a.name: helper.get_attribute_value(a) for a in node.attribute})
    if node.op_type == "Dropout":
        return [outs[0]] + [None] * (len(outs) - 1)
    return outs


def _cast(b: Builder, node):
    if attr(node, "to") not in FLOATS:
        return [None]
    return [b.op("Cast", b.tan(node.input[0]), to=attr(node, "to"))]


def _multilinear(b: Builder, node, linear: tuple[int, ...], drop: tuple[int, ...] = ()):
    """Ops linear in each of `linear` separately (MatMul, Gemm, Conv, Mul, Einsum): the sum over
    differentiable inputs of the op with that input replaced by its tangent. Inputs in `drop`
    (an additive bias) are left out of the tangent copies."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    terms = []
    for i in linear:
        if i < len(node.input) and b.tan(node.input[i]):
            inputs = [b.tan(x) if j == i else ("" if j in drop else x) for j, x in enumerate(node.input)]
            while inputs and inputs[-1] == "":
                inputs.pop()
            terms.append(b.op(node.op_type, *inputs, **attrs))
    return terms


def _matmul_like(b: Builder, node):
    return [add_all(b, _multilinear(b, node, tuple(range(len(node.input)))))]


def _mul(b: Builder, node):
    """Mul; x * Sigmoid(x) (SiLU as torch exports it) as one pointwise op: its product-rule tangent
    dx s + x ds takes four passes over the tangents, dx (s + y (1 - s)) one."""
    for x, s in (node.input, node.input[::-1]):
        sig = b.made.get(b.unrep(s))
        if sig is not None and sig.op_type == "Sigmoid" and sig.input[0] == b.unrep(x) and b.tan(x) and x != s:
            y = node.output[0]
            ps, py = b.primal(s), b.primal(y)
            slope = (lambda s, y: b.op("Add", s, b.op("Mul", y, b.op("Sub", _c(b, 1.0, s), s))))   # noqa: E731
            at = b.repeat(slope(ps, py)) if ps and py else slope(s, y)
            return [b.op("Mul", b.tan(x), at)]
    return _matmul_like(b, node)


def _gemm(b: Builder, node):
    terms = _multilinear(b, node, (0, 1), drop=(2,))
    if len(node.input) > 2 and b.tan(node.input[2]):
        dc = b.op("Mul", b.tan(node.input[2]), b.const(attr(node, "beta", 1.0), node.output[0]))
        terms.append(b.fit(dc, node.input[2], node.output[0]))
    return [add_all(b, terms)]


def _conv(b: Builder, node):
    if len(node.input) > 2 and b.tan(node.input[2]):
        raise NotImplementedError(f"{node.op_type} with a bias that depends on x")
    return [add_all(b, _multilinear(b, node, (0, 1), drop=(2,)))]


def _add(b: Builder, node, sign: float = 1.0):
    a, c = node.input[:2]
    out = node.output[0]
    da, dc = b.tan(a), b.tan(c)
    if da and dc:
        return [b.op("Add" if sign > 0 else "Sub", da, dc)]
    if da:
        return [b.fit(da, a, out)]
    return [b.fit(dc if sign > 0 else b.op("Neg", dc), c, out)]


def _variadic_sum(b: Builder, node, mean: bool = False):
    terms = [b.fit(b.tan(i), i, node.output[0]) for i in node.input if b.tan(i)]
    total = add_all(b, terms)
    return [b.op("Mul", total, b.const(1.0 / len(node.input), node.output[0])) if mean else total]


def _div(b: Builder, node):
    a, c = node.input[:2]
    y = node.output[0]
    num = b.tan(a)
    if b.tan(c):
        yd = b.op("Mul", y, b.tan(c))
        num = b.op("Sub", num, yd) if num else b.op("Neg", yd)
    return [b.op("Div", num, c)]


def _pow(b: Builder, node):
    x, p = node.input[:2]
    y = node.output[0]
    terms = []
    if b.tan(x):   # p x^(p-1) dx
        slope = b.op("Mul", p, b.op("Pow", x, b.op("Sub", p, b.const(1.0, p))))
        terms.append(b.op("Mul", b.tan(x), slope))
    if b.tan(p):   # x^p log(x) dp
        terms.append(b.op("Mul", b.tan(p), b.op("Mul", y, b.op("Log", x))))
    return [add_all(b, terms)]


def _where_gt0(b: Builder, x: str, pos: str, neg: str) -> str:
    return b.op("Where", b.op("Greater", x, b.const(0.0, x)), pos, neg)


def _pointwise(slope):
    """Unary elementwise op: tangent = dx * slope(b, node, x, y), the slope on the primal's rows."""
    def rule(b: Builder, node):
        x, y = node.input[0], node.output[0]
        px, py = b.primal(x), b.primal(y)
        at = b.repeat(slope(b, node, px, py)) if px and py else slope(b, node, x, y)
        return [b.op("Mul", b.tan(x), at)] + [None] * (len(node.output) - 1)
    return rule


def _gelu_slope(b: Builder, node, x, y):
    c = lambda v: b.const(v, x)          # noqa: E731
    if attr(node, "approximate", "none") == "tanh":
        k = math.sqrt(2 / math.pi)
        u = b.op("Mul", c(k), b.op("Add", x, b.op("Mul", c(0.044715), b.op("Mul", x, b.op("Mul", x, x)))))
        th = b.op("Tanh", u)
        du = b.op("Mul", c(k), b.op("Add", c(1.0), b.op("Mul", c(3 * 0.044715), b.op("Mul", x, x))))
        left = b.op("Mul", c(0.5), b.op("Add", c(1.0), th))
        right = b.op("Mul", b.op("Mul", c(0.5), x), b.op("Mul", b.op("Sub", c(1.0), b.op("Mul", th, th)), du))
        return b.op("Add", left, right)
    cdf = b.op("Mul", c(0.5), b.op("Add", c(1.0), b.op("Erf", b.op("Mul", x, c(math.sqrt(0.5))))))
    pdf = b.op("Mul", c(1 / math.sqrt(2 * math.pi)), b.op("Exp", b.op("Mul", c(-0.5), b.op("Mul", x, x))))
    return b.op("Add", cdf, b.op("Mul", x, pdf))


def _hard_sigmoid_slope(alpha: float, beta: float):
    def slope(b, node, x, y):
        a = attr(node, "alpha", alpha)
        z = b.op("Add", b.op("Mul", x, b.const(a, x)), b.const(attr(node, "beta", beta), x))
        inside = b.op("And", b.op("Greater", z, b.const(0.0, x)), b.op("Less", z, b.const(1.0, x)))
        return b.op("Where", inside, b.const(a, x), b.const(0.0, x))
    return slope


def _hardswish_slope(b, node, x, y):
    hs = b.op("HardSigmoid", x, alpha=1 / 6, beta=0.5)
    return b.op("Add", hs, b.op("Mul", x, _hard_sigmoid_slope(1 / 6, 0.5)(b, node, x, y)))


def _mish_slope(b, node, x, y):
    th = b.op("Tanh", b.op("Softplus", x))
    return b.op("Add", th, b.op("Mul", b.op("Mul", x, b.op("Sigmoid", x)), b.op("Sub", b.const(1.0, x), b.op("Mul", th, th))))


def _clip(b: Builder, node):
    x = node.input[0]
    keep = None
    for i, cmp in ((1, "GreaterOrEqual"), (2, "LessOrEqual")):
        if i < len(node.input) and node.input[i]:
            if b.tan(node.input[i]):
                raise NotImplementedError("Clip with bounds that depend on x")
            m = b.op(cmp, x, node.input[i])
            keep = m if keep is None else b.op("And", keep, m)
    dx = b.tan(x)
    return [dx if keep is None else b.op("Where", keep, dx, b.const(0.0, x))]


def _max_min(b: Builder, node):
    if len(node.input) != 2:
        raise NotImplementedError(f"{node.op_type} of {len(node.input)} inputs")
    a, c = node.input
    y = node.output[0]
    mask = b.op("GreaterOrEqual" if node.op_type == "Max" else "LessOrEqual", a, c)
    da, dc = (b.tan(i) or b.const(0.0, y) for i in (a, c))
    return [b.expand(b.op("Where", mask, da, dc), y)]


def _where(b: Builder, node):
    cond, a, c = node.input
    y = node.output[0]
    da, dc = (b.tan(i) or b.const(0.0, y) for i in (a, c))
    return [b.expand(b.op("Where", cond, da, dc), y)]


def _concat(b: Builder, node):
    parts = [b.tan(i) or b.zeros_like(i) for i in node.input]
    return [b.op("Concat", *parts, axis=attr(node, "axis"))]


def _softmax(b: Builder, node, log: bool = False):
    x, y = node.input[0], node.output[0]
    axis = attr(node, "axis", -1)
    dx = b.tan(x)
    p = b.op("Exp", y) if log else y
    inner = b.op("ReduceSum", b.op("Mul", p, dx), b.ints([axis]), keepdims=1)
    d = b.op("Sub", dx, inner)
    return [d if log else b.op("Mul", y, d)]


def _reduce_sum_square(b: Builder, node):
    x = node.input[0]
    twice = b.op("Mul", b.const(2.0, x), b.op("Mul", x, b.tan(x)))
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return [b.op("ReduceSum", twice, *node.input[1:], **attrs)]


_c = Builder.const
RULES = {
    **{op: _linear_in_first for op in (
        "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Expand", "Tile",
        "Slice", "Gather", "GatherElements", "GatherND", "Split", "Pad", "ReduceSum", "ReduceMean",
        "CumSum", "DepthToSpace", "SpaceToDepth", "Resize", "Dropout")},
    "Cast": _cast,
    "MatMul": _matmul_like, "Mul": _mul, "Einsum": _matmul_like,
    "Gemm": _gemm, "Conv": _conv, "ConvTranspose": _conv,
    "Add": _add, "Sub": lambda b, n: _add(b, n, -1.0),
    "Sum": _variadic_sum, "Mean": lambda b, n: _variadic_sum(b, n, mean=True),
    "Neg": lambda b, n: [b.op("Neg", b.tan(n.input[0]))],
    "Div": _div, "Pow": _pow, "Clip": _clip, "Max": _max_min, "Min": _max_min, "Where": _where,
    "Concat": _concat, "Softmax": _softmax, "LogSoftmax": lambda b, n: _softmax(b, n, log=True),
    "LayerNormalization": layer_norm, "InstanceNormalization": instance_norm,
    "BatchNormalization": batch_norm, "ReduceSumSquare": _reduce_sum_square,
    "Relu": _pointwise(lambda b, n, x, y: b.op("Cast", b.op("Greater", x, _c(b, 0.0, x)), to=b.elem_type(x) or 1)),
    "LeakyRelu": _pointwise(lambda b, n, x, y: _where_gt0(b, x, _c(b, 1.0, x), _c(b, attr(n, "alpha", 0.01), x))),
    "Elu": _pointwise(lambda b, n, x, y: _where_gt0(b, x, _c(b, 1.0, x), b.op("Add", y, _c(b, attr(n, "alpha", 1.0), x)))),
    "Selu": _pointwise(lambda b, n, x, y: _where_gt0(
        b, x, _c(b, attr(n, "gamma", 1.0507009873554805), x),
        b.op("Add", y, _c(b, attr(n, "alpha", 1.6732632423543772) * attr(n, "gamma", 1.0507009873554805), x)))),
    "Sigmoid": _pointwise(lambda b, n, x, y: b.op("Mul", y, b.op("Sub", _c(b, 1.0, x), y))),
    "Tanh": _pointwise(lambda b, n, x, y: b.op("Sub", _c(b, 1.0, x), b.op("Mul", y, y))),
    "Softplus": _pointwise(lambda b, n, x, y: b.op("Sigmoid", x)),
    "Softsign": _pointwise(lambda b, n, x, y: b.op("Reciprocal", b.op("Mul", *[b.op("Add", _c(b, 1.0, x), b.op("Abs", x))] * 2))),
    "Exp": _pointwise(lambda b, n, x, y: y),
    "Log": _pointwise(lambda b, n, x, y: b.op("Reciprocal", x)),
    "Sqrt": _pointwise(lambda b, n, x, y: b.op("Div", _c(b, 0.5, x), y)),
    "Reciprocal": _pointwise(lambda b, n, x, y: b.op("Neg", b.op("Mul", y, y))),
    "Abs": _pointwise(lambda b, n, x, y: b.op("Sign", x)),
    "Sin": _pointwise(lambda b, n, x, y: b.op("Cos", x)),
    "Cos": _pointwise(lambda b, n, x, y: b.op("Neg", b.op("Sin", x))),
    "Erf": _pointwise(lambda b, n, x, y: b.op("Mul", _c(b, 2 / math.sqrt(math.pi), x), b.op("Exp", b.op("Neg", b.op("Mul", x, x))))),
    "Gelu": _pointwise(_gelu_slope),
    "HardSigmoid": _pointwise(_hard_sigmoid_slope(0.2, 0.5)),
    "HardSwish": _pointwise(_hardswish_slope),
    "Mish": _pointwise(_mish_slope),
}
