"""The runtime suite's fixtures, torch-free: the shipped models, the conformance vectors and the
small committed files in tests/runtime/fixtures (scripts/runtime_fixtures.py builds them, with
torch, once). Nothing here or in the test files may import torch, onnx, sklearn, training or
export (test_runtime_layout.py checks), so that `pip install ".[test]" && python -m pytest -q
tests/runtime` checks the runtime on a deployment target.

tests/conftest.py (loaded first, as the parent folder's) imports nothing heavy at its top: its
torch fixtures import torch only when a test asks for them, and none here does."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from ..conftest import REPO, busy_for, cli_argv, run_cli, run_process, start_process, writing_into  # noqa: F401

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CONFORMANCE = REPO / "tests" / "conformance"
TINY = FIXTURES / "tiny.onnx"                 # moons MLP, self-test and divergence graph
TINY_COND = FIXTURES / "tiny_cond.onnx"       # the same with 2 class labels
TINY_BAKED = FIXTURES / "tiny_baked.onnx"     # tiny.onnx's network baked as heun:3

# set by .ci/run in the venv that has only `pip install ".[test]"`: there the suite also proves
# that torch, onnx and sklearn are absent (test_runtime_only.py)
RUNTIME_ONLY = os.environ.get("FM_RUNTIME_ONLY") == "1"
runtime_only = pytest.mark.skipif(not RUNTIME_ONLY, reason="FM_RUNTIME_ONLY=1 is not set: this venv may have torch "
                                  "(the check runs in .ci/run's runtime-only venv)")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _encode(num: int, wire: int, value) -> bytes:
    key = _varint(num << 3 | wire)
    if wire == 0:
        return key + _varint(value)
    if wire == 2:
        return key + _varint(len(value)) + bytes(value)
    return key + bytes(value)


def read_metadata(path) -> dict[str, str]:
    """The metadata_props (ModelProto field 14) of an ONNX file, read without onnx."""
    from fm_runtime.model.onnx_wire import fields
    meta = {}
    for num, _, value in fields(memoryview(Path(path).read_bytes())):
        if num == 14:
            entry = {n: bytes(v).decode() for n, _, v in fields(value)}
            meta[entry.get(1, "")] = entry.get(2, "")
    return meta


def with_metadata(src, dst, *, strip: bool = False, **changes):
    """A copy of ONNX file src at dst with fm.<key> entries changed (None removes one), or all
    metadata removed (strip): the protobuf rewritten field by field, without the onnx package."""
    from fm_runtime.model.onnx_wire import fields
    meta = {} if strip else read_metadata(src)
    for k, v in changes.items():
        if v is None:
            meta.pop("fm." + k, None)
        else:
            meta["fm." + k] = v
    out = bytearray()
    for num, wire, value in fields(memoryview(Path(src).read_bytes())):
        if num != 14:
            out += _encode(num, wire, value)
    for k, v in meta.items():
        out += _encode(14, 2, _encode(1, 2, k.encode()) + _encode(2, 2, v.encode()))
    Path(dst).write_bytes(bytes(out))
    return Path(dst)
