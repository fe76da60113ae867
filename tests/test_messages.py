"""What a newcomer sees from the torch tools (fm-export, fm-train): each mistake answered with one
line that says what to do, and the documented exit code (fm-run's and the API's:
tests/runtime/test_messages.py)."""
from __future__ import annotations

from .conftest import run_cli
from .runtime.test_messages import one_line


def test_each_file_kind_says_what_it_is(trained, tmp_path):
    p = run_cli("fm-export", str(trained.onnx), "--out", str(tmp_path / "m.onnx"), check=False)
    assert p.returncode == 2 and "fm-run sample" in one_line(p) and "--add-divergence" in p.stderr
    p = run_cli("fm-run", "sample", str(trained.ckpt), "-n", "5", check=False)
    assert p.returncode == 3 and "fm-export" in one_line(p) and "PyTorch checkpoint" in p.stderr


def test_export_to_a_file_not_named_onnx_says_so(trained, tmp_path):
    p = run_cli("fm-export", str(trained.ckpt), "--out", str(tmp_path / "model.npy"), check=False)
    assert p.returncode == 2 and "name it *.onnx" in one_line(p) and not list(tmp_path.iterdir())


def test_fm_train_reports_progress_in_a_log(tmp_path):
    """stderr not a terminal (a log, CI): a line per 10% of the run instead of a silent bar."""
    p = run_cli("fm-train", "fit", "--steps", "40", "--batch-size", "64", "--width", "16", "--depth", "1",
                "--out", str(tmp_path / "m.ckpt"))
    lines = p.stderr.strip().splitlines()
    assert [ln.split(" steps")[0] for ln in lines[:10]] == [f"training: {4 * k}/40" for k in range(1, 11)], p.stderr
    assert "loss" in lines[-2] and lines[-1].startswith("trained moons: 40 steps")
