"""Hostile conditions for fm-run with the shipped model: it writes nothing but the output it is
asked for, and not even SIGKILL leaves a fragment of it (crafted files, with onnx:
tests/test_hostile.py)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .conftest import cli_argv, run_cli, writing_into


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
