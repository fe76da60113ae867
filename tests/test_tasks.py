"""The three conditioned task models (training.tasks), end to end at small step counts: trained by
`fm-train fit --data TASK`, exported with their condition stages by `fm-export`, sampled by
`fm-run sample --cond ...`, by the Python API and by onnxruntime-node (the same samples to 1e-5),
and held to their task metrics on held-out requests."""
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import fm_runtime
from training.tasks import digits_text, reach, tts
from training.tasks.score import score_digits_text, score_reach, score_tts

from .conftest import run_cli
from .node_bridge import JS, needs_node, node_sample

pytestmark = pytest.mark.slow      # trains three models: CI runs it with -m slow

# each trains in under a minute on 2 cores: reach and digits-text by their defaults, tts shorter
RECIPES = {"reach": [], "tts": ["--steps", "600"], "digits-text": []}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("tasks")
    out = {}
    for name, recipe in RECIPES.items():
        run_cli("fm-train", "fit", "--data", name, *recipe, "--out", str(d / f"{name}.ckpt"))
        run_cli("fm-export", str(d / f"{name}.ckpt"), "--out", str(d / f"{name}.onnx"))
        out[name] = d / f"{name}.onnx"
    out["dir"] = d
    return out


def test_reach_succeeds_and_keeps_both_modes(models, tmp_path):
    result = score_reach(str(models["reach"]), n=1000, plot=str(tmp_path / "reach.png"))
    print("reach:", result["flow"])
    ten = result["flow"][10]
    assert ten["success"] >= 0.95 and 0.4 <= ten["left"] <= 0.6, ten
    assert result["flow"][1]["success"] < 0.5          # one step averages the modes into the obstacle
    assert (tmp_path / "reach.png").stat().st_size > 10_000
    obs = reach.observations(5, np.random.default_rng(1))
    np.save(tmp_path / "obs.npy", obs)
    run_cli("fm-run", "sample", str(models["reach"]), "--cond", f"obs={tmp_path / 'obs.npy'}", "-n", "5", "--seed", "3",
            "--out", str(tmp_path / "paths.npy"))
    got = np.load(tmp_path / "paths.npy")
    assert got.shape == (5, 16, 2)
    assert np.array_equal(got, fm_runtime.load(models["reach"]).sample(cond={"obs": obs}, seed=3))


def test_tts_serves_three_lengths_from_one_file(models, tmp_path):
    s = fm_runtime.load(models["tts"])
    for length in (2, 9, 16):
        req = tts.requests(4, np.random.default_rng(length), length)
        mel = s.sample(cond=req, seed=0, guidance=2.0)
        valid = tts.frames(req["tokens"]) > 0
        assert mel.shape == (4, 16, 4 * length)
        assert np.all(mel.transpose(0, 2, 1)[~valid] == 0)              # padding frames exactly 0
        assert np.all(np.abs(mel.transpose(0, 2, 1)[valid]).max(-1) > 0)
    assert s.stage_calls == 3
    result = score_tts(str(models["tts"]), n=200, plot=str(tmp_path / "tts.png"))
    for length, row in result["by_length"].items():
        print(f"tts L={length}:", row)
        one, two = row["guidance 1"], row["guidance 2"]
        assert two["token_accuracy"] > one["token_accuracy"], (length, one, two)
        assert one["padding_max"] == 0 and two["padding_max"] == 0
    np.save(tmp_path / "tokens.npy", np.array([3, 1, 4, 1, 5, 0], np.int64))
    np.save(tmp_path / "speaker.npy", np.array(2, np.int64))
    run_cli("fm-run", "sample", str(models["tts"]), "--cond", f"tokens={tmp_path / 'tokens.npy'}", "--cond",
            f"speaker={tmp_path / 'speaker.npy'}", "-n", "2", "--guidance", "2", "--seed", "1", "--out", str(tmp_path / "mel.npy"))
    assert np.load(tmp_path / "mel.npy").shape == (2, 16, 24)


def test_digits_from_prompts(models, tmp_path):
    result = score_digits_text(str(models["digits-text"]), n=40, plot=str(tmp_path / "prompts.png"))
    print("digits-text:", result["guidance"])
    words = [result["by_prompt"][w]["guidance 3"] for w in digits_text.WORDS]
    assert np.mean(words) >= 0.9, result["by_prompt"]
    assert result["guidance"][3.0]["hit_rate"] > result["guidance"][1.0]["hit_rate"] - 0.02
    assert (tmp_path / "prompts.png").stat().st_size > 1000
    s = fm_runtime.load(models["digits-text"])
    x = s.sample(3, cond={"text": digits_text.encode(["seven"])[0]}, guidance=3.0, seed=0)
    assert x.shape == (3, 1, 8, 8) and s.stage_calls == 1


@needs_node
def test_node_samples_the_task_models_as_python(models, tmp_path):
    rng = np.random.default_rng(5)
    obs = reach.observations(4, rng)
    req = tts.requests(3, rng, 7)
    text = digits_text.encode(["three", "3"])
    jobs = [(models["reach"], [dict(cond={"obs": obs}, noise=rng.standard_normal((4, 16, 2)).astype(np.float32))]),
            (models["tts"], [dict(cond=req, guidance=2.0, noise=rng.standard_normal((3, 16, 28)).astype(np.float32))]),
            (models["digits-text"], [dict(cond={"text": text}, guidance=3.0,
                                          noise=rng.standard_normal((2, 1, 8, 8)).astype(np.float32))])]
    got = node_sample(tmp_path, jobs)
    for (path, reqs), (x, calls) in zip(jobs, got):
        want = fm_runtime.load(path).sample(**reqs[0])
        diff = float(np.abs(x - want).max())
        print(f"{path.name}: Node vs Python max |diff| {diff:.2e}, condition stage calls {calls}")
        assert diff <= 1e-5
        assert calls == (0 if path == models["reach"] else 1)


@needs_node
@pytest.mark.skipif(not Path(os.environ.get("FM_CHROMIUM", "/usr/bin/chromium")).exists(), reason="no Chromium")
def test_the_reach_view_follows_a_dragged_goal(models, tmp_path):
    env = dict(os.environ, FM_REACH_MODEL=str(models["reach"]), FM_JS_ARTIFACTS=str(tmp_path))
    p = subprocess.run(["node", "--test", "--test-reporter=spec", "test/reach.test.mjs"], cwd=JS, env=env,
                       capture_output=True, text=True, timeout=300)
    print(p.stdout[-3000:])
    assert p.returncode == 0 and "fail 0" in p.stdout and "skipped 0" in p.stdout, p.stdout[-3000:] + p.stderr[-2000:]
    assert (tmp_path / "reach.png").stat().st_size > 20_000
