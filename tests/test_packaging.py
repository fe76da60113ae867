"""The Python wheel as a stranger installs it: built from the checkout, unpacked on its own, and
the runtime imported from there in an empty folder samples the shipped model and reads the
contract with no file of the repository (the JavaScript package: tests/runtime/test_js_package.py)."""
import json
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import fm_runtime

from .conftest import REPO

PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import fm_runtime
assert fm_runtime.__file__.startswith(sys.argv[1]), fm_runtime.__file__
x = fm_runtime.load().sample(4, seed=0)
print(json.dumps({"file": fm_runtime.__file__, "samples": x.tolist()}))
"""


@pytest.mark.slow      # a wheel build: about 10 s
def test_the_wheel_carries_what_the_runtime_reads(tmp_path):
    pytest.importorskip("setuptools", reason="the wheel is built without isolation, by this venv's setuptools")
    src = tmp_path / "src"          # a copy of what the build reads, so that its build/ stays out of the checkout
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, src / name)
    for pkg in ("fm_runtime", "training", "export"):
        shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("fm_runtime-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"fm_runtime/contract.json", "fm_runtime/assets/moons.onnx", "fm_runtime/cli/main.py"} <= names
    assert not any(n.startswith(("tests/", "js/", "docs/", "benchmarks/")) for n in names), sorted(names)[:20]
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    (tmp_path / "empty").mkdir()
    r = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "site")], cwd=tmp_path / "empty",
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    np.testing.assert_array_equal(np.array(out["samples"], np.float32), fm_runtime.load().sample(4, seed=0))
