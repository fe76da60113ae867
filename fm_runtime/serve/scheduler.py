"""Step-level batching: the rows of every in-flight request of one model share one velocity call
per solver stage.

Each request's solve is the runtime's own solver written as a generator (solvers.stepping,
adaptive.dopri5_steps): it yields (x, t) whenever it needs the velocity. The scheduler's one
thread collects the pending (x, t) of all active requests, feeds them to the graph as one batch
(each row with its own t, both guidance halves of guided requests included), hands each request
its rows of the result and advances it. Requests join at the next stage boundary and leave
when their own solve ends, so different step counts, solvers, schedules, labels and guidance
weights share calls, and a request's samples are its solo solve's (the same arithmetic on the
same rows; only the graph's batch differs).
"""
from __future__ import annotations

import numpy as np

from ..engine.backends import Watch
from ..engine.result import SampleResult
from ..engine.velocity import checked, halves
from ..errors import FmError, Interrupted
from ..model.control import RUN, graph_errors
from ..solve.adaptive import dopri5_steps
from ..solve.solvers import stepping
from .jobs import Job, Queued


class Active:
    """One request being solved: its generator, the (x, t) it waits on, and its feeds."""

    def __init__(self, job: Job):
        req = job.req
        self.job, self.spec, self.n = job, req.spec, req.n
        cond = req.conditioning()
        self.fixed, self.empty = halves(req.spec, req.n, cond)
        self.w, self.interval = cond.guidance, cond.interval
        mask = req.spec.input("mask")
        self.mask = None if mask is None else self.fixed[mask["name"]]
        watch = Watch(job.where, poll=lambda: None)
        x0 = req.start()
        if req.kind == "adaptive":
            self.steps = dopri5_steps(x0, **req.tolerances)
        else:
            self.steps = stepping(x0, req.steps, req.solver, watch.on_step(req.steps), req.schedule)
        self.ask = next(self.steps)
        # rows with the same feed layout can share a call (a bound symbol changes it)
        self.layout = (tuple(req.spec.data_shape),) + tuple(sorted((k, v.shape[1:], v.dtype.str) for k, v in self.fixed.items()))

    def guided(self, t: float) -> bool:
        return self.empty is not None and self.interval[0] <= t <= self.interval[1]

    def rows(self) -> int:
        return 2 * self.n if self.guided(self.ask[1]) else self.n

    def advance(self, out: np.ndarray):
        """Send this request's velocity rows; returns the finished result or None."""
        if self.guided(self.ask[1]):
            vc, vu = out[:self.n], out[self.n:]
            v = vu + self.w * (vc - vu)
        else:
            v = out
        if self.mask is not None:
            v *= self.mask
        try:
            self.ask = self.steps.send(v)
            return None
        except StopIteration as done:
            sol = done.value
            x, nfe = (sol.x, sol.nfe) if hasattr(sol, "nfe") else sol
            return SampleResult(checked(self.spec, x, self.n, "samples"), nfe)


class StepScheduler(Queued):
    """Solves submitted jobs of one model with merged velocity calls (see the module's text).
    max_rows bounds the rows of one call (guided requests count twice); a request larger than
    it still runs, alone. max_queue bounds the jobs waiting to start (QueueFull beyond it).
    on_call(rows) is told every call's batch size (metrics)."""

    def __init__(self, session, max_rows: int = 8192, max_queue: int = 256, on_call=None):
        super().__init__(max_queue, "fm-serve-steps")
        self.session, self.max_rows = session, max_rows
        self.on_call = on_call or (lambda rows: None)
        self.active: list[Active] = []
        self.calls = 0
        self._thread.start()

    def depth(self) -> tuple[int, int]:
        """(requests waiting, requests being solved)."""
        return len(self.pending), len(self.active)

    def _admit(self) -> None:
        with self._cv:
            while not self.pending and not self.active:
                if self._closing:
                    raise SystemExit
                self._cv.wait()
            used = sum(a.n * 2 if a.empty is not None else a.n for a in self.active)
            while self.pending:
                job = self.pending[0]
                if self.active and used + job.rows > self.max_rows:
                    break
                self.pending.popleft()
                if job.future.set_running_or_notify_cancel():
                    try:
                        self.active.append(Active(job))
                        used += job.rows
                    except FmError as e:
                        job.future.set_exception(e)

    def _loop(self) -> None:
        while True:
            try:
                self._admit()
            except SystemExit:
                return
            try:
                self._drop_stopped()
                groups: dict[tuple, list[Active]] = {}
                for a in self.active:
                    groups.setdefault(a.layout, []).append(a)
                for group in groups.values():
                    self._call(group)
            except Exception as e:      # a bug: fail what was in flight, keep serving
                for a in self.active:
                    if not a.job.future.done():
                        a.job.future.set_exception(e)
                self.active = []

    def _drop_stopped(self) -> None:
        """Cancelled jobs (their client left, or their time ran out) leave at the step boundary."""
        for a in self.active:
            if a.job.cancelled:
                a.job.future.set_exception(Interrupted("cancelled"))
        self.active = [a for a in self.active if not a.job.cancelled]

    def _call(self, group: list[Active]) -> None:
        """One graph call for every request of the group, then each one advanced."""
        spec = group[0].spec
        xs, ts, feeds = [], [], []
        for a in group:
            x, t = a.ask
            if a.guided(t):
                xs += [x, x]
                feeds += [a.fixed, a.empty]
            else:
                xs.append(x)
                feeds.append(a.fixed)
            ts.append(np.full(a.rows(), t, np.float32))
        rows = sum(len(x) for x in xs)
        tb = np.concatenate(ts)
        feed = {spec.x_name: np.concatenate(xs), spec.t_name: tb if spec.t_rank == 1 else tb[:, None]}
        for name in feeds[0]:
            feed[name] = np.concatenate([f[name] for f in feeds])
        try:
            with graph_errors(group[0].job.where):
                out = checked(spec, self.session.run([spec.v_name], feed, RUN)[0], rows)
        except FmError as e:
            for a in group:
                a.job.future.set_exception(e)
            self.active = [a for a in self.active if a not in group]
            return
        self.calls += 1
        self.on_call(rows)
        done, at = [], 0
        for a in group:
            r = a.rows()
            try:
                result = a.advance(out[at:at + r])
            except FmError as e:
                a.job.future.set_exception(e)
                done.append(a)
            else:
                if result is not None:
                    a.job.future.set_result(result)
                    done.append(a)
            at += r
        if done:
            self.active = [a for a in self.active if a not in done]
