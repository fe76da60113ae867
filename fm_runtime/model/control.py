"""Stopping graph runs, and naming what went wrong inside one.

Every onnxruntime call the runtime makes carries the RunOptions of its request's RunState (`RUN`
outside a request; for the load-time self-test, options of its own with a time limit), so one
`request_stop()` (Ctrl-C, SIGTERM, --timeout) ends the calls in progress in every thread within
milliseconds, even inside a long Loop, and every later call at once; the solver loops check `poll_stop()` between steps too. Errors
raised inside a run become the project's errors, each with its exit code.
"""
from __future__ import annotations

import functools
import threading
import time
import weakref
from contextlib import contextmanager

import onnxruntime as ort

from ..errors import FmError, Interrupted, ModelError, ResourceError, TimedOut

RUN = ort.RunOptions()
RUN.log_severity_level = 4
SELFTEST_SECONDS = 60.0                  # a self-test probes a few rows; longer means a hostile graph

_lock = threading.Lock()
_extra: set = set()                      # options of calls with their own time limit
_reason: str | None = None
_detail = ""
_deadline: tuple[float, float] | None = None     # (monotonic end, seconds asked)


class CancelToken:
    """Cancels the requests that carry it (`sample(..., cancel=token)`), from any thread: the
    graph calls in progress end within milliseconds, even inside a long Loop, and the request
    raises Interrupted("cancelled"). Other requests on the same Sampler go on; request_stop()
    still stops every request, with or without a token. One token may serve several requests."""

    def __init__(self):
        self.cancelled = False
        self._states: "weakref.WeakSet[RunState]" = weakref.WeakSet()

    def cancel(self) -> None:
        with _lock:
            self.cancelled = True
            for state in self._states:
                state.options.terminate = True

    def poll(self) -> None:
        """Raise if this token was cancelled or a process-wide stop was requested."""
        poll_stop()
        if self.cancelled:
            raise Interrupted("cancelled")


class RunState:
    """One request's graph calls: the RunOptions that every session.run of the request uses (the
    host loop, the device loop, a baked graph, the condition stage, the divergence graph), so that
    request_stop() or the request's CancelToken ends it within one graph call on any backend."""

    def __init__(self, token: CancelToken | None = None):
        self.token = token
        self.options = ort.RunOptions()
        self.options.log_severity_level = 4
        with _lock:
            _states.add(self)
            self.options.terminate = _reason is not None or (token is not None and token.cancelled)
            if token is not None:
                token._states.add(self)

    def poll(self) -> None:
        """Raise if the request was cancelled or a process-wide stop was requested."""
        if self.token is not None:
            self.token.poll()
        poll_stop()


_states: "weakref.WeakSet[RunState]" = weakref.WeakSet()


def one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    for noise in ("[ONNXRuntimeError] : ", "onnxruntime::"):
        msg = msg.replace(noise, "")
    return msg[:300]


def request_stop(reason: str = "interrupted", detail: str = "") -> None:
    """End every graph call in progress and refuse new ones (reason: interrupted, timeout or
    memory, with `detail` the memory it took)."""
    global _reason, _detail
    with _lock:
        if _reason is None:
            _reason, _detail = reason, detail
        RUN.terminate = True
        for opts in _extra:
            opts.terminate = True
        for state in _states:
            state.options.terminate = True


def reset() -> None:
    """Allow runs again after a stop (library callers that go on after cancelling)."""
    global _reason, _deadline
    with _lock:
        _reason, _deadline = None, None
        RUN.terminate = False
        for state in _states:
            state.options.terminate = state.token is not None and state.token.cancelled


def stop_reason() -> str | None:
    return _reason


def set_deadline(seconds: float | None) -> None:
    """Stop the run `seconds` from now (the CLI's --timeout; watched by the supervisor)."""
    global _deadline
    _deadline = None if seconds is None else (time.monotonic() + seconds, seconds)


def deadline_passed() -> bool:
    return _deadline is not None and time.monotonic() > _deadline[0]


def stop_error(at: str = "", left: str = "nothing written") -> FmError:
    """The error of the stop requested: why, `at` where the work was (" at step 5 of 10"), and
    `left` what it leaves behind."""
    if _reason == "memory":
        return ResourceError(f"stopped{at}: {_detail}; {left}")
    if _reason == "timeout":
        seconds = _deadline[1] if _deadline else 0
        return TimedOut(f"stopped after --timeout {seconds:g} s{at}; {left}")
    return Interrupted(f"interrupted{at}; {left}")


def poll_stop() -> None:
    """Raise the stop error if a stop was requested (called between solver steps)."""
    if _reason is not None:
        raise stop_error()


def _is_onnxruntime(e: BaseException) -> bool:
    return type(e).__module__.startswith("onnxruntime")


@contextmanager
def graph_errors(where: str, failing: str = "the graph failed while running", cancel: CancelToken | None = None):
    """Turn what escapes a graph run into the project's errors: a stop (or the request's `cancel`
    token) into Interrupted/TimedOut, an allocation failure into ResourceError, any other
    onnxruntime error into ModelError."""
    try:
        yield
    except FmError:
        if cancel is not None:
            cancel.poll()
        raise
    except MemoryError:
        poll_stop()
        raise ResourceError(f"{where}: out of memory for this request (the memory budget is set by "
                            "--max-memory); use fewer rows, or --out to stream them") from None
    except Exception as e:
        if not _is_onnxruntime(e):
            raise
        poll_stop()
        if cancel is not None:
            cancel.poll()
        msg = one_line(e)
        if "allocate memory" in msg.lower() or "bad_alloc" in msg.lower():
            raise ResourceError(f"{where}: the graph needs more memory than the budget allows "
                                "(--max-memory); the file may be built to exhaust memory") from None
        raise ModelError(f"{where}: {failing} ({msg})") from None


def guarded(method):
    """A Sampler method whose graph errors are mapped by graph_errors(self.path)."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        with graph_errors(self.path):
            return method(self, *args, **kwargs)
    return call


@contextmanager
def time_limit(seconds: float, what: str):
    """RunOptions for calls that must end within `seconds` (and on request_stop)."""
    opts = ort.RunOptions()
    opts.log_severity_level = 4
    timer = threading.Timer(seconds, lambda: setattr(opts, "terminate", True))
    timer.daemon = True
    with _lock:
        _extra.add(opts)
        opts.terminate = _reason is not None
    timer.start()
    try:
        yield opts
    except Exception as e:
        if _is_onnxruntime(e) and opts.terminate and _reason is None:
            raise ModelError(f"{what} did not finish within {seconds:g} s; the graph may never end") from None
        raise
    finally:
        timer.cancel()
        with _lock:
            _extra.discard(opts)
