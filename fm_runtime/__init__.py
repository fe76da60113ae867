"""fm-runtime: sample flow-matching models from one ONNX file with numpy + onnxruntime.

    import fm_runtime
    sampler = fm_runtime.load()              # the moons model shipped with the package
    x = sampler.sample(1000, steps=8, solver="midpoint", seed=0)
    x, logp = sampler.sample(1000, seed=0, return_logprob=True)   # with log densities (nats)
    logp = sampler.log_prob(x)                                    # of any data
"""
from .contract import FORMAT_VERSION, ModelSpec
from .errors import FmError, InputError, ModelError, NumericalError, ProviderError, UsageError
from .sampler import SampleResult, Sampler, default_model_path, load
from .solvers import SOLVERS, integrate, nfe

__version__ = "0.1.0"
__all__ = ["load", "Sampler", "SampleResult", "ModelSpec", "FmError", "ModelError", "InputError", "NumericalError",
           "ProviderError", "UsageError", "SOLVERS", "integrate", "nfe", "default_model_path", "FORMAT_VERSION",
           "__version__"]
