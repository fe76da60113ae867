"""How one tile of noise becomes samples, chosen once when a model is loaded:

- HostLoop: the fixed-step loop in numpy around velocity calls (CPU's fastest);
- DeviceBackend: the state kept on the provider's device between steps (device.py);
- BakedGraph: the file is the whole solve, one call;
- BoundBakedGraph: a baked file run through fixed device buffers (CUDA graphs).

All share `solve(z, req, cond, watch) -> (x, network evaluations)`: the rows z of the Request req
(its steps, solver and schedule; a baked graph has them built in), conditioned on cond (those
rows' labels, inputs and run options). A Watch belongs to
one request and sees every step the backend exposes, so NaN/Inf are reported where they arose.
"""
from __future__ import annotations

import threading

import numpy as np
import onnxruntime as ort

from ..errors import NumericalError
from ..model.contract import ModelSpec
from ..model.control import RUN, poll_stop
from ..model.session import runner
from ..solve.solvers import integrate_inplace
from .device import BoundGraphRunner, DeviceLoop, device_of
from .request import Request
from .velocity import Conditioning, halves, velocity_fn


class Watch:
    """NaN/Inf in a request's solves: raise at the first one, or (keep_partial) note where."""

    def __init__(self, where: str, keep_partial: bool = False, poll=poll_stop):
        self.where, self.keep_partial, self.poll = where, keep_partial, poll
        self.nonfinite: list[tuple[int, float, str]] = []
        self._lock = threading.Lock()

    def on_step(self, steps: int, end_only: str | None = None):
        """check(x, step, t) after each step; end_only names what hides the steps (baked graph)."""
        def on_step(x: np.ndarray, step: int, t: float) -> None:
            self.poll()                 # a stop (or the request's cancel) between steps
            if np.isfinite(x).all():
                return
            bad = int((~np.isfinite(x.reshape(len(x), -1))).any(1).sum())
            where = end_only or f"at step {step} of {steps} (t = {t:.3f})"
            if not self.keep_partial:
                raise NumericalError(f"{self.where}: the solve produced NaN/Inf {where}, in {bad} of "
                                     f"{len(x)} rows of a tile")
            with self._lock:
                self.nonfinite.append((step, t, where))
        return on_step


class HostLoop:
    def __init__(self, session: ort.InferenceSession, spec: ModelSpec):
        self.session, self.spec = session, spec

    def solve(self, z, req: Request, cond: Conditioning, watch: Watch):
        f = velocity_fn(self.session, self.spec, len(z), cond)
        return integrate_inplace(f, z, req.steps, req.solver, watch.on_step(req.steps), req.schedule)


class DeviceBackend(HostLoop):
    """Velocity loop with the state on the device; labelled or conditioned requests use the host
    loop (the device loop binds x and t only)."""

    def __init__(self, session, spec, device: str):
        super().__init__(session, spec)
        self.loop, self._lock = DeviceLoop(session, spec, device), threading.Lock()

    def solve(self, z, req, cond, watch):
        if self.spec.num_classes or self.spec.inputs:
            return super().solve(z, req, cond, watch)
        with self._lock:            # one set of device buffers
            x, calls = self.loop.solve(z, req.steps, req.solver, req.schedule, cond.options or RUN, watch.poll)
        watch.on_step(req.steps, "in the device loop's output (sample on CPU to see the step)")(x, req.steps, 1.0)
        return x, calls


class BakedGraph:
    """A baked file's one call: the noise and, in a conditioned file, its inputs (the guidance
    weight among them) as the host loop would feed one evaluation."""

    def __init__(self, session: ort.InferenceSession, spec: ModelSpec):
        self.session, self.spec, self.run = session, spec, runner(session)

    def _run(self, z, options=None, fixed=None):
        return self.run([self.spec.out_name], {self.spec.z_name: z, **(fixed or {})}, options or RUN)[0]

    def solve(self, z, req, cond, watch):
        x = self._run(z, cond.options, halves(cond.spec or self.spec, len(z), cond)[0] if self.spec.inputs else None)
        watch.on_step(req.steps, "in the baked graph's output (sample the velocity model to see the step)")(x, req.steps, 1.0)
        return x, self.spec.baked["nfe"]


class BoundBakedGraph(BakedGraph):
    def __init__(self, session, spec, device: str):
        super().__init__(session, spec)
        self.runner, self._lock = BoundGraphRunner(session, spec, device), threading.Lock()

    def _run(self, z, options=None, fixed=None):
        if fixed:                   # the bound buffers hold z only: conditioned files run as given
            return super()._run(z, options, fixed)
        with self._lock:            # the bound buffers are shared per batch size
            return self.runner.run(z, options)


def choose_backend(session: ort.InferenceSession, spec: ModelSpec, device_resident: bool):
    if device_resident:
        device = device_of(session.get_providers()[0])
        return BoundBakedGraph(session, spec, device) if spec.kind == "baked" else DeviceBackend(session, spec, device)
    return BakedGraph(session, spec) if spec.kind == "baked" else HostLoop(session, spec)
