"""Command-line round trip: fm-train fit -> fm-export -> fm-run info -> fm-run sample -> plot."""
import json
import os

import numpy as np
import pytest

from .conftest import run_cli


@pytest.mark.slow      # end to end through the CLIs in fresh interpreters: CI runs it with -m slow
def test_round_trip(tmp_path):
    ckpt, onnx_path = tmp_path / "m.ckpt", tmp_path / "m.onnx"
    p = run_cli("fm-train", "fit", "--data", "moons", "--steps", "200", "--lr", "5e-3", "--batch-size", "256", "--ema", "0",
                "--out", str(ckpt), "--no-progress")
    assert "final loss" in p.stderr and ckpt.is_file()

    p = run_cli("fm-export", str(ckpt), "--out", str(onnx_path), "--default-steps", "6", "--progress")
    assert "max |diff|" in p.stderr and onnx_path.is_file()
    lines = p.stderr.splitlines()       # --progress: each stage on a line of its own, then the summary
    assert lines[0].startswith("fm-export: tracing the network with torch.onnx (") and len(lines) == 4, p.stderr
    assert lines[-1].startswith("exported velocity model")

    info = json.loads(run_cli("fm-run", "info", str(onnx_path), "--json").stdout)
    assert info["contract_version"] == 1 and info["kind"] == "velocity"
    assert info["data_shape"] == [2] and info["default_steps"] == 6 and info["default_nfe"] == 12
    assert info["training"]["dataset"] == "moons" and info["training"]["steps"] == 200
    assert info["path"] == {"name": "ot", "sigma_min": 0.0}
    text = run_cli("fm-run", "info", str(onnx_path)).stdout
    assert "moons" in text and "midpoint" in text

    z = np.random.default_rng(0).standard_normal((300, 2)).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    run_cli("fm-train", "sample", str(ckpt), "--noise", str(tmp_path / "z.npy"), "--steps", "8",
            "--solver", "heun", "--out", str(tmp_path / "native.npy"))
    p = run_cli("fm-run", "sample", str(onnx_path), "--noise", str(tmp_path / "z.npy"), "--steps", "8",
                "--solver", "heun", "--out", str(tmp_path / "rt.npy"), "--plot", str(tmp_path / "traj.png"))
    assert "16 NFE" in p.stderr
    native, rt = np.load(tmp_path / "native.npy"), np.load(tmp_path / "rt.npy")
    assert rt.shape == (300, 2) and np.abs(native - rt).max() <= 1e-4
    png = (tmp_path / "traj.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    # default steps from the file: 6 midpoint steps = 12 NFE
    p = run_cli("fm-run", "sample", str(onnx_path), "-n", "10", "--seed", "1")
    assert "6 steps, 12 NFE" in p.stderr


def test_seed_gives_same_samples_in_cli_and_api(tmp_path):
    import fm_runtime
    run_cli("fm-run", "sample", "-n", "100", "--seed", "3", "--out", str(tmp_path / "a.npy"))
    assert np.array_equal(np.load(tmp_path / "a.npy"), fm_runtime.load().sample(100, seed=3))


def test_sample_without_out_sketches_the_moons():
    p = run_cli("fm-run", "sample", "-n", "2000", "--seed", "0")
    rows = p.stdout.rstrip("\n").splitlines()
    assert len(rows) == 20 and all(len(r) <= 60 for r in rows)
    assert sum(c != " " for r in rows for c in r) > 100


@pytest.mark.parametrize("cmd", [("fm-run",), ("fm-run", "sample"), ("fm-run", "info"), ("fm-run", "bench"), ("fm-train",),
                                 ("fm-train", "fit"), ("fm-train", "sample"), ("fm-train", "eval"), ("fm-export",)])
def test_help_shows_an_example(cmd):
    p = run_cli(*cmd, "--help")
    assert p.stdout.startswith(f"Usage: {' '.join(cmd)}")
    assert "Example" in p.stdout


def test_every_option_is_explained():
    import click

    from fm_runtime.cli.main import cli as run_cli_group
    from training.cli import cli as train_cli
    from training.export_cli import cli as export_cli

    commands = [export_cli, *run_cli_group.commands.values(), *train_cli.commands.values()]
    assert len(commands) == 12     # fm-export; fm-run info, sample, logprob, bench, serve; fm-train fit, reflow, sample, eval, score, distill
    for command in commands:
        for param in command.params:
            if isinstance(param, click.Option) and param.name != "help":
                assert param.help, f"{command.name} {param.opts} has no help text"


@pytest.mark.parametrize("args, code, words", [
    (("fm-run", "sample", "nope.onnx"), 3, "model file not found"),
    (("fm-run", "sample", "--steps", "0"), 2, "--steps"),
    (("fm-run", "sample", "--solver", "dopri"), 2, "--solver"),
    (("fm-run", "sample", "--provider", "cuda"), 6, "available: cpu"),
    (("fm-run", "sample", "--out", "/nonexistent/dir/x.npy"), 7, "does not exist"),
    (("fm-run", "sample", "--cuda-graph"), 2, "--cuda-graph needs --provider cuda"),
    (("fm-export", "missing.ckpt", "--out", "x.onnx"), 3, "checkpoint not found"),
])
def test_errors_are_one_line_with_exit_code(tmp_path, args, code, words):
    p = run_cli(*args, cwd=tmp_path, check=False)
    assert p.returncode == code, p.stderr
    assert words in p.stderr and "Traceback" not in p.stderr
    assert not list(tmp_path.iterdir())


def test_text_from_a_model_file_never_reaches_the_terminal_raw(trained, tmp_path):
    """Escape sequences in metadata are shown escaped, in errors and in info."""
    import onnx
    m = onnx.load(str(trained.onnx))
    for p in m.metadata_props:
        if p.key == "fm.kind":
            p.value = '"\\u001b[2Jvelocity"'
        if p.key == "fm.training":
            p.value = '{"dataset": "moons\\u001b]0;pwned\\u0007"}'
    onnx.save(m, str(tmp_path / "esc.onnx"))
    p = run_cli("fm-run", "info", str(tmp_path / "esc.onnx"), check=False)
    assert p.returncode == 3 and "\x1b" not in p.stderr and ("\\x1b[2J" in p.stderr or "\\u001b[2J" in p.stderr)
    for q in m.metadata_props:
        if q.key == "fm.kind":
            q.value = '"velocity"'
    onnx.save(m, str(tmp_path / "esc2.onnx"))
    p = run_cli("fm-run", "info", str(tmp_path / "esc2.onnx"))
    assert "\x1b" not in p.stdout and "\x07" not in p.stdout and "pwned" in p.stdout


@pytest.mark.parametrize("command", ["score", "eval"])
def test_a_training_record_that_is_not_text_is_refused_by_score_and_eval(tmp_path, command):
    """fm.training is free-form: a dataset that is a list or an object is a one-line refusal."""
    import onnx
    m = onnx.load("tests/runtime/fixtures/tiny.onnx")
    for p in m.metadata_props:
        if p.key == "fm.training":
            p.value = json.dumps({**json.loads(p.value), "dataset": ["moons"]})
    onnx.save(m, str(tmp_path / "odd.onnx"))
    p = run_cli("fm-train", command, str(tmp_path / "odd.onnx"), check=False)
    assert p.returncode in (2, 4) and "internal error" not in p.stderr and "trained on" in p.stderr, p.stderr


def test_hints_that_lead_somewhere(tmp_path):
    """Each wrong door names the right one: a model file given to fm-train, a foreign checkpoint
    given to fm-export, a stage file sampled without the stage's inputs, an output nowhere writable."""
    import torch

    from . import cond_nets
    p = run_cli("fm-train", "sample", "fm_runtime/assets/moons.onnx", "--out", str(tmp_path / "x.npy"), check=False)
    assert p.returncode != 0 and "fm-run sample" in p.stderr and "weights_only" not in p.stderr
    torch.save({"w": torch.zeros(2)}, tmp_path / "theirs.pt")
    p = run_cli("fm-export", str(tmp_path / "theirs.pt"), "--out", str(tmp_path / "m.onnx"), check=False)
    assert p.returncode != 0 and "--module" in p.stderr and "--weights" in p.stderr
    cond_nets.export_token_decoder(tmp_path / "dec.onnx", t_max=64, l_max=32)
    p = run_cli("fm-run", "sample", str(tmp_path / "dec.onnx"), "-n", "2", "--out", str(tmp_path / "y.npy"), check=False)
    assert p.returncode == 2 and "needs tokens (int64 [L])" in p.stderr, p.stderr
    if os.path.isdir("/proc"):
        p = run_cli("fm-run", "sample", "-n", "5", "--out", "/proc/x.npy", check=False)
        assert p.returncode == 7 and "nothing can be written in /proc" in p.stderr, p.stderr
