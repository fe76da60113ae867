"""Write a velocity network to one ONNX file with the fm.* metadata contract, and prove it.

The file is produced in memory, checked with onnx.checker, run in onnxruntime against torch on
random inputs at several batch sizes, and only then written (atomically). A mismatch raises
ExportError and leaves no file behind.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

import fm_runtime
from fm_runtime.contract import build_metadata, read_spec
from fm_runtime.errors import EXIT_EXPORT, FmError
from fm_runtime.io import atomic_write
from fm_runtime.solvers import DEFAULT_SOLVER, DEFAULT_STEPS

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


def _to_onnx(model: torch.nn.Module, data_shape: tuple[int, ...]) -> onnx.ModelProto:
    """torch -> ONNX (dynamo exporter), dynamic batch, weights inline."""
    x = torch.randn(4, *data_shape)
    t = torch.rand(4)
    batch = torch.export.Dim("batch")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (x, t), dynamo=True, input_names=["x", "t"], output_names=["v"],
            dynamic_shapes={"x": {0: batch}, "t": {0: batch}}, external_data=False,
            opset_version=OPSET, verbose=False)
    return program.model_proto


def verify_against_torch(model: torch.nn.Module, onnx_bytes: bytes, data_shape: tuple[int, ...],
                         batches=VERIFY_BATCHES, atol: float = VERIFY_ATOL, seed: int = 0) -> float:
    """Run the ONNX bytes in onnxruntime and the torch model on the same random (x, t); return
    the largest abs difference, or raise ExportError if any exceeds atol * max(1, |v_torch|)."""
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    worst = 0.0
    for b in batches:
        x = (2.0 * rng.standard_normal((b, *data_shape))).astype(np.float32)
        t = rng.random(b).astype(np.float32)
        t[:2] = [0.0, 1.0][:b]
        with torch.no_grad():
            ref = model(torch.from_numpy(x), torch.from_numpy(t)).numpy()
        got = sess.run(["v"], {"x": x, "t": t})[0]
        if got.shape != ref.shape:
            raise ExportError(f"export check failed: onnxruntime output shape {list(got.shape)} != "
                              f"torch {list(ref.shape)} at batch {b}")
        diff = np.abs(got - ref)
        worst = max(worst, float(diff.max()))
        if not np.all(diff <= atol * np.maximum(1.0, np.abs(ref))):
            raise ExportError(f"export check failed: onnxruntime and torch differ by {float(diff.max()):.3g} "
                              f"(allowed {atol:g}) at batch {b}; no file written")
    return worst


def export_model(model: torch.nn.Module, config: dict, out: str | Path, *,
                 default_solver: str = DEFAULT_SOLVER, default_steps: int = DEFAULT_STEPS) -> ExportReport:
    """Export a trained velocity network with its checkpoint config to `out`."""
    model = model.eval()
    data_shape = tuple(config["data_shape"])
    proto = _to_onnx(model, data_shape)
    proto.producer_name = "fm-runtime"
    proto.producer_version = fm_runtime.__version__
    proto.doc_string = f"flow-matching velocity model ({config.get('dataset', 'unknown data')}); see fm.* metadata"
    training = {k: config[k] for k in ("dataset", "steps", "batch_size", "lr", "optimizer", "seed",
                                       "final_loss") if k in config}
    meta = build_metadata(
        data_shape=data_shape, path=config["path"], prediction=config.get("prediction", "velocity"),
        default_solver=default_solver, default_steps=default_steps, training=training,
        architecture=config.get("architecture", {}),
        producer={"fm_runtime": fm_runtime.__version__, "torch": str(torch.__version__),
                  "onnx": onnx.__version__, "opset": OPSET})
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in proto.graph.initializer):
        raise ExportError("export produced external-data weights; refusing (one-file models only)")
    if proto.ByteSize() > _MAX_PROTO:
        raise ExportError("model is larger than 2 GB, which one ONNX file cannot hold")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"onnx.checker rejected the export: {' '.join(str(e).split())[:300]}") from None
    data = proto.SerializeToString()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    io_table = lambda args: {a.name: (a.type, list(a.shape)) for a in args}  # noqa: E731
    read_spec(str(out), dict(sess.get_modelmeta().custom_metadata_map),
              io_table(sess.get_inputs()), io_table(sess.get_outputs()))
    worst = verify_against_torch(model, data, data_shape)
    atomic_write(out, lambda tmp: Path(tmp).write_bytes(data))
    return ExportReport(str(out), len(data), OPSET, worst, VERIFY_BATCHES)


def export_checkpoint(checkpoint: str | Path, out: str | Path, **kwargs) -> ExportReport:
    from training.train import load_checkpoint

    model, config = load_checkpoint(checkpoint)
    return export_model(model, config, out, **kwargs)
