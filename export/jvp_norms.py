"""Forward-mode rules of the normalisations (LayerNormalization, InstanceNormalization, which is
also GroupNorm as torch exports it, and BatchNormalization in inference mode): the statistics on
the primal's rows where the batch is known, the tangents on B*K rows (jvp_rules.py's contract)."""
from __future__ import annotations

from .jvp_builder import Builder, add_all, attr


def _normalized(b: Builder, x: str, dx: str, axes: str, eps: float):
    """x_hat = (x - mean) / sqrt(var + eps) over `axes`, and its tangent
    r (dxc - x_hat mean(x_hat dxc)) with r = 1/sqrt(var + eps), dxc = dx - mean(dx)."""
    x = (px := b.primal(x)) or x         # the statistics once per row of the primal where it can be
    xc = b.op("Sub", x, b.op("ReduceMean", x, axes, keepdims=1))
    r = b.op("Reciprocal", b.op("Sqrt", b.op("Add", b.op("ReduceMean", b.op("Mul", xc, xc), axes, keepdims=1), b.const(eps, x))))
    xhat = b.op("Mul", xc, r)
    xhat, r = (b.repeat(xhat), b.repeat(r)) if px else (xhat, r)
    dxc = b.op("Sub", dx, b.op("ReduceMean", dx, axes, keepdims=1))
    proj = b.op("ReduceMean", b.op("Mul", xhat, dxc), axes, keepdims=1)
    return xhat, b.op("Mul", r, b.op("Sub", dxc, b.op("Mul", xhat, proj)))


def layer_norm(b: Builder, node):
    x, scale = node.input[:2]
    bias = node.input[2] if len(node.input) > 2 else ""
    axis = attr(node, "axis", -1)
    rank = b.rank(x)
    if axis >= 0 and rank is None:
        raise NotImplementedError("LayerNormalization with a positive axis on a tensor of unknown rank")
    first = axis if axis < 0 else axis - rank
    axes = b.ints(list(range(first, 0)))
    dx = b.tan(x) or b.zeros_like(x)
    xhat, dxhat = _normalized(b, x, dx, axes, attr(node, "epsilon", 1e-5))
    terms = [b.op("Mul", dxhat, scale)]
    if b.tan(scale):
        terms.append(b.op("Mul", xhat, b.tan(scale)))
    if bias and b.tan(bias):
        terms.append(b.fit(b.tan(bias), bias, node.output[0]))
    return [add_all(b, terms)] + [None] * (len(node.output) - 1)


def instance_norm(b: Builder, node):
    x, scale, _ = node.input
    rank = b.rank(x)
    if rank is None or b.tan(scale) or b.tan(node.input[2]):
        raise NotImplementedError("InstanceNormalization of unknown rank or with x-dependent scale")
    _, dxhat = _normalized(b, x, b.tan(x), b.ints(list(range(2, rank))), attr(node, "epsilon", 1e-5))
    if scale in b.ones:         # GroupNorm as torch exports it: no pass over the tangents for a scale of 1
        return [dxhat]
    return [b.op("Mul", dxhat, b.op("Unsqueeze", scale, b.ints(list(range(1, rank - 1)))))]


def batch_norm(b: Builder, node):
    x, scale, _, _, var = node.input[:5]
    rank = b.rank(x)
    if rank is None or attr(node, "training_mode", 0) or any(b.tan(i) for i in node.input[1:]):
        raise NotImplementedError("BatchNormalization in training mode or of unknown rank")
    gain = b.op("Div", scale, b.op("Sqrt", b.op("Add", var, b.const(attr(node, "epsilon", 1e-5), x))))
    return [b.op("Mul", b.tan(x), b.op("Unsqueeze", gain, b.ints(list(range(1, rank - 1)))))]
