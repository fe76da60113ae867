"""Opening a model file: onnxruntime session options, provider checks, load failures that say
what is wrong, the contract read from the file, and the self-test the exporter recorded."""
from __future__ import annotations

import base64
import os
from importlib import resources
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..errors import ModelError, UsageError
from . import providers as _providers
from .contract import ModelSpec, io_table, read_selftest, read_spec
from .control import SELFTEST_SECONDS, graph_errors, one_line, time_limit
from .preflight import allowance, check_graph_memory

DEFAULT_MODEL = "moons.onnx"
MAX_MODEL_BYTES = 2**31 - 1     # protobuf's limit: onnxruntime cannot parse a larger one-file model


def default_model_path() -> Path:
    """The small moons model shipped inside the package."""
    return Path(str(resources.files("fm_runtime.assets").joinpath(DEFAULT_MODEL)))


def load_failure(where: str, e: Exception) -> ModelError:
    """Name the problem when onnxruntime refuses a file."""
    msg = one_line(e)
    low = msg.lower()
    if "external" in low:
        return ModelError(f"{where}: the model keeps weights in a separate external-data file; "
                          "fm-runtime loads one-file models only (re-export, or onnx.save(..., "
                          "save_as_external_data=False))")
    if "not a registered function/op" in low or "could not find an implementation" in low:
        return ModelError(f"{where}: the model uses an operator this onnxruntime does not provide "
                          f"(custom operators are not supported): {msg}")
    if "protobuf parsing failed" in low or "invalid_protobuf" in low:
        return ModelError(f"{where}: not an ONNX model, or truncated or corrupted (cannot parse it)"
                          + _what_else(where))
    return ModelError(f"{where}: not a loadable ONNX model ({msg})")


def _what_else(where: str) -> str:
    """A hint when the file is something else fm-runtime users meet: a torch checkpoint."""
    try:
        with open(where, "rb") as f:
            head = f.read(2)
    except OSError:
        return ""
    if head == b"PK":
        return ("; it looks like a PyTorch checkpoint (a zip): export it first with "
                f"`fm-export {where} --out model.onnx`")
    return ""


def session_options(intra_op_threads: int = 1) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = int(intra_op_threads)
    opts.inter_op_num_threads = 1      # intra-op threads spin between nodes (onnxruntime's default): without
    return opts                         # it a baked U-Net's batch-1 solve on 2 threads ran 1.40x slower


def runner(session: ort.InferenceSession):
    """session.run, or on the CPU provider the binding it wraps: the wrapper checks the feed's
    names and ownership and would fall back to another provider on a provider failure, which
    costs 4-5 us a call (a quarter of a batch-1 call of a small MLP) and buys nothing for feeds
    this runtime built and checked itself on a provider that has no fallback."""
    inner = getattr(session, "_sess", None)
    return inner.run if inner is not None and session.get_providers()[0] == "CPUExecutionProvider" else session.run


def open_model(path: str | os.PathLike | None, provider: str = "cpu", *, data_shape=None,
               x_name: str | None = None, t_name: str | None = None, intra_op_threads: int = 1,
               cuda_graph: bool = False, allow_loops: bool = False
               ) -> tuple[ort.InferenceSession, ModelSpec, str, ort.SessionOptions]:
    """(session, spec, where, options) for a model file (None: the shipped moons model), its
    self-test passed. Raises ModelError, ProviderError or UsageError with one line. allow_loops:
    run a Loop whose trip count the file does not fix (preflight.check_graph_memory)."""
    p = default_model_path() if path is None else Path(path)
    where = str(p)
    if not p.exists():
        raise ModelError(f"{where}: model file not found")
    if p.is_dir():
        raise ModelError(f"{where}: is a directory, not a model file")
    size = p.stat().st_size
    if size == 0:
        raise ModelError(f"{where}: file is empty")
    if size > MAX_MODEL_BYTES:
        raise ModelError(f"{where}: {size / 2**30:.1f} GiB is larger than a one-file ONNX model can be "
                         "(2 GiB); fm-runtime does not read it")
    if not p.is_file():
        raise ModelError(f"{where}: not a regular file")
    wanted = _providers.resolve(provider)
    opts = session_options(intra_op_threads)
    provider_options = None
    if cuda_graph:
        if wanted[0] != "CUDAExecutionProvider":
            raise UsageError("cuda_graph needs provider='cuda'")
        provider_options = [{"enable_cuda_graph": "1"}, {}]
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ModelError(f"{where}: cannot read the file ({e.strerror})") from None
    check_graph_memory(data, where, allow_loops=allow_loops)    # before onnxruntime folds a bomb's constants
    try:
        # from bytes, so a reference to external data cannot silently load a sidecar file
        session = ort.InferenceSession(data, sess_options=opts, providers=wanted,
                                       provider_options=provider_options)
    except Exception as e:  # onnxruntime raises its own exception types per failure
        raise load_failure(where, e) from None
    _providers.check_active(wanted, session.get_providers())
    if isinstance(data_shape, int):
        data_shape = (data_shape,)
    try:
        metadata = dict(session.get_modelmeta().custom_metadata_map)
        inputs, outputs = io_table(session.get_inputs()), io_table(session.get_outputs())
    except UnicodeDecodeError:
        raise ModelError(f"{where}: the model's metadata or input/output names are not valid UTF-8") from None
    spec = read_spec(where, metadata, inputs, outputs, data_shape=data_shape, x_name=x_name, t_name=t_name)
    self_test(session, spec.selftest, where)
    if cuda_graph and spec.kind != "baked":
        raise UsageError(f"{where}: cuda_graph needs a baked sampler (fm-export --bake); the velocity "
                         "loop changes its bindings every step")
    return session, spec, where, opts


def open_divergence(spec: ModelSpec, path: str, providers: list[str], opts,
                    allow_loops: bool = False) -> ort.InferenceSession:
    """The divergence graph a model file carries in fm.divergence, its own self-test passed."""
    return _open_embedded(spec.divergence["onnx_base64"], "divergence", path, providers, opts, allow_loops)


def open_stage(spec: ModelSpec, path: str, providers: list[str], opts, allow_loops: bool = False) -> ort.InferenceSession:
    """The condition stage a model file carries in fm.condition_stage, its own self-test passed."""
    return _open_embedded(spec.stage["onnx_base64"], "condition_stage", path, providers, opts, allow_loops)


def _open_embedded(b64: str, key: str, path: str, providers: list[str], opts,
                   allow_loops: bool) -> ort.InferenceSession:
    where = f"{path} ({key.replace('_', ' ')} graph)"
    try:
        data = base64.b64decode(b64, validate=True)
    except ValueError:
        raise ModelError(f"{path}: fm.{key} does not hold base64 data", key=f"fm.{key}") from None
    opts = opts or ort.SessionOptions()
    check_graph_memory(data, where, allowance(len(b64)), allow_loops)
    try:
        session = ort.InferenceSession(data, sess_options=opts, providers=providers)
    except Exception as e:
        raise ModelError(f"{where} does not hold a loadable graph ({one_line(e)})") from None
    self_test(session, read_selftest(where, dict(session.get_modelmeta().custom_metadata_map)), where)
    return session


def self_test(session: ort.InferenceSession, probe: dict, where: str) -> None:
    """Run the probe the exporter recorded (fm.selftest) and compare: catches weights altered
    after export (bit flips, bad copies) and providers that compute something else."""
    if not probe:
        return
    dtypes = {i.name: np.int64 if i.type == "tensor(int64)" else np.float32 for i in session.get_inputs()}
    try:
        feed = {k: np.asarray(v, dtypes.get(k, np.float32)) for k, v in probe["inputs"].items()}
        want = np.asarray(probe["output"], np.float32)
        atol = float(probe.get("atol", 1e-3))
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError):     # e.g. a label past int64
        raise ModelError(f"{where}: metadata fm.selftest is malformed") from None
    if set(feed) != set(dtypes):
        raise ModelError(f"{where}: fm.selftest feeds {', '.join(sorted(feed))}, but the graph takes "
                         f"{', '.join(sorted(dtypes))}")
    with graph_errors(where, "fm.selftest does not fit the graph"), \
            time_limit(SELFTEST_SECONDS, f"{where}: the self-test (fm.selftest)") as opts:
        got = session.run(None, feed, opts)[0]
    with np.errstate(all="ignore"):
        same = got.shape == want.shape and bool(np.all(np.abs(got - want) <= atol * np.maximum(1.0, np.abs(want))))
        diff = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("nan")
    if not same:
        raise ModelError(f"{where}: fails its self-test: the graph's output differs from the values "
                         f"recorded at export (max |diff| {diff:.3g}); the file was altered or corrupted")
