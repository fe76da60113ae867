"""Load a model file and sample it: the runtime's front door (numpy + onnxruntime only)."""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import numpy as np
import onnxruntime as ort

from . import providers as _providers
from .contract import ModelSpec, read_spec
from .errors import InputError, ModelError, NumericalError
from .solvers import get_solver, integrate

DEFAULT_MODEL = "moons.onnx"


def default_model_path() -> Path:
    """The small moons model shipped inside the package."""
    return Path(str(resources.files("fm_runtime.models").joinpath(DEFAULT_MODEL)))


def _io_table(args) -> dict:
    return {a.name: (a.type, list(a.shape)) for a in args}


def _one_line(e: Exception) -> str:
    msg = " ".join(str(e).split())
    for noise in ("[ONNXRuntimeError] : ", "onnxruntime::"):
        msg = msg.replace(noise, "")
    return msg[:300]


class Sampler:
    """A loaded model: `sample()` integrates its velocity from noise (t = 0) to data (t = 1)."""

    def __init__(self, session: ort.InferenceSession, spec: ModelSpec, path: str):
        self.session = session
        self.spec = spec
        self.path = path
        self.providers = session.get_providers()
        self.last_nfe = 0
        self._t_cache: dict[tuple[int, int], np.ndarray] = {}

    @property
    def data_shape(self) -> tuple[int, ...]:
        return self.spec.data_shape

    def velocity(self, x: np.ndarray, t: float | np.ndarray) -> np.ndarray:
        """v(x, t) for a batch x [B, *shape]; t a scalar or [B] array."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        b = x.shape[0]
        if np.ndim(t) == 0:
            tb = self._t_cache.get((b, self.spec.t_rank))
            if tb is None:
                tb = np.empty((b,) if self.spec.t_rank == 1 else (b, 1), np.float32)
                self._t_cache[(b, self.spec.t_rank)] = tb
            tb.fill(t)
        else:
            tb = np.asarray(t, np.float32).reshape((b,) if self.spec.t_rank == 1 else (b, 1))
        return self.session.run([self.spec.v_name], {self.spec.x_name: x, self.spec.t_name: tb})[0]

    def noise(self, n: int, seed: int | None = None) -> np.ndarray:
        """Standard-normal float32 noise [n, *shape] from numpy's default Generator (PCG64)."""
        return np.random.default_rng(seed).standard_normal((n, *self.data_shape), dtype=np.float32)

    def nfe(self, steps: int | None = None, solver: str | None = None) -> int:
        return get_solver(solver or self.spec.default_solver).evals_per_step * (steps or self.spec.default_steps)

    def check_noise(self, noise: np.ndarray, n: int | None = None) -> np.ndarray:
        noise = np.asarray(noise)
        if noise.dtype.kind != "f":
            raise InputError(f"noise must be floating point, got dtype {noise.dtype}")
        if noise.ndim != 1 + len(self.data_shape) or tuple(noise.shape[1:]) != self.data_shape:
            raise InputError(f"noise has shape {list(noise.shape)}, expected [n, "
                             f"{', '.join(map(str, self.data_shape))}]")
        if n is not None and noise.shape[0] != n:
            raise InputError(f"noise has {noise.shape[0]} rows but n = {n}")
        if noise.shape[0] == 0:
            raise InputError("noise has no rows")
        if not np.isfinite(noise).all():
            raise InputError("noise contains NaN or Inf")
        return np.ascontiguousarray(noise, dtype=np.float32)

    def sample(self, n: int | None = None, steps: int | None = None, solver: str | None = None,
               seed: int | None = None, noise: np.ndarray | None = None,
               return_trajectory: bool = False):
        """Draw samples. Give `n` (with an optional `seed`) or a `noise` array [n, *shape].

        Returns the samples [n, *shape] as float32, or (samples, trajectory) with trajectory
        [steps + 1, n, *shape] (noise first) when `return_trajectory` is true.
        """
        steps = self.spec.default_steps if steps is None else int(steps)
        solver = solver or self.spec.default_solver
        get_solver(solver)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if noise is not None:
            x0 = self.check_noise(noise, n)
        else:
            if n is None or int(n) < 1:
                raise ValueError(f"n must be >= 1, got {n}")
            x0 = self.noise(int(n), seed)
        sol = integrate(self.velocity, x0, steps, solver, trajectory=return_trajectory)
        self.last_nfe = sol.nfe
        if not np.isfinite(sol.x).all():
            raise NumericalError(f"{self.path}: the solve produced NaN or Inf "
                                 f"({solver}, {steps} steps); the model's velocity is not finite")
        if return_trajectory:
            return sol.x, np.stack(sol.trajectory)
        return sol.x


def load(path: str | os.PathLike | None = None, provider: str = "cpu", *,
         data_shape: tuple[int, ...] | int | None = None, x_name: str | None = None,
         t_name: str | None = None, threads: int | None = None) -> Sampler:
    """Load a model file (None: the moons model shipped inside the package).

    `provider` is a short name ("cpu", "cuda", ...) or a full onnxruntime provider name.
    `data_shape`, `x_name`, `t_name` stand in for metadata a plain velocity ONNX lacks.
    """
    p = default_model_path() if path is None else Path(path)
    where = str(p)
    if not p.exists():
        raise ModelError(f"{where}: model file not found")
    if p.is_dir():
        raise ModelError(f"{where}: is a directory, not a model file")
    if p.stat().st_size == 0:
        raise ModelError(f"{where}: file is empty")
    wanted = _providers.resolve(provider)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
    try:
        session = ort.InferenceSession(str(p), sess_options=opts, providers=wanted)
    except Exception as e:  # onnxruntime raises its own exception types per failure
        raise ModelError(f"{where}: not a loadable ONNX model ({_one_line(e)})") from None
    _providers.check_active(wanted, session.get_providers())
    if isinstance(data_shape, int):
        data_shape = (data_shape,)
    spec = read_spec(where, dict(session.get_modelmeta().custom_metadata_map),
                     _io_table(session.get_inputs()), _io_table(session.get_outputs()),
                     data_shape=data_shape, x_name=x_name, t_name=t_name)
    return Sampler(session, spec, where)
