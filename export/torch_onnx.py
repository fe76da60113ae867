"""torch.onnx's dynamo exporter, called quietly and without rebuilding its operator table each time.

torch.onnx.export (2.5 and later) builds its registry of aten -> ONNX functions on every call by
re-parsing the source of ~500 onnxscript functions: about 1.4 s of a 4 s export of a small MLP,
and the same table each time for a given opset. Exports in one process (a file and its variants,
a test suite, a sweep) reuse the first table. This leans on a private torch module; where it is
missing or different, the exporter runs as it is (the cache is an optimisation, never a
requirement). The graph exported is the same either way (tests/test_export.py checks).
"""
from __future__ import annotations

import contextlib
import io
import logging
import threading
import warnings

import onnx
import torch

from fm_runtime.model.session import one_line

from .errors import ExportError

_lock = threading.Lock()
_tables: dict = {}


@contextlib.contextmanager
def _reused_registry():
    """Within the block, ONNXRegistry.from_torchlib returns the table built for that opset before."""
    try:
        from torch.onnx._internal.exporter import _registration
        registry = _registration.ONNXRegistry
        build = registry.__dict__["from_torchlib"].__func__
    except (ImportError, AttributeError, KeyError):
        yield
        return

    def reuse(cls, *args, **kwargs):
        key = (cls, args, tuple(sorted(kwargs.items())))
        if key not in _tables:
            _tables[key] = build(cls, *args, **kwargs)
        return _tables[key]

    with _lock:         # one export at a time patches the class; torch.onnx is not re-entrant anyway
        registry.from_torchlib = classmethod(reuse)
        try:
            yield
        finally:
            registry.from_torchlib = classmethod(build)


STACK_TRACE = "pkg.torch.onnx.stack_trace"


def export_program(module: torch.nn.Module, args: tuple, *, what: str, **options) -> onnx.ModelProto:
    """torch -> ONNX with the dynamo exporter (weights inline), its logging and prints silenced;
    torch's failures become one ExportError line naming `what`."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    try:
        with _reused_registry(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, args, dynamo=True, external_data=False, verbose=False, **options)
    except Exception as e:
        raise ExportError(f"torch.onnx could not export {what} ({type(e).__name__}: {one_line(e)})") from None
    return without_stack_traces(program.model_proto)


def without_stack_traces(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model without the exporter's per-node Python stack traces: they hold the absolute paths
    of the exporting machine's source files, which a shipped file should not carry, and which made
    the same network give different bytes from different checkouts."""
    def strip(nodes) -> None:
        for node in nodes:
            kept = [p for p in node.metadata_props if p.key != STACK_TRACE]
            del node.metadata_props[:]
            node.metadata_props.extend(kept)
            for attr in node.attribute:
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    strip(sub.node)
    strip(model.graph.node)
    for function in model.functions:
        strip(function.node)
    return model
