"""The model's velocity as numpy callables, v(x, t) and (v, J e)(x, t, e), with class labels and
classifier-free guidance applied as one wrapper around the graph call (the solvers never see
them). Each callable owns its buffers, so callables made for parallel tiles share nothing."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from ..errors import ModelError
from ..model.control import RUN
from ..model.spec import NAMES, ModelSpec


@dataclass(frozen=True)
class Conditioning:
    """Labels [n] int64 (None: no label) and the guidance weight w of one request."""

    labels: np.ndarray | None = None
    guidance: float = 1.0

    def rows(self, a: int, b: int) -> "Conditioning":
        return self if self.labels is None else Conditioning(self.labels[a:b], self.guidance)


def _feed(spec: ModelSpec, batch: int, cond: Conditioning):
    """(rows per run, fixed feed entries, combine): a conditional model gets its labels (the "no
    label" id when none are given); guidance runs the conditional and the unconditional rows in
    one batched call and combines them as v_u + w (v_c - v_u)."""
    if not spec.num_classes:
        return batch, {}, None
    null = np.full(batch, spec.null_class, np.int64)
    if cond.labels is None or cond.guidance == 1.0:
        return batch, {spec.y_name: null if cond.labels is None else cond.labels}, None
    w = cond.guidance

    def combine(out: np.ndarray) -> np.ndarray:
        vc, vu = out[:batch], out[batch:]
        return vu + w * (vc - vu)
    return 2 * batch, {spec.y_name: np.concatenate([cond.labels, null])}, combine


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
    """v(x, t) for scalar t at a fixed batch size, reusing its own buffers."""
    rows, fixed, combine = _feed(spec, batch, cond)
    tb = np.empty((rows,) if spec.t_rank == 1 else (rows, 1), np.float32)
    run, names, x_name, t_name = session.run, [spec.v_name], spec.x_name, spec.t_name
    if combine is None:
        def f(x: np.ndarray, t: float) -> np.ndarray:
            tb.fill(t)
            return checked(spec, run(names, {x_name: x, t_name: tb, **fixed}, RUN)[0], len(x))
        return f
    both = np.empty((rows, *spec.data_shape), np.float32)

    def guided(x: np.ndarray, t: float) -> np.ndarray:
        tb.fill(t)
        both[:batch] = x
        both[batch:] = x
        return combine(checked(spec, run(names, {x_name: both, t_name: tb, **fixed}, RUN)[0], rows))
    return guided


def velocity_at(session: ort.InferenceSession, spec: ModelSpec, x: np.ndarray, t, cond: Conditioning) -> np.ndarray:
    """v(x, t) for one batch with t a scalar or one time per row."""
    rows, fixed, combine = _feed(spec, len(x), cond)
    tb = np.empty((rows,) if spec.t_rank == 1 else (rows, 1), np.float32)
    tb[...] = np.reshape(np.tile(np.ravel(t), rows // len(x)), tb.shape) if np.ndim(t) else t
    xs = x if rows == len(x) else np.concatenate([x, x])
    out = checked(spec, session.run([spec.v_name], {spec.x_name: xs, spec.t_name: tb, **fixed}, RUN)[0], rows)
    return out if combine is None else combine(out)


def jvp_fn(session: ort.InferenceSession, spec: ModelSpec, batch: int, cond: Conditioning = Conditioning()):
    """(x, t, e) -> (v, J e) from the divergence graph, with the same labels and guidance as the
    velocity (guidance combines the products linearly, like the velocities)."""
    rows, fixed, combine = _feed(spec, batch, cond)
    names = [NAMES.v, spec.divergence.get("output_jv", NAMES.jv)]
    e_name, x_name, t_name = spec.divergence.get("input_e", NAMES.e), NAMES.x, NAMES.t
    tb = np.empty(rows, np.float32)

    def jvp(x: np.ndarray, t: float, e: np.ndarray):
        tb.fill(t)
        if combine is None:
            v, jv = session.run(names, {x_name: x, t_name: tb, e_name: e, **fixed}, RUN)
            return checked(spec, v, len(x)), same_shape(spec, jv, e)
        v, jv = session.run(names, {x_name: np.concatenate([x, x]), t_name: tb, e_name: np.concatenate([e, e]), **fixed}, RUN)
        return combine(checked(spec, v, rows)), same_shape(spec, combine(jv), e)
    return jvp
