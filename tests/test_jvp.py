"""The forward-mode transform of ONNX graphs (export/jvp.py), operator by operator: each group of
operators is exported from torch by the dynamo exporter, differentiated as ONNX, and compared with
torch's own forward-mode autodiff in float64."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from export.adapters import VelocityAdapter
from export.jvp import covered_ops, divergence_graph, unsupported_ops
from export.onnx_export import _to_onnx


def _activations(h):
    return (F.gelu(h) + F.gelu(h, approximate="tanh") + F.selu(h) + F.softplus(h) + torch.sin(h) * torch.cos(h)
            + F.elu(h) + F.mish(h) + F.leaky_relu(h, 0.1) + F.hardswish(h) + F.hardsigmoid(h) + torch.tanh(h)
            + torch.sigmoid(h) + F.relu(h) + torch.erf(h) + torch.exp(-h * h) + torch.log(h.abs() + 1) + F.softsign(h))


class _Norms(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln, self.gn, self.bn = nn.LayerNorm(32), nn.GroupNorm(4, 8), nn.BatchNorm2d(8).eval()
        self.bn.running_mean.uniform_(-1, 1)
        self.bn.running_var.uniform_(0.5, 2)

    def forward(self, h):
        img = h.reshape(-1, 8, 2, 2)
        q = h.reshape(-1, 4, 8)
        att = torch.softmax(q @ q.transpose(1, 2) / 3, -1) @ q
        return (self.ln(h) + self.gn(img).reshape(-1, 32) + self.bn(img).reshape(-1, 32) + att.reshape(-1, 32)
                + F.log_softmax(h, -1) + torch.einsum("bi,bj->bij", h[:, :4], h[:, 4:8]).reshape(-1, 16).repeat(1, 2))


def _structure(h):
    img = h.reshape(-1, 2, 4, 4)
    a, b = h.split(16, -1)
    up = F.interpolate(img[:, :, :2, :2], scale_factor=2, mode="bilinear", align_corners=False).reshape(-1, 32)
    near = F.interpolate(img[:, :, :2, :2], scale_factor=2, mode="nearest").reshape(-1, 32)
    pad = F.pad(img[:, :, 1:3, 1:3], (1, 1, 1, 1)).reshape(-1, 32)
    return (torch.cat([b, a], -1) + up + near + pad + h.cumsum(-1) / 10 + torch.where(h > 0, h * h, -h)
            + torch.clamp(h, -0.5, 0.7) + torch.maximum(h, h.flip(-1)) + torch.minimum(h, 0.3 * h)
            + (h * h + 1) ** 1.5 + torch.rsqrt(h * h + 1) + h / (h * h + 1) + h.mean(-1, keepdim=True)
            + (h * h).sum(-1, keepdim=True) / 32 + h[:, [3, 1, 2]].sum(-1, keepdim=True) + h.transpose(0, 1).T)


class Field(nn.Module):
    def __init__(self, body, dim: int = 8):
        super().__init__()
        self.body = body
        self.inp, self.out = nn.Linear(dim + 1, 32), nn.Linear(32, dim)

    def forward(self, x, t):
        return self.out(self.body(self.inp(torch.cat([x, t[:, None]], -1))))


@pytest.mark.parametrize("body", [_activations, _Norms(), _structure], ids=["activations", "norms-attention", "structure"])
def test_jvp_graph_matches_torch_autodiff(body):
    _matches_torch(body)


def _matches_torch(body) -> onnx.ModelProto:
    """The divergence graph of Field(body), checked against torch.func.jvp in float64."""
    torch.manual_seed(0)
    field = Field(body).eval()
    proto = _to_onnx(VelocityAdapter(field), (8,))
    graph = divergence_graph(proto, x_name="x", t_name="t", v_name="v")
    sess = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 8)).astype(np.float32)
    t = rng.random(9).astype(np.float32)
    e = rng.standard_normal((9, 3, 8)).astype(np.float32)
    v, jv = sess.run(None, {"x": x, "t": t, "e": e})
    f64 = field.double()
    tt, xx = torch.from_numpy(t).double(), torch.from_numpy(x).double()
    want = np.stack([torch.func.jvp(lambda z: f64(z, tt), (xx,), (torch.from_numpy(e[:, k]).double(),))[1]
                     .detach().numpy() for k in range(3)], 1)
    np.testing.assert_allclose(v, f64(xx, tt).detach().numpy(), atol=2e-5 * max(1, np.abs(v).max()))
    assert np.abs(jv - want).max() <= 2e-5 * max(1.0, np.abs(want).max())
    return graph


class _Image(nn.Module):
    def __init__(self, norm):
        super().__init__()
        self.norm = norm

    def forward(self, h):
        return F.silu(self.norm(h.reshape(-1, 8, 2, 2))).reshape(-1, 32)


@pytest.mark.parametrize("norm,unit", [(nn.GroupNorm(4, 8), True), (nn.InstanceNorm2d(8, affine=True), False)],
                         ids=["groupnorm", "instancenorm"])
def test_a_unit_normalisation_scale_costs_the_tangents_nothing(norm, unit):
    """torch exports GroupNorm as InstanceNormalization with a scale of ones (its own weight comes
    after): the tangents skip that multiply; a real scale (affine InstanceNorm) keeps it."""
    with torch.no_grad():
        for p in norm.parameters():
            p.add_(0.3 * torch.randn_like(p))
    graph = _matches_torch(_Image(norm))
    scales = {n.input[1] for n in graph.graph.node if n.op_type == "InstanceNormalization"}
    assert scales
    scaled = [n for n in graph.graph.node if n.op_type == "Unsqueeze" and n.input[0] in scales]
    assert (not scaled) == unit, [n.input for n in scaled]


def test_uncovered_operators_are_named():
    class Atan(nn.Module):
        def forward(self, x, t):
            return torch.atan(x) * t[:, None]
    proto = _to_onnx(VelocityAdapter(Atan()), (2,))
    assert unsupported_ops(proto, "x") == ["Atan"]
    with pytest.raises(NotImplementedError, match="Atan"):
        divergence_graph(proto, x_name="x", t_name="t", v_name="v")
    assert {"MatMul", "Conv", "ConvTranspose", "Softmax", "LayerNormalization", "Gelu", "Where"} <= set(covered_ops())


class _ConvField(nn.Module):
    """GroupNorm, SiLU and a convolution, as in the U-Net: the shape of what the primal saves."""

    def __init__(self):
        super().__init__()
        self.conv, self.norm = nn.Conv2d(2, 8, 3, padding=1), nn.GroupNorm(4, 8)
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, x, t):
        img = x.reshape(-1, 2, 2, 2)
        h = F.silu(self.norm(self.conv(img)) + t[:, None, None, None])
        return self.out(h).reshape(x.shape)


def _run(graph, x, t, e):
    sess = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x, "t": t, "e": e})


def test_the_network_runs_once_per_row_and_only_tangents_run_per_probe():
    """The primal nodes take the B rows as given (no repeated copy of the network's weights
    work): no Conv, Gemm or MatMul runs on repeated rows; a graph without a symbolic batch
    (every per-row tensor then rebuilt on repeated rows) gives the same numbers."""
    torch.manual_seed(0)
    proto = _to_onnx(VelocityAdapter(_ConvField().eval()), (8,))
    graph = divergence_graph(proto, x_name="x", t_name="t", v_name="v")
    repeated = [n.op_type for n in graph.graph.node if any(o.startswith("r/") for o in n.output)]
    assert repeated and not {"Conv", "Gemm", "MatMul"} & set(repeated), repeated
    primal_convs = [n for n in graph.graph.node if n.op_type == "Conv" and n.output[0].startswith("f/")]
    assert len(primal_convs) == 2 and all(not i.startswith("r/") for n in primal_convs for i in n.input)
    rng = np.random.default_rng(1)
    x, t = rng.standard_normal((9, 8)).astype(np.float32), rng.random(9).astype(np.float32)
    e = rng.standard_normal((9, 3, 8)).astype(np.float32)
    v, jv = _run(graph, x, t, e)
    fixed = onnx.ModelProto()
    fixed.CopyFrom(proto)
    del fixed.graph.value_info[:]
    for vi in [*fixed.graph.input, *fixed.graph.output]:
        vi.type.tensor_type.shape.dim[0].dim_value = 9
    rebuilt = divergence_graph(fixed, x_name="x", t_name="t", v_name="v")
    assert "Conv" in {n.op_type for n in rebuilt.graph.node if n.output[0].startswith("r/")}
    v2, jv2 = _run(rebuilt, x, t, e)
    np.testing.assert_allclose(v2, v, atol=1e-6)
    np.testing.assert_allclose(jv2, jv, atol=1e-5)
    h = 1e-3
    fd = (_run(graph, x + h * e[:, 0], t, e)[0] - _run(graph, x - h * e[:, 0], t, e)[0]) / (2 * h)
    assert np.abs(fd - jv[:, 0]).max() <= 1e-2 * max(1.0, np.abs(fd).max())


def _repeat_graph(uses: list[str]) -> onnx.ModelProto:
    """a [B, 3] repeated K times as r [B*K, 3] (the Expand jvp.py writes; K from e [B, K, 3]),
    d [B*K, 3] a tangent, and `uses` of r as outputs: "tangent" Mul(d, r), "const" Add(r, c) with c
    [1, 3], "both" Mul(r, r)."""
    from onnx import TensorProto, helper, numpy_helper
    h = helper
    nodes = [h.make_node("Shape", ["e"], ["bk"], end=2), h.make_node("Shape", ["a"], ["rest"], start=1),
             h.make_node("Concat", ["bk", "rest"], ["to"], axis=0),
             h.make_node("Unsqueeze", ["a", "one"], ["a1"]), h.make_node("Expand", ["a1", "to"], ["grown"]),
             h.make_node("Concat", ["minus1", "rest"], ["flat"], axis=0), h.make_node("Reshape", ["grown", "flat"], ["r/a"])]
    made = {"tangent": h.make_node("Mul", ["d", "r/a"], ["tangent"]), "const": h.make_node("Add", ["r/a", "c"], ["const"]),
            "both": h.make_node("Mul", ["r/a", "r/a"], ["both"])}
    nodes += [made[u] for u in uses]
    f = TensorProto.FLOAT
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("a", f, ["B", 3]), h.make_tensor_value_info("e", f, ["B", "K", 3]),
                                      h.make_tensor_value_info("d", f, ["BK", 3])],
                         [h.make_tensor_value_info(u, f, ["BK", 3]) for u in uses],
                         [numpy_helper.from_array(np.array([1], np.int64), "one"),
                          numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
                          numpy_helper.from_array(np.array([[1.0, 2.0, 3.0]], np.float32), "c")])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])


@pytest.mark.parametrize("uses,rewritten,copy_left", [
    (["tangent"], 1, False),                      # the pattern alone: the copy goes
    (["tangent", "const", "both"], 1, True),      # beside uses that need the copy
    (["const", "both"], 0, True),                 # no use with a tangent: nothing to do
])
def test_repeated_tensors_broadcast_against_tangents(uses, rewritten, copy_left):
    from export.jvp import _topological
    from export.jvp_broadcast import broadcast_repeats
    rng = np.random.default_rng(0)
    feed = {"a": rng.standard_normal((2, 3)).astype(np.float32), "e": np.zeros((2, 4, 3), np.float32),
            "d": rng.standard_normal((8, 3)).astype(np.float32)}

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    model = _repeat_graph(uses)
    before = run(model)
    assert broadcast_repeats(model, {"r/a": "a"}, _topological) == rewritten
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node]
    assert ("Expand" in ops) == copy_left, ops
    assert {i.name for i in model.graph.initializer} <= {i for n in model.graph.node for i in n.input}
    for got, want in zip(run(model), before):
        np.testing.assert_array_equal(got, want)
    if "tangent" in uses:       # row b*K + k of d times row b of a
        np.testing.assert_array_equal(before[0], feed["d"] * np.repeat(feed["a"], 4, 0))


@pytest.mark.parametrize("body,fused", [(lambda h: F.silu(h) * 2, True), (lambda h: h * torch.sigmoid(2 * h), False)],
                         ids=["silu", "x-sigmoid-2x"])
def test_silu_is_one_multiply_of_the_tangents(body, fused, monkeypatch):
    """x * Sigmoid(x), as torch exports SiLU, takes one multiply of the tangents by its slope, not
    the product rule's four passes; x * Sigmoid(2x) is no SiLU and keeps the product rule."""
    import export.jvp_rules as rules
    graph = _matches_torch(body)
    monkeypatch.setitem(rules.RULES, "Mul", rules._matmul_like)
    product_rule = _matches_torch(body)
    fewer = len(product_rule.graph.node) - len(graph.graph.node)
    assert (fewer > 0) == fused, fewer


def test_dead_nodes_go_and_what_a_subgraph_reads_stays():
    """drop_dead keeps what the outputs depend on, through the outer names an If branch reads,
    and the initializers those nodes read."""
    from onnx import helper as h
    from onnx import numpy_helper

    from export.fold import drop_dead
    branch = h.make_graph([h.make_node("Identity", ["w"], ["b_out"])], "then", [], [h.make_tensor_value_info("b_out", 1, None)])
    nodes = [h.make_node("Add", ["x", "k"], ["w"]),                   # read only inside the branch
             h.make_node("Mul", ["x", "k2"], ["unused"]),             # read by nothing
             h.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch),
             h.make_node("Exp", ["unused"], ["unused2"])]
    consts = [numpy_helper.from_array(np.ones(1, np.float32), name) for name in ("k", "k2")]
    model = h.make_model(h.make_graph(nodes, "g", [h.make_tensor_value_info("x", 1, [1]), h.make_tensor_value_info("c", 9, [])],
                                      [h.make_tensor_value_info("y", 1, None)], consts))
    drop_dead(model, list(model.graph.node))
    assert [n.op_type for n in model.graph.node] == ["Add", "If"]
    assert [i.name for i in model.graph.initializer] == ["k"]
