import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

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


def cli_argv(tool: str, *args: str) -> list[str]:
    """The command line that runs console script `tool` (fm-run, fm-train, fm-export) through the
    current interpreter, so the tests use this checkout's code."""
    from .warm import ENTRY
    module = ENTRY[tool]
    return [sys.executable, "-c", f"import sys; from {module} import main; sys.argv[0] = {tool!r}; main()", *args]


_warm = None


def _cold(env: dict | None) -> bool:
    """Fresh interpreters when asked (FM_TEST_COLD=1), or when the environment would change how
    one starts (what the warm server has already read)."""
    return bool(os.environ.get("FM_TEST_COLD")) or any(k.startswith(("PYTHON", "OMP_", "MKL_")) for k in env or {})


def warm():
    global _warm
    from .warm import Warm
    _warm = _warm or Warm()
    return _warm


def run_cli(*args: str, cwd=None, env=None, check=True) -> subprocess.CompletedProcess:
    """Run a console script (fm-run, fm-train, fm-export) as a process of its own, forked from a
    warm interpreter that has already imported it (tests/warm.py: the same process a fresh
    interpreter gives, minus seconds of imports); FM_TEST_COLD=1 starts a fresh interpreter for
    each instead."""
    full_env = dict(os.environ, **(env or {}))
    if _cold(env):
        p = subprocess.run(cli_argv(*args), capture_output=True, text=True,
                           cwd=cwd, env=full_env, timeout=300)
    else:
        p = warm().run(args[0], args[1:], cwd=cwd, env=full_env, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}")
    return p


def start_cli(*args: str, cwd=None):
    """A console script started and left running, as subprocess.Popen with its output captured
    (text): .pid, .send_signal(s), .communicate(timeout) -> (stdout, stderr), .returncode."""
    if _cold(None):
        return subprocess.Popen(cli_argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, text=True)
    return warm().start(args[0], args[1:], cwd=cwd)


def pytest_collection_finish(session):
    """A run whose tests call the console scripts starts the warm servers at once: they import and
    warm up beside the first tests instead of in front of the first call."""
    users = [item for item in session.items if "run_cli" in vars(getattr(item, "module", None) or object)]
    if not _cold(None) and users:
        # tests/runtime calls fm-run alone, and runs where torch is not installed: the torch
        # server (fm-train, fm-export) starts only for a run with other tests that may call them
        runtime = REPO / "tests" / "runtime"
        torch_too = any(runtime not in Path(item.path).parents for item in users)
        warm().prestart(("fm-run", "fm-train") if torch_too else ("fm-run",))


def pytest_sessionfinish(session, exitstatus):
    if _warm is not None:
        _warm.close()


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
