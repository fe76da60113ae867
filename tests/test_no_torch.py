"""The torch side without torch: fm-train and fm-export name the extra to install, and
fm-export --add-divergence needs onnx alone (the runtime without torch: tests/runtime/test_no_torch.py)."""
import subprocess
import sys

import pytest

from .runtime.test_no_torch import BLOCK


@pytest.mark.parametrize("entry, args", [("main", ["--help"]), ("main", ["fit", "--data", "moons"]),
                                         ("export_main", ["--help"]), ("export_main", ["m.ckpt", "--out", "m.onnx"])])
def test_torch_side_without_torch_says_which_extra(entry, args):
    """In a runtime-only install fm-train and fm-export name the extra to install, exit 2."""
    body = BLOCK.replace('"training", "export", ', "") + f"from training.launch import {entry}; {entry}({args!r})"
    p = subprocess.run([sys.executable, "-c", body], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "pip install '.[train]'" in p.stderr and "Traceback" not in p.stderr
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
