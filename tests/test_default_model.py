"""The moons model shipped inside the package, and the script that rebuilds it."""
import hashlib
import subprocess
import sys

import pytest

from .conftest import REPO


@pytest.mark.slow
def test_build_script_is_reproducible(tmp_path):
    digests = []
    for name in ("a.onnx", "b.onnx"):
        subprocess.run([sys.executable, str(REPO / "scripts" / "build_default_model.py"), "--steps", "50",
                        "--out", str(tmp_path / name)], check=True, capture_output=True, timeout=300)
        digests.append(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_shipped_axpy_graph_is_what_the_script_builds():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from build_runtime_graphs import OUT, axpy_model
    finally:
        sys.path.pop(0)
    assert OUT.read_bytes() == axpy_model().SerializeToString()
