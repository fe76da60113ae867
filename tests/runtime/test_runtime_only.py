"""Where this suite is the deployment check (.ci/run's runtime-only venv, FM_RUNTIME_ONLY=1), it
proves the venv it passed in holds none of the training side: `pip install ".[test]"` pulled in
neither torch, onnx nor scikit-learn, and the whole suite ran without them."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from .conftest import REPO, runtime_only

HEAVY = ("torch", "onnx", "sklearn", "onnxscript", "matplotlib")


@runtime_only
def test_the_runtime_only_venv_has_no_torch_onnx_or_sklearn():
    present = [m for m in HEAVY if importlib.util.find_spec(m) is not None]
    assert not present, f"{sys.prefix} has {present}: the runtime suite must pass without them"


def test_importing_the_suite_and_the_runtime_loads_none_of_them():
    """Whatever the venv holds: every module of this suite, the runtime with its CLI, and a sample
    from the shipped model, in a fresh interpreter, import nothing of the training side."""
    modules = sorted(f"tests.runtime.{p.stem}" for p in Path(__file__).parent.glob("*.py"))
    code = (f"import sys, importlib; [importlib.import_module(m) for m in {modules!r}]; "
            "import fm_runtime, fm_runtime.cli.main; fm_runtime.load().sample(4, seed=0); "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY) | {'training', 'export'}!r}))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]", p.stdout
