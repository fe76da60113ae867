"""Write a velocity network to one ONNX file with the fm.* metadata contract, and prove it.

`export_velocity` is the one export path, for fm-runtime's own networks and anyone else's
(adapters.py says how a network is called). The file is produced in memory, checked with
onnx.checker, run in onnxruntime against torch on random inputs at several batch sizes, and only
then written (atomically). A mismatch raises ExportError and leaves no file behind. A velocity
file also carries the divergence graph for log-likelihoods, made from the exported graph itself
(jvp.py) and checked against torch's own forward-mode autodiff.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field, replace
from pathlib import Path
from time import perf_counter as time_module
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
import torch

import fm_runtime
from fm_runtime.model.contract import build_metadata, io_table, read_spec, write_metadata
from fm_runtime.model.spec import NAMES
from fm_runtime.solve.schedules import parse_schedule
from fm_runtime.solve.solvers import DEFAULT_SOLVER, DEFAULT_STEPS, get_solver
from fm_runtime.tools.io import atomic_write

from . import variants
from .adapters import VelocityAdapter, check_adapter
from .attention import fuse_attention
from .bake import BakedSampler, fast_elu, parse_bake
from .checks import add_selftest, check_proto
from .divergence import diagonal
from .errors import ExportError
from .flowmap import Diagonal
from .fold import fold_norm_affine, fold_time_branches, fold_time_columns
from .ids import id_ranges
from .jvp import divergence_graph
from .signature import Signature
from .stage import export_stage, stage_inputs
from .torch_onnx import export_program
from .unroll import Guide, unroll, unrollable
from .verify import (
    OUTPUT_NAMES,
    VERIFY_BATCHES,
    check_convention,
    example_feed,
    jvp_reference,
    structured_shapes,
    verify_against_torch,
)

OPSET = 20                      # the opset every exported file declares


@dataclass
class ExportReport:
    path: str
    size_bytes: int
    opset: int
    max_abs_diff: float
    batches: tuple[int, ...]
    variant: dict | None = None
    divergence: str = "none"            # what the file offers for log-likelihoods, in words
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    flow_map: bool = False              # the graph is a flow map u(x, s, t) (or, baked, jumps of one)
    output_field: str = ""              # where the network's output held the velocity: "", "[0]", ".sample", "['key']"




def _to_onnx(module: torch.nn.Module, data_shape: tuple[int, ...], kind: str = "velocity",
             num_classes: int = 0, sig: Signature | None = None) -> onnx.ModelProto:
    """torch -> ONNX (dynamo exporter), dynamic batch (and every symbol of `sig` dynamic, shared
    by the inputs that name it), weights inline; torch's failures become one ExportError line."""
    feed, dynamic = example_feed(data_shape, kind, 4, np.random.default_rng(0), num_classes, sig)
    inputs = {k: torch.from_numpy(v) for k, v in feed.items()}
    try:
        return export_program(module, tuple(inputs.values()), what="the network", input_names=list(inputs),
                              output_names=OUTPUT_NAMES[kind], dynamic_shapes=structured_shapes(dynamic, kind),
                              opset_version=OPSET)
    except ExportError as e:
        raise ExportError(f"{e}; a network that torch.export can trace with a dynamic batch exports") from None


def _divergence(velocity: onnx.ModelProto, adapter: VelocityAdapter, data_shape, num_classes: int,
                one_time: bool, sig: Signature | None = None) -> tuple[dict, str]:
    """The fm.divergence value (the graph (x, t[, y], e) -> (v, J e), differentiated from the
    exported velocity graph and checked against torch autodiff), and what it offers in words.
    Operators without a forward-mode rule are recorded instead, and named."""
    try:
        proto = divergence_graph(velocity, x_name=NAMES.x, t_name=NAMES.t, v_name=NAMES.v,
                                 y_name=NAMES.y if num_classes else None, extras=tuple(sig.names) if sig else ())
    except NotImplementedError as e:
        return {"unsupported_ops": str(e).split(", ")}, f"none: no forward-mode rule for {e}"
    proto.producer_name, proto.producer_version = "fm-runtime", fm_runtime.__version__
    proto = fast_elu(proto)
    worst = verify_against_torch(jvp_reference(adapter, bool(num_classes)), check_proto(proto), data_shape,
                                 kind="jvp", num_classes=num_classes, one_time=one_time, sig=sig)
    probe = example_feed(data_shape, "jvp", 4, np.random.default_rng(1234), num_classes, sig)[0] if sig else None
    data = add_selftest(proto, data_shape, "jvp", num_classes, probe)
    return ({"onnx_base64": base64.b64encode(data).decode("ascii"), "input_e": NAMES.e, "output_jv": NAMES.jv,
             "max_abs_diff_vs_torch": worst}, f"yes (J.v graph, max |diff| vs torch autodiff {worst:.1e})")


def export_velocity(net: torch.nn.Module, out: str | Path, *, data_shape, call: str | Callable = "x,t",
                    time: str = "B", num_classes: int = 0, path: dict | None = None,
                    inputs: dict | list | None = None, symbols: dict | None = None, nulls: dict | None = None,
                    time_convention: str = "noise-at-0", time_scale: float = 1.0, condition: dict | None = None,
                    default_solver: str | None = None, default_steps: int | None = None,
                    default_schedule=None, bake: str | None = None, bake_guidance: bool = False, precision: str = "fp32", quantize: str | None = None,
                    fmt: str = "onnx", divergence: bool = True, training: dict | None = None,
                    architecture: dict | None = None, value_range: list | None = None,
                    reference_data: tuple[np.ndarray, np.ndarray] | None = None, force: bool = False,
                    fuse: bool = True, progress: Callable[[str], None] | None = None) -> ExportReport:
    """Export any PyTorch velocity network v(x, t[, y]) to one verified, self-describing file.

    data_shape: shape of one sample ([2], [1, 8, 8], ...). call / time: how the network is
    called (see export.adapters: "x,t", "t,x", "cat(x,t)", "x=,t=", with ",y" for labels, or a
    callable (net, x, t, y) -> v). num_classes > 0: labels 0..C-1, and C meaning "no label".
    path: optional metadata of the probability path it was trained on. bake="SOLVER:STEPS": the
    whole fixed-step solve as one graph z -> x instead, on the time grid of default_schedule
    (fm_runtime.solve.schedules; for a velocity file, the schedule fm-run uses when none is given); a
    conditioned network's baked graph takes its inputs under their own names beside z, and with
    bake_guidance also guidance_scale (w per row), guiding against the declared nulls (zeros or
    stored) in every evaluation. precision="fp16", quantize="int8",
    fmt="ort": smaller variants, each measured against the float32 export (and, given
    reference_data = two independent draws of real data, for quality too); a variant over its
    quality budget (export.variants.over_budget) is refused unless `force`. divergence: add the
    graph log-likelihoods use (velocity files).

    Conditioned nets (contract version 4): data_shape may name symbols ([16, "T"] or "16,T");
    inputs {name: "float32[16,T]" | "float32[1,T]:mask" | dict} are the extra graph inputs, passed
    where `call` names them ("x,mask,mu,t,spks"), roles condition (default), mask, guidance,
    static; symbols {"T": {"min", "max", "multiple_of"}} bound them; nulls are what guidance
    replaces a condition with: "zeros", "stage" (the condition stage's output for a request of
    zeros: the empty prompt) or an array stored in the file (1 along each symbol). time_convention "noise-at-1" / time_scale (1000) adapt
    nets trained with noise at t = 1 and/or scaled time. condition {"module", "inputs": {"tokens":
    "int64[L]"}, "outputs": ["mu", ...]}: a condition stage, run once per request, that makes those
    inputs from what a request gives. progress(text) is told each stage as it starts (large
    networks take minutes). A call naming two times (s and t, or d = t - s: export.adapters) makes a
    flow-map file (contract version 5): the graph takes s beside t and returns the average velocity
    u(x, s, t); its default solver is jump:1 (one evaluation per sample), and its divergence graph is
    that of u(x, t, t). default_solver / default_steps: the file's (None: jump:1 for a flow map,
    else midpoint:8). Raises ExportError (exit code 8) with one line."""
    clock = time_module()

    def stage(text: str) -> None:
        if progress is not None:
            progress(f"{text} ({time_module() - clock:.0f} s)")
    if precision not in ("fp32", "fp16") or quantize not in (None, "int8") or fmt not in ("onnx", "ort"):
        raise ExportError(f"unsupported variant: precision={precision}, quantize={quantize}, format={fmt}")
    sig, stage_items, data_shape = _conditioning(data_shape, inputs, symbols, nulls, condition, bake, num_classes)
    if path is not None and (not isinstance(path, dict) or not isinstance(path.get("name"), str)):
        raise ExportError(f"path must be a dict with a name, e.g. {{'name': 'ot', 'sigma_min': 0.0}}; got {path!r}")
    adapter = VelocityAdapter(net, call, time, num_classes, tuple(sig.names) if sig else (),
                              time_convention, time_scale).eval()
    # where the network came from, for fm-run info (fm-export --module names its factory instead)
    architecture = architecture or {"type": "external", "source": f"{type(net).__module__}:{type(net).__qualname__}"}
    if sig:
        check_adapter(adapter, sig.concrete(data_shape, sig.sizes()), sig.examples(3, np.random.default_rng(0), sig.sizes()))
    else:
        check_adapter(adapter, data_shape)
    one_time = time == "scalar"
    kind, baked, module = "map" if adapter.flow_map else "velocity", None, adapter
    default_solver = default_solver or ("jump" if adapter.flow_map else DEFAULT_SOLVER)
    default_steps = default_steps or (1 if adapter.flow_map else DEFAULT_STEPS)
    try:
        schedule = parse_schedule(default_schedule)
    except ValueError as e:
        raise ExportError(f"schedule: {e}") from None
    file_sig, guide = sig, None         # what the file declares: a baked file's nulls are inside its graph
    if bake:
        (baked, module, guide, file_sig), kind = _baked(adapter, bake, num_classes, schedule, sig, bake_guidance), "baked"
    elif bake_guidance:
        raise ExportError("bake_guidance (--bake-guidance) bakes guidance into a baked sampler; give bake too")
    elif schedule.steps:
        default_steps = schedule.steps
    stage("tracing the network with torch.onnx")
    proto, traced = _trace(adapter, module, data_shape, kind, num_classes, sig, baked, schedule, guide)
    if file_sig and traced is not None:      # ids an embedding takes: the readers refuse others
        ranges = id_ranges(traced, {i["name"] for i in file_sig.inputs if i["dtype"] == "int64"})
        file_sig = replace(file_sig, inputs=[dict(i, range=ranges[i["name"]]) if i["name"] in ranges else i
                                             for i in file_sig.inputs])
    velocity_proto, velocity_net = (diagonal(proto), Diagonal(adapter)) if kind == "map" else (proto, adapter)
    if divergence and not bake:
        stage("deriving the log-likelihood graph and checking it against torch autodiff")
    div_meta, div_text = (_divergence(velocity_proto, velocity_net, data_shape, num_classes, one_time, sig)
                          if divergence and not bake else (None, "no (baked)" if bake else "no"))
    feed = (lambda b: example_feed(data_shape, kind, b, np.random.default_rng(b), num_classes, file_sig)[0]) \
        if kind == "baked" else None
    proto = _graph_passes(proto, fuse, feed)
    proto.producer_name, proto.producer_version = "fm-runtime", fm_runtime.__version__
    what = f"baked {bake} sampler" if bake else ("flow map" if kind == "map" else "velocity model")
    proto.doc_string = f"flow-matching {what} ({(training or {}).get('dataset', 'unknown data')}); see fm.* metadata"
    if condition:
        stage("exporting the condition stage")
    meta = build_metadata(   # the graph outputs a velocity whatever the network was trained to predict
        data_shape=data_shape, path=path or {"name": "unknown"}, prediction="velocity",
        default_solver=default_solver, default_steps=default_steps, default_schedule=schedule, training=training,
        architecture=architecture, baked=baked, num_classes=num_classes, value_range=value_range,
        divergence=div_meta, input_s=NAMES.s if kind == "map" else None, producer={"fm_runtime": fm_runtime.__version__, "torch": str(torch.__version__),
                                       "onnx": onnx.__version__, "opset": OPSET},
        **(file_sig.metadata() if file_sig else {}),
        stage=export_stage(condition, stage_items, sig, OPSET) if condition else None)
    write_metadata(proto.metadata_props, meta)
    data = check_proto(proto)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    read_spec(str(out), dict(sess.get_modelmeta().custom_metadata_map),
              io_table(sess.get_inputs()), io_table(sess.get_outputs()))
    stage(f"checking onnxruntime against torch at batch sizes {', '.join(map(str, VERIFY_BATCHES))}")
    worst = verify_against_torch(module, data, data_shape, kind=kind, num_classes=num_classes, one_time=one_time,
                                 sig=file_sig)
    if kind != "map" and traced is not None and (adapter.flip or adapter.custom is not None or adapter.scale != 1.0):
        check_convention(adapter, traced.SerializeToString(), data_shape, num_classes, sig)
    probe = example_feed(data_shape, kind, 4, np.random.default_rng(1234), num_classes, file_sig)[0] if sig else None
    fp32 = add_selftest(proto, data_shape, kind, num_classes, probe)
    if (precision, quantize, fmt) != ("fp32", None, "onnx"):
        stage(f"making the {'/'.join(v for v in (precision, quantize, fmt) if v not in ('fp32', None, 'onnx'))} "
              "variant and measuring it against float32")
    data, variant, ops_config, costly = variants.make_variant(proto, fp32, reference_data, data_shape, kind, num_classes,
                                                              precision, quantize, fmt, probe, file_sig, force)
    _write(out, data, ops_config)
    return ExportReport(str(out), len(data), OPSET, worst, VERIFY_BATCHES, variant, div_text,
                        time_module() - clock, _warnings(div_text, costly), adapter.flow_map, adapter.output_field)


def _graph_passes(proto: onnx.ModelProto, fuse: bool, feed) -> onnx.ModelProto:
    """The written graph's rewrites: ELU's fast form, a baked graph's constant t columns and (given
    feed(b), its example inputs) what it computes from time alone folded, with the rows that
    modulate a LayerNormalization folded into it, and with fuse,
    self-attention as onnxruntime's Attention node."""
    proto = fold_time_columns(fast_elu(proto))
    if feed is not None:
        proto = fold_norm_affine(fold_time_branches(proto, feed))
    return fuse_attention(proto) if fuse else proto


def _conditioning(data_shape, inputs, symbols, nulls, condition, bake, num_classes) -> tuple:
    """(signature, condition stage inputs, data shape): a conditioned export (inputs, symbols or a
    data shape naming one) gets its Signature, checked against what a velocity file with those
    inputs allows; a plain one only its data shape checked (signature None)."""
    sig, stage_items = None, stage_inputs(condition) if condition else []
    if inputs or symbols or _names_symbols(data_shape):
        sig = Signature.of(data_shape, inputs, symbols, nulls, extra_shapes=[i["shape"] for i in stage_items])
        data_shape = sig.data_shape
        if num_classes:
            raise ExportError("a conditioned export (inputs or symbols) takes no class labels (the conditions are its "
                              "inputs)")
        staged = [i["name"] for i in sig.inputs if i.get("null") == "stage"]
        if staged and (not condition or not set(staged) <= set(condition.get("outputs", ()))):
            raise ExportError(f"null {staged[0]}: 'stage' takes the null from the condition stage, which does not make "
                              f"{staged[0]!r}")
    elif nulls or condition:
        raise ExportError("nulls and a condition stage name inputs; declare them with inputs")
    else:
        data_shape = _check_shape(data_shape)
    return sig, stage_items, data_shape


def _baked(adapter: VelocityAdapter, bake: str, num_classes: int, schedule, sig: Signature | None,
           guided: bool) -> tuple[dict, torch.nn.Module, Guide | None, Signature | None]:
    """A --bake "SOLVER:STEPS" request checked against the model and time grid: the fm.baked
    metadata, the whole fixed-step solve as one module z (, conditions, w) -> x, what its graph
    feeds each evaluation and the signature the baked file declares (see _guide)."""
    if num_classes:
        raise ExportError("--bake is not available for class-conditional models (the label and "
                          "guidance would have to be graph inputs of the unrolled solve); export "
                          "the velocity model")
    solver, steps = parse_bake(bake)
    if get_solver(solver).evaluates == "map" and not adapter.flow_map:
        raise ExportError(f"--bake {bake}: {solver} jumps with a flow map; this network's call names one time (a "
                          "velocity); bake euler, midpoint, heun or rk4")
    if schedule.steps not in (None, steps):
        raise ExportError(f"the time grid has {schedule.steps} steps but --bake asks for {steps}")
    if guided and not sig:
        raise ExportError("--bake-guidance guides the conditions against their nulls; this network declares no "
                          "conditions (--input NAME=... with --null NAME=zeros)")
    guide, file_sig = _guide(sig, guided) if sig else (None, None)
    return {"solver": solver, "steps": steps}, BakedSampler(adapter, solver, steps, schedule, guide).eval(), guide, file_sig


GUIDANCE_INPUT = "guidance_scale"       # the guidance weight of a baked file that guides (one per row)


def _guide(sig: Signature, guided: bool) -> tuple[Guide, Signature]:
    """(what each evaluation of a baked conditioned graph feeds, the signature its file declares):
    the network's inputs without their nulls (the runtime cannot guide around a baked graph), and
    with guidance the weight input, the nulls going inside the graph."""
    inputs = [{k: v for k, v in i.items() if k != "null"} for i in sig.inputs]
    if not guided:
        return Guide(sig.inputs), replace(sig, inputs=inputs, null_values={})
    nulled = [i for i in sig.inputs if i.get("null")]
    if not nulled or any(i["role"] == "guidance" for i in sig.inputs) or GUIDANCE_INPUT in sig.names:
        raise ExportError("--bake-guidance needs conditions that declare nulls (--null NAME=zeros) and a network that "
                          f"does not take the guidance weight itself (a guidance input, or one named {GUIDANCE_INPUT})")
    staged = [i["name"] for i in nulled if i["null"] == "stage"]
    if staged:
        raise ExportError(f"--bake-guidance: the null of {staged[0]!r} comes from the condition stage, which runs outside "
                          "the baked graph; declare its null zeros or stored, or bake without guidance")
    weight = {"name": GUIDANCE_INPUT, "dtype": "float32", "shape": (), "role": "guidance"}
    return (Guide(sig.inputs, GUIDANCE_INPUT, {i["name"]: sig.null_values.get(i["name"]) for i in nulled}),
            replace(sig, inputs=[*inputs, weight], null_values={}))


def _trace(adapter: VelocityAdapter, module: torch.nn.Module, data_shape, kind: str, num_classes: int,
           sig: Signature | None, baked: dict | None, schedule, guide: Guide | None) -> tuple:
    """(the ONNX graph of what the file holds: the velocity network or, baked, the whole solve;
    the velocity graph it was made from, None where the solve was traced whole), each symbol
    checked to have stayed a symbol."""
    if not baked:
        proto = _to_onnx(module, data_shape, kind, num_classes, sig)
        _check_symbols(proto, data_shape, sig)
        return proto, proto
    # the velocity graph once, unrolled in ONNX (tracing the whole solve: seconds per step)
    proto = _to_onnx(adapter, data_shape, "map" if adapter.flow_map else "velocity", num_classes, sig)
    _check_symbols(proto, data_shape, sig)
    if unrollable(proto, tuple(sig.names) if sig else ()):
        return unroll(proto, baked["solver"], baked["steps"], schedule, guide), proto
    if sig:
        raise ExportError("the velocity graph holds subgraphs or local functions, which a conditioned baked graph "
                          "cannot copy per step; export the velocity file (without --bake)")
    return _to_onnx(module, data_shape, kind), None


def _check_symbols(proto: onnx.ModelProto, data_shape, sig: Signature | None) -> None:
    """Refuse a graph in which torch.export fixed a symbol (T) to the example's size, before any
    check runs it at another size: the network turned that size into a Python number."""
    if sig is None:
        return
    declared = {NAMES.x: list(data_shape), **{i["name"]: list(i["shape"]) for i in sig.inputs}}
    for inp in proto.graph.input:
        dims = inp.type.tensor_type.shape.dim
        for axis, symbol in enumerate(declared.get(inp.name, ()), start=1):
            if isinstance(symbol, str) and axis < len(dims) and dims[axis].HasField("dim_value"):
                raise ExportError(
                    f"torch.export fixed the symbol {symbol} to {dims[axis].dim_value} (the example's size) in input "
                    f"{inp.name!r}: the network turns that size into a Python number (int(x.shape[-1]), range(T), a "
                    f"size in Python arithmetic), so the graph would serve one {symbol} only. Keep sizes as tensors "
                    f"(torch.arange(x.shape[-1]) without int()), or export one file per size (a number for {symbol} "
                    "in --data-shape and --input); nothing written")


def _write(out, data: bytes, ops_config: str | None) -> None:
    """The file and, for the ORT format, its required-operators config beside it, each written atomically."""
    atomic_write(out, lambda tmp: Path(tmp).write_bytes(data))
    if ops_config is not None:
        atomic_write(f"{out}.required_operators.config", lambda tmp: Path(tmp).write_text(ops_config))


def _warnings(div_text: str, costly: str | None) -> list[str]:
    """The report's warnings: log-likelihoods the file cannot give, a variant written over its quality budget."""
    notes = [f"log-likelihoods unavailable: {div_text[6:]}"] if div_text.startswith("none") else []
    if costly:
        notes.append(f"written with --force although {costly}")
    return notes


def _names_symbols(data_shape) -> bool:
    """Whether a data shape ("16,T", [16, "T"]) names a symbol."""
    if isinstance(data_shape, str):
        return any(not s.strip().isdigit() for s in data_shape.replace("x", ",").split(",") if s.strip())
    return isinstance(data_shape, (list, tuple)) and any(isinstance(d, str) for d in data_shape)


def _check_shape(data_shape) -> tuple[int, ...]:
    if isinstance(data_shape, int) and not isinstance(data_shape, bool):
        data_shape = (data_shape,)
    try:
        shape = tuple(data_shape)
    except TypeError:
        shape = ()
    if not shape or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in shape):
        raise ExportError(f"data_shape must be the shape of one sample, positive integers like [2] or "
                          f"[1, 8, 8]; got {data_shape!r}")
    return tuple(int(s) for s in shape)
