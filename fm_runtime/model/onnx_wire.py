"""The few parts of an ONNX file that the pre-flight check needs (nodes, their attributes, and the
shapes, types and small values of constants), read straight from protobuf's wire format: the runtime
depends on neither onnx nor protobuf, and it must look at a graph before onnxruntime does.

Large fields (weights) are skipped by their length, never copied. A file that is not well-formed
protobuf raises WireError; the caller reports it as the model's fault.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import numpy as np

# TensorProto.DataType -> (numpy dtype or None, bytes per element)
DTYPES = {1: (np.float32, 4), 2: (np.uint8, 1), 3: (np.int8, 1), 4: (np.uint16, 2), 5: (np.int16, 2),
          6: (np.int32, 4), 7: (np.int64, 8), 8: (None, 8), 9: (np.bool_, 1), 10: (np.float16, 2),
          11: (np.float64, 8), 12: (np.uint32, 4), 13: (np.uint64, 8), 14: (None, 8), 15: (None, 16),
          16: (None, 2), 17: (None, 1), 18: (None, 1), 19: (None, 1), 20: (None, 1), 21: (None, 1), 22: (None, 1),
          23: (None, 1)}
SMALL = 4096            # constants up to this many elements keep their values (shapes, scales, ranges)


class WireError(ValueError):
    pass


@dataclass
class Tensor:
    dims: list[int]
    dtype: int = 1
    value: np.ndarray | None = None     # only for small numeric tensors
    stored: int = 0                     # bytes of data the file holds for it
    external: bool = False              # its data is said to lie in another file


@dataclass
class Node:
    op: str
    domain: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)        # name -> int, float, list, bytes, Tensor or Graph


@dataclass
class Graph:
    nodes: list[Node] = field(default_factory=list)
    initializers: dict[str, Tensor] = field(default_factory=dict)
    inputs: dict[str, list] = field(default_factory=dict)     # name -> dims (int, or None when symbolic)


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise WireError("truncated or overlong varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def fields(buf: memoryview):
    """(field number, wire type, value) of one message: ints for varints and fixed widths,
    memoryviews for length-delimited fields."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise WireError("a field runs past the end of its message")
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        else:
            raise WireError(f"wire type {wire} is not used by ONNX")
        if pos > end:
            raise WireError("a field runs past the end of its message")
        yield num, wire, value


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _ints(wire: int, value) -> list[int]:
    if wire == 0:
        return [_signed(value)]
    out, pos = [], 0
    while pos < len(value):
        v, pos = _varint(value, pos)
        out.append(_signed(v))
    return out


def _floats(wire: int, value) -> list[float]:
    raw = bytes(value)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw[: len(raw) // 4 * 4]))


def tensor(buf: memoryview) -> Tensor:
    t = Tensor(dims=[])
    raw, typed = None, []
    for num, wire, value in fields(buf):
        if num == 1:
            t.dims += _ints(wire, value)
        elif num == 2 and wire == 0:
            t.dtype = value
        elif num == 9 and wire == 2:
            raw = value
        elif num in (5, 7, 11) and wire in (0, 2):      # int32_data, int64_data, uint64_data
            typed += _ints(wire, value)
        elif num == 4 and wire in (2, 5):               # float_data
            typed += _floats(wire, value)
        elif num in (6, 10, 13) and wire == 2:          # string_data, double_data, external_data
            t.stored += len(value)
            t.external |= num == 13
        elif num == 14 and wire == 0:
            t.external |= value == 1
    t.stored += len(raw) if raw is not None else len(typed) * DTYPES.get(t.dtype, (None, 4))[1]
    count = int(np.prod(t.dims, dtype=np.float64)) if all(d >= 0 for d in t.dims) else -1
    np_type = DTYPES.get(t.dtype, (None, 0))[0]
    if 0 <= count <= SMALL and np_type is not None:
        try:
            if raw is not None and len(raw) == count * np.dtype(np_type).itemsize:
                t.value = np.frombuffer(bytes(raw), dtype=np_type).reshape(t.dims)
            elif raw is None and len(typed) == count and t.dtype != 10:
                t.value = np.array(typed, dtype=np_type).reshape(t.dims)
        except (ValueError, OverflowError):
            t.value = None
    return t


def _attribute(buf: memoryview):
    name, value, ints, floats = "", None, [], []
    for num, wire, v in fields(buf):
        if num == 1 and wire == 2:
            name = bytes(v).decode("utf-8", "replace")
        elif num == 2 and wire == 5:
            value = struct.unpack("<f", bytes(v))[0]
        elif num == 3 and wire == 0:
            value = _signed(v)
        elif num == 4 and wire == 2:
            value = bytes(v[:256])
        elif num == 5 and wire == 2:
            value = tensor(v)
        elif num == 6 and wire == 2:
            value = graph(v)
        elif num == 7:
            floats += _floats(wire, v) if wire == 2 else [struct.unpack("<f", bytes(v))[0]]
        elif num == 8:
            ints += _ints(wire, v)
        elif num == 11 and wire == 2:
            value = (value or []) + [graph(v)]
    if value is None and (ints or floats):
        value = ints or floats
    return name, value


def _node(buf: memoryview) -> Node:
    n = Node(op="", domain="", inputs=[], outputs=[])
    for num, wire, v in fields(buf):
        if wire != 2:
            continue
        if num == 1:
            n.inputs.append(bytes(v).decode("utf-8", "replace"))
        elif num == 2:
            n.outputs.append(bytes(v).decode("utf-8", "replace"))
        elif num == 4:
            n.op = bytes(v).decode("utf-8", "replace")
        elif num == 7:
            n.domain = bytes(v).decode("utf-8", "replace")
        elif num == 5:
            key, value = _attribute(v)
            n.attrs[key] = value
    return n


def _value_info(buf: memoryview) -> tuple[str, list | None]:
    """(name, dims) of a graph input: a dim is its size, or None when symbolic or missing."""
    name, dims = "", None
    for num, wire, v in fields(buf):
        if num == 1 and wire == 2:
            name = bytes(v).decode("utf-8", "replace")
        elif num == 2 and wire == 2:                        # TypeProto
            for tn, tw, tv in fields(v):
                if tn == 1 and tw == 2:                     # tensor_type
                    for sn, sw, sv in fields(tv):
                        if sn == 2 and sw == 2:             # shape
                            dims = []
                            for dn, dw, dv in fields(sv):
                                if dn == 1 and dw == 2:
                                    size = None
                                    for qn, qw, qv in fields(dv):
                                        if qn == 1 and qw == 0:
                                            size = _signed(qv)
                                    dims.append(size)
    return name, dims


def graph(buf: memoryview) -> Graph:
    g = Graph()
    for num, wire, v in fields(buf):
        if wire != 2:
            continue
        if num == 1:
            g.nodes.append(_node(v))
        elif num == 5:
            for tn, tw, tv in fields(v):
                if tn == 8 and tw == 2:
                    g.initializers[bytes(tv).decode("utf-8", "replace")] = tensor(v)
                    break
        elif num == 11:
            name, dims = _value_info(v)
            g.inputs[name] = dims
    return g


def model_graphs(data: bytes) -> list[Graph]:
    """The main graph of an ONNX model and the bodies of its local functions."""
    graphs = []
    for num, wire, v in fields(memoryview(data)):
        if num == 7 and wire == 2:
            graphs.insert(0, graph(v))
        elif num == 25 and wire == 2:                       # FunctionProto: node = 4
            graphs.append(Graph(nodes=[_node(nv) for nn, nw, nv in fields(v) if nn == 4 and nw == 2]))
    if not graphs:
        raise WireError("no graph")
    return graphs


def weight_count(data: bytes) -> int:
    """Values held in the main graph's initializers (every dtype)."""
    return sum(math.prod(t.dims) for t in model_graphs(data)[0].initializers.values())
