"""`fm-export --add-divergence`: give an existing velocity ONNX file (fm-export's, or a plain one
written by anything) the divergence graph log-likelihoods need. No torch: the graph is
differentiated as it is (jvp.py) and checked against central finite differences of the file's own
velocity, which catches a wrong rule (errors of order 1) while allowing float32 rounding."""
from __future__ import annotations

import base64
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

import fm_runtime
from fm_runtime.errors import FmError
from fm_runtime.model import control
from fm_runtime.model.contract import build_metadata, io_table, read_spec, with_divergence, write_metadata
from fm_runtime.model.preflight import check_graph_memory
from fm_runtime.model.session import one_line
from fm_runtime.model.spec import NAMES
from fm_runtime.tools.io import atomic_write

from .checks import add_selftest, check_proto, example_inputs
from .errors import ExportError
from .jvp import divergence_graph

FD_STEP = 1e-2          # finite-difference step, relative to max(1, |x|)
FD_MEDIAN_RTOL = 1e-2   # a median relative deviation above this means the transform is wrong


def diagonal(proto: onnx.ModelProto, s_name: str = NAMES.s, t_name: str = NAMES.t) -> onnx.ModelProto:
    """A flow-map graph u(x, s, t) with its start-time input removed and fed from t: the velocity
    v(x, t) = u(x, t, t), from which a flow map's divergence graph is derived."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    kept = [i for i in g.input if i.name != s_name]
    del g.input[:]
    g.input.extend(kept)
    g.node.insert(0, onnx.helper.make_node("Identity", [t_name], [s_name], name="flow_map/s_is_t"))
    return out


def finite_difference_check(velocity: bytes, jvp: bytes, data_shape, spec, seed: int = 0) -> dict:
    """Compare J e from the divergence graph with (v(x + h e) - v(x - h e)) / 2h on random rows."""
    vel = ort.InferenceSession(velocity, providers=["CPUExecutionProvider"])
    div = ort.InferenceSession(jvp, providers=["CPUExecutionProvider"])
    feed = example_inputs(data_shape, "jvp", 64, np.random.default_rng(seed), spec.num_classes, probes=2)
    _, jv = div.run(None, feed)
    x0, t, probes = feed[NAMES.x], feed[NAMES.t], feed[NAMES.e]
    t = t if spec.t_rank == 1 else t[:, None]
    extra = {spec.y_name: feed[NAMES.y]} if spec.num_classes else {}
    rel = []
    for k in range(probes.shape[1]):
        e = probes[:, k]
        h = FD_STEP * np.maximum(1.0, np.abs(x0).reshape(len(e), -1).max(1))
        h = h.reshape(-1, *[1] * len(data_shape)).astype(np.float32)
        plus, minus = (vel.run([spec.v_name], {spec.x_name: x0 + s * h * e, spec.t_name: t, **extra})[0]
                       for s in (1, -1))
        fd = (plus - minus) / (2 * h)
        scale = np.maximum(1.0, np.abs(fd).reshape(len(e), -1).max(1))
        rel.append(np.abs(jv[:, k] - fd).reshape(len(e), -1).max(1) / scale)
    rel = np.concatenate(rel)
    return {"median_rel_diff_vs_finite_differences": float(np.median(rel)),
            "max_rel_diff_vs_finite_differences": float(rel.max())}


def add_divergence(src: str | Path, out: str | Path, *, data_shape=None, x_name: str | None = None,
                   t_name: str | None = None) -> dict:
    """Write `out`: the velocity file `src` with a divergence graph (fm.divergence) added; a plain
    file also gets the fm.* metadata the runtime would otherwise need options for. Returns the
    fm.divergence value without the graph bytes. Raises ExportError / ModelError."""
    where = str(src)
    data = Path(src).read_bytes()
    check_graph_memory(data, where)     # fm-run's pre-flight: a constant-folding or node bomb is refused first
    try:
        model = onnx.load_from_string(data)
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ExportError(f"{where}: not a loadable ONNX model ({one_line(e)})") from None
    meta = dict(sess.get_modelmeta().custom_metadata_map)
    spec = read_spec(where, meta, io_table(sess.get_inputs()), io_table(sess.get_outputs()),
                     data_shape=data_shape, x_name=x_name, t_name=t_name)
    if spec.kind != "velocity":
        raise ExportError(f"{where} is a baked sampler; the divergence needs the velocity graph")
    if spec.variant and (spec.variant.get("precision", "fp32"), spec.variant.get("quantize"),
                         spec.variant.get("format", "onnx")) != ("fp32", None, "onnx"):
        raise ExportError(f"{where} is a reduced-precision or ORT-format variant; add the divergence to the "
                          "float32 .onnx file")
    velocity = model
    if spec.flow_map:           # a flow map: the divergence of its velocity u(x, t, t)
        velocity, spec = diagonal(model, spec.s_name, spec.t_name), replace(spec, s_name=None)
    try:
        proto = divergence_graph(velocity, x_name=spec.x_name, t_name=spec.t_name, v_name=spec.v_name,
                                 y_name=spec.y_name if spec.num_classes else None, t_rank=spec.t_rank)
    except NotImplementedError as e:
        raise ExportError(f"{where}: no forward-mode rule for {e}; log-likelihoods are not available for "
                          "this graph (see export/jvp_rules.py for the operators covered)") from None
    proto.producer_name, proto.producer_version = "fm-runtime", fm_runtime.__version__
    data = check_proto(proto)
    try:
        check = finite_difference_check(velocity.SerializeToString(), data, spec.data_shape, spec)
        data = add_selftest(onnx.load_from_string(data), spec.data_shape, "jvp", spec.num_classes)
    except (FmError, KeyboardInterrupt):
        raise
    except Exception as e:      # onnxruntime failing on the graphs at the check's batch of 4 rows
        control.poll_stop()     # or ended by Ctrl-C, SIGTERM, --timeout: say that instead
        raise ExportError(f"{where}: the velocity or the derived divergence graph failed while being checked on "
                          f"a batch of rows ({one_line(e)}); nothing written") from None
    if check["median_rel_diff_vs_finite_differences"] > FD_MEDIAN_RTOL:
        raise ExportError(f"{where}: the divergence graph disagrees with finite differences of the velocity "
                          f"(median relative difference {check['median_rel_diff_vs_finite_differences']:.2g}); "
                          "nothing written")
    value = {"onnx_base64": base64.b64encode(data).decode("ascii"), "input_e": NAMES.e, "output_jv": NAMES.jv, **check}
    if not spec.format_version:   # a plain file: write the metadata it was loaded with
        meta = {**meta, **build_metadata(data_shape=spec.data_shape, path={"name": "unknown"},
                                         graph_names=(spec.x_name, spec.t_name, spec.v_name))}
    new = with_divergence(meta, value)
    write_metadata(model.metadata_props, new)
    atomic_write(out, lambda tmp: Path(tmp).write_bytes(model.SerializeToString()))
    return {k: v for k, v in value.items() if k != "onnx_base64"}
