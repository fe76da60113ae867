"""The model's velocity as numpy callables, v(x, t) and (v, J e)(x, t, e), with class labels and
classifier-free guidance applied as one wrapper around the graph call (the solvers never see
them). Each callable owns its buffers, so callables made for parallel tiles share nothing.
On a flow-map file (spec.s_name) the same callables take t as one time, the instantaneous
velocity u(x, t, t), or as a pair (s, t), the jump's average velocity u(x, s, t); guidance
combines the jumps like velocities, and its interval looks at the jump's start."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import onnxruntime as ort

from ..errors import ModelError
from ..model.control import RUN
from ..model.session import runner
from ..model.spec import NAMES, ModelSpec


@dataclass(frozen=True)
class Conditioning:
    """What one request conditions the velocity on: labels [n] int64 (None: no label), the
    guidance weight w, the file's extra inputs (contract version 4) as per-row arrays
    {name: [n, *shape]}, and `spec`, the file's spec with the request's symbols bound (None: the
    file's own, which has none). `nulls`: what the unconditional half feeds instead of each
    condition with a null (zeros when missing); guidance applies for t in `interval`, the
    conditional velocity elsewhere; `calls` "batched" runs both halves in one call on 2n rows,
    "two" as two calls."""

    labels: np.ndarray | None = None
    guidance: float = 1.0
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    spec: ModelSpec | None = None
    options: ort.RunOptions | None = None     # the request's cancel token's run options (None: RUN)
    nulls: dict[str, np.ndarray] = field(default_factory=dict)
    interval: tuple[float, float] = (0.0, 1.0)
    calls: str = "batched"

    def rows(self, a: int, b: int) -> "Conditioning":
        if self.labels is None and not self.inputs:
            return self
        return replace(self, labels=None if self.labels is None else self.labels[a:b],
                       inputs={k: v[a:b] for k, v in self.inputs.items()},
                       nulls={k: v[a:b] for k, v in self.nulls.items()})

    def guided(self, spec: ModelSpec) -> bool:
        """Whether guidance needs an unconditional half (a guidance input takes w itself)."""
        return self.guidance != 1.0 and spec.input("guidance") is None and (
            self.labels is not None or any(i.get("null") for i in spec.inputs) or bool(self.nulls))

    def plain(self) -> "Conditioning":
        """The conditional velocity alone (outside the guidance interval)."""
        return replace(self, guidance=1.0)


def halves(spec: ModelSpec, batch: int, cond: Conditioning) -> tuple[dict, dict | None]:
    """(the conditional feed, the unconditional one or None): labels (the "no label" id when none
    are given) and extra inputs (a guidance input: the weight itself); the unconditional half has
    the null label and each condition's null."""
    fixed = {k: np.ascontiguousarray(v) for k, v in cond.inputs.items()}
    scale = spec.input("guidance")
    if scale is not None:
        fixed[scale["name"]] = np.full(batch, cond.guidance, np.float32)
    null = np.full(batch, spec.null_class, np.int64) if spec.num_classes else None
    if null is not None:
        fixed[spec.y_name] = null if cond.labels is None else cond.labels
    if not cond.guided(spec):
        return fixed, None
    nulls = {i["name"] for i in spec.inputs if i.get("null")} | set(cond.nulls)
    empty = {k: np.ascontiguousarray(cond.nulls[k]) if k in cond.nulls else np.zeros_like(fixed[k]) for k in nulls}
    return fixed, {**fixed, **empty, **({spec.y_name: null} if null is not None else {})}


def _feed(spec: ModelSpec, batch: int, cond: Conditioning):
    """(rows per run, fixed feed entries, combine, mask) for one call per evaluation.
    Classifier-free guidance runs the conditional rows and the unconditional ones in one batched
    call and combines them as v_u + w (v_c - v_u). mask: the per-row mask the velocity is
    multiplied by (None: none)."""
    fixed, empty = halves(spec, batch, cond)
    mask = spec.input("mask")
    mask = None if mask is None else fixed[mask["name"]]
    if empty is None:
        return batch, fixed, None, mask
    both = {k: np.concatenate([v, empty[k]]) for k, v in fixed.items()}
    w = cond.guidance

    def combine(out: np.ndarray) -> np.ndarray:
        vc, vu = out[:batch], out[batch:]
        return vu + w * (vc - vu)
    return 2 * batch, both, combine, mask


def checked(spec: ModelSpec, out: np.ndarray, rows: int, what: str = "v") -> np.ndarray:
    """The graph's output, refused unless it has the rows and shape asked for (a file whose graph
    returns other shapes than it declares would otherwise be broadcast into wrong samples)."""
    if out.shape[:1] != (rows,) or out.shape[1:] != spec.data_shape:
        raise ModelError(f"{spec.source}: the graph returned {what} of shape {list(out.shape)} for {rows} rows "
                         f"of shape {list(spec.data_shape)}; refusing its output")
    return out


def same_shape(spec: ModelSpec, jv: np.ndarray, e: np.ndarray) -> np.ndarray:
    if jv.shape != e.shape:
        raise ModelError(f"{spec.source}: the divergence graph returned J.e of shape {list(jv.shape)} for "
                         f"probes of shape {list(e.shape)}; refusing its output")
    return jv


def velocity_fn(session: ort.InferenceSession, spec: ModelSpec, batch: int, cond: Conditioning = Conditioning()):
    """v(x, t) for scalar t at a fixed batch size, reusing its own buffers. With a mask input the
    velocity is zero outside the mask, so a masked start stays exactly 0 there at every step.
    Guidance on a sub-interval of t switches to the conditional velocity outside it."""
    spec = cond.spec or spec
    if cond.guided(spec) and cond.interval != (0.0, 1.0):
        inside, outside, (a, b) = velocity_fn(session, spec, batch, replace(cond, interval=(0.0, 1.0))), \
            velocity_fn(session, spec, batch, cond.plain()), cond.interval
        return lambda x, t: inside(x, t) if a <= start(t) <= b else outside(x, t)
    if cond.guided(spec) and cond.calls == "two":
        fixed, empty = halves(spec, batch, cond)
        mask = spec.input("mask")
        vc = velocity_fn(session, spec, batch, cond.plain())
        vu = _call(session, spec, batch, empty, None, cond.options, None, None if mask is None else fixed[mask["name"]])
        w = cond.guidance

        def two(x: np.ndarray, t: float) -> np.ndarray:
            c = vc(x, t)
            u = vu(x, t)
            return u + w * (c - u)
        return two
    rows, fixed, combine, mask = _feed(spec, batch, cond)
    return _call(session, spec, batch, fixed, combine, cond.options, rows, mask)


def start(t) -> float:
    """The time a stage starts at: t, or s of a flow map's (s, t)."""
    return t[0] if isinstance(t, tuple) else t


def clock(spec: ModelSpec, rows: int):
    """fill(t) -> the time entries of one call's feed, in buffers of its own: t alone, or on a flow
    map s and t (s = t for one time, the instantaneous velocity; a pair (s, t) for a jump). Each
    time is a scalar for every row or an array of one per row."""
    shape = (rows,) if spec.t_rank == 1 else (rows, 1)
    tb, t_name = np.empty(shape, np.float32), spec.t_name
    if spec.s_name is None:
        feed = {t_name: tb}

        def fill(t) -> dict:
            if isinstance(t, float):        # a solver's stage time (the common case, kept fast)
                tb.fill(t)
            else:
                tb[...] = np.reshape(t, (-1,) + shape[1:]) if np.ndim(t) else t
            return feed
        return fill
    sb, s_name = np.empty(shape, np.float32), spec.s_name

    def fill_map(t) -> dict:
        s, end = t if isinstance(t, tuple) else (t, t)
        sb[...] = np.reshape(s, (-1,) + shape[1:]) if np.ndim(s) else s
        tb[...] = np.reshape(end, (-1,) + shape[1:]) if np.ndim(end) else end
        return {s_name: sb, t_name: tb}
    return fill_map


def _call(session, spec: ModelSpec, batch: int, fixed: dict, combine, options, rows: int | None = None, mask=None):
    """x, t -> the graph's v with `fixed` fed beside them (both halves of guidance when `combine`)."""
    rows, opts = rows or batch, options or RUN
    fill = clock(spec, rows)
    run, names, x_name = runner(session), [spec.v_name], spec.x_name
    if combine is None:
        def f(x: np.ndarray, t: float) -> np.ndarray:
            return checked(spec, run(names, {x_name: x, **fill(t), **fixed}, opts)[0], len(x))
        return f if mask is None else _masked(f, mask)
    both = np.empty((rows, *spec.data_shape), np.float32)

    def guided(x: np.ndarray, t: float) -> np.ndarray:
        both[:batch] = x
        both[batch:] = x
        return combine(checked(spec, run(names, {x_name: both, **fill(t), **fixed}, opts)[0], rows))
    return guided if mask is None else _masked(guided, mask)


def _masked(f, mask: np.ndarray):
    def g(x: np.ndarray, t: float) -> np.ndarray:
        v = f(x, t)
        v *= mask
        return v
    return g


def velocity_at(session: ort.InferenceSession, spec: ModelSpec, x: np.ndarray, t, cond: Conditioning) -> np.ndarray:
    """v(x, t) for one batch with t a scalar or one time per row; on a flow map t may also be a
    pair (s, t) of those, the jump's u(x, s, t)."""
    spec = cond.spec or spec
    rows, fixed, combine, mask = _feed(spec, len(x), cond)

    def tiled(a):
        return np.tile(np.ravel(a), rows // len(x)) if np.ndim(a) else a
    times = clock(spec, rows)(tuple(map(tiled, t)) if isinstance(t, tuple) else tiled(t))
    xs = x if rows == len(x) else np.concatenate([x, x])
    out = checked(spec, session.run([spec.v_name], {spec.x_name: xs, **times, **fixed}, cond.options or RUN)[0],
                  rows)
    out = out if combine is None else combine(out)
    return out if mask is None else out * mask


def jvp_fn(session: ort.InferenceSession, spec: ModelSpec, batch: int, cond: Conditioning = Conditioning()):
    """(x, t, e) -> (v, J e) from the divergence graph, with the same labels and guidance as the
    velocity (guidance combines the products linearly, like the velocities; its halves always
    share one call here)."""
    spec, opts = cond.spec or spec, cond.options or RUN
    if cond.guided(spec) and cond.interval != (0.0, 1.0):
        inside, outside, (a, b) = jvp_fn(session, spec, batch, replace(cond, interval=(0.0, 1.0))), \
            jvp_fn(session, spec, batch, cond.plain()), cond.interval
        return lambda x, t, e: inside(x, t, e) if a <= t <= b else outside(x, t, e)
    rows, fixed, combine, mask = _feed(spec, batch, cond)
    names = [NAMES.v, spec.divergence.get("output_jv", NAMES.jv)]
    e_name, x_name, t_name = spec.divergence.get("input_e", NAMES.e), NAMES.x, NAMES.t
    tb = np.empty(rows, np.float32)

    def jvp(x: np.ndarray, t: float, e: np.ndarray):
        tb.fill(t)
        if combine is None:
            v, jv = session.run(names, {x_name: x, t_name: tb, e_name: e, **fixed}, opts)
            return checked(spec, v, len(x)), same_shape(spec, jv, e)
        v, jv = session.run(names, {x_name: np.concatenate([x, x]), t_name: tb, e_name: np.concatenate([e, e]), **fixed},
                            opts)
        return combine(checked(spec, v, rows)), same_shape(spec, combine(jv), e)
    if mask is None:
        return jvp

    def masked(x: np.ndarray, t: float, e: np.ndarray):     # the masked field: v and J e zero outside
        v, jv = jvp(x, t, e)
        return v * mask, jv * mask[:, None]
    return masked
