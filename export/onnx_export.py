"""Write a velocity network to one ONNX file with the fm.* metadata contract, and prove it.

The file is produced in memory, checked with onnx.checker, run in onnxruntime against torch on
random inputs at several batch sizes, and only then written (atomically). A mismatch raises
ExportError and leaves no file behind.
"""
from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

import fm_runtime
from fm_runtime.contract import build_metadata, io_table, read_spec
from fm_runtime.errors import EXIT_EXPORT, FmError
from fm_runtime.io import atomic_write
from fm_runtime.solvers import DEFAULT_SOLVER, DEFAULT_STEPS

from training.data import DATASETS, fresh_data

from . import variants
from .bake import BakedSampler, ConditionalJvpVelocity, ExportVelocity, JvpVelocity, parse_bake

OPSET = 20                      # the opset every exported file declares
VERIFY_BATCHES = (1, 7, 256)    # batch sizes the export is checked at
VERIFY_ATOL = 1e-4              # max |onnxruntime - torch| allowed, scaled by max(1, |v|)
_MAX_PROTO = 2**31 - 1          # protobuf limit: beyond it ONNX needs external data, which we refuse


class ExportError(FmError):
    exit_code = EXIT_EXPORT


@dataclass
class ExportReport:
    path: str
    size_bytes: int
    opset: int
    max_abs_diff: float
    batches: tuple[int, ...]
    variant: dict | None = None


def _example_inputs(data_shape: tuple[int, ...], kind: str, b: int, rng: np.random.Generator,
                    num_classes: int = 0, probes: int = 3) -> dict:
    """Random graph inputs for batch b: z for a baked sampler; (x, t) for a velocity graph, plus
    labels y (every class and the "no label" id) for a conditional one; plus K = `probes`
    tangent vectors e [b, K, *shape] for the Jacobian-vector-product graph ("jvp")."""
    x = (2.0 * rng.standard_normal((b, *data_shape))).astype(np.float32)
    if kind == "baked":
        return {"z": x}
    t = rng.random(b).astype(np.float32)
    t[:2] = [0.0, 1.0][:b]
    feed = {"x": x, "t": t}
    if num_classes:
        feed["y"] = (np.arange(b) % (num_classes + 1)).astype(np.int64)
    if kind == "jvp":
        feed["e"] = rng.standard_normal((b, probes, *data_shape)).astype(np.float32)
    return feed


_OUTPUTS = {"velocity": ["v"], "baked": ["x"], "jvp": ["v", "jv"]}


def _to_onnx(module: torch.nn.Module, data_shape: tuple[int, ...], kind: str = "velocity",
             num_classes: int = 0) -> onnx.ModelProto:
    """torch -> ONNX (dynamo exporter), dynamic batch (and probe count), weights inline."""
    inputs = {k: torch.from_numpy(v) for k, v in
              _example_inputs(data_shape, kind, 4, np.random.default_rng(0), num_classes).items()}
    batch, probes = torch.export.Dim("batch"), torch.export.Dim("probes")
    dynamic = {k: {0: batch, 1: probes} if k == "e" else {0: batch} for k in inputs}
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, tuple(inputs.values()), dynamo=True, input_names=list(inputs),
            output_names=_OUTPUTS[kind], dynamic_shapes=dynamic,
            external_data=False, opset_version=OPSET, verbose=False)
    return program.model_proto


def _jvp_reference(velocity: torch.nn.Module):
    """(x, t, [y,] e) -> (v, J e) by torch's own forward-mode autodiff: what the hand-written
    JVP graph is checked against."""
    def run(x, t, *rest):
        y, e = (None, rest[0]) if len(rest) == 1 else rest
        f = (lambda xx: velocity(xx, t)) if y is None else (lambda xx: velocity(xx, t, y))
        jvs = [torch.func.jvp(f, (x,), (e[:, k],))[1] for k in range(e.shape[1])]
        return f(x), torch.stack(jvs, 1)
    return run


def verify_against_torch(module, onnx_bytes: bytes, data_shape: tuple[int, ...],
                         batches=VERIFY_BATCHES, atol: float = VERIFY_ATOL, seed: int = 0,
                         kind: str = "velocity", num_classes: int = 0) -> float:
    """Run the ONNX bytes in onnxruntime and the torch module (or function) on the same random
    inputs; return the largest abs difference over all outputs, or raise ExportError if any
    exceeds atol * max(1, |torch|)."""
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    worst = 0.0
    for b in batches:
        feed = _example_inputs(data_shape, kind, b, rng, num_classes)
        with torch.no_grad():
            refs = module(*(torch.from_numpy(v) for v in feed.values()))
        refs = [r.detach().numpy() for r in (refs if isinstance(refs, tuple) else (refs,))]
        for name, got, ref in zip(_OUTPUTS[kind], sess.run(None, feed), refs):
            if got.shape != ref.shape:
                raise ExportError(f"export check failed: onnxruntime output {name} has shape {list(got.shape)}, "
                                  f"torch {list(ref.shape)} at batch {b}")
            diff = np.abs(got - ref)
            worst = max(worst, float(diff.max()))
            if not np.all(diff <= atol * np.maximum(1.0, np.abs(ref))):
                raise ExportError(f"export check failed: onnxruntime and torch differ by {float(diff.max()):.3g} "
                                  f"(allowed {atol:g}) in output {name} at batch {b}; no file written")
    return worst


def _add_selftest(proto: onnx.ModelProto, data_shape: tuple[int, ...], kind: str, num_classes: int = 0) -> bytes:
    """Record a probe and the file's own output for it (fm.selftest), so the runtime can tell an
    altered file at load time; returns the serialised model."""
    for p in [p for p in proto.metadata_props if p.key == "fm.selftest"]:
        proto.metadata_props.remove(p)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    probe = _example_inputs(data_shape, kind, 4, np.random.default_rng(1234), num_classes, probes=2)
    selftest = {"inputs": {k: v.tolist() for k, v in probe.items()},
                "output": sess.run(None, probe)[0].tolist(), "atol": 1e-3}
    proto.metadata_props.add(key="fm.selftest", value=json.dumps(selftest))
    return proto.SerializeToString()


def _make_variant(proto: onnx.ModelProto, fp32: bytes, config: dict, data_shape, kind: str,
                  num_classes: int, precision: str, quantize: str | None, fmt: str) -> tuple[bytes, dict, str | None]:
    """Apply precision/quantisation/format to the verified float32 model and measure the cost."""
    variant: dict = {"precision": precision, "quantize": quantize, "format": fmt}
    if (precision, quantize, fmt) != ("fp32", None, "onnx"):
        # reduced files are for sampling on small devices: they leave out the divergence graph
        # (log-likelihoods need the float32 ONNX file), which would otherwise outweigh the saving
        for p in [p for p in proto.metadata_props if p.key == "fm.divergence"]:
            proto.metadata_props.remove(p)
    if precision == "fp16":
        proto = variants.to_fp16(proto)
    if quantize == "int8":
        proto = variants.to_int8(proto)

    def encode() -> bytes:
        variants.set_variant_metadata(proto, variant)
        data = _add_selftest(proto, data_shape, kind, num_classes)
        return variants.to_ort_format(data) if fmt == "ort" else data

    out = encode()
    if (precision, quantize, fmt) != ("fp32", None, "onnx"):
        has_data = config.get("dataset") in DATASETS
        if has_data:
            data = fresh_data(config["dataset"], variants.QUALITY_SAMPLES, 2024)
            fresh = fresh_data(config["dataset"], variants.QUALITY_SAMPLES, 2025)
        else:   # no data to compare with: deviation only, on standard-normal noise
            data = fresh = np.random.default_rng(2024).standard_normal((512, *data_shape)).astype(np.float32)
        cost = variants.measure(out, fp32, data, fresh)
        if not has_data:
            for k in ("energy_distance", "energy_distance_fp32", "noise_floor"):
                cost.pop(k)
        variant["vs_fp32"] = cost
        for _ in range(4):    # the file states its own size: settle the number
            out = encode()
            if cost["size_bytes"] == len(out):
                break
            cost["size_bytes"] = len(out)
    ops_config = variants.required_operators(proto) if fmt == "ort" else None
    return out, variant, ops_config


def _check_proto(proto: onnx.ModelProto) -> bytes:
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in proto.graph.initializer):
        raise ExportError("export produced external-data weights; refusing (one-file models only)")
    if proto.ByteSize() > _MAX_PROTO:
        raise ExportError("model is larger than 2 GB, which one ONNX file cannot hold")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"onnx.checker rejected the export: {' '.join(str(e).split())[:300]}") from None
    return proto.SerializeToString()


def jvp_graph(model: torch.nn.Module, data_shape: tuple[int, ...], num_classes: int) -> dict | None:
    """The graph the runtime computes log-likelihoods with, (x, t[, y], e) -> (v, J e), checked
    against torch.func.jvp, as the fm.divergence metadata value (None for networks it is not
    written for)."""
    try:
        module = (ConditionalJvpVelocity if num_classes else JvpVelocity)(model).eval()
    except NotImplementedError:
        return None
    proto = _to_onnx(module, data_shape, "jvp", num_classes)
    proto.producer_name, proto.producer_version = "fm-runtime", fm_runtime.__version__
    data = _check_proto(proto)
    worst = verify_against_torch(_jvp_reference(ExportVelocity(model).eval()), data, data_shape,
                                 kind="jvp", num_classes=num_classes)
    data = _add_selftest(proto, data_shape, "jvp", num_classes)
    return {"onnx_base64": base64.b64encode(data).decode("ascii"), "input_e": "e", "output_jv": "jv",
            "max_abs_diff_vs_torch": worst}


def export_model(model: torch.nn.Module, config: dict, out: str | Path, *,
                 default_solver: str = DEFAULT_SOLVER, default_steps: int = DEFAULT_STEPS,
                 bake: str | None = None, precision: str = "fp32", quantize: str | None = None,
                 fmt: str = "onnx", divergence: bool = True) -> ExportReport:
    """Export a trained velocity network with its checkpoint config to `out`; with
    bake="SOLVER:STEPS", export the whole fixed-step solve as one graph z -> x instead.
    precision="fp16", quantize="int8" and fmt="ort" write smaller variants (see variants.py),
    each measured against the verified float32 export. A velocity file also carries, unless
    divergence=False, the Jacobian-vector-product graph the runtime's log-likelihood uses."""
    if precision not in ("fp32", "fp16") or quantize not in (None, "int8") or fmt not in ("onnx", "ort"):
        raise ExportError(f"unsupported variant: precision={precision}, quantize={quantize}, format={fmt}")
    model = model.eval()
    data_shape = tuple(config["data_shape"])
    module: torch.nn.Module = ExportVelocity(model).eval()
    num_classes = module.num_classes
    baked, kind = None, "velocity"
    if bake:
        if num_classes:
            raise ExportError("--bake is not available for class-conditional models (the label and "
                              "guidance would have to be graph inputs of the unrolled solve); export "
                              "the velocity model")
        solver, steps = parse_bake(bake)
        baked, kind = {"solver": solver, "steps": steps}, "baked"
        module = BakedSampler(model, solver, steps).eval()
    proto = _to_onnx(module, data_shape, kind, num_classes)
    proto.producer_name = "fm-runtime"
    proto.producer_version = fm_runtime.__version__
    what = f"baked {bake} sampler" if bake else "velocity model"
    proto.doc_string = f"flow-matching {what} ({config.get('dataset', 'unknown data')}); see fm.* metadata"
    training = {k: config[k] for k in ("dataset", "steps", "batch_size", "lr", "optimizer", "seed",
                                       "final_loss", "coupling", "prediction", "lr_schedule", "ema",
                                       "label_dropout")
                if k in config}
    meta = build_metadata(   # the graph outputs a velocity whatever the network was trained to predict
        data_shape=data_shape, path=config["path"], prediction="velocity",
        default_solver=default_solver, default_steps=default_steps, training=training,
        architecture=config.get("architecture", {}), baked=baked, num_classes=num_classes,
        value_range=config.get("value_range"),
        divergence=jvp_graph(model, data_shape, num_classes) if divergence and not bake else None,
        producer={"fm_runtime": fm_runtime.__version__, "torch": str(torch.__version__),
                  "onnx": onnx.__version__, "opset": OPSET})
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    data = _check_proto(proto)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    read_spec(str(out), dict(sess.get_modelmeta().custom_metadata_map),
              io_table(sess.get_inputs()), io_table(sess.get_outputs()))
    worst = verify_against_torch(module, data, data_shape, kind=kind, num_classes=num_classes)
    fp32 = _add_selftest(proto, data_shape, kind, num_classes)
    data, variant, ops_config = _make_variant(proto, fp32, config, data_shape, kind, num_classes,
                                              precision, quantize, fmt)
    atomic_write(out, lambda tmp: Path(tmp).write_bytes(data))
    if ops_config is not None:
        atomic_write(f"{out}.required_operators.config", lambda tmp: Path(tmp).write_text(ops_config))
    return ExportReport(str(out), len(data), OPSET, worst, VERIFY_BATCHES, variant)


def export_checkpoint(checkpoint: str | Path, out: str | Path, **kwargs) -> ExportReport:
    from training.train import load_checkpoint

    model, config = load_checkpoint(checkpoint)
    return export_model(model, config, out, **kwargs)
