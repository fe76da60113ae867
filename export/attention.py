"""Graph pass at export: self-attention as one onnxruntime `Attention` node.

torch.onnx writes multi-head self-attention as some sixteen nodes: the projection (one packed
qkv matmul or three), a Reshape and Transpose per head split, Slice/Squeeze to unpack, the
scores matmul, its scale, Softmax, the second matmul, and a Transpose and Reshape to merge the
heads. At a batch of one, each node costs about as much as its arithmetic (the digits DiT spent
171 nodes per evaluation). `fuse_attention` rewrites every such block to onnxruntime's
com.microsoft `Attention(x, W_qkv, b_qkv)` (CPU and CUDA kernels; the projection included), and
leaves alone whatever does not match exactly: a mask or bias on the scores, cross-attention (keys
from another input), weights computed in the graph. The file is then checked against torch as
always; tests/test_export_passes.py checks the pass on each form torch writes.

Matched forms, for q, k and v each [B, H, S, hd]:
- head split: Transpose(Reshape(P, [.., S, H, hd]), [0, 2, 1, 3]) with P = x @ W (+ b), one
  projection per input (diffusers' to_q/to_k/to_v);
- packed: Squeeze(Slice(Transpose(Reshape(P, [.., 3, H, hd]), [2, 0, 3, 1, 4]), i, i+1, axis 0))
  (or Gather i) with P = x @ W_qkv (+ b) (qkv(h).reshape(b, n, 3, heads, hd).permute(2, 0, 3, 1, 4));
- scores: q @ kT, then Div or Mul by a constant; or q and kT each multiplied by a constant first
  (F.scaled_dot_product_attention), kT a Transpose [0, 1, 3, 2] or torch's Reshape / Transpose
  [0, 2, 1] / Reshape of k, or one Transpose [0, 2, 3, 1] of k's head split;
- out: Reshape(Transpose(Softmax(scores) @ v, [0, 2, 1, 3]), [.., S, H * hd]).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .fold import Sources, attrs, drop_dead

MS_DOMAIN = "com.microsoft"


def _perm(node) -> list[int]:
    return list(attrs(node).get("perm", []))


def _scaled(g: Sources, name: str) -> tuple[str, float]:
    """(t, c) for name = t * c (or t / c) with c a scalar constant; (name, 1.0) otherwise."""
    for op in ("Mul", "Div"):
        n = g.op(name, op)
        if n is None:
            continue
        for a, b in ((0, 1), (1, 0)) if op == "Mul" else ((0, 1),):
            c = g.scalar(n.input[b])
            if c is not None and c != 0.0:
                return n.input[a], c if op == "Mul" else 1.0 / c
    return name, 1.0


def _key_view(g: Sources, name: str):
    """_head_view of k for name = k transposed on its last two axes."""
    n = g.op(name, "Transpose")
    perm = _perm(n) if n is not None else None
    if perm == [0, 1, 3, 2]:
        return _head_view(g, n.input[0])
    if perm == [0, 2, 3, 1]:            # torch's one transpose from the head split [B, S, H, hd]
        rs = g.op(n.input[0], "Reshape", sole=False)
        return _split_heads(g, rs) if rs is not None else None
    outer = g.op(name, "Reshape")       # torch's form: Reshape(Transpose(Reshape(k, [-1, S, hd]), [0, 2, 1]))
    mid = g.op(outer.input[0], "Transpose") if outer is not None else None
    inner = g.op(mid.input[0], "Reshape") if mid is not None and _perm(mid) == [0, 2, 1] else None
    return _head_view(g, inner.input[0]) if inner is not None else None


def _tail(g: Sources, reshape, k: int) -> list[int] | None:
    """The last k sizes of a Reshape's target, when they are positive constants."""
    shape = g.const(reshape.input[1])
    cat = g.made.get(reshape.input[1]) if shape is None else None
    if cat is not None and cat.op_type == "Concat":       # [Shape(x)[:2], H, hd] with symbols in front
        parts = [g.const(i) for i in cat.input[-k:]]
        shape = None if any(p is None or p.size != 1 for p in parts) else np.concatenate([p.reshape(1) for p in parts])
    tail = [int(v) for v in shape[-k:]] if shape is not None and shape.size >= k else []
    return tail if len(tail) == k and min(tail) > 0 else None


def _projection(g: Sources, p: str) -> tuple[str, np.ndarray, np.ndarray] | None:
    """(x, W [in, out], b [out]) for p = x @ W + b (or x @ W) with W and b constants."""
    bias = None
    add = g.op(p, "Add", sole=False)
    if add is not None:
        for a, b in ((0, 1), (1, 0)):
            v = g.const(add.input[b])
            if v is not None and v.ndim == 1 and g.made.get(add.input[a]) is not None:
                p, bias = add.input[a], v
                break
        else:
            return None
    mm = g.op(p, "MatMul", sole=False)
    w = g.const(mm.input[1]) if mm is not None else None
    if w is None or w.ndim != 2 or w.dtype != np.float32 or (bias is not None and bias.shape != (w.shape[1],)):
        return None
    return mm.input[0], w, np.zeros(w.shape[1], np.float32) if bias is None else bias.astype(np.float32)


def _head_view(g: Sources, name: str) -> tuple[str, np.ndarray, np.ndarray, int, int] | None:
    """(x, W, b, H, hd) for a [B, H, S, hd] tensor that splits heads off a projection of x."""
    tr = g.op(name, "Transpose", sole=False)
    if tr is not None and _perm(tr) == [0, 2, 1, 3]:
        rs = g.op(tr.input[0], "Reshape", sole=False)
        return _split_heads(g, rs) if rs is not None else None
    return _packed_view(g, name)


def _split_heads(g: Sources, rs):
    """(x, W, b, H, hd) for Reshape `rs` of a projection x @ W + b to [.., S, H, hd]."""
    heads, proj = _tail(g, rs, 2), _projection(g, rs.input[0])
    if heads and proj and proj[1].shape[1] == heads[0] * heads[1]:
        return (*proj, *heads)
    return None


def _packed_view(g: Sources, name: str):
    """The packed form: item i of Transpose(Reshape(x @ W_qkv + b, [.., 3, H, hd]), [2, 0, 3, 1, 4])."""
    sq = g.op(name, "Squeeze")
    item = g.op(sq.input[0], "Slice") or g.op(sq.input[0], "Gather") if sq is not None else None
    if item is None:
        return None
    ends = [g.const(i) for i in item.input[1:4]] + [np.array([0])] * (4 - len(item.input))
    if item.op_type == "Gather":
        index, ok = ends[0], attrs(item).get("axis", 0) == 0
    else:       # Slice(t, [i], [i + 1], [0])
        index, ok = ends[0], all(e is not None and e.size == 1 for e in ends) and ends[1] - ends[0] == 1 and ends[2] == 0
    tr = g.op(item.input[0], "Transpose", sole=False)
    rs = g.op(tr.input[0], "Reshape", sole=False) if tr is not None and _perm(tr) == [2, 0, 3, 1, 4] else None
    tail, proj = (_tail(g, rs, 3), _projection(g, rs.input[0])) if rs is not None and ok else (None, None)
    if not tail or not proj or tail[0] != 3 or index is None or proj[1].shape[1] != 3 * tail[1] * tail[2]:
        return None
    i, d = int(index.reshape(-1)[0]), tail[1] * tail[2]
    return (proj[0], proj[1][:, i * d:(i + 1) * d], proj[2][i * d:(i + 1) * d], *tail[1:]) if 0 <= i < 3 else None


def _match(g: Sources, sm) -> tuple[str, str, np.ndarray, np.ndarray, int, float] | None:
    """(x, out, W_qkv, b_qkv, H, scale) of the self-attention around Softmax node `sm`."""
    if attrs(sm).get("axis", -1) not in (-1, 3):
        return None
    scores, c = _scaled(g, sm.input[0])
    mm1 = g.op(scores, "MatMul")
    mm2 = g.reader(sm.output[0], "MatMul")
    merge = g.reader(mm2.output[0], "Transpose") if mm2 is not None else None
    out = g.reader(merge.output[0], "Reshape") if merge is not None \
        and _perm(merge) == [0, 2, 1, 3] else None
    if mm1 is None or out is None:
        return None
    q, a = _scaled(g, mm1.input[0])
    kt, b = _scaled(g, mm1.input[1])
    views = [_head_view(g, q), _key_view(g, kt), _head_view(g, mm2.input[1])]
    if any(v is None for v in views) or len({v[0] for v in views}) != 1 or len({v[3:] for v in views}) != 1:
        return None
    w = np.concatenate([v[1] for v in views], axis=1)
    bias = np.concatenate([v[2] for v in views])
    return views[0][0], out.output[0], w, bias, views[0][3], c * a * b


def fuse_attention(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every matched self-attention block one com.microsoft Attention node (the
    model itself when none matches)."""
    g = Sources(model.graph)
    fused: dict[str, onnx.NodeProto] = {}
    inits = []
    for sm in [n for n in model.graph.node if n.op_type == "Softmax"]:
        m = _match(g, sm)
        if m is None:
            continue
        x, out, w, b, heads, scale = m
        stem = f"attention/{len(fused)}"
        inits += [numpy_helper.from_array(np.ascontiguousarray(w), f"{stem}/W"),
                  numpy_helper.from_array(b.astype(np.float32), f"{stem}/b")]
        fused[out] = helper.make_node("Attention", [x, f"{stem}/W", f"{stem}/b"], [out], name=stem,
                                      domain=MS_DOMAIN, num_heads=heads, scale=float(scale))
    if not fused:
        return model
    result = onnx.ModelProto()
    result.CopyFrom(model)
    result.graph.initializer.extend(inits)
    if not any(o.domain == MS_DOMAIN for o in result.opset_import):
        result.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    drop_dead(result, [fused.get(n.output[0], n) if n.output else n for n in result.graph.node])
    return result
