"""Execution-provider selection and its errors (GPU paths tested as far as a CPU machine allows)."""
import onnxruntime as ort
import pytest

import fm_runtime
from fm_runtime.errors import ProviderError
from fm_runtime.model import providers


def test_cpu_is_default_and_used():
    s = fm_runtime.load()
    assert s.providers == ["CPUExecutionProvider"]


def test_aliases_resolve_with_cpu_fallback():
    avail = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers.resolve("cuda", avail) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers.resolve("CUDA", avail) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers.resolve("CUDAExecutionProvider", avail)[0] == "CUDAExecutionProvider"
    assert providers.resolve("cpu", avail) == ["CPUExecutionProvider"]


def test_missing_provider_lists_the_available_ones():
    with pytest.raises(ProviderError) as e:
        providers.resolve("cuda", ["AzureExecutionProvider", "CPUExecutionProvider"])
    msg = str(e.value)
    assert "'cuda' is not available" in msg and "available: cpu" in msg and "onnxruntime-gpu" in msg
    assert e.value.exit_code == 6


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="has CUDA")
def test_load_with_cuda_on_a_cpu_build_fails_clearly():
    with pytest.raises(ProviderError, match="available: cpu"):
        fm_runtime.load(provider="cuda")


def test_silent_fallback_is_refused():
    with pytest.raises(ProviderError, match="failed to start.*runs on: cpu"):
        providers.check_active(["CUDAExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"])
    providers.check_active(["CUDAExecutionProvider", "CPUExecutionProvider"],
                           ["CUDAExecutionProvider", "CPUExecutionProvider"])
