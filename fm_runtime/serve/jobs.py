"""A served request as a job, and the two simpler ways to run jobs besides step-level batching
(scheduler.py): each request alone on a pool of worker threads (no batching), and whole
requests merged into one solve when their solve settings agree (request-level batching, as
Triton's dynamic batcher, TorchServe and Ray Serve do: a request that arrives while a batch is
solving waits for the whole solve)."""
from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from ..engine.result import SampleResult
from ..errors import FmError
from ..model.control import CancelToken, RunState


class QueueFull(Exception):
    """More requests wait than the server takes (HTTP 429), or it is shutting down."""


@dataclass
class Job:
    """One request: what to solve (`req`, from Sampler.request) or `run` (any other work), the
    rows it adds to a batch, and its future. cancel() ends it at the next step boundary (or
    within milliseconds inside a graph call, through the request's CancelToken)."""

    where: str
    rows: int
    req: object = None
    run: Callable[[], object] | None = None
    token: CancelToken = field(default_factory=CancelToken)
    future: Future = field(default_factory=Future)
    arrived: float = field(default_factory=time.monotonic)
    on_cancel: list[Callable[[], None]] = field(default_factory=list)     # e.g. a merged solve's own check

    @property
    def cancelled(self) -> bool:
        return self.token.cancelled

    def cancel(self) -> None:
        self.token.cancel()
        for call in self.on_cancel:
            call()


class Pool:
    """Each job alone, `workers` at a time (no batching); also the path of log-density jobs.
    max_queue bounds the jobs accepted and not finished."""

    def __init__(self, solve: Callable, workers: int, max_queue: int = 256):
        self.solve, self.max_queue = solve, max_queue
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fm-serve")
        self._lock, self._open = threading.Lock(), 0
        self._closing = False

    def submit(self, job: Job) -> Future:
        with self._lock:
            if self._closing:
                raise QueueFull("the server is shutting down")
            if self._open >= self.max_queue:
                raise QueueFull(f"{self._open} requests already wait for this model")
            self._open += 1

        def work():
            try:
                if job.cancelled:
                    raise FmError("cancelled")
                return job.run() if job.run is not None else self.solve(job.req)
            finally:
                with self._lock:
                    self._open -= 1
        inner = self._executor.submit(work)
        inner.add_done_callback(lambda f: _copy(f, job.future))
        return job.future

    def depth(self) -> tuple[int, int]:
        return self._open, 0

    def close(self, timeout: float | None = None) -> None:
        with self._lock:
            self._closing = True
        self._executor.shutdown(wait=True)


def _copy(inner: Future, outer: Future) -> None:
    if outer.done():
        return
    if inner.exception() is not None:
        outer.set_exception(inner.exception())
    else:
        outer.set_result(inner.result())


def merge_key(req) -> tuple:
    """Requests with equal keys can be solved as one: the same solve on concatenated rows. Never
    two adaptive ones: dopri5's error norm covers the whole batch, so its steps would change."""
    if req.kind == "adaptive":
        return ("adaptive", id(req))
    return (req.kind, req.solver, req.steps, repr(req.schedule), tuple(sorted((req.tolerances or {}).items())),
            req.guidance, req.guidance_interval, req.guidance_calls, req.labels is None,
            tuple(req.spec.data_shape), tuple(sorted((k, v.shape[1:]) for k, v in req.inputs.items())),
            tuple(sorted(req.nulls)))


def merged(reqs: list, token: CancelToken | None = None) -> object:
    """One request of all rows of `reqs` (equal merge_key), starting from each one's noise, its
    graph calls ended by `token` (not by any one request's)."""
    cat = lambda values: np.concatenate(values)
    first = reqs[0]
    return replace(first, n=sum(r.n for r in reqs), noise=cat([r.start() for r in reqs]), seed=None, first=0,
                   labels=None if first.labels is None else cat([r.labels for r in reqs]),
                   inputs={k: cat([r.inputs[k] for r in reqs]) for k in first.inputs},
                   nulls={k: cat([r.nulls[k] for r in reqs]) for k in first.nulls}, cancel=token, run=RunState(token))


class Queued:
    """A bounded queue of jobs taken by one thread (`_loop`, started by start()): submit()
    refuses with QueueFull past max_queue waiting jobs or once closing; close() lets the thread
    finish every accepted job, then end."""

    def __init__(self, max_queue: int, name: str):
        self.max_queue = max_queue
        self.pending: deque[Job] = deque()
        self._cv, self._closing = threading.Condition(), False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def submit(self, job: Job) -> Future:
        with self._cv:
            if self._closing:
                raise QueueFull("the server is shutting down")
            if len(self.pending) >= self.max_queue:
                raise QueueFull(f"{len(self.pending)} requests already wait for this model")
            self.pending.append(job)
            self._cv.notify()
        return job.future

    def close(self, timeout: float | None = None) -> None:
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._thread.join(timeout)

    def _loop(self) -> None:
        raise NotImplementedError


class RequestBatcher(Queued):
    """Request-level batching: waits up to max_delay seconds after the first waiting request for
    max_rows rows, then solves each group of requests with equal solve settings as one request
    (Sampler.solve, tiled over the sampler's threads) and splits the samples."""

    def __init__(self, solve: Callable, max_rows: int = 8192, max_delay: float = 0.005, max_queue: int = 256,
                 on_call=None):
        super().__init__(max_queue, "fm-serve-requests")
        self.solve, self.max_rows, self.max_delay = solve, max_rows, max_delay
        self.on_call = on_call or (lambda rows: None)
        self.solving = 0
        self._thread.start()

    def depth(self) -> tuple[int, int]:
        return len(self.pending), self.solving

    def _take(self) -> list[Job]:
        with self._cv:
            while not self.pending:
                if self._closing:
                    raise SystemExit
                self._cv.wait()
            end = self.pending[0].arrived + self.max_delay
            while sum(j.rows for j in self.pending) < self.max_rows and time.monotonic() < end and not self._closing:
                self._cv.wait(max(0.0, end - time.monotonic()))
            batch, rows = [], 0
            while self.pending and (not batch or rows + self.pending[0].rows <= self.max_rows):
                job = self.pending.popleft()
                if job.future.set_running_or_notify_cancel():
                    batch.append(job)
                    rows += job.rows
            self.solving = len(batch)
            return batch

    def _loop(self) -> None:
        while True:
            try:
                batch = self._take()
            except SystemExit:
                return
            groups: dict[tuple, list[Job]] = {}
            for job in batch:
                if not job.cancelled:
                    groups.setdefault(merge_key(job.req), []).append(job)
                else:
                    job.future.set_exception(FmError("cancelled"))
            for group in groups.values():
                self._solve(group)
            self.solving = 0

    def _solve(self, group: list[Job]) -> None:
        token = CancelToken()           # a merged solve ends once every request in it is cancelled
        for job in group:
            job.on_cancel.append(lambda: all(j.cancelled for j in group) and token.cancel())
        try:
            req = group[0].req if len(group) == 1 else merged([j.req for j in group], token)
            result = self.solve(req)
            self.on_call(req.n)
        except Exception as e:      # FmError, or a bug: every job of the group hears of it
            for job in group:
                job.future.set_exception(e)
            return
        at = 0
        for job in group:
            n = job.req.n
            job.future.set_result(SampleResult(result.samples[at:at + n], result.nfe))
            at += n

