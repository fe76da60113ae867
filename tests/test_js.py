"""The JavaScript sampler (js/) against this runtime: node's own test runner runs js/test/ on
fixtures this run exports (scripts/js_fixtures.py): parity on onnxruntime-node and onnxruntime-web
for every solver and steps in {1, 4, 8} and on time schedules, the same refusals, and the demo page in headless Chromium
(skipped inside node's runner when /usr/bin/chromium is absent). Needs node and `npm ci` in js/."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
JS = REPO / "js"

pytestmark = [
    pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (the JS sampler's tests need it)"),
    pytest.mark.skipif(not (JS / "node_modules" / "onnxruntime-node").is_dir(),
                       reason="js/node_modules is missing: run `npm ci` in js/"),
]


def test_js_sampler_matches_python(trained, conditional, tmp_path):
    import sys

    from export.onnx_export import export_checkpoint
    from fm_runtime.model.session import default_model_path
    from scripts.js_fixtures import FILE_SCHEDULE, write_fixtures

    fx = tmp_path / "fixtures"
    fx.mkdir()
    export_checkpoint(trained.ckpt, fx / "baked.onnx", bake="heun:4")
    export_checkpoint(trained.ckpt, fx / "sched.onnx", default_schedule=FILE_SCHEDULE)
    import onnx
    bare = onnx.load(trained.onnx)
    del bare.metadata_props[:]
    onnx.save(bare, fx / "nometa.onnx")
    models = {"plain": trained.onnx, "cond": conditional["moons"][1], "baked": fx / "baked.onnx",
              "nometa": fx / "nometa.onnx", "sched": fx / "sched.onnx", "shipped": default_model_path()}
    write_fixtures(fx, models)
    env = dict(os.environ, FM_JS_FIXTURES=str(fx), FM_JS_ARTIFACTS=str(tmp_path / "artifacts"),
               FM_JS_REPORT=str(tmp_path / "parity.json"), FM_PYTHON=sys.executable)
    p = subprocess.run(["node", "--test", "--test-reporter=spec", "test/"], cwd=JS, env=env,
                       capture_output=True, text=True, timeout=600)
    print(p.stdout[-6000:])
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert "fail 0" in p.stdout
    if Path("/usr/bin/chromium").exists() or os.environ.get("FM_CHROMIUM"):
        assert (tmp_path / "artifacts" / "demo-moons.png").stat().st_size > 20000


def test_readme_node_example_runs(tmp_path):
    """The README's Node example, as written, from js/ (its import resolved to this checkout)."""
    import re

    block = re.findall(r"```js\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)[0]
    script = tmp_path / "example.mjs"
    script.write_text(block.replace("'./src/node.mjs'", repr((JS / "src" / "node.mjs").as_uri())))
    p = subprocess.run(["node", str(script)], cwd=JS, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "velocity, midpoint 8 steps, data shape [2]" in p.stdout
    assert "[ 1000, 2 ] 16" in p.stdout
