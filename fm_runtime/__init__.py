"""fm-runtime: sample flow-matching models from one ONNX file with numpy + onnxruntime.

    import fm_runtime
    sampler = fm_runtime.load()              # the moons model shipped with the package
    x = sampler.sample(1000, steps=8, solver="midpoint", seed=0)
"""
from .contract import FORMAT_VERSION, ModelSpec
from .errors import FmError
from .sampler import Sampler, default_model_path, load
from .solvers import SOLVERS, integrate, nfe

__version__ = "0.1.0"
__all__ = ["load", "Sampler", "ModelSpec", "FmError", "SOLVERS", "integrate", "nfe",
           "default_model_path", "FORMAT_VERSION", "__version__"]
