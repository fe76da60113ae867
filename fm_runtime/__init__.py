"""fm-runtime: sample flow-matching models from one ONNX file with numpy + onnxruntime.

    import fm_runtime
    sampler = fm_runtime.load()              # the moons model shipped with the package
    x = sampler.sample(1000, steps=8, solver="midpoint", seed=0)
    x, logp = sampler.sample(1000, seed=0, return_logprob=True)   # with log densities (nats)
    logp = sampler.log_prob(x)                                    # of any data
"""
import os as _os

# onnxruntime (1.2x+) keeps a device id and an event database under ~/.cache/Microsoft on every
# import unless this is set before it loads; the runtime writes only the outputs asked for.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from .engine.sampler import Sampler, SampleResult, default_model_path, load  # noqa: E402
from .errors import (  # noqa: E402
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
from .model.contract import FORMAT_VERSION, ModelSpec  # noqa: E402
from .model.control import request_stop  # noqa: E402
from .solve.solvers import SOLVERS, integrate, nfe  # noqa: E402

__version__ = "0.1.0"
__all__ = ["load", "Sampler", "SampleResult", "ModelSpec", "FmError", "ModelError", "InputError", "NumericalError",
           "ProviderError", "UsageError", "ResourceError", "Interrupted", "TimedOut", "request_stop", "SOLVERS", "integrate", "nfe", "default_model_path", "FORMAT_VERSION",
           "__version__"]
