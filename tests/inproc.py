"""A console script's main() run inside the test process, as a process of its own would run it.

What a command sets for its whole process, and where it is put back after each call:
- fm_runtime.model.control: the stop reason, the --timeout deadline, the RunOptions' terminate
  flags (control.reset());
- --max-memory: run under limits.hosted(), where the budget sizes and refuses work as in a real
  run but sets no data limit (RLIMIT_DATA, which could never be raised again in this process)
  and watches no resident memory (this process's, not the command's); real processes keep both
  (tests/test_hostile.py proves the data limit in one);
- --allow-loops (cli/options.py's _TRUST), the open progress line (tools/io.py), temporaries;
- the SIGINT and SIGTERM handlers runner.run_cli and the supervisor install;
- warnings filters (a supervised run ignores warnings), onnxruntime's logger severity (run_cli
  sets 4; nothing else here changes it from onnxruntime's default, 2);
- torch's thread count and global random state (fm-train --threads, its seed), numpy's and
  random's global random state;
- the working directory, os.environ, sys.argv, sys.std*, file descriptors 1 and 2, and
  tempfile's cached folder (read from TMPDIR once).
Environment variables read when an interpreter starts (PYTHON*, OMP_*, MKL_*) cannot be applied
here: conftest.run_cli refuses them.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import os
import random
import signal
import subprocess
import sys
import tempfile
import traceback
import warnings

ORT_DEFAULT_SEVERITY = 2
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _exit_code(main, argv: list[str]) -> int:
    """main(argv)'s exit status, as the interpreter would make it from SystemExit or an error."""
    try:
        main(argv)
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except Exception:       # only with FM_DEBUG=1: the traceback a process would print
        traceback.print_exc()
        return 1
    return 0


@contextlib.contextmanager
def _environment(cwd, env: dict | None, argv: list[str]):
    before_cwd, before_env, before_argv, before_tmp = os.getcwd(), dict(os.environ), sys.argv, tempfile.tempdir
    try:
        if cwd is not None:
            os.chdir(cwd)
        os.environ.update(env or {})
        sys.argv, tempfile.tempdir = argv, None
        yield
    finally:
        os.chdir(before_cwd)
        os.environ.clear()
        os.environ.update(before_env)
        sys.argv, tempfile.tempdir = before_argv, before_tmp


@contextlib.contextmanager
def _captured():
    """sys.std* and file descriptors 1 and 2 into files; yields a dict that gets stdout, stderr."""
    got: dict = {}
    saved_streams = sys.stdin, sys.stdout, sys.stderr
    for stream in saved_streams[1:]:
        stream.flush()
    files = [tempfile.TemporaryFile(), tempfile.TemporaryFile()]
    saved_fds = [os.dup(1), os.dup(2)]
    try:
        for fd, f in zip((1, 2), files):
            os.dup2(f.fileno(), fd)
        sys.stdin = open(os.devnull)
        sys.stdout, sys.stderr = (io.TextIOWrapper(open(fd, "wb", buffering=0, closefd=False), encoding="utf-8",
                                                   errors=errors, write_through=True)
                                  for fd, errors in ((1, "strict"), (2, "backslashreplace")))
        yield got
    finally:
        for stream in (sys.stdin, sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
                stream.close()
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        for fd, saved in zip((1, 2), saved_fds):
            os.dup2(saved, fd)
            os.close(saved)
        for name, f in zip(("stdout", "stderr"), files):
            f.seek(0)
            got[name] = f.read().decode("utf-8", errors="replace")
            f.close()


@contextlib.contextmanager
def _random_state():
    torch = sys.modules.get("torch")
    numpy = sys.modules.get("numpy")
    saved = (random.getstate(), numpy.random.get_state() if numpy else None,
             (torch.get_num_threads(), torch.get_rng_state()) if torch else None)
    try:
        yield
    finally:
        random.setstate(saved[0])
        if numpy:
            numpy.random.set_state(saved[1])
        if torch:
            torch.set_num_threads(saved[2][0])
            torch.set_rng_state(saved[2][1])


def _reset_runtime() -> None:
    """The fm_runtime state a command leaves behind, back to that of a fresh process."""
    import onnxruntime

    from fm_runtime.cli import options
    from fm_runtime.model import control
    from fm_runtime.tools import io as tool_io
    control.reset()
    options._TRUST["loops"] = False
    tool_io.remove_temporaries()
    tool_io._progress_line_open = False
    onnxruntime.set_default_logger_severity(ORT_DEFAULT_SEVERITY)


def call(module: str, args: list[str], cwd=None, env: dict | None = None) -> subprocess.CompletedProcess:
    """args = [tool, *arguments]: `module`.main(arguments) run here; exit code and output."""
    from fm_runtime.tools import limits
    main = importlib.import_module(module).main
    handlers = {s: signal.getsignal(s) for s in SIGNALS}
    try:
        with _captured() as out, _environment(cwd, env, list(args)), warnings.catch_warnings(), \
                _random_state(), limits.hosted():
            code = _exit_code(main, list(args[1:]))
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
        _reset_runtime()
    return subprocess.CompletedProcess(list(args), code, out["stdout"], out["stderr"])
