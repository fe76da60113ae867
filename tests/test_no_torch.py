"""The runtime works where torch cannot be imported, and never imports training or export."""
import subprocess
import sys

import pytest

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


def test_api_without_torch(trained):
    p = run_blocked(f'''
import numpy as np, fm_runtime
s = fm_runtime.load({str(trained.onnx)!r})
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
def test_cli_without_torch(trained, tmp_path, args):
    args = [a.format(onnx=trained.onnx, tmp=tmp_path) for a in args]
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
    assert "pip install 'fm-runtime[plot]'" in p.stderr
    assert "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "t.png").exists()


@pytest.mark.parametrize("entry, args", [("main", ["--help"]), ("main", ["fit", "--data", "moons"]),
                                         ("export_main", ["--help"]), ("export_main", ["m.ckpt", "--out", "m.onnx"])])
def test_torch_side_without_torch_says_which_extra(entry, args):
    """In a runtime-only install fm-train and fm-export name the extra to install, exit 2."""
    body = BLOCK.replace('"training", "export", ', "") + f"from training.launch import {entry}; {entry}({args!r})"
    p = subprocess.run([sys.executable, "-c", body], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "fm-runtime[train]" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_add_divergence_needs_onnx_but_not_torch(trained, tmp_path):
    """`pip install ".[onnx]"` is enough for fm-export --add-divergence on an .onnx file."""
    import onnx
    bare = onnx.load(trained.onnx)
    del bare.metadata_props[:]
    onnx.save(bare, tmp_path / "bare.onnx")
    out = tmp_path / "bare-lp.onnx"
    p = subprocess.run([sys.executable, "-c", BLOCK.replace('"training", "export", "onnx", ', '') + f'''
sys.argv = ["fm-export", "--add-divergence", {str(tmp_path / "bare.onnx")!r}, "--out", {str(out)!r}]
from training.launch import export_main
try:
    export_main()
finally:   # fm-export's command is in training/, the training library (torch) is not loaded
    assert not [m for m in sys.modules if m.split(".")[0] in ("torch", "sklearn")
                or m.startswith("training.") and m not in ("training.launch", "training.export_cli")]
'''], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "added the divergence graph" in p.stdout + p.stderr and out.exists()
