"""The runtime works where torch cannot be imported, and never imports training or export (even in
a venv that has them: each check runs in an interpreter that blocks them). The torch tools' own
answers without torch: tests/test_no_torch.py."""
import subprocess
import sys

import pytest

from .conftest import TINY

BLOCK = r'''
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "training", "export", "onnx", "sklearn", "matplotlib"):
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Block())
'''


def run_blocked(body: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + body], capture_output=True, text=True, timeout=120)


def test_api_without_torch():
    p = run_blocked(f'''
import numpy as np, fm_runtime
s = fm_runtime.load({str(TINY)!r})
x = s.sample(50, steps=4, solver="rk4", seed=0)
assert x.shape == (50, 2) and np.isfinite(x).all()
d = fm_runtime.load()          # shipped model
assert d.sample(10, seed=1).shape == (10, 2)
bad = [m for m in sys.modules if m.split(".")[0] in ("torch", "training", "export", "onnx")]
assert not bad, bad
print("ok")
''')
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().endswith("ok")


@pytest.mark.parametrize("args", [
    ["sample", "-n", "20", "--seed", "0"],
    ["sample", "{onnx}", "-n", "20", "--steps", "2", "--out", "{tmp}/x.npy"],
    ["info", "{onnx}"],
    ["info", "--json"],
])
def test_cli_without_torch(tmp_path, args):
    args = [a.format(onnx=TINY, tmp=tmp_path) for a in args]
    p = run_blocked(f'''
sys.argv = ["fm-run"] + {args!r}
from fm_runtime.cli.main import main
try:
    main()
finally:
    bad = [m for m in sys.modules if m.split(".")[0] in ("torch", "training", "export", "onnx")]
    assert not bad, bad
''')
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr


def test_plot_without_matplotlib_says_how_to_install(tmp_path):
    p = run_blocked(f'''
sys.argv = ["fm-run", "sample", "-n", "20", "--plot", {str(tmp_path / "t.png")!r}]
from fm_runtime.cli.main import main
main()
''')
    assert p.returncode == 2
    assert "pip install '.[plot]'" in p.stderr
    assert "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "t.png").exists()
