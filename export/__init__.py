"""Export side of fm-runtime (PyTorch + onnx): any velocity network -> one self-describing ONNX file.

Names are imported on first use, so that `fm-export --help` and `--add-divergence` work without torch."""
from .errors import ExportError

__all__ = ["OPSET", "ExportError", "ExportReport", "export_velocity", "verify_against_torch"]


def __getattr__(name: str):
    if name in __all__:
        from . import onnx_export
        return getattr(onnx_export, name)
    raise AttributeError(f"module 'export' has no attribute {name!r}")
