"""The Open Inference Protocol (KServe v2, Triton's HTTP API) as fm-run serve speaks it: a model's
metadata from its file, an infer request's tensors (JSON or the binary tensor extension) and
parameters turned into Sampler arguments, and the response's tensors written back.

A file `moons.onnx` is served as model `moons`: optional FP32 input `noise` [n, *shape] (else
parameters n and seed), INT64 `labels` [n] for class-conditional files, every condition under
its own name; the parameters the request options declare for the server (contract.json
"options", listed in the model's metadata as request_parameters: n, seed, steps, solver,
schedule, guidance, ...); output FP32 `samples`. A file with a divergence graph is also
`moons-logprob`: FP32 input `x`, its parameters likewise; output FP32 `logprob` [n].
"""
from __future__ import annotations

import json
import math

import numpy as np

from ..engine import options
from ..errors import UsageError
from ..model.spec import ModelSpec

DTYPES = {"BOOL": "|b1", "INT8": "|i1", "UINT8": "|u1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
          "FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}
NAMES = {"float32": "FP32", "int64": "INT64", "float64": "FP64", "int32": "INT32", "bool": "BOOL"}
# the parameters each model takes: the request options the declaration offers the server
# (contract.json "options"), each checked by the request's resolve once its JSON type is right
JSON_TYPES = {"integer": int, "number": float, "string": str, "schedule": str, "interval": str}
SAMPLE_PARAMS = {name: JSON_TYPES[e["type"]] for name, e in options.offered("serve", "sample").items()}
LOGPROB_PARAMS = {name: JSON_TYPES[e["type"]] for name, e in options.offered("serve", "logprob").items()}
# parameters that standard clients add on their own (Triton's reserved names): read or ignored
CLIENT_PARAMS = {"binary_data_output", "timeout", "priority", "sequence_id", "sequence_start", "sequence_end",
                 "headers"}


class TooLarge(UsageError):
    """A request past the server's limits on rows, steps or body size (HTTP 413)."""


def request_inputs(spec: ModelSpec) -> list[dict]:
    """The conditions a request gives: the file's extra inputs less those its condition stage
    makes, plus the stage's own inputs ({"name", "dtype", "shape"}, symbols in the shape)."""
    staged = set(spec.stage.get("outputs", ())) if spec.stage else set()
    given = [i for i in spec.inputs if i["name"] not in staged]
    return given + list(spec.stage.get("inputs", ())) if spec.stage else given


NULL_PREFIX = "null:"       # an input named null:NAME is the negative prompt's NAME (the request's null_cond)


def null_inputs(tensors: dict) -> dict | None:
    """The inputs named null:NAME, taken out of `tensors`, as null_cond {NAME: array} (None: none)."""
    names = [k for k in tensors if k.startswith(NULL_PREFIX)]
    return {k[len(NULL_PREFIX):]: tensors.pop(k) for k in names} or None


def _shape(shape) -> list[int]:
    return [-1] + [d if isinstance(d, int) else -1 for d in shape]


def metadata(name: str, spec: ModelSpec, logprob: bool = False) -> dict:
    """GET /v2/models/{name}: tensors with shapes (-1 for rows and symbols) and dtypes, and the
    file's contract (what fm-run info shows) as parameters."""
    shape = _shape(spec.data_shape)
    if logprob:
        inputs = [{"name": "x", "datatype": "FP32", "shape": shape}]
        outputs = [{"name": "logprob", "datatype": "FP32", "shape": [-1]}]
    else:
        inputs = [{"name": "noise", "datatype": "FP32", "shape": shape}]
        outputs = [{"name": "samples", "datatype": "FP32", "shape": shape}]
    if spec.num_classes:
        inputs.append({"name": "labels", "datatype": "INT64", "shape": [-1]})
    inputs += [{"name": i["name"], "datatype": NAMES.get(i["dtype"], i["dtype"]), "shape": _shape(i["shape"])}
               for i in request_inputs(spec)]
    contract = {"kind": spec.kind, "data_shape": list(spec.data_shape), "num_classes": spec.num_classes,
                "default_solver": spec.default_solver, "default_steps": spec.default_steps,
                "default_schedule": spec.default_schedule, "prediction": spec.prediction,
                "path": spec.prob_path, "format_version": spec.format_version, "baked": spec.baked,
                "variant": spec.variant, "symbols": spec.symbols, "divergence": bool(spec.divergence),
                "flow_map": spec.flow_map, "input_s": spec.s_name}
    return {"name": name, "versions": ["1"], "platform": "fm-runtime", "inputs": inputs, "outputs": outputs,
            "parameters": {"contract": json.dumps(contract, default=str),
                           "request_parameters": json.dumps(options.describe("serve", "logprob" if logprob else "sample"))}}


def parse_infer(body: bytes, header_length: str | None) -> tuple[dict, dict[str, np.ndarray]]:
    """(the request's JSON, its input tensors by name) from an infer body."""
    json_part, binary = body, b""
    if header_length is not None:
        try:
            size = int(header_length)
        except ValueError:
            raise UsageError(f"Inference-Header-Content-Length {header_length[:40]!r} is not a number") from None
        if not 0 <= size <= len(body):
            raise UsageError(f"Inference-Header-Content-Length {size} is past the body's {len(body)} bytes")
        json_part, binary = body[:size], body[size:]
    try:
        doc = json.loads(json_part)
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"the request body is not JSON ({str(e)[:80]})") from None
    except RecursionError:
        raise UsageError("the request body's JSON is nested too deep") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs", []), list):
        raise UsageError('the request must be a JSON object with a list "inputs"')
    tensors, at = {}, 0
    for item in doc.get("inputs", []):
        arr, used = _tensor(item, binary, at)
        at += used
        if item["name"] in tensors:
            raise UsageError(f"input {item['name'][:40]!r} is given twice")
        tensors[item["name"]] = arr
    if at != len(binary):
        raise UsageError(f"the body has {len(binary) - at} bytes of binary data that no input claims")
    return doc, tensors


def _tensor(item, binary: bytes, at: int) -> tuple[np.ndarray, int]:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise UsageError('each input must be an object with a "name"')
    name, dtype, shape = item["name"], item.get("datatype"), item.get("shape")
    if dtype not in DTYPES:
        raise UsageError(f"input {name!r}: datatype {str(dtype)[:20]!r} is not one of {', '.join(DTYPES)}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31
                                              for d in shape) or len(shape) > 8:
        raise UsageError(f"input {name!r}: shape must be a list of at most 8 sizes >= 0")
    count = math.prod(shape)        # Python's integers: a product past int64 must not wrap to a small size
    params = item.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None:
        want = count * np.dtype(DTYPES[dtype]).itemsize
        if size != want or at + size > len(binary):
            raise UsageError(f"input {name!r}: binary_data_size {size} does not match shape {shape} of {dtype} "
                             f"({want} bytes) or the body")
        return np.frombuffer(binary, DTYPES[dtype], count, at).reshape(shape), size
    data = item.get("data")
    if data is None:
        raise UsageError(f"input {name!r} has neither data nor binary_data_size")
    try:
        raw = np.asarray(data)
        if raw.dtype.kind not in "iuf" or (dtype == "INT64" and raw.dtype.kind == "f" and not np.all(raw == np.round(raw))):
            raise ValueError
        arr = raw.astype(DTYPES[dtype])
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"input {name!r}: data is not a list of {dtype} numbers"
                         + (" (whole numbers)" if dtype == "INT64" else "")) from None
    if arr.size != count:
        raise UsageError(f"input {name!r}: {arr.size} values for shape {shape}")
    return arr.reshape(shape), 0


def parameters(doc: dict, allowed: dict) -> dict:
    """The request's parameters as Sampler arguments, each of its type; unknown names refused."""
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise UsageError('"parameters" must be an object')
    out = {}
    for key, value in params.items():
        if key in CLIENT_PARAMS:
            continue
        if key not in allowed:
            raise UsageError(f"unknown parameter {key[:40]!r}; this model takes {', '.join(allowed)}")
        kind = allowed[key]
        ok = isinstance(value, str) if kind is str else (
            isinstance(value, (int, float)) and not isinstance(value, bool) and (kind is float or isinstance(value, int) or value.is_integer()))
        if not ok:
            raise UsageError(f"parameter {key}: {str(value)[:40]!r} is not a{'n integer' if kind is int else ' ' + kind.__name__}")
        out[key] = int(value) if kind is int else value
    return out


def binary_outputs(doc: dict) -> bool:
    """Whether the client asked for outputs in the binary tensor extension."""
    outs = doc.get("outputs")
    if isinstance(outs, list) and outs:
        return any(isinstance(o, dict) and (o.get("parameters") or {}).get("binary_data") for o in outs)
    return bool((doc.get("parameters") or {}).get("binary_data_output"))


def encode(model: str, doc: dict, outputs: dict[str, np.ndarray], binary: bool, nfe: int | None = None) -> tuple[bytes, dict]:
    """The infer response's body and headers; `nfe`, the network evaluations per row, goes in the
    response's parameters."""
    head = {"model_name": model, "model_version": "1", "outputs": []}
    if nfe is not None:
        head["parameters"] = {"nfe": int(nfe)}
    if isinstance(doc.get("id"), str):
        head["id"] = doc["id"]
    chunks = []
    for name, arr in outputs.items():
        arr = np.ascontiguousarray(arr, dtype="<f4")
        item = {"name": name, "datatype": "FP32", "shape": list(arr.shape)}
        if binary:
            item["parameters"] = {"binary_data_size": arr.nbytes}
            chunks.append(arr.tobytes())
        else:
            item["data"] = arr.ravel().tolist()
        head["outputs"].append(item)
    text = json.dumps(head).encode()
    if not binary:
        return text, {"content-type": "application/json"}
    return text + b"".join(chunks), {"content-type": "application/octet-stream",
                                     "inference-header-content-length": str(len(text))}
