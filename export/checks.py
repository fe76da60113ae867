"""Checks every exported graph goes through, without torch: example inputs, the checker, and
the self-test a file carries (shared by export_velocity and --add-divergence)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from fm_runtime.model.contract import put_metadata
from fm_runtime.model.spec import NAMES

from .errors import ExportError

_MAX_PROTO = 2**31 - 1          # protobuf limit: beyond it ONNX needs external data, which we refuse


def example_inputs(data_shape: tuple[int, ...], kind: str, b: int, rng: np.random.Generator,
                   num_classes: int = 0, probes: int = 3, one_time: bool = False) -> dict:
    """Random graph inputs for batch b: z for a baked sampler; (x, t) for a velocity graph, (x, t,
    s) for a flow map ("map": s at or before t, some rows s = t), plus
    labels y (every class and the "no label" id) for a conditional one; plus K = `probes`
    tangent vectors e [b, K, *shape] for the Jacobian-vector-product graph ("jvp"). one_time:
    every row at the same t (networks that take t as one scalar)."""
    x = (2.0 * rng.standard_normal((b, *data_shape))).astype(np.float32)
    if kind == "baked":
        return {NAMES.z: x}
    t = np.full(b, rng.random(), np.float32) if one_time else rng.random(b).astype(np.float32)
    if not one_time:
        t[:2] = [0.0, 1.0][:b]
    feed = {NAMES.x: x, NAMES.t: t}
    if kind == "map":
        feed[NAMES.s] = (t * rng.random(b)).astype(np.float32) if not one_time else np.full(b, t[0] * rng.random(), np.float32)
        feed[NAMES.s][1::3] = t[1::3]
    if num_classes:
        feed[NAMES.y] = (np.arange(b) % (num_classes + 1)).astype(np.int64)
    if kind == "jvp":
        feed[NAMES.e] = rng.standard_normal((b, probes, *data_shape)).astype(np.float32)
    return feed


def add_selftest(proto: onnx.ModelProto, data_shape: tuple[int, ...], kind: str, num_classes: int = 0,
                 probe: dict | None = None) -> bytes:
    """Record a probe (default: example inputs; a conditioned graph brings its own) and the
    file's own output for it (fm.selftest), so the runtime can tell an altered file at load
    time; returns the serialised model."""
    put_metadata(proto.metadata_props, "selftest", None)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    probe = probe or example_inputs(data_shape, kind, 4, np.random.default_rng(1234), num_classes, probes=2)
    selftest = {"inputs": {k: v.tolist() for k, v in probe.items()},
                "output": sess.run(None, probe)[0].tolist(), "atol": 1e-3}
    put_metadata(proto.metadata_props, "selftest", selftest)
    return proto.SerializeToString()


def check_proto(proto: onnx.ModelProto) -> bytes:
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in proto.graph.initializer):
        raise ExportError("export produced external-data weights; refusing (one-file models only)")
    if proto.ByteSize() > _MAX_PROTO:
        raise ExportError("model is larger than 2 GB, which one ONNX file cannot hold")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"onnx.checker rejected the export: {' '.join(str(e).split())[:300]}") from None
    return proto.SerializeToString()
