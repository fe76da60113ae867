"""The JavaScript sampler (js/) against this runtime: node's own test runner runs js/test/ on
fixtures this run exports (scripts/js_fixtures.py): parity on onnxruntime-node and onnxruntime-web
for every solver and steps in {1, 4, 8} and on time schedules, the same refusals, and (in the slow
set) the demo page in headless Chromium. Needs node and `npm ci` in js/."""
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


def _fixtures(trained, conditional, fx: Path, digits: bool = False) -> None:
    """scripts/js_fixtures.py's fixtures for this run's models (and, for the demo page's image
    grid, a class-conditional digits model: its layout, not its quality, so 2 steps)."""
    from fm_runtime.model.session import default_model_path
    from scripts.js_fixtures import FILE_SCHEDULE, write_fixtures
    from training.export_checkpoint import export_checkpoint, export_model
    from training.tasks.fit import fit_task, task_recipe
    from training.train import fit

    fx.mkdir()
    export_checkpoint(trained.ckpt, fx / "baked.onnx", bake="heun:4")
    export_checkpoint(trained.ckpt, fx / "sched.onnx", default_schedule=FILE_SCHEDULE)
    if digits:
        export_model(*fit("digits", steps=2, width=32, depth=2, conditional=True, progress=False),
                     fx / "digits.onnx", divergence=False)
        # a text prompt's page: its layout, not its quality, so 2 steps
        export_model(*fit_task("digits-text", task_recipe("digits-text", {"steps": 2}), progress=False),
                     fx / "digits-text.onnx", divergence=False)
    import onnx
    bare = onnx.load(trained.onnx)
    del bare.metadata_props[:]
    onnx.save(bare, fx / "nometa.onnx")
    models = {"plain": trained.onnx, "cond": conditional["moons"][1], "baked": fx / "baked.onnx",
              "nometa": fx / "nometa.onnx", "sched": fx / "sched.onnx", "shipped": default_model_path()}
    write_fixtures(fx, models)


def _node_tests(names: list[str], tmp_path: Path) -> str:
    """node --test on js/test files against the fixtures in tmp_path/fixtures; its report."""
    import sys
    env = dict(os.environ, FM_JS_FIXTURES=str(tmp_path / "fixtures"), FM_JS_ARTIFACTS=str(tmp_path / "artifacts"),
               FM_JS_REPORT=str(tmp_path / "parity.json"), FM_PYTHON=sys.executable)
    # the test files only: node --test on the folder would also run fixtures.mjs as a script,
    # which writes the fixtures again (16 s) while the test files read them
    p = subprocess.run(["node", "--test", "--test-reporter=spec", *names], cwd=JS, env=env,
                       capture_output=True, text=True, timeout=600)
    print(p.stdout[-6000:])
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert "fail 0" in p.stdout
    return p.stdout


def test_js_sampler_matches_python(trained, conditional, tmp_path):
    _fixtures(trained, conditional, tmp_path / "fixtures")
    tests = sorted(str(p.relative_to(JS)) for p in (JS / "test").glob("*.test.mjs") if p.name != "browser.test.mjs")
    _node_tests(tests, tmp_path)


@pytest.mark.slow      # Chromium and a digits export: 8 s of the README's test command, run in CI's slow set
@pytest.mark.skipif(not (Path("/usr/bin/chromium").exists() or os.environ.get("FM_CHROMIUM")),
                    reason="no Chromium at /usr/bin/chromium (apt-get install chromium, or set FM_CHROMIUM)")
def test_demo_page_in_headless_chromium(trained, conditional, tmp_path):
    _fixtures(trained, conditional, tmp_path / "fixtures", digits=True)
    report = _node_tests(["test/browser.test.mjs"], tmp_path)
    assert "skipped 0" in report
    assert (tmp_path / "artifacts" / "demo-moons.png").stat().st_size > 20000


def test_readme_node_example_runs(tmp_path):
    """The documentation's Node example, as written, from js/ (its import resolved to this checkout)."""
    import re

    block = re.findall(r"```js\n(.*?)```", (REPO / "docs" / "javascript.md").read_text(), flags=re.S)[0]
    script = tmp_path / "example.mjs"
    script.write_text(block.replace("'./src/node.mjs'", repr((JS / "src" / "node.mjs").as_uri())))
    p = subprocess.run(["node", str(script)], cwd=JS, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "velocity, midpoint 8 steps, data shape [2]" in p.stdout
    assert "[ 1000, 2 ] 16" in p.stdout


def test_one_seed_one_noise_stream_in_both_languages(tmp_path):
    """JS draws numpy's stream: 2^20 values of seed 99 equal Python's except in the ziggurat's
    tail, where numpy's log1pf (glibc) is off by an ulp now and then; and the same seed gives the
    same samples."""
    import json

    import numpy as np

    from fm_runtime import load
    from fm_runtime.solve.noise import noise_rows
    script = tmp_path / "noise.mjs"
    script.write_text(f"""
import {{ writeFileSync }} from 'node:fs';
import {{ noiseRows }} from {json.dumps(str(JS / 'src' / 'noise.mjs'))};
import {{ load }} from {json.dumps(str(JS / 'src' / 'node.mjs'))};
writeFileSync(process.argv[2], Buffer.from(noiseRows(99, 0, 1 << 18, 4).buffer));
const s = await load();
console.log(JSON.stringify(Array.from((await s.sample({{ n: 500, seed: 7 }})).data)));
""")
    out = subprocess.run(["node", str(script), str(tmp_path / "noise.bin")], capture_output=True, text=True, timeout=300,
                         check=True)
    js = np.fromfile(tmp_path / "noise.bin", np.float32)
    py = noise_rows(99, 0, 1 << 18, (4,)).ravel()
    differ = np.nonzero(js != py)[0]
    assert len(differ) <= 8 and (np.abs(py[differ]) > 3.65).all(), (len(differ), py[differ[:5]])
    ulps = np.abs(js[differ].view(np.int32).astype(np.int64) - py[differ].view(np.int32).astype(np.int64))
    assert (ulps <= 1).all()
    samples = np.reshape(json.loads(out.stdout), (500, 2))
    np.testing.assert_allclose(samples, load().sample(500, seed=7), atol=1e-6)


def test_npm_ci_has_nothing_to_warn_about():
    """`npm ci` warned twice: an .npmrc key npm does not know, and install scripts nobody had
    reviewed. Every package with an install script is decided in package.json's allowScripts
    (denied: onnxruntime-node ships its CPU binaries, its script would fetch CUDA files from outside
    the registry; protobufjs's only checks versions), and there is no .npmrc."""
    import json

    lock = json.loads((JS / "package-lock.json").read_text())
    scripted = {k.rsplit("node_modules/", 1)[1] for k, v in lock["packages"].items() if v.get("hasInstallScript")}
    decided = json.loads((JS / "package.json").read_text()).get("allowScripts", {})
    assert scripted and scripted <= set(decided), scripted - set(decided)
    assert not (JS / ".npmrc").exists()
