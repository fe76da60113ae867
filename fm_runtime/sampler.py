"""Load a model file and sample it: the runtime's front door (numpy + onnxruntime only)."""
from __future__ import annotations

import base64
import json
import os
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import numpy as np
import onnxruntime as ort

from . import providers as _providers
from .contract import ModelSpec, divergence_problem, io_table, read_spec
from .device import BoundGraphRunner, DeviceLoop, device_of
from .errors import FmError, InputError, ModelError, NumericalError
from .likelihood import probe_vectors, resolve_method, solve_with_divergence, standard_normal_logpdf
from .noise import BLOCK, new_seed, noise_rows
from .solvers import check_steps, get_solver, integrate, integrate_inplace

DEFAULT_MODEL = "moons.onnx"
# Rows per tile on CPU: a 2048 x 64 float32 activation (512 KiB) stays in L2; 1024-8192 measured
# within 3% of each other for the 64-wide MLP, one call on 100 000 rows 2.4x slower.
DEFAULT_TILE = 2048
# Batches above this many rows per worker are split so that every worker gets a share
# (256 rows as 2 x 128 on 2 cores: 0.86 ms against 1.30 ms in one call); below it, per-call
# overhead outweighs the second core.
MIN_SPLIT = 128
# Rows solved per chunk when a run is streamed to disk (4 noise blocks, 2 MiB of 2-D samples).
CHUNK_ROWS = 4 * BLOCK


def default_model_path() -> Path:
    """The small moons model shipped inside the package."""
    return Path(str(resources.files("fm_runtime.models").joinpath(DEFAULT_MODEL)))


def _one_line(e: Exception) -> str:
    msg = " ".join(str(e).split())
    for noise in ("[ONNXRuntimeError] : ", "onnxruntime::"):
        msg = msg.replace(noise, "")
    return msg[:300]


def _load_failure(where: str, e: Exception) -> ModelError:
    """Name the problem when onnxruntime refuses a file."""
    msg = _one_line(e)
    low = msg.lower()
    if "external" in low:
        return ModelError(f"{where}: the model keeps weights in a separate external-data file; "
                          "fm-runtime loads one-file models only (re-export, or onnx.save(..., "
                          "save_as_external_data=False))")
    if "not a registered function/op" in low or "could not find an implementation" in low:
        return ModelError(f"{where}: the model uses an operator this onnxruntime does not provide "
                          f"(custom operators are not supported): {msg}")
    if "protobuf parsing failed" in low or "invalid_protobuf" in low:
        return ModelError(f"{where}: not an ONNX model, or truncated or corrupted (cannot parse it)")
    return ModelError(f"{where}: not a loadable ONNX model ({msg})")


class Sampler:
    """A loaded model: `sample()` integrates its velocity from noise (t = 0) to data (t = 1)."""

    def __init__(self, session: ort.InferenceSession, spec: ModelSpec, path: str, *,
                 tile: int = DEFAULT_TILE, workers: int = 1, device_resident: bool = False,
                 session_options: ort.SessionOptions | None = None):
        self.session = session
        self.session_options = session_options
        self._jvp_session: ort.InferenceSession | None = None
        self.spec = spec
        self.path = path
        self.providers = session.get_providers()
        self.last_nfe = 0
        self.tile = int(tile)
        self.workers = max(1, int(workers))
        self._pool: ThreadPoolExecutor | None = None
        self._keep_partial = False
        self.nonfinite: list[tuple[int, float, str]] = []   # where solves went NaN/Inf (keep_partial)
        # state kept on the provider's device across steps (default off the CPU)
        self._device_loop = self._bound_graph = None
        if device_resident:
            device = device_of(self.providers[0])
            if self.baked:
                self._bound_graph = BoundGraphRunner(session, spec, device)
            else:
                self._device_loop = DeviceLoop(session, spec, device)

    @property
    def baked(self) -> bool:
        return self.spec.kind == "baked"

    @property
    def data_shape(self) -> tuple[int, ...]:
        return self.spec.data_shape

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    def check_labels(self, labels, n: int) -> np.ndarray | None:
        """Labels as int64 [n] (an int applies to every row; None: no label), checked against the
        model's classes; the "no label" id (spec.null_class) is allowed."""
        if labels is None:
            return None
        if not self.num_classes:
            raise InputError(f"{self.path} is not class-conditional; it takes no labels")
        arr = np.asarray(labels)
        if arr.dtype.kind not in "iu" and not (arr.dtype.kind == "f" and np.all(np.isfinite(arr))
                                               and np.all(arr == np.round(arr))):
            raise InputError(f"labels must be integers, got dtype {arr.dtype}")
        arr = np.broadcast_to(arr.astype(np.int64), (n,)) if arr.ndim == 0 else arr.astype(np.int64)
        if arr.shape != (n,):
            raise InputError(f"labels have shape {list(arr.shape)}, expected [{n}] (one per sample)")
        bad = arr[(arr < 0) | (arr > self.num_classes)]
        if bad.size:
            raise InputError(f"label {int(bad[0])} is out of range: this model has classes "
                             f"0..{self.num_classes - 1} (and {self.spec.null_class} for no label)")
        return np.ascontiguousarray(arr)

    @staticmethod
    def check_guidance(guidance: float, labels=None) -> float:
        g = float(guidance)
        if not np.isfinite(g) or abs(g) > 1e3:
            raise InputError(f"guidance must be a finite number of magnitude <= 1000, got {guidance}")
        if g != 1.0 and labels is None:
            raise InputError(f"guidance {g:g} needs labels (it weighs the conditional against the "
                             "unconditional velocity)")
        return g

    def _feed(self, batch: int, labels: np.ndarray | None, guidance: float):
        """(rows per run, fixed feed entries, combine) for the velocity graph: a conditional
        model gets its labels (the "no label" id when none are given); classifier-free guidance
        runs the conditional and the unconditional rows in one batched call and combines them
        as v_u + w (v_c - v_u)."""
        if not self.num_classes:
            return batch, {}, None
        null = np.full(batch, self.spec.null_class, np.int64)
        if labels is None or guidance == 1.0:
            return batch, {self.spec.y_name: null if labels is None else labels}, None
        w = guidance

        def combine(out: np.ndarray) -> np.ndarray:
            vc, vu = out[:batch], out[batch:]
            return vu + w * (vc - vu)
        return 2 * batch, {self.spec.y_name: np.concatenate([labels, null])}, combine

    def velocity(self, x: np.ndarray, t: float | np.ndarray, labels=None, guidance: float = 1.0) -> np.ndarray:
        """v(x, t) for a batch x [B, *shape]; t a scalar or [B] array; a conditional model's
        labels and guidance weight as in sample()."""
        if self.baked:
            raise ValueError(f"{self.path} is a baked sampler; it has no velocity to evaluate")
        x = np.ascontiguousarray(x, dtype=np.float32)
        labels = self.check_labels(labels, len(x))
        rows, fixed, combine = self._feed(len(x), labels, self.check_guidance(guidance, labels))
        tb = np.empty((rows,) if self.spec.t_rank == 1 else (rows, 1), np.float32)
        tb[...] = np.reshape(np.tile(np.ravel(t), rows // len(x)), tb.shape) if np.ndim(t) else t
        xs = x if rows == len(x) else np.concatenate([x, x])
        out = self.session.run([self.spec.v_name], {self.spec.x_name: xs, self.spec.t_name: tb, **fixed})[0]
        return out if combine is None else combine(out)

    def _velocity_fn(self, batch: int, labels: np.ndarray | None = None, guidance: float = 1.0):
        """v(x, t) for scalar t at a fixed batch size, reusing its buffers (one set per solve, so
        tiles solved in parallel threads never share them)."""
        rows, fixed, combine = self._feed(batch, labels, guidance)
        tb = np.empty((rows,) if self.spec.t_rank == 1 else (rows, 1), np.float32)
        run, names = self.session.run, [self.spec.v_name]
        x_name, t_name = self.spec.x_name, self.spec.t_name
        if combine is None:
            def f(x: np.ndarray, t: float) -> np.ndarray:
                tb.fill(t)
                return run(names, {x_name: x, t_name: tb, **fixed})[0]
            return f
        both = np.empty((rows, *self.data_shape), np.float32)

        def guided(x: np.ndarray, t: float) -> np.ndarray:
            tb.fill(t)
            both[:batch] = x
            both[batch:] = x
            return combine(run(names, {x_name: both, t_name: tb, **fixed})[0])
        return guided

    def noise(self, n: int, seed: int | None = None, start: int = 0) -> np.ndarray:
        """Rows [start, start + n) of the seeded standard-normal noise stream (see noise.py)."""
        return noise_rows(new_seed() if seed is None else seed, start, start + n, self.data_shape)

    def nfe(self, steps: int | None = None, solver: str | None = None) -> int:
        return get_solver(solver or self.spec.default_solver).evals_per_step * (steps or self.spec.default_steps)

    def check_baked(self, steps: int | None, solver: str | None, trajectory: bool) -> None:
        """Refuse, before any work, what a baked file cannot do (other steps, trajectories)."""
        b = self.spec.baked
        if (steps is not None and steps != b["steps"]) or (solver is not None and solver != b["solver"]):
            raise ValueError(f"{self.path} is a baked {b['solver']}:{b['steps']} sampler; it cannot "
                             f"run {solver or b['solver']}:{steps or b['steps']} (export another --bake)")
        if trajectory:
            raise ValueError(f"{self.path} is a baked sampler: it returns final samples only, "
                             "no trajectory (use the velocity model for that)")

    def _solve_tile(self, z: np.ndarray, steps: int, solver: str, labels: np.ndarray | None = None,
                    guidance: float = 1.0) -> tuple[np.ndarray, int]:
        if self.num_classes:   # labels: the host loop (the device loop binds x and t only)
            return integrate_inplace(self._velocity_fn(len(z), labels, guidance), z, steps, solver,
                                     self._watch(steps))
        if self._bound_graph is not None:
            x, calls = self._bound_graph.run(z), self.spec.baked["nfe"]
        elif self.baked:
            x, calls = self.session.run([self.spec.out_name], {self.spec.z_name: z})[0], self.spec.baked["nfe"]
        elif self._device_loop is not None:
            x, calls = self._device_loop.solve(z, steps, solver)
        else:
            return integrate_inplace(self._velocity_fn(len(z)), z, steps, solver, self._watch(steps))
        self._watch(steps)(x, steps, 1.0)   # only the end state is visible here
        return x, calls

    def _watch(self, steps: int):
        """After each step: note (or, unless keeping partial results, raise on) NaN/Inf."""
        def check(x: np.ndarray, step: int, t: float) -> None:
            if np.isfinite(x).all():
                return
            bad = int((~np.isfinite(x.reshape(len(x), -1))).any(1).sum())
            where = ("in the baked graph's output (sample the velocity model to see the step)"
                     if self.baked or self._device_loop is not None else f"at step {step} of {steps} (t = {t:.3f})")
            if not self._keep_partial:
                raise NumericalError(f"{self.path}: the solve produced NaN/Inf {where}, in {bad} of "
                                     f"{len(x)} rows of a tile")
            self.nonfinite.append((step, t, where))
        return check

    def _tiles(self, n: int, tile: int | None = None) -> list[tuple[int, int]]:
        tile = self.tile if tile is None else tile
        rows = min(tile, max(MIN_SPLIT, -(-n // self.workers))) if tile > 0 else n
        return [(a, min(a + rows, n)) for a in range(0, n, rows)]

    def _map(self, run, bounds: list) -> list:
        """run(bounds[i]) for every tile, over `workers` threads (onnxruntime releases the GIL
        while it runs, so tiles run in parallel)."""
        if self.workers == 1 or len(bounds) == 1:
            return [run(ab) for ab in bounds]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="fm-run")
        return list(self._pool.map(run, bounds))

    def _solve(self, x0: np.ndarray, steps: int, solver: str, labels: np.ndarray | None = None,
               guidance: float = 1.0) -> tuple[np.ndarray, int]:
        """Solve in tiles of `tile` rows, each tile one independent solve."""
        bounds = self._tiles(len(x0))
        if len(bounds) == 1:
            return self._solve_tile(x0, steps, solver, labels, guidance)
        out = np.empty_like(x0)

        def run(ab: tuple[int, int]) -> int:
            a, b = ab
            out[a:b], calls = self._solve_tile(x0[a:b], steps, solver, None if labels is None else labels[a:b], guidance)
            return calls
        return out, self._map(run, bounds)[0]

    def check_noise(self, noise: np.ndarray, n: int | None = None, what: str = "noise") -> np.ndarray:
        """A float array [n, *data_shape] with finite values, as contiguous float32."""
        noise = np.asarray(noise)
        if noise.dtype.kind != "f":
            raise InputError(f"{what} must be floating point, got dtype {noise.dtype}")
        if noise.ndim != 1 + len(self.data_shape) or tuple(noise.shape[1:]) != self.data_shape:
            raise InputError(f"{what} has shape {list(noise.shape)}, expected [n, "
                             f"{', '.join(map(str, self.data_shape))}]")
        if n is not None and noise.shape[0] != n:
            raise InputError(f"{what} has {noise.shape[0]} rows but n = {n}")
        if noise.shape[0] == 0:
            raise InputError(f"{what} has no rows")
        if not np.isfinite(noise).all():
            raise InputError(f"{what} contains NaN or Inf")
        return np.ascontiguousarray(noise, dtype=np.float32)

    def sample(self, n: int | None = None, steps: int | None = None, solver: str | None = None,
               seed: int | None = None, noise: np.ndarray | None = None,
               return_trajectory: bool = False, keep_partial: bool = False, labels=None,
               guidance: float = 1.0, return_logprob: bool = False, divergence: str = "auto",
               probes: int = 1, probe_seed: int = 0):
        """Draw samples. Give `n` (with an optional `seed`) or a `noise` array [n, *shape].

        Class-conditional models take `labels` (an int for every row, or [n] ints; None: no label)
        and a classifier-free `guidance` weight w: v = v_u + w (v_c - v_u), so w = 1 is the
        conditional model and w = 0 the unconditional one.

        Returns the samples [n, *shape] as float32, or (samples, trajectory) with trajectory
        [steps + 1, n, *shape] (noise first) when `return_trajectory` is true, or (samples,
        log_density) when `return_logprob` is true: log p1 of each sample in nats, from the same
        forward solve (see log_prob for `divergence`, `probes`, `probe_seed`). A solve that turns
        NaN/Inf raises NumericalError naming the step and time, unless `keep_partial` is true:
        then the rows that blew up stay non-finite and `self.nonfinite` says where.
        """
        if self.baked:
            self.check_baked(steps, solver, return_trajectory)
        if return_logprob and return_trajectory:
            raise ValueError("return_logprob and return_trajectory cannot be combined")
        steps = self.spec.default_steps if steps is None else int(steps)
        solver = solver or self.spec.default_solver
        get_solver(solver)
        check_steps(steps)
        guidance = self.check_guidance(guidance, labels)
        if noise is not None:
            x0 = self.check_noise(noise, n)
        else:
            if n is None or int(n) < 1:
                raise ValueError(f"n must be >= 1, got {n}")
            x0 = self.noise(int(n), seed)
        labels = self.check_labels(labels, len(x0))
        self._keep_partial, self.nonfinite = keep_partial, []
        if return_logprob:
            x, integral = self._solve_divergence(x0, steps, solver, labels, guidance, divergence,
                                                 probes, probe_seed, forward=True)
            return x, standard_normal_logpdf(x0) - integral
        if return_trajectory:
            sol = integrate(self._velocity_fn(len(x0), labels, guidance), x0, steps, solver, trajectory=True)
            x, self.last_nfe, trajectory = sol.x, sol.nfe, np.stack(sol.trajectory)
            for i, state in enumerate(sol.trajectory[1:], 1):
                self._watch(steps)(state, i, sol.times[i])
            return x, trajectory
        x, self.last_nfe = self._solve(x0, steps, solver, labels, guidance)
        return x

    def log_prob(self, x: np.ndarray, steps: int | None = None, solver: str | None = None, labels=None,
                 guidance: float = 1.0, divergence: str = "auto", probes: int = 1,
                 probe_seed: int = 0) -> np.ndarray:
        """log p1(x) in nats for data x [n, *shape], by integrating x back from t = 1 to noise at
        t = 0 with the divergence of the velocity: log N(x_0) - int_0^1 div v dt.

        divergence "exact" sums over all D basis directions (D Jacobian-vector products per row
        and evaluation); "hutchinson" averages `probes` Rademacher probes per row (seeded by
        `probe_seed` and the row index): unbiased, cheaper in high dimension; "auto" is exact up
        to likelihood.EXACT_MAX_DIM dimensions. Divide by the number of dimensions (and ln 2)
        for nats (bits) per dimension. Conditional models: log p(x | label), or of the guided
        field with guidance != 1."""
        steps = self.spec.default_steps if steps is None else int(steps)
        solver = solver or self.spec.default_solver
        get_solver(solver)
        check_steps(steps)
        x1 = self.check_noise(x, what="data")
        labels = self.check_labels(labels, len(x1))
        z, integral = self._solve_divergence(x1, steps, solver, labels, self.check_guidance(guidance, labels),
                                             divergence, probes, probe_seed, forward=False)
        return standard_normal_logpdf(z) - integral

    def _solve_divergence(self, x0: np.ndarray, steps: int, solver: str, labels, guidance: float,
                          divergence: str, probes: int, probe_seed: int, forward: bool):
        """Solve [x, A] (dA/dt = div v) forward from noise or backward from data, in tiles.
        Returns (end state, A(end) - A(start) signed so that log p1 = log N(x_0) - integral)."""
        problem = divergence_problem(self.spec, self.path)
        if problem:
            raise ModelError(problem)
        method = resolve_method(divergence, self.spec.dim)
        if method == "hutchinson" and not 1 <= int(probes) <= 1024:
            raise ValueError(f"probes must be between 1 and 1024, got {probes}")
        session = self._divergence_session()
        k = self.spec.dim if method == "exact" else int(probes)
        n = len(x0)
        end = np.empty_like(x0)
        integral = np.empty(n, np.float64)
        calls = [0]

        def run(ab: tuple[int, int]) -> None:
            a, b = ab
            e = probe_vectors(b - a, self.data_shape, method, k, probe_seed, start=a)
            jvp = self._jvp_fn(session, b - a, None if labels is None else labels[a:b], guidance)
            t0, t1 = (0.0, 1.0) if forward else (1.0, 0.0)
            end[a:b], acc, calls[0] = solve_with_divergence(jvp, x0[a:b], e, method, steps, solver, t0, t1)
            integral[a:b] = acc if forward else -acc

        self._map(run, self._tiles(n, max(16, self.tile // k) if self.tile > 0 else 0))
        if not (np.isfinite(end).all() and np.isfinite(integral).all()):
            raise NumericalError(f"{self.path}: the log-likelihood solve produced NaN/Inf")
        self.last_nfe = calls[0]
        return end, integral

    def _divergence_session(self) -> ort.InferenceSession:
        """The Jacobian-vector-product graph the file carries (fm.divergence), loaded once."""
        if self._jvp_session is None:
            g = self.spec.divergence
            try:
                data = base64.b64decode(g["onnx_base64"], validate=True)
                session = ort.InferenceSession(data, sess_options=self.session_options,
                                               providers=self.providers)
            except Exception as e:
                raise ModelError(f"{self.path}: fm.divergence does not hold a loadable graph ({_one_line(e)})") from None
            spec = ModelSpec(self.data_shape, num_classes=self.num_classes, y_name=self.spec.y_name,
                             selftest=_read_selftest(session, self.path + " (divergence graph)"))
            _self_test(session, spec, f"{self.path} (divergence graph)")
            self._jvp_session = session
        return self._jvp_session

    def _jvp_fn(self, session: ort.InferenceSession, batch: int, labels: np.ndarray | None, guidance: float):
        """(x, t, e) -> (v, J e) with the same labels and guidance as the velocity (guidance
        combines the products linearly, like the velocities)."""
        rows, fixed, combine = self._feed(batch, labels, guidance)
        g = self.spec.divergence
        names = ["v", g.get("output_jv", "jv")]
        e_name = g.get("input_e", "e")
        tb = np.empty(rows, np.float32)

        def jvp(x: np.ndarray, t: float, e: np.ndarray):
            tb.fill(t)
            if combine is None:
                return session.run(names, {"x": x, "t": tb, e_name: e, **fixed})
            v, jv = session.run(names, {"x": np.concatenate([x, x]), "t": tb, e_name: np.concatenate([e, e]), **fixed})
            return combine(v), combine(jv)
        return jvp

    def sample_chunks(self, start: int, stop: int, seed: int, steps: int | None = None,
                      solver: str | None = None, chunk: int = CHUNK_ROWS, keep_partial: bool = False,
                      labels=None, guidance: float = 1.0):
        """Rows [start, stop) of one seeded run, solved and yielded chunk by chunk as
        (first_row, samples): memory stays bounded whatever the number of rows. `labels`: one
        int, or an array indexed by the run's row numbers."""
        for a in range(start, stop, chunk):
            b = min(a + chunk, stop)
            yield a, self.sample(noise=noise_rows(seed, a, b, self.data_shape), steps=steps,
                                 solver=solver, keep_partial=keep_partial, guidance=guidance,
                                 labels=label_rows(labels, a, b))


def label_rows(labels, a: int, b: int):
    """Rows [a, b) of per-sample labels; None or one int applies to every row as it is."""
    return labels if labels is None or np.ndim(labels) == 0 else labels[a:b]


def _self_test(session: ort.InferenceSession, spec: ModelSpec, where: str) -> None:
    """Run the probe the exporter recorded (fm.selftest) and compare: catches weights altered
    after export (bit flips, bad copies) and providers that compute something else."""
    probe = spec.selftest
    if not probe:
        return
    dtypes = {i.name: np.int64 if i.type == "tensor(int64)" else np.float32 for i in session.get_inputs()}
    try:
        feed = {k: np.asarray(v, dtypes.get(k, np.float32)) for k, v in probe["inputs"].items()}
        want = np.asarray(probe["output"], np.float32)
        atol = float(probe.get("atol", 1e-3))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ModelError(f"{where}: metadata fm.selftest is malformed") from None
    try:
        got = session.run(None, feed)[0]
    except Exception as e:
        raise ModelError(f"{where}: fm.selftest does not fit the graph ({_one_line(e)})") from None
    with np.errstate(all="ignore"):
        same = got.shape == want.shape and bool(np.all(np.abs(got - want) <= atol * np.maximum(1.0, np.abs(want))))
        diff = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("nan")
    if not same:
        raise ModelError(f"{where}: fails its self-test: the graph's output differs from the values "
                         f"recorded at export (max |diff| {diff:.3g}); the file was altered or corrupted")


def _read_selftest(session: ort.InferenceSession, where: str) -> dict:
    raw = session.get_modelmeta().custom_metadata_map.get("fm.selftest")
    if raw is None:
        return {}
    try:
        probe = json.loads(raw)
    except json.JSONDecodeError:
        raise ModelError(f"{where}: metadata fm.selftest is not valid JSON") from None
    if not isinstance(probe, dict):
        raise ModelError(f"{where}: metadata fm.selftest is malformed")
    return probe


def load(path: str | os.PathLike | None = None, provider: str = "cpu", *,
         data_shape: tuple[int, ...] | int | None = None, x_name: str | None = None,
         t_name: str | None = None, threads: int | None = None, tile: int | None = None,
         intra_op_threads: int = 1, device_resident: bool | None = None,
         cuda_graph: bool = False) -> Sampler:
    """Load a model file (None: the moons model shipped inside the package).

    `provider` is a short name ("cpu", "cuda", ...) or a full onnxruntime provider name.
    `data_shape`, `x_name`, `t_name` stand in for metadata a plain velocity ONNX lacks.
    Speed: on CPU a batch is solved in tiles of `tile` rows (0: no tiling) spread over `threads`
    worker threads (default: all cores), each onnxruntime call using `intra_op_threads` threads
    (default 1: for these small networks, parallel tiles beat parallel matmuls). On a GPU provider
    the batch goes whole to one call, and the solver state stays on the device between steps
    (`device_resident`, default: on for every provider but CPU). `cuda_graph=True` lets the CUDA
    provider capture a baked graph once per batch size and replay it.
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
    on_cpu = wanted[0] == "CPUExecutionProvider"
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = int(intra_op_threads)
    opts.inter_op_num_threads = 1
    if int(intra_op_threads) > 1:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    provider_options = None
    if cuda_graph:
        if wanted[0] != "CUDAExecutionProvider":
            raise FmError("cuda_graph needs provider='cuda'", exit_code=2)
        provider_options = [{"enable_cuda_graph": "1"}, {}]
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ModelError(f"{where}: cannot read the file ({e.strerror})") from None
    try:
        # from bytes, so a reference to external data cannot silently load a sidecar file
        session = ort.InferenceSession(data, sess_options=opts, providers=wanted,
                                       provider_options=provider_options)
    except Exception as e:  # onnxruntime raises its own exception types per failure
        raise _load_failure(where, e) from None
    _providers.check_active(wanted, session.get_providers())
    if isinstance(data_shape, int):
        data_shape = (data_shape,)
    try:
        metadata = dict(session.get_modelmeta().custom_metadata_map)
        inputs, outputs = io_table(session.get_inputs()), io_table(session.get_outputs())
    except UnicodeDecodeError:
        raise ModelError(f"{where}: the model's metadata or input/output names are not valid UTF-8") from None
    spec = read_spec(where, metadata, inputs, outputs,
                     data_shape=data_shape, x_name=x_name, t_name=t_name)
    _self_test(session, spec, where)
    workers = threads or os.cpu_count() or 1
    if not on_cpu:
        tile, workers = 0, 1
    if cuda_graph and spec.kind != "baked":
        raise FmError(f"{where}: cuda_graph needs a baked sampler (fm-export --bake); the velocity "
                      "loop changes its bindings every step", exit_code=2)
    return Sampler(session, spec, where, tile=DEFAULT_TILE if tile is None else tile, workers=workers,
                   device_resident=(not on_cpu) if device_resident is None else device_resident,
                   session_options=opts)
