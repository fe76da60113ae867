"""The runtime's front door: load a model file and sample it (numpy + onnxruntime only).

A Sampler holds only what the file fixes (session, contract, backend, tiler); everything about
one request lives in that request, so one Sampler can be shared by many threads. `run()` returns
a SampleResult; `sample()` and `log_prob()` return arrays, as most callers want.
"""
from __future__ import annotations

import inspect
import os
import threading
from dataclasses import replace

import numpy as np
import onnxruntime as ort

from ..errors import InputError, UsageError
from ..model.contract import ModelSpec
from ..model.control import RUN, graph_errors, guarded, one_line, poll_stop
from ..model.execution import OPTIONS, saved
from ..model.session import default_model_path, open_divergence, open_model, open_stage
from ..solve.adaptive import dopri5
from ..solve.noise import BLOCK, NoiseStream, new_seed, noise_rows
from ..solve.solvers import get_solver, integrate
from . import likelihoods, options, request
from .backends import Watch, choose_backend
from .conditions import through_stage
from .likelihoods import valid_logpdf
from .result import SampleResult
from .tiler import DEFAULT_TILE, Tiler, default_tile
from .velocity import Conditioning, checked, velocity_at, velocity_fn

__all__ = ["Sampler", "SampleResult", "load", "default_model_path", "label_rows", "CHUNK_ROWS", "DEFAULT_TILE"]
# A run streamed to disk is solved in chunks of at most CHUNK_BYTES of samples (and CHUNK_ROWS
# rows: 4 noise blocks, 2 MiB of 2-D samples), so memory is bounded for every data shape.
CHUNK_ROWS, CHUNK_BYTES = 4 * BLOCK, 32 << 20
_EMPTY = inspect.Parameter.empty


def label_rows(labels, a: int, b: int):
    """Rows [a, b) of per-sample labels; None or one int applies to every row as it is."""
    return labels if labels is None or np.ndim(labels) == 0 else labels[a:b]


class Sampler:
    """A loaded model: `sample()` integrates its velocity from noise (t = 0) to data (t = 1)."""

    allow_loops = False         # load(allow_loops=True): the file's unbounded Loops are trusted
    execution: dict | None = None   # the saved choice load() applied (model/execution.py), if any

    def __init__(self, session: ort.InferenceSession, spec: ModelSpec, path: str, *,
                 tile: int = DEFAULT_TILE, workers: int = 1, device_resident: bool = False,
                 session_options: ort.SessionOptions | None = None, auto_tile: bool = False):
        self.session, self.spec, self.path = session, spec, path
        self.session_options = session_options
        self.providers = session.get_providers()
        self.backend = choose_backend(session, spec, device_resident)
        self.tiler = Tiler(tile, workers)
        self.auto_tile = auto_tile and spec.symbolic      # rows per tile from each request's bound shape
        self._jvp_session: ort.InferenceSession | None = None
        self._stage_session: ort.InferenceSession | None = None
        self.stage_calls = 0                  # condition-stage runs, one per request that needs one
        self._jvp_lock = threading.Lock()
        self._last = threading.local()

    def __repr__(self) -> str:
        what = (f"baked {self.spec.baked['solver']}:{self.spec.baked['steps']}" if self.baked
                else f"{'flow map' if self.spec.flow_map else 'velocity'}, {self.spec.default_solver} "
                     f"{self.spec.default_steps} steps")
        classes = f", {self.num_classes} classes" if self.num_classes else ""
        return f"Sampler({self.path!r}: {what}, data shape {list(self.data_shape)}{classes}, {self.providers[0]})"

    @property
    def last_nfe(self) -> int:
        """Network evaluations per row of this thread's last request (see SampleResult.nfe)."""
        return getattr(self._last, "nfe", 0)

    @property
    def baked(self) -> bool:
        return self.spec.kind == "baked"

    @property
    def data_shape(self) -> tuple[int, ...]:
        return self.spec.data_shape

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @guarded
    def velocity(self, x: np.ndarray, t: float | np.ndarray, labels=None, guidance: float = 1.0) -> np.ndarray:
        """v(x, t) for a batch x [B, *shape]; t a scalar or [B] array; labels and guidance as in sample().
        A flow-map file (spec.flow_map) also takes t as a tuple (s, t) of those: the average
        velocity u(x, s, t) of the jump from s to t (one time: u(x, t, t), the instantaneous one);
        a list is times per row, as an array is."""
        if self.baked:
            raise UsageError(f"{self.path} is a baked sampler; it has no velocity to evaluate")
        if isinstance(t, tuple) and not (self.spec.flow_map and len(t) == 2):
            raise UsageError(f"{self.path}: t is one time or one per row, or a tuple (s, t) of those for a flow-map "
                             f"file; {'this file is a velocity model' if not self.spec.flow_map else f'got {len(t)} times'}")
        t = tuple(t) if isinstance(t, tuple) else t
        x = np.ascontiguousarray(x, dtype=np.float32)
        labels = request.check_labels(self.spec, self.path, labels, len(x))
        guidance = options.check("guidance", guidance)
        request.check_guided(guidance, labels)
        return velocity_at(self.session, self.spec, x, t, Conditioning(labels, guidance))

    @guarded
    def noise(self, n: int, seed: int | None = None, start: int = 0) -> np.ndarray:
        """Rows [start, start + n) of the seeded standard-normal noise stream (see noise.py)."""
        seed = new_seed() if seed is None else options.check("seed", seed)
        if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
            raise UsageError(f"start must be a whole number >= 0 (the first row of the stream), got {start!r}",
                             key="start")
        return noise_rows(seed, int(start), int(start) + options.check("n", n), self.data_shape)

    def nfe(self, steps: int | None = None, solver: str | None = None) -> int:
        """Network evaluations per row of a fixed-step solve (the file's defaults where not given)."""
        solver, steps = request.map_solver(self.spec, self.path, solver, solver or self.spec.default_solver, steps)
        return get_solver(solver).evals_per_step * steps

    def request(self, *args, **kwargs) -> request.Request:
        """The checked Request that run() would solve (the model's defaults applied), without
        solving it: for callers that size or describe work first (fm-run does). A file with a
        condition stage runs it here, once, when the request gives the stage's inputs. Takes
        run()'s arguments."""
        return self._request(options.bind(_RUN, args, kwargs))

    def _request(self, given: dict, first: int = 0) -> request.Request:
        return request.resolve(self.spec, self.path, "sample", given, first=first, stage=self.through_stage)

    @guarded
    def stage_session(self) -> ort.InferenceSession | None:
        """The condition stage's session (None: the file has no stage), opened and self-tested on
        first use: a stage that cannot load raises ModelError here."""
        with self._jvp_lock:
            if self._stage_session is None and self.spec.stage:
                self._stage_session = open_stage(self.spec, self.path, self.providers, self.session_options,
                                                 self.allow_loops)
            return self._stage_session

    @guarded
    def through_stage(self, cond: dict | None, guidance=1.0, run_options=None) -> tuple[dict | None, dict]:
        """(the conditions with the condition stage's inputs replaced by its outputs, the nulls it
        made for guidance) (see conditions.through_stage); counts its runs in `stage_calls`."""
        def run(feed: dict) -> list:
            self.stage_session()
            with self._jvp_lock:
                self.stage_calls += 1
            try:
                return self._stage_session.run(self.spec.stage["outputs"], feed, run_options or RUN)
            except Exception as e:      # it passed its self-test at load: the request's values failed it
                poll_stop()
                if not type(e).__module__.startswith("onnxruntime"):
                    raise
                raise InputError(f"{self.path} (condition stage graph): the condition stage failed on this request's "
                                 f"{', '.join(feed)} ({one_line(e)[:300]})", key="cond", field=next(iter(feed))) from None
        guided = guidance != 1.0 and self.spec.input("guidance") is None
        return through_stage(self.spec, self.path, cond, run, guided) if self.spec.stage else (cond, {})

    @guarded
    def run(self, *args, **kwargs) -> SampleResult:
        """One sampling request; see sample() for the arguments. Safe to call from many threads."""
        return self.solve(self.request(*args, **kwargs))

    def solve(self, req: request.Request) -> SampleResult:
        """Solve a Request (from request()): by the solver's kind in the registry, with the
        divergence alongside for log densities, or keeping the trajectory."""
        with graph_errors(self.path, cancel=req.cancel):
            return self._solve_request(req)

    def _solve_request(self, req: request.Request) -> SampleResult:
        x0 = req.start()
        cond = req.conditioning()
        watch = Watch(self.path, req.keep_partial, req.run.poll)
        if req.kind == "adaptive":       # one system: the error norm, hence the steps, cover every row
            sol = dopri5(velocity_fn(self.session, self.spec, len(x0), cond), x0, **req.tolerances)
            watch.on_step(sol.accepted)(sol.x, sol.accepted, 1.0)
            result = SampleResult(sol.x, sol.nfe)
        elif req.logprob:
            x, integral, calls = self._solve_divergence(x0, req, forward=True)
            result = SampleResult(x, calls, logprob=valid_logpdf(x0, req) - integral)
        elif req.trajectory:
            sol = integrate(velocity_fn(self.session, self.spec, len(x0), cond), x0, req.steps, req.solver,
                            trajectory=True, schedule=req.schedule)
            for i, state in enumerate(sol.trajectory[1:], 1):
                watch.on_step(req.steps)(state, i, sol.times[i])
            result = SampleResult(sol.x, sol.nfe, trajectory=np.stack(sol.trajectory))
        else:
            result = SampleResult(*self._solve(x0, req, cond, watch, default_tile(req.spec.dim) if self.auto_tile else None))
        result.nonfinite = watch.nonfinite
        self._last.nfe = result.nfe
        return result

    def sample(self, *args, **kwargs):
        """Draw samples. Give `n` (with an optional `seed`) or a `noise` array [n, *shape].

        `schedule` places the steps in time (fm_runtime.solve.schedules): "uniform", "shift:S",
        "sway:S", "cosine", or explicit times [0, ..., 1] (which fix the steps); default: the
        model's (fm-run info shows it). solver "dopri5" is adaptive (fm_runtime.solve.adaptive): it takes
        `rtol`/`atol` (default 1e-5) instead of steps and reports its NFE in run().nfe / last_nfe.

        Class-conditional models take `labels` (an int for every row, or [n] ints; None: no label)
        and a classifier-free `guidance` weight w: v = v_u + w (v_c - v_u), so w = 1 is the
        conditional model and w = 0 the unconditional one.

        Files with extra inputs (contract version 4, `fm-run info` lists them) take `cond`
        {name: array}, each [n, *shape] per row or [*shape] for every row; symbols in the shapes
        (T) are bound from them, from `noise`, or from `dims` {"T": 50}. Guidance then nulls every
        condition that declares a null (v_u) and runs both halves in one call; a file with a
        guidance input gets w itself; a mask keeps the samples exactly 0 where it is 0.
        `guidance_interval` (a, b) guides only for a <= t <= b (the conditional velocity
        elsewhere); `guidance_calls` "two" runs the halves as two calls of n rows (for graphs
        that cannot take 2n rows) instead of one of 2n.

        `cancel` (a fm_runtime.CancelToken) cancels this request from another thread:
        token.cancel() ends it within milliseconds with Interrupted("cancelled").

        Returns the samples [n, *shape] as float32, or (samples, trajectory) with trajectory
        [steps + 1, n, *shape] (noise first) when `return_trajectory` is true, or (samples,
        log_density) when `return_logprob` is true: log p1 of each sample in nats, from the same
        forward solve (see log_prob for `divergence`, `probes`, `probe_seed`). A solve that turns
        NaN/Inf raises NumericalError naming the step and time, unless `keep_partial` is true:
        then the rows that blew up stay non-finite (run() reports where). Bad arguments raise
        UsageError, unusable noise InputError (both fm_runtime.FmError)."""
        given = options.bind(_SAMPLE, args, kwargs)
        r = self.solve(self._request(given))
        if given.get("return_trajectory"):
            return r.samples, r.trajectory
        return (r.samples, r.logprob) if given.get("return_logprob") else r.samples

    def _solve(self, x0: np.ndarray, req: request.Request, cond: Conditioning, watch: Watch, tile: int | None = None):
        """Solve in tiles, each tile one independent solve of the request on the backend."""
        spec = req.spec
        bounds = self.tiler.bounds(len(x0), tile, spec.dim)
        if len(bounds) == 1:
            x, calls = self.backend.solve(x0, req, cond, watch)
            return checked(spec, x, len(x0), "samples"), calls
        out = np.empty_like(x0)

        def run(ab: tuple[int, int]) -> int:
            a, b = ab
            x, calls = self.backend.solve(x0[a:b], req, cond.rows(a, b), watch)
            out[a:b] = checked(spec, x, b - a, "samples")
            return calls
        return out, self.tiler.map(run, bounds)[0]

    def sample_chunks(self, *args, **kwargs):
        """Rows [start, stop) of one seeded run (or of `noise`), solved and yielded chunk by chunk
        as (first_row, SampleResult): memory stays bounded whatever the number of rows. `labels`:
        one int, or an array indexed by the run's row numbers; so is each per-row array of `cond`.
        chunk: rows per chunk [default: CHUNK_BYTES of samples, at most CHUNK_ROWS]."""
        given = options.bind(_CHUNKS, args, kwargs)
        start, stop, chunk = given.pop("start"), given.pop("stop"), given.pop("chunk", None)
        given["cond"] = {k: label_rows(v, start, stop) if np.ndim(v) == self.spec.row_rank(k) + 1 else v
                         for k, v in (given.get("cond") or {}).items()} or None
        given["labels"] = label_rows(given.get("labels"), start, stop)
        if given.get("noise") is not None:
            given["noise"] = given["noise"][start:stop]
        else:
            given["n"] = stop - start
        yield from self.solve_chunks(self._request(given, first=start), chunk)

    def solve_chunks(self, req: request.Request, chunk: int | None = None):
        """A Request (from request(), or its rows()) solved and yielded chunk by chunk as
        (row of the seeded run, SampleResult); the condition stage, if any, already ran."""
        chunk = chunk or max(1, min(CHUNK_ROWS, CHUNK_BYTES // (4 * req.spec.dim)))
        stream = NoiseStream(req.seed, req.first, req.spec.data_shape) if req.noise is None else None
        for a in range(0, req.n, chunk):
            b = min(a + chunk, req.n)
            z = stream.take(b - a) if stream is not None else req.start(a, b)
            yield req.first + a, self.solve(replace(req.rows(a, b), noise=z, seed=None, first=0))

    @property
    def last_std_error(self) -> np.ndarray | None:
        """Per row, the standard error (nats) of this thread's last log-likelihoods (see log_prob)."""
        return getattr(self._last, "std_error", None)

    @guarded
    def log_prob(self, *args, **kwargs) -> np.ndarray:
        """log p1(x) in nats for data x [n, *shape], by integrating x back from t = 1 to noise at
        t = 0 with the divergence of the velocity: log N(x_0) - int_0^1 div v dt.

        divergence "exact" sums over all D basis directions (D Jacobian-vector products per row
        and evaluation); "hutchinson" averages `probes` Rademacher probes per row (seeded by
        `probe_seed` and the row index; default one per 16 dimensions, 2 to 16): unbiased,
        cheaper in high dimension; "auto" is exact up to likelihood.EXACT_MAX_DIM dimensions.
        Divide by the number of dimensions (and ln 2) for nats (bits) per dimension.
        `last_std_error` then holds each row's standard error in nats: 0 for exact, the spread of
        the K probes' estimates over sqrt(K) for Hutchinson with K >= 2 (NaN with one probe, which
        gives no spread). Conditional models: log p(x | label), or of the guided field with
        guidance != 1. `schedule`, `cond`, `dims`, `cancel` and the guidance options as in
        sample(); the schedule is visited backwards."""
        given = options.bind(_LOG_PROB, args, kwargs)
        x = given.pop("x")
        req = request.resolve(self.spec, self.path, "logprob", given, x=x, stage=self.through_stage)
        with graph_errors(self.path, cancel=req.cancel):
            z, integral, self._last.nfe = self._solve_divergence(req.start(), req, forward=False)
        return valid_logpdf(z, req) - integral

    def _solve_divergence(self, x0: np.ndarray, req: request.Request, forward: bool):
        """(end state, the divergence integral, NFE) of a likelihood solve (likelihoods.py)."""
        method, k = likelihoods.check_method(self.spec, self.path, req)
        with self._jvp_lock:
            if self._jvp_session is None:
                self._jvp_session = open_divergence(self.spec, self.path, self.providers, self.session_options,
                                                    self.allow_loops)
        end, integral, nfe, self._last.std_error = likelihoods.solve_divergence(
            self._jvp_session, self.tiler, self.path, x0, req, method, k, forward)
        return end, integral, nfe


_HEAD = ("n", "steps", "solver", "seed", "noise")
_RUN = options.signature("sample", _HEAD)
_SAMPLE = options.signature("sample", _HEAD, alias=True)
_CHUNKS = options.signature("sample", ("seed", "steps", "solver"), first=(("start", _EMPTY), ("stop", _EMPTY)),
                            extra=(("chunk", None),), omit=("n", "trajectory", "logprob", "cancel"))
Sampler.request.__signature__ = Sampler.run.__signature__ = _RUN
_LOG_PROB = options.signature("logprob", ("steps", "solver", "labels", "guidance"), first=(("x", _EMPTY),))
Sampler.sample.__signature__, Sampler.sample_chunks.__signature__ = _SAMPLE, _CHUNKS
Sampler.log_prob.__signature__ = _LOG_PROB


def load(path: str | os.PathLike | None = None, provider: str = "cpu", *,
         data_shape: tuple[int, ...] | int | None = None, x_name: str | None = None,
         t_name: str | None = None, threads: int | None = None, tile: int | None = None,
         intra_op_threads: int | None = None, device_resident: bool | None = None,
         cuda_graph: bool = False, allow_loops: bool = False) -> Sampler:
    """Load a model file (None: the moons model shipped inside the package) and return a Sampler.

    `provider` is a short name ("cpu", "cuda", ...) or a full onnxruntime provider name.
    `data_shape`, `x_name`, `t_name` stand in for metadata a plain velocity ONNX lacks.
    Speed: on CPU a batch is solved in tiles of `tile` rows (0: no tiling) spread over `threads`
    worker threads (default: all cores), each onnxruntime call using `intra_op_threads` threads
    (default 1: for these small networks, parallel tiles beat parallel matmuls). Where none of
    these three is given and `fm-run bench --save` measured this file on this machine, its choice
    is used instead (model/execution.py; `Sampler.execution` says which). On a GPU provider
    the batch goes whole to one call, and the solver state stays on the device between steps
    (`device_resident`, default: on for every provider but CPU). `cuda_graph=True` lets the CUDA
    provider capture a baked graph once per batch size and replay it. `allow_loops=True` runs
    a Loop whose trip count the file does not fix (refused by default: it may never end); only
    for files whose producer you trust.

    Raises ModelError (file missing, unreadable, not a usable model, fails its self-test),
    ProviderError (provider not available) or UsageError (options that do not fit), all
    fm_runtime.FmError with the exit code fm-run uses for them.
    """
    chosen = saved(path) if path is not None and tile is None and threads is None and intra_op_threads is None \
        and provider == "cpu" else None
    if chosen:
        tile, threads, intra_op_threads = (chosen["options"].get(k) for k in OPTIONS)
    session, spec, where, opts = open_model(path, provider, data_shape=data_shape, x_name=x_name,
                                            t_name=t_name, intra_op_threads=intra_op_threads or 1,
                                            cuda_graph=cuda_graph, allow_loops=allow_loops)
    on_cpu = session.get_providers()[0] == "CPUExecutionProvider"
    workers = threads or os.cpu_count() or 1
    if not on_cpu:
        tile, workers = 0, 1
    auto = tile is None
    if auto:
        tile = DEFAULT_TILE if spec.symbolic else default_tile(spec.dim)
    sampler = Sampler(session, spec, where, tile=tile, workers=workers, session_options=opts, auto_tile=on_cpu and auto,
                      device_resident=(not on_cpu) if device_resident is None else device_resident)
    sampler.allow_loops = allow_loops       # for the graphs it opens later (stage, divergence)
    sampler.execution = chosen
    return sampler
