"""Export side of fm-runtime (PyTorch + onnx): any velocity network -> one self-describing ONNX file."""
from .adapters import ExportError
from .onnx_export import OPSET, ExportReport, export_checkpoint, export_model, export_velocity, verify_against_torch

__all__ = ["OPSET", "ExportError", "ExportReport", "export_checkpoint", "export_model", "export_velocity",
           "verify_against_torch"]
