"""The condition stage of a conditioned file: a second network, run once per request, that maps
what a request gives (token ids, speaker ids, observations) to some of the velocity network's
inputs (mu, mask, text embeddings). Exported to its own ONNX graph, checked against torch at two
batch sizes and two bindings of its symbols, and stored base64 in fm.condition_stage."""
from __future__ import annotations

import base64

import numpy as np
import onnxruntime as ort
import torch

from .checks import add_selftest, check_proto
from .errors import ExportError
from .ids import id_ranges
from .signature import Signature, parse_input
from .torch_onnx import export_program


def stage_inputs(condition: dict) -> list[dict]:
    """The stage's inputs ({"tokens": "int64[L]", ...}) as {"name", "dtype", "shape"}."""
    if not isinstance(condition, dict) or not isinstance(condition.get("module"), torch.nn.Module) \
            or not condition.get("inputs") or not condition.get("outputs"):
        raise ExportError("condition must be {'module': nn.Module, 'inputs': {name: 'DTYPE[SHAPE]'}, "
                          "'outputs': [names of declared inputs]}")
    return [{k: v for k, v in parse_input(name, text).items() if k != "role"} for name, text in condition["inputs"].items()]


def export_stage(condition: dict, items: list[dict], sig: Signature, opset: int) -> dict:
    """fm.condition_stage for `condition` (see stage_inputs), its outputs checked against the
    declared inputs they provide (dtype and rank) and against torch."""
    module, outputs = condition["module"].eval(), list(condition["outputs"])
    declared = {i["name"]: i for i in sig.inputs}
    for name in outputs:
        if name not in declared:
            raise ExportError(f"the condition stage provides {name!r}, which is not a declared input")
    holder = Signature(sig.data_shape, items, sig.symbols)     # examples for the stage's own inputs
    rng = np.random.default_rng(0)

    def feed(b: int, which: int) -> dict:
        return {k: v.astype(np.int64) if v.dtype.kind == "i" else v for k, v in holder.examples(b, rng, holder.sizes(which)).items()}

    example = feed(2, 0)
    dims = {name: torch.export.Dim(name) for name in {d for i in items for d in i["shape"] if isinstance(d, str)}}
    batch = torch.export.Dim("batch")
    dynamic = tuple({0: batch, **{a + 1: dims[d] for a, d in enumerate(i["shape"]) if isinstance(d, str)}} for i in items)
    proto = export_program(module, tuple(torch.from_numpy(v) for v in example.values()), what="the condition stage",
                           input_names=list(example), output_names=outputs, dynamic_shapes=dynamic, opset_version=opset)
    data = check_proto(proto)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for which, b in enumerate((1, 5)):
        f = feed(b, which)
        with torch.no_grad():
            refs = module(*(torch.from_numpy(v) for v in f.values()))
        refs = refs if isinstance(refs, (tuple, list)) else (refs,)
        for name, got, ref in zip(outputs, session.run(outputs, f), refs):
            ref = ref.detach().numpy()
            want = declared[name]
            if got.ndim != 1 + len(want["shape"]) or (got.dtype.kind == "i") != (want["dtype"] == "int64"):
                raise ExportError(f"the condition stage's output {name} is {got.dtype} of shape {list(got.shape)}; "
                                  f"the velocity network takes {want['dtype']} [batch, {', '.join(map(str, want['shape']))}]")
            if got.shape != ref.shape or not np.allclose(got, ref, atol=1e-4, rtol=1e-4):
                raise ExportError(f"export check failed: the condition stage's output {name} differs between "
                                  "onnxruntime and torch; no file written")
    data = add_selftest(proto, (), "stage", probe=feed(2, 0))
    ranges = id_ranges(proto, {i["name"] for i in items if i["dtype"] == "int64"})
    return {"onnx_base64": base64.b64encode(data).decode("ascii"),
            "inputs": [dict(i, shape=list(i["shape"]), **({"range": ranges[i["name"]]} if i["name"] in ranges else {}))
                       for i in items], "outputs": outputs}
