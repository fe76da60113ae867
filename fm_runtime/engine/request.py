"""One request, built once by `resolve`: the options checked against their declaration
(options.py, contract.json "options"), the model's defaults applied and every rule that needs the
model checked, with the package's own errors: UsageError (exit 2) for values the caller chose,
InputError (exit 4) for unusable arrays. Sampler.run, sample, sample_chunks and log_prob, fm-run
and the server all build a Request through `resolve` and then only read it; the JavaScript
runtime mirrors it in js/src/request.mjs (samplingRequest)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..definitions import CONTRACT
from ..model.control import CancelToken, RunState
from ..model.spec import ModelSpec
from ..solve.adaptive import DEFAULT_ATOL, DEFAULT_RTOL
from ..solve.likelihood import default_probes
from ..solve.noise import new_seed, noise_rows
from ..solve.schedules import Schedule, parse_schedule
from ..solve.solvers import DEFAULT_SOLVER, DEFAULT_STEPS
from . import options
from .conditions import bind_inputs, given_nulls, mapping, null_rows, per_row
from .options import bad_input, usage
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
    options: dict = field(default_factory=dict)   # every declared option of the request, resolved
    run: RunState = field(default_factory=RunState)   # the RunOptions of all its graph calls

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
        cond = Conditioning(self.labels, self.guidance, self.inputs, self.spec, self.run.options, self.nulls,
                            self.guidance_interval, self.guidance_calls)
        return cond if a == 0 and b in (None, self.n) else cond.rows(a, self.n if b is None else b)


def resolve(spec: ModelSpec, where: str, op: str, given: dict, *, x=None, first: int = 0, stage=None) -> Request:
    """The one place a request is checked: `given` (options by name, as the caller passed them)
    against the declaration (options.py: types, ranges, choices, defaults, the rules between
    options), then what needs the model: its defaults, a schedule's own steps, what a baked file
    can run, labels, the file's conditions and their symbols, the noise. op "sample" (Sampler.run's
    options) or "logprob" (log_prob's; `x` the data rows). stage(cond, guidance, run options) -> (cond, nulls)
    runs the file's condition stage (Sampler.through_stage), once the options passed their checks;
    first: the first row of the seeded stream."""
    o = options.take(op, given)
    baked = spec.kind == "baked"
    solver = o["solver"] or (spec.baked["solver"] if baked else spec.default_solver)
    logprob = op == "logprob" or bool(o.get("logprob"))
    solver, default_steps = map_solver(spec, where, o["solver"], solver, logprob=logprob)
    kind = METHODS[solver]["kind"]
    options.check_rules(o, solver, kind)
    if baked:
        check_baked(spec, where, o["steps"], o["solver"], o.get("trajectory"), o["schedule"])
        check_baked_guidance(spec, where, o["guidance_interval"], o["null_cond"])
    tolerances = None
    if kind == "adaptive":
        if op != "sample" or baked:
            raise usage("solver", f"{solver} chooses its own steps: it samples a velocity model, it gives no "
                                  "log-likelihoods and cannot run a baked file")
        tolerances = {"rtol": o["rtol"] if o["rtol"] is not None else DEFAULT_RTOL,
                      "atol": o["atol"] if o["atol"] is not None else DEFAULT_ATOL}
        schedule, steps = None, None
    else:
        schedule, steps = check_schedule(spec, o["schedule"], o["steps"])
        steps, solver = check_grid(spec, default_steps if steps is None else steps, solver)
    guidance = o["guidance"]
    check_guided(guidance, o["labels"], spec, o["null_cond"])
    run = RunState(o["cancel"])
    cond, nulls = stage(o["cond"], guidance, run.options) if stage is not None else (o["cond"], {})
    negative = negative_prompt(spec, o["null_cond"], guidance, lambda c: stage(c, 1.0, run.options)[0] if stage else c)
    bound, inputs, rows = bind_inputs(spec, where, cond, o["dims"], x if op == "logprob" else o["noise"],
                                      o.get("n"), what="data" if op == "logprob" else "noise")
    n, seed, start = rows_of(bound, op, o, x, rows)
    rows_in = per_row(inputs, n)
    probes = default_probes(bound.dim) if o["probes"] is None else o["probes"]
    null_in, interval, calls = guiding(bound, guidance, rows_in, nulls, n, o["guidance_interval"], o["guidance_calls"])
    null_in.update(given_nulls(bound, where, negative, rows_in, n))
    return Request(n, "baked" if baked else kind, bound, solver, steps, schedule, tolerances,
                   check_labels(spec, where, o["labels"], n), guidance, seed, start, first,
                   bool(o.get("trajectory")), logprob, bool(o.get("keep_partial")),
                   o["divergence"], probes, o["probe_seed"], rows_in, o["cancel"], null_in, interval, calls, o, run)


def map_solver(spec: ModelSpec, where: str, given: str | None, solver: str, steps: int | None = None, *,
               logprob: bool = False) -> tuple[str, int | None]:
    """(the solver, the steps when none are given) under the flow-map rules: a method that
    evaluates a flow map (jump) needs a flow-map file; log-likelihoods need the instantaneous
    velocity u(x, t, t), so there a flow map's default jump gives way to the contract's default
    solver; and a velocity solver on a flow map whose steps are counted in jumps takes the
    contract's default steps, not the file's jumps. mirrors: js/src/request.mjs mapSolver."""
    if spec.kind == "baked":
        return solver, steps if steps is not None else spec.default_steps
    if METHODS[solver].get("evaluates") == "map":
        if not spec.flow_map:
            velocity = ", ".join(k for k, m in METHODS.items() if m.get("evaluates") != "map")
            raise usage("solver", f"{solver} jumps with a flow map u(x, s, t); {where} is a velocity model (no "
                                  f"fm.input_s): use one of {velocity}")
        if not logprob:
            return solver, steps if steps is not None else spec.default_steps
        if given:
            raise usage("solver", f"{solver} gives no log-likelihoods (they follow the instantaneous velocity "
                                  f"u(x, t, t) and its divergence): give a velocity solver such as {DEFAULT_SOLVER}, "
                                  "or none")
        solver = DEFAULT_SOLVER
    jumps = spec.flow_map and METHODS[spec.default_solver].get("evaluates") == "map"
    return solver, steps if steps is not None else DEFAULT_STEPS if jumps else spec.default_steps


def rows_of(bound: ModelSpec, op: str, o: dict, x, rows: int | None) -> tuple[int, int | None, np.ndarray | None]:
    """(rows, seed, starting points) of a request: the data rows of a likelihood request; the noise
    given; or n (or the rows its per-row conditions fix) rows of a seeded stream."""
    if op == "logprob":
        x1 = check_noise(bound.data_shape, x, what="data")
        return len(x1), None, x1
    n = o["n"]
    if o["noise"] is not None:
        noise = check_noise(bound.data_shape, o["noise"], n)
        return len(noise), None, noise
    if n is None and rows is None:
        raise usage("n", "give n (how many samples) or noise (the starting points)")
    return n or rows, new_seed() if o["seed"] is None else o["seed"], None


def negative_prompt(spec: ModelSpec, given, guidance: float, through_stage) -> dict:
    """A request's null_cond (the negative prompt) as the file's conditions: the condition stage's
    inputs among them go through the stage (`through_stage(cond) -> cond`)."""
    given = mapping(given, "null_cond") if given is not None else {}
    if given and (guidance == 1.0 or spec.input("guidance") is not None):
        raise usage("null_cond", "null_cond is what guidance weighs the conditions against; it needs guidance other "
                                 "than 1 (and a file that does not take the weight as an input)")
    stage_inputs = {i["name"] for i in spec.stage.get("inputs", ())}
    if not stage_inputs & set(given):
        return given
    conditions = {i["name"] for i in spec.inputs if i["role"] == "condition"}
    return {k: v for k, v in through_stage(given).items() if k in conditions}     # not the stage's mask


def guiding(spec: ModelSpec, guidance: float, inputs: dict, staged, n: int, interval, calls) -> tuple:
    """(the unconditional half's conditions, the interval of t guidance applies on, how its two
    halves are called) of a request."""
    guided = guidance != 1.0 and spec.input("guidance") is None
    return (null_rows(spec, inputs, staged or {}, n) if guided else {}), interval or (0.0, 1.0), calls


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


def check_baked_guidance(spec: ModelSpec, where: str, interval, null_cond) -> None:
    """A baked file guides, if at all, on every step against the nulls built into its graph."""
    if interval is not None:
        raise usage("guidance_interval", f"{where} is a baked sampler: its graph guides on every step (sample the "
                                         "velocity file to guide on an interval)")
    if null_cond:
        raise usage("null_cond", f"{where} is a baked sampler: its graph guides against the nulls built into it "
                                 "(sample the velocity file to guide against a negative prompt)")


def check_guided(guidance: float, labels=None, spec: ModelSpec | None = None, null_cond=None) -> None:
    """Guidance other than 1 weighs the conditional velocity against the unconditional one: it
    needs labels, or a file whose conditions declare nulls or that takes the weight itself, or
    the request's own nulls (null_cond)."""
    if guidance != 1.0 and spec is not None and spec.kind == "baked" and spec.inputs and not spec.guidable:
        raise usage("guidance", f"guidance {guidance:g}: this baked file was written without guidance (it has no "
                                "guidance input); export it with --bake-guidance, or sample the velocity file")
    if guidance != 1.0 and labels is None and not null_cond and not (spec is not None and spec.guidable):
        raise usage("guidance", f"guidance {guidance:g} needs labels (it weighs the conditional against the "
                                "unconditional velocity)")


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
    """(steps, solver) of a request, the model's defaults where not given (both already checked
    against their declarations)."""
    return int(spec.default_steps if steps is None else steps), solver or spec.default_solver
