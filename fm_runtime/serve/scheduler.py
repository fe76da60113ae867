"""Step-level batching: the rows of every in-flight request of one model share one velocity call
per solver stage.

Each request's solve is the runtime's own solver written as a generator (solvers.stepping,
adaptive.dopri5_steps): it yields (x, t) whenever it needs the velocity. The scheduler's one
thread collects the pending (x, t) of all active requests, feeds them to the graph as one batch
(each row with its own t, both guidance halves of guided requests included), hands each request
its rows of the result and advances it. Requests join at the next stage boundary and leave
when their own solve ends, so different step counts, solvers, schedules, labels and guidance
weights share calls, and a request's samples are its solo solve's (the same arithmetic on the
same rows; only the graph's batch differs). A flow-map file's jumps ask for (x, (s, t)): each row
gets its own s as well, so jumps merge with each other and with velocity stages (s = t).

Requests admitted at the same boundary with the same solve settings (jobs.merge_key) start as
one cohort: one generator over their concatenated rows, as request-level batching would solve
them, so a burst of like requests costs the numpy work of one. A cohort member whose client
leaves is answered at once; its rows finish with the cohort's and are dropped.
"""
from __future__ import annotations

import time

import numpy as np

from ..engine.backends import Watch
from ..engine.result import SampleResult
from ..engine.tiler import Tiler
from ..engine.velocity import checked, halves, start
from ..errors import FmError, Interrupted, NumericalError
from ..model.control import RUN, graph_errors
from ..model.session import runner
from ..solve.adaptive import dopri5_steps
from ..solve.solvers import stepping
from .jobs import Job, Queued, merge_key, merged

SPLIT_SECONDS = 0.002


def join(arrays: list) -> np.ndarray:
    """The arrays one after another; one array as it is (a lone request's step copies nothing)."""
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


class Active:
    """A cohort of requests being solved as one: its generator, the (x, t) it waits on, its
    feeds, and each member's rows."""

    def __init__(self, jobs: list[Job]):
        req = jobs[0].req if len(jobs) == 1 else merged([j.req for j in jobs])
        self.jobs, self.spec, self.n = jobs, req.spec, req.n
        self.where = jobs[0].where
        cond = req.conditioning()
        self.fixed, self.empty = halves(req.spec, req.n, cond)
        self.w, self.interval = cond.guidance, cond.interval
        mask = req.spec.input("mask")
        self.mask = None if mask is None else self.fixed[mask["name"]]
        watch = Watch(self.where, poll=lambda: None)
        x0 = req.start()
        if req.kind == "adaptive":
            self.steps = dopri5_steps(x0, **req.tolerances)
        else:
            self.steps = stepping(x0, req.steps, req.solver, watch.on_step(req.steps), req.schedule)
        self.ask = next(self.steps)
        # rows with the same feed layout can share a call (a bound symbol changes it)
        self.layout = (tuple(req.spec.data_shape),) + tuple(sorted((k, v.shape[1:], v.dtype.str) for k, v in self.fixed.items()))

    def guided(self, t) -> bool:
        return self.empty is not None and self.interval[0] <= start(t) <= self.interval[1]

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

    @property
    def cancelled(self) -> bool:
        return all(j.cancelled for j in self.jobs)

    def fail(self, e: BaseException) -> None:
        for j in self.jobs:
            if not j.future.done():
                j.future.set_exception(e)

    def finish(self, result: SampleResult) -> None:
        at = 0
        for j in self.jobs:
            n = j.req.n
            if not j.future.done():
                j.future.set_result(result if len(self.jobs) == 1 else SampleResult(result.samples[at:at + n], result.nfe))
            at += n


class StepScheduler(Queued):
    """Solves submitted jobs of one model with merged velocity calls (see the module's text).
    max_rows bounds the rows of one call (guided requests count twice); a request larger than
    it still runs, alone. max_queue bounds the jobs waiting to start (QueueFull beyond it).
    on_call(rows) is told every call's batch size (metrics)."""

    def __init__(self, session, max_rows: int = 8192, max_queue: int = 256, on_call=None, workers: int = 1):
        super().__init__(max_queue, "fm-serve-steps")
        self.run, self.max_rows = runner(session), max_rows     # the session's run: its only use here
        # a call expected to take longer than SPLIT_SECONDS is split into `workers` parts run at
        # once (single-threaded onnxruntime calls in parallel beat one multi-threaded call for
        # heavy networks; for light ones the hand-off costs more than it saves)
        self.tiler, self.per_row = Tiler(0, workers), 0.0
        self.on_call = on_call or (lambda rows: None)
        self.active: list[Active] = []
        self.calls = 0
        self._thread.start()

    def depth(self) -> tuple[int, int]:
        """(requests waiting, requests being solved)."""
        return len(self.pending), len(self.active)

    def _admit(self) -> None:
        """Waiting jobs join, as many as max_rows allows (at least one when none is active),
        like ones together as cohorts."""
        with self._cv:
            while not self.pending and not self.active:
                if self._closing:
                    raise SystemExit
                self._cv.wait()
            used = sum(a.n * 2 if a.empty is not None else a.n for a in self.active)
            cohorts: dict[tuple, list[Job]] = {}
            while self.pending:
                job = self.pending[0]
                if (self.active or cohorts) and used + job.rows > self.max_rows:
                    break
                self.pending.popleft()
                if job.future.set_running_or_notify_cancel():
                    cohorts.setdefault(merge_key(job.req), []).append(job)
                    used += job.rows
        for jobs in cohorts.values():
            self._start(jobs)

    def _start(self, jobs: list[Job]) -> None:
        try:
            self.active.append(Active(jobs))
        except FmError as e:
            for j in jobs:
                j.future.set_exception(e)

    def _loop(self) -> None:
        while True:
            try:
                self._admit()
            except SystemExit:
                return
            try:
                self._drop_stopped()
                if len(self.active) == 1:
                    self._alone(self.active[0])
                    continue
                groups: dict[tuple, list[Active]] = {}
                for a in self.active:
                    groups.setdefault(a.layout, []).append(a)
                for group in groups.values():
                    self._call(group)
            except Exception as e:      # a bug: fail what was in flight, keep serving
                for a in self.active:
                    a.fail(e)
                self.active = []

    def _alone(self, a: Active) -> None:
        """One cohort in flight: its steps back to back, without the admission and grouping of
        every step (about 10 us each), until it ends, is cancelled or another request waits
        (which then joins at this step boundary, as it would have; one that cannot join yet for
        --max-batch-rows waits while this one goes on stepping)."""
        self._call([a])
        while self.active and not self.pending and not a.cancelled:
            self._call([a])

    def _drop_stopped(self) -> None:
        """Cancelled jobs (their client left, or their time ran out) leave at the step boundary."""
        for a in self.active:
            for j in a.jobs:
                if j.cancelled and not j.future.done():
                    j.future.set_exception(Interrupted("cancelled"))
        self.active = [a for a in self.active if not a.cancelled]

    def _run(self, spec, feed: dict, rows: int) -> np.ndarray:
        """The graph on the merged rows: one call, or equal parts on the workers when the call
        would be slow (each row's velocity is the same either way: rows are independent)."""
        parts = min(self.tiler.workers, rows) if self.per_row * rows > SPLIT_SECONDS else 1
        start = time.perf_counter()
        if parts == 1:
            out = self.run([spec.v_name], feed, RUN)[0]
        else:
            cuts = [rows * i // parts for i in range(parts + 1)]
            out = np.concatenate(self.tiler.map(
                lambda ab: self.run([spec.v_name], {k: v[ab[0]:ab[1]] for k, v in feed.items()}, RUN)[0],
                list(zip(cuts[:-1], cuts[1:]))))
        seconds = (time.perf_counter() - start) * (parts if parts > 1 else 1) / rows
        self.per_row = seconds if not self.per_row else 0.8 * self.per_row + 0.2 * seconds
        return out

    def _call(self, group: list[Active]) -> None:
        """One graph call for every request of the group, then each one advanced."""
        spec = group[0].spec
        xs, ts, ss, feeds = [], [], [], []
        for a in group:
            x, t = a.ask
            if a.guided(t):
                xs += [x, x]
                feeds += [a.fixed, a.empty]
            else:
                xs.append(x)
                feeds.append(a.fixed)
            ts.append(np.full(a.rows(), t[1] if isinstance(t, tuple) else t, np.float32))
            if spec.s_name:
                ss.append(np.full(a.rows(), start(t), np.float32))
        rows = sum(len(x) for x in xs)
        tb = join(ts)
        feed = {spec.x_name: join(xs), spec.t_name: tb if spec.t_rank == 1 else tb[:, None]}
        if spec.s_name:
            sb = join(ss)
            feed[spec.s_name] = sb if spec.t_rank == 1 else sb[:, None]
        for name in feeds[0]:
            feed[name] = join([f[name] for f in feeds])
        try:
            with graph_errors(group[0].where):
                out = checked(spec, self._run(spec, feed, rows), rows)
        except FmError as e:
            for a in group:
                a.fail(e)
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
                done.append(a)
                if isinstance(e, NumericalError) and len(a.jobs) > 1:
                    for j in a.jobs:          # whose rows blew up: each member again, alone
                        self._start([j])
                else:
                    a.fail(e)
            else:
                if result is not None:
                    a.finish(result)
                    done.append(a)
            at += r
        if done:
            self.active = [a for a in self.active if a not in done]
