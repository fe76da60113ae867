"""Nothing under tests/runtime imports the training side (torch, onnx, sklearn, the project's
training and export packages, or tests/cond_nets.py, which is torch), at any depth of a file:
the suite must run where `pip install ".[test]"` is all there is."""
import ast
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FORBIDDEN = {"torch", "onnx", "onnxscript", "onnxconverter_common", "sklearn", "scipy", "matplotlib",
             "training", "export", "tests.cond_nets", "scripts"}
OUTSIDE = {"cond_nets"}       # what a relative import reaching up out of tests/runtime may not name


def violations(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level >= 2:             # from .. (tests/) import x, from ..x import y
                names = [n for n in [node.module or "", *(a.name for a in node.names)] if n.split(".")[0] in OUTSIDE]
            elif node.level == 0:
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            names = [str(node.args[0].value)]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if any(".".join(parts[:i]) in FORBIDDEN for i in range(1, len(parts) + 1)) or (
                    node.__class__ is ast.ImportFrom and node.level >= 2):
                found.append(f"line {node.lineno}: {name}")
    return found


def test_no_file_under_tests_runtime_imports_the_training_side():
    bad = {p.relative_to(HERE).as_posix(): v for p in sorted(HERE.rglob("*.py")) if (v := violations(p.read_text()))}
    assert not bad, f"tests/runtime must stay torch-free: {bad}"


@pytest.mark.parametrize("source", [
    "import torch", "import torch.nn as nn", "from onnx import helper", "import onnx.numpy_helper",
    "from sklearn.datasets import make_moons", "from training.sample import sample", "import export.cli",
    "from export import export_velocity", "from tests import cond_nets", "from .. import cond_nets",
    "from ..cond_nets import Estimator1D", "def f():\n    import torch\n", "importlib.import_module('torch')",
    "if True:\n    from training.data import sample_data\n",
])
def test_the_scan_catches_each_way_to_import_it(source):
    assert violations(source)


@pytest.mark.parametrize("source", ["import numpy as np", "import onnxruntime as ort", "from fm_runtime.model import onnx_wire",
                                    "from .conftest import run_cli", "from ..conftest import REPO", "import click",
                                    "from fm_runtime.solve.solvers import SOLVERS", "import exporter_of_nothing"])
def test_the_scan_lets_the_runtime_through(source):
    assert not violations(source)
