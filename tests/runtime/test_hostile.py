"""Hostile conditions for fm-run with the shipped model: it writes nothing but the output it is
asked for, and not even SIGKILL leaves a fragment of it (crafted files, with onnx:
tests/test_hostile.py)."""
from __future__ import annotations

import os
import signal
import subprocess
import warnings
from pathlib import Path

import pytest

from .conftest import TINY, cli_argv, run_cli, writing_into


def test_runtime_writes_nothing_but_the_named_output(tmp_path):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(), work.mkdir()
    env = {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), "TMPDIR": str(work)}
    run_cli("fm-run", "sample", "-n", "100", "--seed", "0", "--out", "x.npy", cwd=work, env=env)
    run_cli("fm-run", "logprob", "x.npy", "--out", "lp.npy", cwd=work, env=env)
    run_cli("fm-run", "info", cwd=work, env=env)
    assert list(home.rglob("*")) == []
    assert sorted(p.name for p in work.iterdir()) == ["lp.npy", "x.npy"]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="unnamed temporary files are Linux's O_TMPFILE")
def test_sigkill_leaves_no_temporary_file(tmp_path):
    # the output is written to an unnamed file in its folder and linked in only when complete, so
    # not even SIGKILL (which no handler sees) leaves a fragment behind
    try:
        os.close(os.open(tmp_path, os.O_TMPFILE | os.O_WRONLY, 0o600))
    except (AttributeError, OSError):
        pytest.skip("this file system has no unnamed files (O_TMPFILE): outputs use a named temporary there")
    proc = subprocess.Popen(cli_argv("fm-run", "sample", "-n", "30000000", "--steps", "50", "--seed", "0",
                                     "--out", str(tmp_path / "x.npy")), stderr=subprocess.DEVNULL)
    try:
        writing = writing_into(proc.pid, tmp_path)
        assert writing and all(link.endswith("(deleted)") for link in writing), writing
        assert list(tmp_path.iterdir()) == []
    finally:
        proc.kill()
        proc.wait()
    assert list(tmp_path.iterdir()) == []


def test_commands_run_in_process_leave_the_process_as_they_found_it(tmp_path):
    """The tests' in-process runner (tests/inproc.py): a command's memory budget, trust, signal
    handlers, warnings filters, working directory and environment stay its own."""
    import resource

    from fm_runtime.cli import options
    from fm_runtime.model import control
    from fm_runtime.tools import limits
    before = (resource.getrlimit(resource.RLIMIT_DATA), signal.getsignal(signal.SIGTERM),
              signal.getsignal(signal.SIGINT), list(warnings.filters), os.getcwd(), dict(os.environ))
    p = run_cli("fm-run", "sample", str(TINY), "-n", "10", "--seed", "0", "--out", "x.npy", "--max-memory", "300M",
                "--allow-loops", "--timeout", "600", cwd=tmp_path, env={"FM_INPROC_PROBE": "1"})
    assert p.returncode == 0 and (tmp_path / "x.npy").is_file(), p.stderr
    assert (resource.getrlimit(resource.RLIMIT_DATA), signal.getsignal(signal.SIGTERM),
            signal.getsignal(signal.SIGINT), list(warnings.filters), os.getcwd(), dict(os.environ)) == before
    assert options._TRUST["loops"] is False and control.stop_reason() is None and not control.deadline_passed()
    assert limits.budget() == limits.parse_size(limits.DEFAULT_BUDGET) and limits.over_watched_budget() is None
    # the budget still refuses work past it, as in a real run
    p = run_cli("fm-run", "sample", str(TINY), "-n", "100000000", "--max-memory", "300M", cwd=tmp_path, check=False)
    assert p.returncode == 9 and "more than the 300 MiB budget (--max-memory)" in p.stderr, p.stderr
    assert resource.getrlimit(resource.RLIMIT_DATA) == before[0]
