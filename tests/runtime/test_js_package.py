"""The JavaScript package as a stranger installs it: `npm pack` in js/, the tarball unpacked into
an empty project's node_modules (its dependencies linked from js/node_modules, so no network),
`import 'fm-runtime'` from that project, the shipped model sampled with the Python runtime's
samples. The package must carry every file it reads (the contract, the shipped model)."""
import json
import shutil
import subprocess
import tarfile

import numpy as np
import pytest

import fm_runtime

from .conftest import REPO

JS = REPO / "js"
needs_npm = pytest.mark.skipif(shutil.which("npm") is None or not (JS / "node_modules" / "onnxruntime-node").is_dir(),
                               reason="npm or js/node_modules (npm ci in js/) is missing")

SCRIPT = """
import { load, DEFAULT_MODEL } from 'fm-runtime';
const s = await load();
const { data, dims } = await s.sample({ n: 4, seed: 0 });
console.log(JSON.stringify({ model: DEFAULT_MODEL, dims, data: Array.from(data) }));
"""


@needs_npm
def test_the_packed_tarball_installs_and_samples_in_an_empty_project(tmp_path):
    p = subprocess.run(["npm", "pack", "--json", "--pack-destination", str(tmp_path)], cwd=JS, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    packed = json.loads(p.stdout[p.stdout.index("["):])[0]
    files = {f["path"] for f in packed["files"]}
    assert {"src/contract.json", "src/moons.onnx", "README.md", "package.json"} <= files, sorted(files)
    assert not any(f.startswith(("test/", "demo/", "node_modules/")) for f in files), sorted(files)
    modules = tmp_path / "app" / "node_modules"
    modules.mkdir(parents=True)
    with tarfile.open(tmp_path / packed["filename"]) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    (tmp_path / "unpacked" / "package").rename(modules / "fm-runtime")
    for dep in (JS / "node_modules").iterdir():       # what npm install would fetch, without the network
        if not dep.name.startswith(".") and dep.name != "fm-runtime":
            (modules / dep.name).symlink_to(dep, target_is_directory=True)
    (tmp_path / "app" / "package.json").write_text('{"name": "app", "type": "module", "private": true}')
    (tmp_path / "app" / "main.mjs").write_text(SCRIPT)
    r = subprocess.run(["node", "main.mjs"], cwd=tmp_path / "app", capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["model"].startswith(str(modules / "fm-runtime"))          # its own copy, not the repository's
    want = fm_runtime.load().sample(4, seed=0)
    np.testing.assert_allclose(np.array(out["data"], np.float32).reshape(out["dims"]), want, atol=1e-6)


def test_the_copies_in_js_src_are_the_shared_files():
    """js/src/contract.json and moons.onnx, where `npm ci` made them, are the Python package's own
    (rerun `npm run prepare` in js/ after changing either)."""
    for copy, source in (("contract.json", REPO / "fm_runtime" / "contract.json"),
                         ("moons.onnx", REPO / "fm_runtime" / "assets" / "moons.onnx")):
        if not (JS / "src" / copy).exists():
            pytest.skip("js/src holds no copies: npm ci in js/ has not run")
        assert (JS / "src" / copy).read_bytes() == source.read_bytes(), f"js/src/{copy} is stale: npm run prepare in js/"
