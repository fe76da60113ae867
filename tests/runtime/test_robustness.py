"""Whatever the runtime is handed: a one-line error, a documented exit code, no traceback, no
partial output. Each row of the tables is one way to get it wrong."""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fm_runtime

from .conftest import FIXTURES, TINY, run_cli, writing_into


def nan_after_half_model(path):
    """Plain velocity v = x * log(0.55 - t): finite until t passes 0.55, then NaN (a committed
    fixture, copied to `path`)."""
    shutil.copyfile(FIXTURES / "nan_half.onnx", path)
    return path


def make_case(name, d):
    """Put the bad model file for case `name` in folder d; return its path. The files that need
    onnx to write are committed (tests/runtime/fixtures/bad, scripts/runtime_fixtures.py)."""
    p = d / f"{name}.onnx"
    if name == "missing":
        return p
    if name == "directory":
        p.mkdir()
    elif name == "empty":
        p.write_bytes(b"")
    elif name == "random":
        p.write_bytes(np.random.default_rng(0).bytes(4096))
    elif name == "truncated":
        p.write_bytes(TINY.read_bytes()[:20_000])
    elif name == "external":
        shutil.copyfile(FIXTURES / "bad" / "external.onnx", p)
        shutil.copyfile(FIXTURES / "bad" / "external.data", d / "external.data")
    else:
        shutil.copyfile(FIXTURES / "bad" / f"{name}.onnx", p)
    return p


MODEL_CASES = {
    "missing": "model file not found",
    "directory": "is a directory",
    "empty": "file is empty",
    "random": "not an ONNX model, or truncated or corrupted",
    "truncated": "not an ONNX model, or truncated or corrupted",
    "bitflip": "fails its self-test",
    "three_inputs": "the graph has 3 inputs (x, t, y)",
    "output_shape": "output 'v' has shape",
    "int_dtype": "uses float32",
    "future_version": "contract version 7 is newer",
    "wrong_type": "fm.default_steps must be an integer",
    "disagrees": "data shape is [3]",
    "external": "external-data file",
    "custom_op": "operator this onnxruntime does not provide",
}


def assert_clean_failure(p, code, words, folder):
    assert p.returncode == code, (p.returncode, p.stderr)
    assert words in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not any(f.name.startswith(".") or f.suffix == ".npy" for f in folder.iterdir()), list(folder.iterdir())


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_bad_model_files(tmp_path, case):
    d = tmp_path / "models"
    d.mkdir()
    path = make_case(case, d)
    out = tmp_path / "out"
    out.mkdir()
    for cmd in (["sample", str(path), "-n", "5", "--out", str(out / "x.npy")], ["info", str(path)]):
        p = run_cli("fm-run", *cmd, check=False)
        assert_clean_failure(p, 3, MODEL_CASES[case], out)
        assert str(path) in p.stderr


@pytest.fixture
def noise_files(tmp_path):
    files = {"shape": np.zeros((5, 3), np.float32), "dtype": np.zeros((5, 2), np.int64),
             "nan": np.array([[0.0, np.nan]], np.float32), "inf": np.array([[np.inf, 0.0]], np.float32),
             "rank": np.zeros(5, np.float32)}
    for k, v in files.items():
        np.save(tmp_path / f"{k}.npy", v)
    (tmp_path / "junk.npy").write_bytes(b"nonsense")
    return tmp_path


OPTION_CASES = [
    (["--steps", "0"], 2, "--steps"),
    (["--steps", "-3"], 2, "--steps"),
    (["--steps", "1000000000000000"], 2, "--steps"),
    (["-n", "0"], 2, "-n"),
    (["--dim", "=4"], 2, "is not N or NAME=N"),
    (["--dim", "T=" + "9" * 5000], 2, "(5,002 characters)' is not N or NAME=N"),
    (["-n", "10000000000000"], 2, "is not in the range 1<=x<=1000000000000"),
    (["-n", "100000000000"], 9, "in memory, more than the"),
    (["-n", "100000000000", "--out", "{tmp}/x.npy"], 7, "GB is free"),
    (["--solver", "dopri"], 2, "--solver"),
    (["--solver", "dopri5", "--steps", "4"], 2, "dopri5 chooses its own steps"),
    (["--rtol", "1e-3"], 2, "rtol applies to the adaptive solver (dopri5) only"),
    (["--provider", "tpu"], 6, "'tpu' is not available"),
    (["--shard", "3/2"], 2, "--shard"),
    (["--shard", "a/b"], 2, "--shard"),
    (["-n", "1", "--seed", "0", "--shard", "0/2", "--out", "{tmp}/s.npy"], 2, "has no rows"),
    (["--timeout", "nan"], 2, "not a number of seconds"),
    (["--timeout", "inf"], 2, "not a number of seconds"),
    (["--times="], 2, "--times"),
    (["--max-memory", "9" * 3000], 2, "more than any machine has"),
    (["--seed", "0", "--shard", "9" * 3000 + "/" + "9" * 3001, "--out", "{tmp}/s.npy"], 2, "expected I/K"),
    (["--schedule", "shift:1e-320"], 2, "shift:S needs 1/1000000 <= S"),
    (["--seed", "-1"], 2, "--seed"),
    (["--noise", "{tmp}/shape.npy"], 4, "expected [n, 2]"),
    (["--noise", "{tmp}/rank.npy"], 4, "expected [n, 2]"),
    (["--noise", "{tmp}/dtype.npy"], 4, "floating-point"),
    (["--noise", "{tmp}/nan.npy"], 4, "NaN or Inf"),
    (["--noise", "{tmp}/inf.npy"], 4, "NaN or Inf"),
    (["--noise", "{tmp}/junk.npy"], 4, "not a readable .npy"),
    (["--noise", "{tmp}/none.npy"], 4, "noise file not found"),
    (["--out", "{tmp}/no/such/dir/x.npy"], 7, "does not exist"),
    (["--out", "{tmp}"], 2, "directory"),
]


@pytest.mark.parametrize("args, code, words", OPTION_CASES, ids=[" ".join(c[0]) for c in OPTION_CASES])
def test_bad_options_fail_before_work(noise_files, args, code, words):
    args = [a.format(tmp=noise_files) for a in args]
    before = set(noise_files.iterdir())
    p = run_cli("fm-run", "sample", *args, check=False)
    assert p.returncode == code, p.stderr
    assert words in p.stderr and "Traceback" not in p.stderr
    assert set(noise_files.iterdir()) == before


def test_nan_mid_solve_is_located_and_nothing_written(tmp_path):
    model = nan_after_half_model(tmp_path / "nan.onnx")
    out = tmp_path / "x.npy"
    p = run_cli("fm-run", "sample", str(model), "-n", "10", "--seed", "0", "--out", str(out), check=False)
    assert p.returncode == 5
    assert "at step 5 of 8 (t = 0.625)" in p.stderr and "nothing written" in p.stderr
    assert "Traceback" not in p.stderr and not out.exists()
    assert [f.name for f in tmp_path.iterdir()] == ["nan.onnx"]
    with pytest.raises(fm_runtime.FmError, match=r"at step 4 of 4 \(t = 1.000\)"):  # evaluations at t = 0, .25, .5, .75
        fm_runtime.load(model).sample(3, steps=4, solver="euler", seed=0)


def test_keep_partial_writes_and_still_fails(tmp_path):
    model = nan_after_half_model(tmp_path / "nan.onnx")
    out = tmp_path / "x.npy"
    p = run_cli("fm-run", "sample", str(model), "-n", "10", "--seed", "0", "--out", str(out),
                "--keep-partial", check=False)
    assert p.returncode == 5 and "kept as asked" in p.stderr
    x = np.load(out)
    assert x.shape == (10, 2) and not np.isfinite(x).any()


def test_interrupt_leaves_previous_output_whole(tmp_path):
    out = tmp_path / "x.npy"
    np.save(out, np.arange(6.0))
    code = ("import sys; from fm_runtime.cli.main import main; "
            f"sys.argv = ['fm-run', 'sample', '-n', '50000000', '--seed', '0', '--out', {str(out)!r}]; main()")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert writing_into(proc.pid, tmp_path)      # the output is being written
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    assert np.array_equal(np.load(out), np.arange(6.0))
    assert [f.name for f in tmp_path.iterdir()] == ["x.npy"]


def test_shards_concatenate_to_the_full_run(tmp_path):
    n = 150_001    # crosses noise blocks and chunks
    run_cli("fm-run", "sample", "-n", str(n), "--seed", "3", "--out", str(tmp_path / "full.npy"))
    parts = []
    for i in range(3):
        p = run_cli("fm-run", "sample", "-n", str(n), "--seed", "3", "--shard", f"{i}/3",
                    "--out", str(tmp_path / f"p{i}.npy"))
        assert f"rows {i * n // 3:,}.." in p.stderr
        parts.append(np.load(tmp_path / f"p{i}.npy"))
    assert [len(x) for x in parts] == [50000, 50000, 50001]
    assert np.array_equal(np.concatenate(parts), np.load(tmp_path / "full.npy"))
    # and the streamed file holds what the in-memory API gives
    assert np.array_equal(np.load(tmp_path / "full.npy")[:1000], fm_runtime.load().sample(1000, seed=3))


@pytest.mark.slow      # end to end through the CLIs in fresh interpreters: CI runs it with -m slow
def test_streamed_run_keeps_memory_bounded(tmp_path):
    code = ("import sys; from fm_runtime.cli.main import main; sys.argv = ['fm-run', 'sample', '-n', '3000000', "
            f"'--seed', '0', '--out', {str(tmp_path / 'big.npy')!r}]\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    peak_mb = int(p.stdout.strip()) / 1024
    print(f"3e6-sample streamed run: peak RSS {peak_mb:.0f} MB")
    assert peak_mb < 300
    assert np.load(tmp_path / "big.npy", mmap_mode="r").shape == (3_000_000, 2)


def test_unseeded_runs_report_their_seed(tmp_path):
    p = run_cli("fm-run", "sample", "-n", "20", "--out", str(tmp_path / "a.npy"))
    seed = int(p.stderr.split("seed ")[1].split()[0].rstrip(","))
    run_cli("fm-run", "sample", "-n", "20", "--seed", str(seed), "--out", str(tmp_path / "b.npy"))
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


def test_progress_is_reported_on_request(tmp_path):
    p = run_cli("fm-run", "sample", "-n", "300000", "--seed", "0", "--out", str(tmp_path / "x.npy"), "--progress")
    assert "sampling" in p.stderr and "100.0%" in p.stderr and "rows/s" in p.stderr


def test_outputs_get_ordinary_permissions(tmp_path):
    run_cli("fm-run", "sample", "-n", "10", "--seed", "0", "--out", str(tmp_path / "a.npy"))
    from fm_runtime.tools.io import save_npy
    save_npy(tmp_path / "b.npy", np.zeros(3))
    mask = os.umask(0)
    os.umask(mask)
    for name in ("a.npy", "b.npy"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask


def test_noise_checks_its_arguments_as_sample_does():
    s = fm_runtime.load()
    for args, key in [((2, -1), "seed"), ((2, 1.5), "seed"), ((2, 0, -5), "start"), ((0,), "n")]:
        with pytest.raises(fm_runtime.UsageError) as e:
            s.noise(*args)
        assert e.value.key == key, str(e.value)
    with pytest.raises(fm_runtime.ResourceError):       # 7 TiB: the budget's refusal, not numpy's MemoryError
        s.noise(10**12)
    np.testing.assert_array_equal(s.noise(3, 7, start=2), s.noise(5, 7)[2:])
