"""One request, built once: the model's defaults applied and every argument checked in one place,
with the package's own errors: UsageError (exit 2) for values the caller chose, InputError (exit 4)
for unusable arrays. Sampler.run, sample, sample_chunks and log_prob and fm-run all build a
Request through `sampling_request` / `likelihood_request` and then only read it; the JavaScript
runtime mirrors it in js/src/request.mjs (samplingRequest)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..definitions import CONTRACT
from ..model.control import CancelToken
from ..model.spec import ModelSpec
from ..solve.likelihood import default_probes
from ..solve.noise import new_seed, noise_rows
from ..solve.schedules import Schedule, parse_schedule
from ..solve.solvers import check_steps, get_solver
from .conditions import bad_input, bind_inputs, null_rows, per_row, usage
from .velocity import Conditioning

METHODS = CONTRACT["solvers"]["methods"]


@dataclass(frozen=True)
class Request:
    """What to solve: `n` rows starting from `noise` (or rows [first, first + n) of the seeded
    stream `seed`), with `solver` of registry kind `kind` ("fixed", "adaptive"; "baked" for a
    baked file), on `steps` steps of `schedule` (fixed only) or to `tolerances` (adaptive)."""

    n: int
    kind: str
    spec: ModelSpec                 # the file's spec with this request's symbols bound
    solver: str
    steps: int | None
    schedule: Schedule | None
    tolerances: dict | None
    labels: np.ndarray | None
    guidance: float
    seed: int | None = None
    noise: np.ndarray | None = None
    first: int = 0
    trajectory: bool = False
    logprob: bool = False
    keep_partial: bool = False
    divergence: str = "auto"
    probes: int = 1                  # Hutchinson probes (the requests below default them from the dimension)
    probe_seed: int = 0
    inputs: dict = field(default_factory=dict)   # the file's extra inputs, per row: {name: [n, *shape]}
    cancel: CancelToken | None = None             # cancels this request from another thread
    nulls: dict = field(default_factory=dict)    # guidance: the unconditional half's conditions, per row
    guidance_interval: tuple[float, float] = (0.0, 1.0)   # guidance applies for t in [a, b], else v_c
    guidance_calls: str = "batched"               # "batched": both halves in one call on 2n rows; "two"

    def start(self, a: int = 0, b: int | None = None) -> np.ndarray:
        """Rows [a, b) of the request's starting points (float32; zero outside a mask)."""
        b = self.n if b is None else b
        x = self.noise[a:b] if self.noise is not None else \
            noise_rows(self.seed, self.first + a, self.first + b, self.spec.data_shape)
        mask = self.spec.input("mask")
        return x if mask is None else x * self.inputs[mask["name"]][a:b]

    def rows(self, a: int, b: int) -> "Request":
        """Rows [a, b) of this request, as a request of their own (rows a.. of its seeded stream)."""
        return replace(self, n=b - a, noise=None if self.noise is None else self.noise[a:b], first=self.first + a,
                       labels=None if self.labels is None else self.labels[a:b],
                       inputs={k: v[a:b] for k, v in self.inputs.items()}, nulls={k: v[a:b] for k, v in self.nulls.items()})

    def conditioning(self, a: int = 0, b: int | None = None) -> Conditioning:
        """Labels, guidance and extra inputs of rows [a, b)."""
        cond = Conditioning(self.labels, self.guidance, self.inputs, self.spec,
                            None if self.cancel is None else self.cancel.options, self.nulls,
                            self.guidance_interval, self.guidance_calls)
        return cond if a == 0 and b in (None, self.n) else cond.rows(a, self.n if b is None else b)


def sampling_request(spec: ModelSpec, where: str, n=None, steps=None, solver=None, seed=None, noise=None, *,
                     trajectory: bool = False, logprob: bool = False, keep_partial: bool = False, labels=None,
                     guidance=1.0, divergence: str = "auto", probes: int | None = None, probe_seed: int = 0, schedule=None,
                     rtol=None, atol=None, first: int = 0, cond=None, dims=None, cancel=None, nulls=None,
                     guidance_interval=None, guidance_calls="batched") -> Request:
    """A sampling request (Sampler.run's arguments), checked, with the model's defaults. cond:
    the file's extra inputs by name (each [n, *shape], or [*shape] for every row); dims: sizes of
    symbols that no input binds; cancel: a CancelToken that cancels this request; nulls: the
    nulls the condition stage made (conditions.through_stage); guidance_interval (a, b): guide
    only for a <= t <= b; guidance_calls: "batched" (one call on 2n rows) or "two"."""
    if cancel is not None and not isinstance(cancel, CancelToken):
        raise usage("cancel", f"cancel must be a fm_runtime.CancelToken, got {type(cancel).__name__}")
    baked = spec.kind == "baked"
    tolerances = check_adaptive(baked, solver, steps, schedule, trajectory, logprob, rtol, atol)
    if baked:
        check_baked(spec, where, steps, solver, trajectory, schedule)
    if logprob and trajectory:
        raise usage("logprob", "return_logprob and return_trajectory cannot be combined")
    if tolerances is None:
        schedule, steps = check_schedule(spec, schedule, steps)
        steps, solver = check_grid(spec, steps, solver)
    guidance = check_guidance(guidance, labels, spec)
    if n is not None:
        n = count(n)
    bound, inputs, rows = bind_inputs(spec, where, cond, dims, noise, n)
    if noise is not None:
        noise = check_noise(bound.data_shape, noise, n)
        n, seed = len(noise), None
    elif n is None and rows is None:
        raise usage("n", "give n (how many samples) or noise (the starting points)")
    else:
        n, seed = n or rows, new_seed() if seed is None else check_seed(seed)
    kind = "baked" if baked else METHODS[solver]["kind"]
    rows_in = per_row(inputs, n)
    probes = default_probes(bound.dim) if probes is None else probes
    return Request(n, kind, bound, solver, steps, schedule, tolerances, check_labels(spec, where, labels, n), guidance,
                   seed, noise, first, trajectory, logprob, keep_partial, divergence, probes, probe_seed, rows_in,
                   cancel, *guiding(bound, guidance, rows_in, nulls, n, guidance_interval, guidance_calls))


def likelihood_request(spec: ModelSpec, where: str, x, steps=None, solver=None, labels=None, guidance=1.0,
                       divergence: str = "auto", probes: int | None = None, probe_seed: int = 0, schedule=None,
                       cond=None, dims=None, nulls=None, guidance_interval=None, guidance_calls="batched") -> Request:
    """A log-likelihood request (Sampler.log_prob's arguments): `x` are the data rows."""
    schedule, steps = check_schedule(spec, schedule, steps)
    steps, solver = check_grid(spec, steps, solver)
    guidance = check_guidance(guidance, labels, spec)
    bound, inputs, _ = bind_inputs(spec, where, cond, dims, x, None, what="data")
    x1 = check_noise(bound.data_shape, x, what="data")
    rows_in = per_row(inputs, len(x1))
    nulls, interval, calls = guiding(bound, guidance, rows_in, nulls, len(x1), guidance_interval, guidance_calls)
    return Request(len(x1), METHODS[solver]["kind"], bound, solver, steps, schedule, None,
                   check_labels(spec, where, labels, len(x1)), guidance, noise=x1, logprob=True,
                   divergence=divergence, probes=default_probes(bound.dim) if probes is None else probes,
                   probe_seed=probe_seed, inputs=rows_in, nulls=nulls,
                   guidance_interval=interval, guidance_calls=calls)


def guiding(spec: ModelSpec, guidance: float, inputs: dict, staged, n: int, interval, calls) -> tuple:
    """(the unconditional half's conditions, the interval of t guidance applies on, how its two
    halves are called) of a request, checked."""
    if calls not in ("batched", "two"):
        raise usage("guidance_calls", f"guidance_calls must be 'batched' (both halves in one call) or 'two', got {calls!r}")
    if interval is None:
        interval = (0.0, 1.0)
    if isinstance(interval, (str, bytes)) or not hasattr(interval, "__len__") or len(interval) != 2 or \
            not all(real(v) for v in interval):
        raise usage("guidance_interval", f"guidance_interval must be two times (a, b), got {interval!r}")
    a, b = (float(v) for v in interval)
    if not 0.0 <= a <= b <= 1.0:
        raise usage("guidance_interval", f"guidance_interval must satisfy 0 <= a <= b <= 1, got ({a:g}, {b:g})")
    guided = guidance != 1.0 and spec.input("guidance") is None
    return (null_rows(spec, inputs, staged or {}, n) if guided else {}), (a, b), calls


def check_baked(spec: ModelSpec, where: str, steps, solver, trajectory: bool, schedule=None) -> None:
    """Refuse, before any work, what a baked file cannot do (other steps, schedules, trajectories)."""
    b = spec.baked
    if schedule is not None and str(check_schedule(spec, schedule, None)[0]) != spec.default_schedule:
        raise usage("solver", f"{where} is a baked sampler on the {spec.default_schedule} time schedule; it "
                         f"cannot run another (export another --bake with --schedule)")
    if (steps is not None and steps != b["steps"]) or (solver is not None and solver != b["solver"]):
        raise usage("solver", f"{where} is a baked {b['solver']}:{b['steps']} sampler; it cannot "
                         f"run {solver or b['solver']}:{steps or b['steps']} (export another --bake)")
    if trajectory:
        raise usage("solver", f"{where} is a baked sampler: it returns final samples only, "
                         "no trajectory (use the velocity model for that)")


def count(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise usage("n", f"n must be a whole number >= 1, got {n!r}")
    return int(n)


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
        raise usage("seed", f"seed must be a whole number in [0, 2**63), got {seed!r}")
    return int(seed)


def real(v) -> bool:
    """A real number: int, float or a numpy scalar, not a bool or text."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def check_guidance(guidance, labels=None, spec: ModelSpec | None = None) -> float:
    if not real(guidance) and not (isinstance(guidance, np.ndarray) and guidance.ndim == 0 and real(guidance.item())):
        raise usage("guidance", f"guidance must be a number, got {guidance!r}")
    g = float(guidance)
    if not np.isfinite(g) or abs(g) > 1e3:
        raise usage("guidance", f"guidance must be a finite number of magnitude <= 1000, got {guidance}")
    if g != 1.0 and labels is None and not (spec is not None and spec.guidable):
        raise usage("guidance", f"guidance {g:g} needs labels (it weighs the conditional against the "
                         "unconditional velocity)")
    return g


def check_labels(spec: ModelSpec, where: str, labels, n: int) -> np.ndarray | None:
    """Labels as int64 [n] (an int applies to every row; None: no label), checked against the
    model's classes; the "no label" id (spec.null_class) is allowed."""
    if labels is None:
        return None
    if not spec.num_classes:
        raise usage("labels", f"{where} is not class-conditional; it takes no labels")
    arr = np.asarray(labels)
    if arr.dtype.kind not in "iu" and not (arr.dtype.kind == "f" and np.all(np.isfinite(arr))
                                           and np.all(arr == np.round(arr))):
        raise usage("labels", f"labels must be integers, got dtype {arr.dtype}")
    arr = np.broadcast_to(arr.astype(np.int64), (n,)) if arr.ndim == 0 else arr.astype(np.int64)
    if arr.shape != (n,):
        raise usage("labels", f"labels have shape {list(arr.shape)}, expected [{n}] (one per sample)")
    bad = arr[(arr < 0) | (arr > spec.num_classes)]
    if bad.size:
        raise usage("labels", f"label {int(bad[0])} is out of range: this model has classes "
                         f"0..{spec.num_classes - 1} (and {spec.null_class} for no label)")
    return np.ascontiguousarray(arr)


def check_noise(data_shape: tuple[int, ...], noise, n: int | None = None, what: str = "noise") -> np.ndarray:
    """A float array [n, *data_shape] with finite values, as contiguous float32."""
    noise = np.asarray(noise)
    if noise.dtype.kind != "f":
        raise bad_input(what, f"{what} must be floating point, got dtype {noise.dtype}")
    if noise.ndim != 1 + len(data_shape) or tuple(noise.shape[1:]) != data_shape:
        raise bad_input(what, f"{what} has shape {list(noise.shape)}, expected [n, "
                         f"{', '.join(map(str, data_shape))}]")
    if n is not None and noise.shape[0] != n:
        raise bad_input(what, f"{what} has {noise.shape[0]} rows but n = {n}")
    if noise.shape[0] == 0:
        raise bad_input(what, f"{what} has no rows")
    if not np.isfinite(noise).all():
        raise bad_input(what, f"{what} contains NaN or Inf")
    return np.ascontiguousarray(noise, dtype=np.float32)



def check_adaptive(baked: bool, solver, steps, schedule, trajectory, logprob, rtol, atol) -> dict | None:
    """{"rtol", "atol"} for a dopri5 request (None for a fixed-step one), refusing what it cannot do."""
    from ..solve.adaptive import DEFAULT_ATOL, DEFAULT_RTOL, NAME, check_tolerances
    if not isinstance(solver, str) or METHODS.get(solver, {}).get("kind") != "adaptive":
        if rtol is not None or atol is not None:
            raise usage("rtol", f"rtol/atol apply to the adaptive solver {NAME} only")
        return None
    if baked or steps is not None or schedule is not None or trajectory or logprob:
        raise usage("solver", f"{NAME} chooses its own steps: it takes rtol/atol on a velocity model, not steps, a "
                         "schedule, a trajectory or log-likelihoods")
    tol = {"rtol": DEFAULT_RTOL if rtol is None else rtol, "atol": DEFAULT_ATOL if atol is None else atol}
    try:
        check_tolerances(float(tol["rtol"]), float(tol["atol"]))
    except (TypeError, ValueError) as e:
        raise usage("rtol", str(e)) from None
    return {k: float(v) for k, v in tol.items()}


def check_schedule(spec: ModelSpec, schedule, steps) -> tuple[Schedule, int | None]:
    """(schedule, steps) of a request: the model's default schedule when none is given; an
    explicit time grid fixes the steps (given steps must agree with it)."""
    try:
        s = parse_schedule(spec.default_schedule if schedule is None else schedule)
    except ValueError as e:
        raise usage("schedule", str(e)) from None
    if s.steps is not None:
        if steps is not None and steps != s.steps:
            what = "the model's default time grid" if schedule is None else "the time grid"
            raise usage("schedule", f"{what} has {s.steps} steps, not {steps} (give times for {steps} steps, "
                             "or another schedule)")
        steps = s.steps
    return s, steps


def check_grid(spec: ModelSpec, steps, solver) -> tuple[int, str]:
    """(steps, solver) of a request, the model's defaults where not given."""
    steps = spec.default_steps if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise usage("steps", f"steps must be an integer, got {steps!r}")
    solver = solver or spec.default_solver
    try:
        get_solver(solver)
    except ValueError as e:
        raise usage("solver", str(e)) from None
    try:
        check_steps(int(steps))
    except ValueError as e:
        raise usage("steps", str(e)) from None
    return int(steps), solver
