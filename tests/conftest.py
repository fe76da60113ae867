"""Fixtures shared by both suites, and the ways the tests run the console scripts.

run_cli runs fm-run, fm-train or fm-export inside the test process, through its main() (the
project's runner, supervised as the console script is), with its output, exit code, working
directory and environment as a process would have them and its process-wide state put back
afterwards (tests/inproc.py lists that state). That is most calls: a command's behaviour.

What a command does to its process needs a process, a fresh interpreter (run_process,
start_process, or subprocess with cli_argv):
- signals (SIGTERM, SIGINT, SIGKILL): they go to a pid, and the handlers and the exit status on
  one are the process's (test_hostile: fm-train on SIGTERM, a Loop stopped by SIGTERM/SIGINT;
  runtime/test_robustness: an interrupted write; runtime/test_hostile: SIGKILL mid-write;
  test_serve: the server's drain);
- --timeout with a real deadline: a run that does not stop within the supervisor's grace period
  is ended with os._exit, which would end the test session (test_hostile: fm-run, fm-train and
  fm-train --nproc; test_export: fm-export);
- memory: --max-memory is a data limit (RLIMIT_DATA) on fm-run's process and a watch of the
  torch tools' resident memory, neither of which may apply to the test process; peak memory is
  a process's own (test_hostile: the budget's data limit, the torch tools' watched budget, the
  peak-RSS and memory-bomb checks);
- environment read when an interpreter starts (PYTHONPATH, OMP_*, MKL_*: runtime/test_serve,
  test_conditions' --module export; run_cli refuses them), and what an import must not pull in
  (test_no_torch, runtime/test_runtime_only).
"""
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

# execution choices that fm-run bench --save keeps (fm_runtime/model/execution.py) go to this test
# session's own file: never the user's cache, and a choice saved there never changes a test
os.environ["FM_RUNTIME_CACHE"] = str(Path(tempfile.mkdtemp(prefix="fm-cache-")) / "execution.json")

# A small moons model trained once per test session: the tutorial's network (ELU) and a quick
# recipe, 500 Adam steps at lr 5e-3 on batches of 256, land visibly on the moons in under 2 s
# (see test_quality.py for the measured distance). The shipped model covers the default recipe.
TEST_STEPS, TEST_LR = 500, 5e-3
QUICK = dict(batch_size=256, lr_schedule="constant", ema=0.0)


class Built(dict):
    """A mapping that builds each entry on first use: for module fixtures whose entries take
    seconds each (an export), some of them used only by tests of the slow set."""

    def __init__(self, build):
        super().__init__()
        self._build = build

    def __missing__(self, key):
        self[key] = value = self._build(key)
        return value


@dataclass
class Trained:
    model: object
    config: dict
    ckpt: Path
    onnx: Path


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Trained:
    from training.checkpoint import save_checkpoint
    from training.export_checkpoint import export_model
    from training.train import fit

    d = tmp_path_factory.mktemp("moons")
    model, config = fit("moons", steps=TEST_STEPS, lr=TEST_LR, seed=0, progress=False, activation="elu", **QUICK)
    save_checkpoint(d / "moons.ckpt", model, config)
    export_model(model, config, d / "moons.onnx")
    return Trained(model, config, d / "moons.ckpt", d / "moons.onnx")


@pytest.fixture(scope="session")
def conditional(tmp_path_factory):
    """A conditional moons model and a conditional 8gaussians model, exported. 800 steps each put
    98% (moons) and 99% (8gaussians) of guided samples in the requested mode at guidance 1, for
    seeds 0 and 1 (test_conditional.py asks for 90% and 85%); 1500 steps gain about a point."""
    from training.checkpoint import save_checkpoint
    from training.export_checkpoint import export_model
    from training.train import fit

    d = tmp_path_factory.mktemp("cond")
    out = {}
    for name, steps in (("moons", 800), ("8gaussians", 800)):
        model, config = fit(name, steps=steps, batch_size=256, lr=5e-3, lr_schedule="cosine", ema=0.0,
                            activation="elu", conditional=True, progress=False)
        save_checkpoint(d / f"{name}.ckpt", model, config)
        export_model(model, config, d / f"{name}.onnx")
        out[name] = (model, d / f"{name}.onnx", d / f"{name}.ckpt")
    return out


ENTRY = {"fm-run": "fm_runtime.cli.main", "fm-train": "training.cli", "fm-export": "training.export_cli"}
CLI_TIMEOUT = 300


def cli_argv(tool: str, *args: str) -> list[str]:
    """The command line that runs console script `tool` (fm-run, fm-train, fm-export) through the
    current interpreter, so the tests use this checkout's code."""
    return [sys.executable, "-c", f"import sys; from {ENTRY[tool]} import main; sys.argv[0] = {tool!r}; main()", *args]


def run_cli(*args: str, cwd=None, env=None, check=True) -> subprocess.CompletedProcess:
    """Run a console script (fm-run, fm-train, fm-export) inside this process, as its main() runs
    it (through fm_runtime.tools.runner.run_cli), with what a process of its own would give a
    test: exit code, stdout and stderr (file descriptors 1 and 2, so output written below Python
    and by child processes is caught too), working directory `cwd` and `env` over os.environ,
    and every piece of process-wide state the command sets put back afterwards (tests/inproc.py).
    What needs a process of its own runs with run_process / start_process instead."""
    from .inproc import call
    if any(k.startswith(("PYTHON", "OMP_", "MKL_")) for k in env or {}):
        raise ValueError(f"{sorted(env)}: read when an interpreter starts; use run_process")
    p = call(ENTRY[args[0]], list(args), cwd=cwd, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}")
    return p


def run_process(*args: str, cwd=None, env=None, check=True) -> subprocess.CompletedProcess:
    """run_cli's command in a fresh interpreter of its own (see the module docstring for when)."""
    p = subprocess.run(cli_argv(*args), capture_output=True, text=True, cwd=cwd,
                       env=dict(os.environ, **(env or {})), timeout=CLI_TIMEOUT)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}")
    return p


def start_process(*args: str, cwd=None) -> subprocess.Popen:
    """A console script started in a fresh interpreter and left running, its output captured
    (text): .pid, .send_signal(s), .communicate(timeout) -> (stdout, stderr), .returncode."""
    return subprocess.Popen(cli_argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, text=True)


def moons_data(n: int, seed: int) -> np.ndarray:
    from training.data import sample_data
    return sample_data("moons", n, seed)


def busy_for(pid: int, cpu_seconds: float, timeout: float = 60.0) -> bool:
    """Wait until process `pid` has used `cpu_seconds` of CPU (/proc/PID/stat's utime + stime): a
    way to know it is past its imports (fm-run's take 0.4 s of CPU) and at work, under any load."""
    import time
    tick = os.sysconf("SC_CLK_TCK")
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return False
        if (int(fields[11]) + int(fields[12])) / tick >= cpu_seconds:
            return True
        time.sleep(0.05)
    return False


def writing_into(pid: int, folder: Path, timeout: float = 60.0) -> list[str]:
    """Wait until process `pid` has a file open in `folder` (its output, written to an unnamed
    file there until it is complete); returns the paths /proc shows for them."""
    import os
    import time
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        links = []
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                pass
        found = [link for link in links if link.startswith(str(folder))]
        if found:
            return found
        time.sleep(0.05)
    return []
