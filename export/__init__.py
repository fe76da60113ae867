"""Export side of fm-runtime (PyTorch + onnx): checkpoint -> one self-describing ONNX file."""
from .onnx_export import OPSET, ExportError, ExportReport, export_checkpoint, export_model, verify_against_torch

__all__ = ["OPSET", "ExportError", "ExportReport", "export_checkpoint", "export_model", "verify_against_torch"]
