"""Smaller and faster variants of an exported model file, each with its measured cost.

- precision fp16: weights and compute in half precision where onnxruntime has the kernels
  (onnxconverter-common's converter; inputs and outputs stay float32, so callers change nothing);
- quantize int8: dynamic quantisation of the matmuls (onnxruntime.quantization), and static QDQ
  convolutions calibrated on the model's own trajectories (int8_static.py);
- format ort: onnxruntime's flatbuffer format for mobile and reduced builds, plus the
  `.required_operators.config` such a build needs. The fm.* metadata survives in every variant.

What a variant costs is measured against the float32 file on the same noise and written into
the file (fm.variant): size, max and mean deviation of samples, and the energy distance of its
samples to fresh data beside the float32 model's and the noise floor.
"""
from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from fm_runtime.model.contract import describe_variant, put_metadata
from fm_runtime.solve.metrics import energy_distance

from .checks import add_selftest
from .errors import ExportError
from .int8_static import calibration_feeds, has_convolutions, quantize_convolutions

QUALITY_SAMPLES = 2000


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxconverter_common import float16
    return float16.convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)


# Matmuls whose weights have fewer elements than this stay float32: here the input layer [dim+1
# -> width] and the output layer [width -> dim], where quantisation error lands straight on the
# velocity for little saving. With per-channel scales this measured, on the 10k-step moons model
# (2000 samples, same noise and data): energy distance +0.3e-4 over float32, mean sample
# deviation 6.7e-3; quantising every matmul per-tensor gave +8.7e-4 and 1.2e-2.
INT8_MIN_WEIGHTS = 1024


def to_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(logging.ERROR)   # the quantiser logs advice at WARNING
    sizes = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer}
    keep_float = [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm")
                  and any(0 < sizes.get(x, 0) < INT8_MIN_WEIGHTS for x in n.input[1:2])]
    # onnxruntime 1.2x+ splits a Gemm into MatMul + Add before quantising and names the MatMul
    # NAME_MatMul, so an exclusion by the Gemm's own name alone no longer matches anything.
    exclude = keep_float + [f"{name}_MatMul" for name in keep_float]
    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "in.onnx", Path(d) / "out.onnx"
        onnx.save(model, str(src))
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         nodes_to_exclude=exclude, op_types_to_quantize=["MatMul", "Gemm", "Attention"])
        out = onnx.load(str(dst))
    _check_small_matmuls_float(out)
    if {p.key for p in out.metadata_props} != {p.key for p in model.metadata_props}:
        del out.metadata_props[:]
        out.metadata_props.extend(model.metadata_props)
    return out


def _check_small_matmuls_float(model: onnx.ModelProto) -> None:
    """Refuse a quantised graph in which a small (input or output) matmul became integer: the
    exclusion above is by node name, and the quantiser's renaming has silently defeated it once."""
    sizes = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer}
    small = [n.name for n in model.graph.node if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")
             and 0 < sizes.get(n.input[1], 0) < INT8_MIN_WEIGHTS]
    if small:
        raise ExportError(f"int8: the quantiser also quantised the small matmuls {', '.join(small)} "
                          f"(weights under {INT8_MIN_WEIGHTS} values stay float32); this onnxruntime "
                          f"version ({ort.__version__}) renames nodes in a way fm-export does not know")


def to_ort_format(onnx_bytes: bytes) -> bytes:
    """ORT flatbuffer bytes of a model (basic optimisations only, so it runs on any build)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.ort"
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(path)
        opts.add_session_config_entry("session.save_model_format", "ORT")
        ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
        return path.read_bytes()


def required_operators(model: onnx.ModelProto) -> str:
    """The operator config a reduced onnxruntime build needs: 'domain;opset;op,op' per line."""
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    ops: dict[str, set[str]] = defaultdict(set)
    for node in model.graph.node:
        ops[node.domain or "ai.onnx"].add(node.op_type)
    lines = [f"{dom};{opsets.get(dom, 1)};{','.join(sorted(names))}" for dom, names in sorted(ops.items())]
    return "# Generated by fm-export: operators this model uses, for a reduced onnxruntime build\n" + \
        "\n".join(lines) + "\n"


def load_bytes(model_bytes: bytes):
    """The runtime's Sampler for a model file's bytes, whatever its kind, precision or format (the
    file is read at load and not needed after)."""
    import fm_runtime
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.model"
        path.write_bytes(model_bytes)
        return fm_runtime.load(path)


def sample_bytes(model_bytes: bytes, z: np.ndarray, cond: dict | None = None) -> np.ndarray:
    """Samples from noise z (and conditions `cond`) with the runtime."""
    return load_bytes(model_bytes).sample(noise=z, **({"cond": cond} if cond else {}))


def measure(variant: bytes, reference: bytes, data: np.ndarray, fresh: np.ndarray, seed: int = 0,
            cond: dict | None = None) -> dict:
    """Cost of a variant against the float32 file: deviation on the same noise (and conditions)
    and quality."""
    z = np.random.default_rng(seed).standard_normal((len(data), *data.shape[1:]), dtype=np.float32)
    got, ref = sample_bytes(variant, z, cond), sample_bytes(reference, z, cond)
    dev = np.abs(got - ref)
    return {"size_bytes": len(variant), "max_dev": float(dev.max()), "mean_dev": float(dev.mean()),
            "scale": float(np.abs(ref).mean()),
            "energy_distance": energy_distance(got, data), "energy_distance_fp32": energy_distance(ref, data),
            "noise_floor": abs(energy_distance(fresh, data))}


# what a reduced file may cost against its float32 export before fm-export refuses to write it
# (--force writes it anyway): with the training data known, the energy distance to data may rise
# by at most BUDGET_RISE noise floors (a paired difference: far less noisy than either distance;
# tests/test_variants.py measures fp16 +0.0, int8 +3e-5 on moons); without it, the samples may
# move on average by at most BUDGET_MEAN_DEV of their own mean magnitude.
BUDGET_RISE = 0.5
BUDGET_MEAN_DEV = 0.02


def over_budget(cost: dict) -> str | None:
    """Why a variant's measured cost (fm.variant's vs_fp32) is over budget, or None."""
    if "energy_distance" in cost:
        rise, floor = cost["energy_distance"] - cost["energy_distance_fp32"], cost["noise_floor"]
        if rise > BUDGET_RISE * floor:
            return (f"its energy distance to data rises by {rise:.2e} over float32's, more than {BUDGET_RISE:g} x "
                    f"the noise floor ({floor:.2e})")
        return None
    scale = cost.get("scale")
    if scale and cost["mean_dev"] > BUDGET_MEAN_DEV * scale:
        return (f"its samples move by {cost['mean_dev']:.2e} on average from float32's, more than "
                f"{BUDGET_MEAN_DEV:.0%} of their mean magnitude ({scale:.2e})")
    return None


def set_variant_metadata(model: onnx.ModelProto, variant: dict) -> None:
    put_metadata(model.metadata_props, "variant", variant)


def make_variant(proto: onnx.ModelProto, fp32: bytes, reference, data_shape, kind: str, num_classes: int,
                 precision: str, quantize: str | None, fmt: str, probe: dict | None = None, sig=None,
                 force: bool = False) -> tuple[bytes, dict, str | None, str | None]:
    """(file bytes, fm.variant, ORT operator config, why it is over budget or None): precision,
    quantisation and format applied to the verified float32 model and the cost measured (a
    conditioned file, Signature `sig`: on example conditions at one binding of its symbols,
    deviation only). A variant over budget raises ExportError unless `force`."""
    variant: dict = {"precision": precision, "quantize": quantize, "format": fmt}
    if (precision, quantize, fmt) != ("fp32", None, "onnx"):
        # reduced files are for sampling on small devices: they leave out the divergence graph
        # (log-likelihoods need the float32 ONNX file), which would otherwise outweigh the saving
        put_metadata(proto.metadata_props, "divergence", None)
    if precision == "fp16":
        proto = to_fp16(proto)
    if quantize == "int8":
        if has_convolutions(proto) and sig is None:     # static QDQ convolutions (int8_static.py)
            proto = quantize_convolutions(proto, calibration_feeds(load_bytes(fp32)))
        proto = to_int8(proto)

    def encode() -> bytes:
        set_variant_metadata(proto, variant)
        data = add_selftest(proto, data_shape, kind, num_classes, probe)
        return to_ort_format(data) if fmt == "ort" else data

    out = encode()
    if (precision, quantize, fmt) != ("fp32", None, "onnx"):
        has_data, cond = reference is not None and sig is None, None
        if sig is not None:
            sizes = sig.sizes()
            data_shape = sig.concrete(data_shape, sizes)
            cond = sig.examples(512, np.random.default_rng(2024), sizes)
        if has_data:
            data, fresh = reference
        else:   # no data to compare with: deviation only, on standard-normal noise
            data = fresh = np.random.default_rng(2024).standard_normal((512, *data_shape)).astype(np.float32)
        cost = measure(out, fp32, data, fresh, cond=cond)
        if not has_data:
            for k in ("energy_distance", "energy_distance_fp32", "noise_floor"):
                cost.pop(k)
        variant["vs_fp32"] = cost
        for _ in range(4):    # the file states its own size: settle the number
            out = encode()
            if cost["size_bytes"] == len(out):
                break
            cost["size_bytes"] = len(out)
    costly = over_budget(variant["vs_fp32"]) if "vs_fp32" in variant else None
    if costly and not force:
        raise ExportError(f"the {describe_variant(variant).split(':')[0]} variant is over its quality budget: {costly}; "
                          "no file written (--force writes it anyway)")
    ops_config = required_operators(proto) if fmt == "ort" else None
    return out, variant, ops_config, costly
