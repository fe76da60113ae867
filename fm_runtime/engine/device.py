"""Solving with the state on the execution provider's device (CUDA and the like).

On CPU the numpy loop in sampler.py is fastest. On an accelerator, copying the state to the host
and back at every step would cost more than the network, so here the state, the stage buffers,
the time vectors and the solver coefficients all live on the device as OrtValues: the velocity
graph and a tiny shipped update graph (models/axpy.onnx: Y = X + A * K) are bound to them with
IOBinding, and only the noise goes up and the samples come down, once per solve.

Both classes run on any provider, CPU included, which is how the tests check them against torch.
"""
from __future__ import annotations

from importlib import resources

import numpy as np
import onnxruntime as ort

from ..errors import Interrupted, ModelError
from ..model.contract import ModelSpec
from ..model.control import RUN, one_line, poll_stop
from ..solve.solvers import get_solver, time_grid

_F32 = np.float32


def device_of(provider: str) -> str:
    """OrtValue device type for an execution provider."""
    return {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "cuda",
            "ROCMExecutionProvider": "cuda", "MIGraphXExecutionProvider": "cuda",
            "DmlExecutionProvider": "dml"}.get(provider, "cpu")


def bound_run(session: ort.InferenceSession, io, options: ort.RunOptions) -> None:
    """run_with_iobinding, whose failures are plain RuntimeErrors: a call ended by its options'
    terminate flag raises the stop (or the request's cancel, which graph_errors names)."""
    try:
        session.run_with_iobinding(io, options)
    except RuntimeError as e:
        if not options.terminate:
            raise ModelError(f"the graph failed while running on the device ({one_line(e)})") from None
        poll_stop()
        raise Interrupted("cancelled") from None


class DeviceLoop:
    """Fixed-step solve of a velocity graph with every array resident on one device."""

    def __init__(self, session: ort.InferenceSession, spec: ModelSpec, device: str, device_id: int = 0):
        self.session, self.spec, self.device, self.device_id = session, spec, device, device_id
        axpy = resources.files("fm_runtime.assets").joinpath("axpy.onnx").read_bytes()
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.axpy = ort.InferenceSession(axpy, opts, providers=session.get_providers())

    def _upload(self, a: np.ndarray) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a, _F32), self.device, self.device_id)

    def _empty(self, shape) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), _F32, self.device, self.device_id)

    def _velocity(self, x: ort.OrtValue, times: tuple, out: ort.OrtValue, options: ort.RunOptions) -> None:
        """out = v(x, t), or on a flow map u(x, s, t), with times (s, t) already on the device."""
        io = self.session.io_binding()
        io.bind_ortvalue_input(self.spec.x_name, x)
        io.bind_ortvalue_input(self.spec.t_name, times[1])
        if self.spec.s_name:
            io.bind_ortvalue_input(self.spec.s_name, times[0])
        io.bind_ortvalue_output(self.spec.v_name, out)
        bound_run(self.session, io, options)

    def _axpy(self, x: ort.OrtValue, a: ort.OrtValue, k: ort.OrtValue, out: ort.OrtValue, options: ort.RunOptions) -> None:
        io = self.axpy.io_binding()
        io.bind_ortvalue_input("X", x)
        io.bind_ortvalue_input("K", k)
        io.bind_ortvalue_input("A", a)
        io.bind_ortvalue_output("Y", out)
        bound_run(self.axpy, io, options)

    def solve(self, z: np.ndarray, steps: int, solver: str, schedule=None, options: ort.RunOptions = RUN,
              poll=poll_stop) -> tuple[np.ndarray, int]:
        """The solve of noise z; every graph call runs with `options` (the request's, so that its
        cancel ends the call in progress), and `poll` raises between steps once it is stopped."""
        s = get_solver(solver)
        b = len(z)
        t_shape = (b,) if self.spec.t_rank == 1 else (b, 1)
        grid = time_grid(steps, schedule=schedule)
        # everything the loop needs goes to the device before it starts
        t_dev = {}
        coef = {}
        for i in range(steps):
            poll()
            h = grid[i + 1] - grid[i]
            for c in s.c:
                for t in _pair(s.at(grid[i], c, h)):
                    if t not in t_dev:
                        t_dev[t] = self._upload(np.full(t_shape, t, _F32))
            for v in [h * a for row in s.a for a in row if a] + [h * w for w in s.b if w]:
                if v not in coef:
                    coef[v] = self._upload(np.array(v, _F32))
        # a copy: on the CPU provider an OrtValue shares the array's memory, and x is overwritten
        x, x_next = self._upload(np.array(z, _F32, copy=True)), self._empty(z.shape)
        stage = [self._empty(z.shape), self._empty(z.shape)]
        k = [self._empty(z.shape) for _ in s.c]
        calls = 0
        for i in range(steps):
            h = grid[i + 1] - grid[i]
            for j, (c, row) in enumerate(zip(s.c, s.a)):
                src, flip = x, 0
                for m, a in enumerate(row):
                    if a:
                        self._axpy(src, coef[h * a], k[m], stage[flip], options)
                        src, flip = stage[flip], 1 - flip
                self._velocity(src, tuple(t_dev[t] for t in _pair(s.at(grid[i], c, h))), k[j], options)
                calls += 1
            for j, w in enumerate(s.b):
                if w:
                    self._axpy(x, coef[h * w], k[j], x_next, options)
                    x, x_next = x_next, x
            poll()
        # copy: on the CPU provider .numpy() is a view of memory this loop is about to free
        return np.array(x.numpy(), copy=True), calls


def _pair(at) -> tuple[float, float]:
    """A stage's (s, t): a flow map's jump, or one time twice (the velocity u(x, t, t))."""
    return at if isinstance(at, tuple) else (at, at)


class BoundGraphRunner:
    """Runs a baked graph through fixed device buffers, one set per batch size, so an
    accelerator can replay a captured graph (CUDA graphs need the same addresses every run)."""

    def __init__(self, session: ort.InferenceSession, spec: ModelSpec, device: str, device_id: int = 0):
        self.session, self.spec, self.device, self.device_id = session, spec, device, device_id
        self._bound: dict[int, tuple] = {}

    def run(self, z: np.ndarray, options: ort.RunOptions | None = None) -> np.ndarray:
        """The baked solve of z, its call run with `options` (the request's) and the graph id of
        its batch size's buffers."""
        entry = self._bound.get(len(z))
        if entry is None:
            zin = ort.OrtValue.ortvalue_from_shape_and_type(list(z.shape), _F32, self.device, self.device_id)
            xout = ort.OrtValue.ortvalue_from_shape_and_type(list(z.shape), _F32, self.device, self.device_id)
            io = self.session.io_binding()
            io.bind_ortvalue_input(self.spec.z_name, zin)
            io.bind_ortvalue_output(self.spec.out_name, xout)
            entry = self._bound[len(z)] = (zin, xout, io, str(len(self._bound) + 1))
        zin, xout, io, graph_id = entry
        poll_stop()
        opts = options if options is not None else ort.RunOptions()
        opts.add_run_config_entry("gpu_graph_id", graph_id)
        zin.update_inplace(np.ascontiguousarray(z, _F32))
        bound_run(self.session, io, opts)
        return np.array(xout.numpy(), copy=True)     # the buffer is reused by the next run
