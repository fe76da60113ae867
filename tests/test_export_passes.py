"""Graph passes at export: self-attention fused into one com.microsoft Attention node
(export/attention.py), and in baked graphs what depends on time alone stored (export/fold.py);
each computes what the unfused graph computed, and anything that does not match is left alone."""
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fm_runtime
from export import export_velocity
from export.attention import fuse_attention
from export.fold import fold_norm_affine
from export.torch_onnx import export_program
from training.nets import VelocityDiT

from .node_bridge import needs_node, node_sample


class SelfAttention(nn.Module):
    """diffusers' form: to_q / to_k / to_v, heads split by view + transpose, then SDPA (or an
    explicit softmax, masked or cross-attending to `context` when asked)."""

    def __init__(self, width=32, heads=4, scale=None, form="sdpa"):
        super().__init__()
        self.heads, self.scale, self.form = heads, scale, form
        self.q, self.k, self.v, self.o = (nn.Linear(width, width, bias=i != 1) for i in range(4))

    def forward(self, x, context):
        b, _, d = x.shape
        kv = context if self.form == "cross" else x
        q, k, v = (lin(h).view(b, -1, self.heads, d // self.heads).transpose(1, 2)
                   for lin, h in ((self.q, x), (self.k, kv), (self.v, kv)))
        if self.form == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        else:
            scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)
            if self.form == "masked":
                scores = scores + context[:, None, :, :1]
            out = torch.softmax(scores, -1) @ v
        return self.o(out.transpose(1, 2).reshape(b, -1, d))


def _exported(net, seq=10):
    torch.manual_seed(0)
    example = (torch.randn(2, seq, 32), torch.randn(2, seq, 32))
    dims = {"x": {0: torch.export.Dim("B"), 1: torch.export.Dim("T")},
            "context": {0: torch.export.Dim("B"), 1: torch.export.Dim("T")}}
    return export_program(net.eval(), example, what="attention", input_names=["x", "context"],
                          output_names=["y"], dynamic_shapes=dims, opset_version=20)


def _run(model: onnx.ModelProto, b: int, seq: int) -> np.ndarray:
    rng = np.random.default_rng(b * 100 + seq)
    feed = {"x": rng.standard_normal((b, seq, 32), dtype=np.float32),
            "context": rng.standard_normal((b, seq, 32), dtype=np.float32)}
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: feed[i.name] for i in sess.get_inputs()})[0]


def _ops(model) -> list[str]:
    return [n.op_type for n in model.graph.node]


@pytest.mark.parametrize("scale", [None, 0.3])
def test_sdpa_with_three_projections_becomes_one_attention_node_with_the_same_output(scale):
    plain = _exported(SelfAttention(scale=scale))
    fused = fuse_attention(plain)
    assert _ops(fused).count("Attention") == 1 and "Softmax" not in _ops(fused)
    assert len(fused.graph.node) < len(plain.graph.node) - 10
    attention = next(n for n in fused.graph.node if n.op_type == "Attention")
    got_scale = next(a.f for a in attention.attribute if a.name == "scale")
    assert got_scale == pytest.approx(scale or 1 / math.sqrt(8), rel=1e-6)
    for b, seq in ((1, 3), (5, 17)):        # the batch and the sequence stay symbolic
        np.testing.assert_allclose(_run(fused, b, seq), _run(plain, b, seq), atol=2e-6)


def test_explicit_softmax_attention_fuses_too():
    plain = _exported(SelfAttention(form="softmax"))
    fused = fuse_attention(plain)
    assert _ops(fused).count("Attention") == 1
    np.testing.assert_allclose(_run(fused, 3, 9), _run(plain, 3, 9), atol=2e-6)


@pytest.mark.parametrize("form", ["masked", "cross"])
def test_masked_scores_and_cross_attention_are_left_alone(form):
    plain = _exported(SelfAttention(form=form))
    assert fuse_attention(plain) is plain


def test_softmax_weights_read_elsewhere_are_left_alone():
    plain = _exported(SelfAttention(form="softmax"))
    g = plain.graph
    softmax = next(n for n in g.node if n.op_type == "Softmax")
    g.output.append(onnx.helper.make_tensor_value_info(softmax.output[0], onnx.TensorProto.FLOAT, None))
    assert fuse_attention(plain) is plain


@pytest.fixture(scope="module")
def dit(tmp_path_factory):
    """A small DiT exported fused (the default) and with fuse=False, and the fused file's samples."""
    torch.manual_seed(0)
    net = VelocityDiT((1, 8, 8), 32, 2, heads=4)
    for p in net.parameters():          # off its initialisation: no adaLN gate at zero
        p.data += 0.05 * torch.randn_like(p)
    d = tmp_path_factory.mktemp("dit")
    fused, plain = d / "fused.onnx", d / "plain.onnx"
    torch.save(net.state_dict(), d / "fused.pt")
    export_velocity(net.eval(), fused, data_shape=(1, 8, 8), divergence=False)
    export_velocity(net, plain, data_shape=(1, 8, 8), divergence=False, fuse=False)
    z = fm_runtime.load(plain).noise(4, seed=1)
    return fused, plain, z, fm_runtime.load(fused).sample(noise=z, steps=4)


def test_a_dit_exports_with_fused_attention_and_samples_as_unfused(dit):
    fused, plain, z, got = dit
    ops_fused, ops_plain = (_ops(onnx.load(str(p))) for p in (fused, plain))
    assert ops_fused.count("Attention") == 2 and ops_plain.count("Attention") == 0
    assert not any(n.domain for n in onnx.load(str(plain)).graph.node)     # standard operators only
    np.testing.assert_allclose(got, fm_runtime.load(plain).sample(noise=z, steps=4), atol=1e-5)


@needs_node
def test_node_runs_the_fused_file_as_python_does(dit, tmp_path):
    fused, _, z, want = dit
    (got, _), = node_sample(tmp_path, [(fused, [{"noise": z, "steps": 4}])])
    np.testing.assert_allclose(got, want, atol=1e-5)


class TimeConcat(torch.nn.Module):
    """A time embedding that meets x through Concat (no broadcasting) and through a Mul (it does)."""

    def __init__(self):
        super().__init__()
        self.emb, self.gate, self.out = nn.Linear(8, 8), nn.Linear(8, 2), nn.Linear(10, 2)

    def forward(self, x, t):
        e = torch.sin(self.emb(t[:, None] * torch.arange(1.0, 9.0)))
        return self.out(torch.cat([x * self.gate(e), e], 1))


def test_a_baked_graph_stores_what_each_evaluation_computes_from_time_alone(tmp_path):
    # export.fold.fold_time_branches: the DiT's time embedding and adaLN rows become stored values
    # (one row each, broadcast by the Add/Mul reading them), the norms' modulation goes inside the
    # norms; what meets x through Concat stays computed
    torch.manual_seed(0)
    net = VelocityDiT((1, 8, 8), 32, 2, heads=4)
    for p in net.parameters():
        p.data += 0.05 * torch.randn_like(p)
    velocity, baked = tmp_path / "v.onnx", tmp_path / "b.onnx"
    export_velocity(net.eval(), velocity, data_shape=(1, 8, 8), divergence=False)
    export_velocity(net, baked, data_shape=(1, 8, 8), bake="midpoint:2", divergence=False)
    model = onnx.load(str(baked))
    stored = [i for i in model.graph.initializer if i.name.startswith("time/")]
    assert len(stored) >= 4 * 2 * 2 and all(i.dims[0] == 1 for i in stored if i.dims)  # two gates a block, an evaluation
    assert _ops(model).count("Sin") == 0 and _ops(model).count("Gemm") == 0        # the time MLP and adaLN are gone
    normed = {n.output[0] for n in model.graph.node if n.op_type == "LayerNormalization"}
    assert len(normed) == 4 * (2 * 2 + 1)       # export.fold.fold_norm_affine: each norm's * (1 + g) + s inside it
    assert not [n.op_type for n in model.graph.node if set(n.input) & normed and n.op_type in ("Mul", "Add")]
    z = fm_runtime.load(velocity).noise(5, seed=2)
    np.testing.assert_allclose(fm_runtime.load(baked).sample(noise=z),
                               fm_runtime.load(velocity).sample(noise=z, steps=2, solver="midpoint"), atol=1e-5)
    other = tmp_path / "concat.onnx"
    export_velocity(TimeConcat().eval(), other, data_shape=(2,), bake="euler:3", divergence=False)
    ops = _ops(onnx.load(str(other)))
    assert ops.count("Sin") == 3 and ops.count("Concat") == 3     # e feeds Concat: kept, one per evaluation
    assert any(i.name.startswith("time/") for i in onnx.load(str(other)).graph.initializer)  # gate(e): stored


def test_the_int8_variant_quantises_the_fused_attention(dit, tmp_path):
    # QAttention: the projection's weights int8 like every other matmul's (1.04-1.08x one evaluation)
    fused = dit[0]
    net = VelocityDiT((1, 8, 8), 32, 2, heads=4)
    net.load_state_dict(torch.load(fused.with_suffix(".pt")))
    out = tmp_path / "q.onnx"
    export_velocity(net.eval(), out, data_shape=(1, 8, 8), divergence=False, quantize="int8")
    assert _ops(onnx.load(str(out))).count("QAttention") == 2
    cost = fm_runtime.load(out).spec.variant["vs_fp32"]
    assert cost["mean_dev"] < 0.02 * cost["scale"]


def test_passes_leave_a_graph_whose_softmax_and_norm_end_it_alone():
    # values read only as graph outputs: no node reads them, and nothing is fused or folded
    h = onnx.helper
    graph = h.make_graph(
        [h.make_node("Softmax", ["x"], ["y"], axis=-1), h.make_node("LayerNormalization", ["x", "s"], ["z"], axis=-1)],
        "ends", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 4])],
        [h.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [2, 4]) for n in ("y", "z")],
        [onnx.numpy_helper.from_array(np.ones(4, np.float32), "s")])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 20)])
    assert fuse_attention(model) is model and fold_norm_affine(model) is model
