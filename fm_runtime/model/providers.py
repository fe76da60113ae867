"""Execution-provider selection: short names to onnxruntime providers, with errors that help."""
from __future__ import annotations

import onnxruntime as ort

from ..errors import ProviderError

ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "dml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}
_SHORT = {v: k for k, v in ALIASES.items()}


def short_name(provider: str) -> str:
    return _SHORT.get(provider, provider)


def resolve(name: str, available: list[str] | None = None) -> list[str]:
    """Provider list for an InferenceSession: the requested one first, CPU as the fallback for
    operators it lacks. Raises ProviderError naming what this onnxruntime build does have."""
    available = ort.get_available_providers() if available is None else available
    wanted = ALIASES.get(name.lower(), name)
    if wanted not in available:
        have = ", ".join(short_name(p) for p in available if p != "AzureExecutionProvider")
        hint = ""
        if wanted == "CUDAExecutionProvider":
            hint = " (install onnxruntime-gpu instead of onnxruntime for CUDA)"
        raise ProviderError(f"execution provider {name!r} is not available in this onnxruntime "
                            f"build; available: {have}{hint}")
    return [wanted] if wanted == "CPUExecutionProvider" else [wanted, "CPUExecutionProvider"]


def check_active(requested: list[str], active: list[str]) -> None:
    """onnxruntime silently drops a provider whose libraries fail to load (e.g. CUDA without
    cuDNN); refuse to run on CPU when the user asked for something else."""
    if requested[0] not in active:
        raise ProviderError(f"execution provider {short_name(requested[0])!r} is installed but "
                            f"failed to start (session runs on: {', '.join(map(short_name, active))}); "
                            "check its libraries (e.g. CUDA/cuDNN versions)")
