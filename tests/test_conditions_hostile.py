"""Hostile files and requests against the conditions of contract version 4, in both runtimes: a
condition stage whose graph returns the wrong rows, rank or dtype, stage inputs that disagree on
rows, requests without rows, stored nulls that do not fit their dtype, a binding past the values
a row may hold, lenient base64, and request options of the wrong type. Each is refused with the
package's own error class, the same in Python and JavaScript; none samples silently."""
import base64
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

import fm_runtime
from export.onnx_export import export_velocity

from . import cond_nets
from .node_bridge import needs_node, node_sample

TOKENS = np.array([[1, 5, 2], [3, 3, 1]], np.int64)
SPKS = np.array([0.3, -1.0, 0.5], np.float32)


@pytest.fixture(scope="module")
def tts(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile-cond")
    cond_nets.export_token_decoder(d / "tts.onnx", mu_null="stage")
    return d


def edited(src, dst, **changes):
    """A copy of `src` with fm.* keys replaced (values as JSON) or removed (None)."""
    m = onnx.load(src)
    props = {p.key: p.value for p in m.metadata_props}
    for k, v in changes.items():
        if v is None:
            props.pop("fm." + k, None)
        else:
            props["fm." + k] = v if isinstance(v, str) else json.dumps(v)
    del m.metadata_props[:]
    for k, v in props.items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, dst)
    return dst


def stage_graph(variant: str) -> str:
    """A hand-made stage: tokens [B, L] -> mu [B, 4, 2L] and mask [B, 1, 2L], with one fault."""
    c = onnx.numpy_helper.from_array
    inits = [c(np.array([1], np.int64), "ax1"), c(np.array([0], np.int64), "s0"), c(np.array([1], np.int64), "s1"),
             c(np.array(0.0, np.float32), "zero"), c(np.array(1.0, np.float32), "one")]
    nodes, src = [], "tokens"
    if variant == "one_row":
        nodes.append(h.make_node("Slice", ["tokens", "s0", "s1", "s0"], ["first"]))
        src = "first"
    nodes += [h.make_node("Cast", [src], ["xf"], to=T.FLOAT), h.make_node("Unsqueeze", ["xf", "ax1"], ["x1"]),
              h.make_node("Concat", ["x1", "x1"], ["x2"], axis=2), h.make_node("Concat", ["x2"] * 4, ["m4"], axis=1),
              h.make_node("Mul", ["x2", "zero"], ["z"]), h.make_node("Add", ["z", "one"], ["mask"])]
    mu_type = T.FLOAT
    if variant == "int_mu":
        nodes.append(h.make_node("Cast", ["m4"], ["mu"], to=T.INT64))
        mu_type = T.INT64
    elif variant == "rank":
        nodes.append(h.make_node("ReduceSum", ["m4", "ax1"], ["mu"], keepdims=0))
    else:
        nodes.append(h.make_node("Identity", ["m4"], ["mu"]))
    graph = h.make_graph(nodes, "stage", [h.make_tensor_value_info("tokens", T.INT64, ["B", "L"])],
                         [h.make_tensor_value_info("mu", mu_type, None), h.make_tensor_value_info("mask", T.FLOAT, None)],
                         inits)
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)
    return base64.b64encode(m.SerializeToString()).decode()


def with_stage(tts, name: str, b64: str):
    src = tts / "tts.onnx"
    stage = json.loads({p.key: p.value for p in onnx.load(src).metadata_props}["fm.condition_stage"])
    return edited(src, tts / name, condition_stage={**stage, "onnx_base64": b64})


def refusals(path, requests, tmp_path, node: bool = True):
    """(Python's error class, JavaScript's) of each request: None where it sampled."""
    s = fm_runtime.load(path)
    py = []
    for r in requests:
        try:
            s.sample(**r)
            py.append(None)
        except fm_runtime.FmError as e:
            py.append(type(e).__name__)
    if not node:
        return py, None
    js = [r["error"] if isinstance(r, dict) else None for r in node_sample(tmp_path, [(path, requests)])]
    return py, js


@needs_node
@pytest.mark.parametrize("variant", ["one_row", "int_mu", "rank"])
def test_a_stage_that_returns_the_wrong_rows_rank_or_dtype_is_a_model_error(tts, tmp_path, variant):
    path = with_stage(tts, f"stage-{variant}.onnx", stage_graph(variant))
    requests = [{"cond": {"tokens": TOKENS, "spks": SPKS}, "seed": 0},
                {"cond": {"tokens": TOKENS, "spks": SPKS}, "seed": 0, "guidance": 2.0},
                {"n": 2, "cond": {"tokens": TOKENS[0], "spks": SPKS}, "seed": 0, "guidance": 2.0}]
    py, js = refusals(path, requests, tmp_path)
    assert py == js == ["ModelError"] * 3, (py, js)


@needs_node
def test_the_stage_graph_as_written_samples_in_both(tts, tmp_path):
    path = with_stage(tts, "stage-ok.onnx", stage_graph("ok"))
    z = np.random.default_rng(0).standard_normal((2, 4, 6)).astype(np.float32)
    want = fm_runtime.load(path).sample(noise=z, cond={"tokens": TOKENS, "spks": SPKS}, guidance=2.0)
    (got, calls), = node_sample(tmp_path, [(path, [{"noise": z, "cond": {"tokens": TOKENS, "spks": SPKS}, "guidance": 2.0}])])
    assert np.abs(got - want).max() <= 1e-5 and calls == 1


@needs_node
def test_bad_requests_are_refused_alike(tts, tmp_path):
    path = tts / "tts.onnx"
    requests = [{"cond": {"tokens": np.zeros((0, 3), np.int64), "spks": SPKS}},                 # no rows
                {"cond": {"mu": np.zeros((0, 4, 8), np.float32), "spks": SPKS}},                 # no rows
                {"n": 2, "cond": {"tokens": TOKENS.astype(np.float32), "spks": SPKS}},           # ids as floats
                {"n": 2, "cond": {"tokens": TOKENS, "spks": SPKS}, "guidance": 2.0, "guidanceInterval": [0, 1, 1]},
                {"n": 2, "cond": {"tokens": TOKENS + 1000, "spks": SPKS}},                       # ids past the vocabulary
                {"n": 2, "cond": {"tokens": -TOKENS, "spks": SPKS}},                             # negative ids
                {"n": 2, "cond": {"tokens": np.full((2, 3), 2**64 - 1, np.uint64), "spks": SPKS}}]   # past int64
    py_requests = [dict(r) for r in requests]
    py_requests[3]["guidance_interval"] = py_requests[3].pop("guidanceInterval")
    py, _ = refusals(path, py_requests, tmp_path, node=False)
    js = [r["error"] if isinstance(r, dict) else None for r in node_sample(tmp_path, [(path, requests)])]
    # the stage passed its self-test at load, so its failure on token ids past its vocabulary is
    # the request's (InputError, exit 4; HTTP 400 from fm-run serve), not the file's
    assert py == js == ["UsageError", "UsageError", "InputError", "UsageError", "InputError", "InputError",
                        "InputError"], (py, js)
    # the range comes from the stage's embedding table, at export: a negative id (which onnxruntime
    # would read from the table's end) is refused before anything runs
    low, high = next(i for i in fm_runtime.load(path).spec.stage["inputs"] if i["name"] == "tokens")["range"]
    assert low == 0 and high >= TOKENS.max()
    s = fm_runtime.load(path)
    for bad in ([1, 2], "tokens", ("tokens",)):
        with pytest.raises(fm_runtime.UsageError, match="cond must be a dict"):
            s.sample(2, cond=bad)
    for bad in ("2", True):
        with pytest.raises(fm_runtime.UsageError, match="guidance must be a number"):
            s.sample(2, cond={"tokens": TOKENS, "spks": SPKS}, guidance=bad)
    for bad in ("01", (True, True), ("0.2", "0.8")):
        with pytest.raises(fm_runtime.UsageError, match="guidance_interval must be two times"):
            s.sample(2, cond={"tokens": TOKENS, "spks": SPKS}, guidance=2.0, guidance_interval=bad)


@needs_node
@pytest.mark.parametrize("inputs, values", [
    ("int", {"cls": [1.5]}), ("int", {"cls": [2.0 ** 60]}), ("float", {"spks": [1e39, 0, 0]}), ("float", {"spks": [1e300, 0, 0]}),
], ids=["fraction-for-int64", "int-past-2**53", "past-float32", "past-float64-range-of-float32"])
def test_stored_nulls_that_do_not_fit_their_dtype_are_refused_at_load(tts, tmp_path, inputs, values):
    src = tmp_path / "conformance-cond.onnx"
    base = {p.key: p.value for p in onnx.load(tts / "tts.onnx").metadata_props}
    items = json.loads(base["fm.inputs"])
    if inputs == "int":     # spks declared int64 for the test of integer nulls (the graph check comes after)
        items.append({"name": "cls", "dtype": "int64", "shape": [1], "role": "condition", "null": "stored"})
    else:
        items[2]["null"] = "stored"
    edited(tts / "tts.onnx", src, inputs=items, null_values=values)
    with pytest.raises(fm_runtime.ModelError, match="fm.null_values .* holds values that are not"):
        fm_runtime.load(src)
    got = node_sample(tmp_path, [(src, [{"n": 1}])])[0]
    assert got["error"] == "ModelError" and "holds values that are not" in got["message"], got


@needs_node
def test_a_binding_past_the_values_a_row_may_hold_is_a_resource_error(tmp_path):
    class Decay(__import__("torch").nn.Module):
        def forward(self, x, t):
            return -x * t[:, None, None]
    export_velocity(Decay(), tmp_path / "sq.onnx", data_shape="T,U", symbols={"T": {"max": 2**24}, "U": {"max": 2**24}})
    with pytest.raises(fm_runtime.ResourceError, match="one row has 400,000,000 values"):
        fm_runtime.load(tmp_path / "sq.onnx").sample(1, dims={"T": 20000, "U": 20000})
    got = node_sample(tmp_path, [(tmp_path / "sq.onnx", [{"n": 1, "dims": {"T": 20000, "U": 20000}}])])[0]
    assert got["error"] == "ResourceError" and "one row has 400,000,000 values" in got["message"], got


@needs_node
def test_lenient_base64_in_the_stage_is_refused_in_both(tts, tmp_path):
    good = json.loads({p.key: p.value for p in onnx.load(tts / "tts.onnx").metadata_props}["fm.condition_stage"])["onnx_base64"]
    for name, text in [("newline", good[:40] + "\n" + good[40:]), ("unpadded", good.rstrip("=") or good[:-1])]:
        path = with_stage(tts, f"b64-{name}.onnx", text)
        py, js = refusals(path, [{"cond": {"tokens": TOKENS, "spks": SPKS}, "seed": 0}], tmp_path)
        assert py == js == ["ModelError"], (name, py, js)


@pytest.mark.parametrize("text", ["AAAA", "!!!"])
def test_fm_run_info_refuses_a_stage_that_sample_refuses(tts, text):
    """info opens the condition stage as sample would: garbage or not base64 is exit 3 in both."""
    from .conftest import run_cli
    path = with_stage(tts, f"info-{len(text)}.onnx", text)
    info = run_cli("fm-run", "info", str(path), check=False)
    assert info.returncode == 3 and "condition_stage" in info.stdout + info.stderr, info.stderr
