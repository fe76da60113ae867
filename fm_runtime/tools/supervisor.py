"""Runs that can always be stopped: the command works on a worker thread while the main thread
waits for Ctrl-C, SIGTERM and the --timeout deadline.

On either, every graph call in progress is ended (control.request_stop; onnxruntime checks the
flag between kernels, also inside Loops) and the command unwinds through its own error paths,
removing partial outputs. If it has not finished GRACE seconds later (a kernel that never
returns, numpy busy in one long call), the main thread removes the temporary files itself and
ends the process with the same exit code.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Callable

from ..errors import printable
from ..model import control
from . import limits
from .io import end_progress_line, remove_temporaries

GRACE = 1.5


def supervise(body: Callable[[], object], prog_name: str) -> object:
    """body() on a worker thread, stoppable as above; its result or its exception."""
    if threading.current_thread() is not threading.main_thread():
        return body()
    box: dict = {}

    def work() -> None:
        try:
            box["value"] = body()
        except BaseException as e:      # handed to the main thread as it is
            box["error"] = e

    signals = [s for s in (signal.SIGINT, signal.SIGTERM)]
    previous = {s: signal.signal(s, lambda *_: control.request_stop("interrupted")) for s in signals}
    worker = threading.Thread(target=work, name=prog_name, daemon=True)
    worker.start()
    stopped_at = None
    try:
        while worker.is_alive():
            worker.join(0.02)
            if control.stop_reason() is None and control.deadline_passed():
                control.request_stop("timeout")
            if control.stop_reason() is None:
                over = limits.over_watched_budget()
                if over:
                    control.request_stop("memory", over)
            if control.stop_reason() is not None:
                stopped_at = stopped_at or time.monotonic()
                if time.monotonic() - stopped_at > GRACE:
                    remove_temporaries()
                    error = control.stop_error()
                    end_progress_line()
                    sys.stderr.write(printable(f"{prog_name}: {error}") + "\n")
                    sys.stderr.flush()
                    os._exit(error.exit_code)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if "error" in box:
        raise box["error"]
    return box.get("value")
