"""fm-runtime: sample flow-matching models from one ONNX file with numpy + onnxruntime.

    import fm_runtime
    sampler = fm_runtime.load()              # the moons model shipped with the package
    x = sampler.sample(1000, steps=8, solver="midpoint", seed=0)
    x, logp = sampler.sample(1000, seed=0, return_logprob=True)   # with log densities (nats)
    logp = sampler.log_prob(x)                                    # of any data

Importing the package has no side effects and loads onnxruntime only when a name that needs it
is first used. onnxruntime 1.2x keeps a device id and an event database under ~/.cache unless
ORT_DISABLE_TELEMETRY=1 is set before it loads, and logs warnings through its default logger:
an application that wants neither sets the variable before its first import of onnxruntime and
calls `onnxruntime.set_default_logger_severity(3)` (fm-run, fm-train and fm-export do both).
"""
from __future__ import annotations

import importlib

from .errors import (
    FmError,
    InputError,
    Interrupted,
    ModelError,
    NumericalError,
    ProviderError,
    ResourceError,
    TimedOut,
    UsageError,
)

__version__ = "0.1.0"
# the public names that need onnxruntime, imported on first use (PEP 562)
_LAZY = {"load": "engine.sampler", "Sampler": "engine.sampler", "SampleResult": "engine.sampler",
         "default_model_path": "engine.sampler", "Request": "engine.request", "ModelSpec": "model.spec",
         "FORMAT_VERSION": "model.contract", "request_stop": "model.control", "CancelToken": "model.control", "SOLVERS": "solve.solvers",
         "integrate": "solve.solvers", "nfe": "solve.solvers"}
__all__ = ["load", "Sampler", "SampleResult", "Request", "ModelSpec", "FmError", "ModelError", "InputError",
           "NumericalError", "ProviderError", "UsageError", "ResourceError", "Interrupted", "TimedOut", "request_stop", "CancelToken",
           "SOLVERS", "integrate", "nfe", "default_model_path", "FORMAT_VERSION", "__version__"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'fm_runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
