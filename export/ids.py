"""The ids an int64 input may hold, read from the exported graph: an input used as the indices
of a Gather from a weight table (an embedding, nn.Embedding's export) takes 0..rows - 1. onnxruntime
reads a negative index from the table's end, so without a declared range a negative token or
speaker id would sample silently from the wrong row; the readers refuse ids outside it."""
from __future__ import annotations

import onnx
from onnx import helper


def id_ranges(proto: onnx.ModelProto, names) -> dict[str, list[int]]:
    """{input name: [0, rows - 1]} for each of `names` that indexes axis 0 of a weight table
    (the smallest table where it indexes several)."""
    tables = {i.name: i.dims[0] for i in proto.graph.initializer if len(i.dims) >= 1}
    rows: dict[str, int] = {}
    for n in proto.graph.node:
        if n.op_type != "Gather" or n.domain or len(n.input) < 2 or n.input[1] not in names or n.input[0] not in tables:
            continue
        axis = next((helper.get_attribute_value(a) for a in n.attribute if a.name == "axis"), 0)
        if axis == 0 and tables[n.input[0]] > 0:
            rows[n.input[1]] = min(rows.get(n.input[1], tables[n.input[0]]), tables[n.input[0]])
    return {name: [0, int(r) - 1] for name, r in rows.items()}
