"""What a newcomer sees: each mistake answered with one line that says what to do, and the
documented exit code; the API validates its arguments with the package's own errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

import fm_runtime

from .conftest import TINY_COND, run_cli


def one_line(p) -> str:
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    return lines[0]


def test_bare_fm_run_prints_its_help():
    p = run_cli("fm-run")
    assert p.stdout.startswith("Usage: fm-run") and "\n  sample " in p.stdout and not p.stderr


@pytest.mark.parametrize("args, code, words", [
    (["-n", "5", "--out", "x.csv"], 2, "writes .npy"),
    (["-n", "5", "--seed", "0", "--out", "x.npy", "--logprob", "x.npy"], 2, "name the same file"),
    (["-n", "10", "--shard", "0/2", "--out", "s.npy"], 2, "--shard needs --seed"),
    (["-n", "5", "--plot", "traj.npy"], 2, "writes .png"),
])
def test_sample_output_mistakes(tmp_path, args, code, words):
    p = run_cli("fm-run", "sample", *args, cwd=tmp_path, check=False)
    assert p.returncode == code and words in one_line(p)
    assert not list(tmp_path.iterdir())


def test_logprob_defaults_to_the_shipped_model(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, 2), np.float32))
    p = run_cli("fm-run", "logprob", str(tmp_path / "x.npy"))
    assert "4 rows of shape [2]" in p.stderr and len(p.stdout.split()) == 4


def test_info_lists_the_label_input_and_class_out_of_range_is_usage():
    path = str(TINY_COND)
    assert "y=y[B] int64" in run_cli("fm-run", "info", path).stdout
    p = run_cli("fm-run", "sample", path, "-n", "5", "--class", "12", check=False)
    assert p.returncode == 2 and "out of range" in one_line(p)


@pytest.mark.parametrize("kwargs, words", [
    (dict(n=2.5), "whole number"), (dict(n=0), "whole number"), (dict(), "give n"),
    (dict(n=3, seed=-1), "seed must be"), (dict(n=3, steps=0), "steps must be"),
    (dict(n=3, steps=2.0), "steps must be a whole number"), (dict(n=3, solver="rk5"), "unknown solver"),
    (dict(n=3, guidance=2.0), "needs labels"), (dict(n=3, labels=1), "not class-conditional"),
    (dict(n=3, divergence="maybe", return_logprob=True), "unknown divergence"),
])
def test_api_arguments_raise_usage_errors(kwargs, words):
    s = fm_runtime.load()
    with pytest.raises(fm_runtime.UsageError, match=words) as e:
        s.sample(**kwargs)
    assert e.value.exit_code == 2 and isinstance(e.value, fm_runtime.FmError)


def test_api_is_self_describing():
    s = fm_runtime.load()
    assert "moons.onnx" in repr(s) and "data shape [2]" in repr(s)
    for error in ("ModelError", "ProviderError", "UsageError"):
        assert error in fm_runtime.load.__doc__


def test_rough_edges_a_newcomer_hit(tmp_path):
    """Each answered in one line that says what to do, nothing written (fm-export's, with torch:
    tests/test_messages.py)."""
    p = run_cli("fm-run", "logprob", check=False)
    assert p.returncode == 2 and "give the data to score: fm-run logprob [MODEL.onnx] DATA.npy" in one_line(p)
    import pickle
    (tmp_path / "z.npy").write_bytes(pickle.dumps([1, 2]))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    for bad in ("z.npy", "obj.npy"):
        p = run_cli("fm-run", "sample", "--noise", str(tmp_path / bad), check=False)
        line = one_line(p)
        assert p.returncode == 4 and ("never loads" in line or "not in .npy format" in line) and "allow_pickle" not in line, line
    with pytest.raises(fm_runtime.UsageError, match="euler, midpoint, heun, rk4 \\(fixed steps\\), jump \\(flow-map files\\), dopri5 \\(adaptive\\)"):
        fm_runtime.load().sample(2, solver="rk45")
    r = fm_runtime.load().run(3, seed=0, logprob=True)        # its repr shows shapes, not every value
    assert repr(r) == f"SampleResult(samples=float32[3, 2], nfe={r.nfe}, trajectory=None, logprob={r.logprob.dtype}[3], " \
        "nonfinite=0 rows)"


@pytest.mark.parametrize("supervised", [False, True])
def test_a_failure_starts_its_own_line_after_a_progress_line(capsys, supervised):
    # a progress line has no newline while it runs; an error, a timeout or an interruption printed
    # then must not land after its percentage
    import click

    from fm_runtime.errors import FmError
    from fm_runtime.tools.io import Progress
    from fm_runtime.tools.runner import run_cli as run_command

    @click.command()
    def job():
        report = Progress(100, "sampling", enabled=True)
        report.last -= 1                    # drawn at once, as after half a second of work
        report.update(40)
        raise FmError("stopped after --timeout 1 s; nothing written", exit_code=124)

    assert run_command(job, "fm-run", [], supervised=supervised) == 124
    err = capsys.readouterr().err
    assert "\rsampling  40.0%" in err
    assert err.startswith("\rsampling  40.0%") and err.endswith(" s \nfm-run: stopped after --timeout 1 s; nothing written\n"), \
        repr(err)


@pytest.mark.parametrize("args", [("serve", "--grace", "nan"), ("sample", "-n", "2", "--guidance", "nan"),
                                  ("serve", "--request-timeout", "inf")])
def test_nan_and_infinite_seconds_and_weights_are_refused_by_name(args):
    """A float range lets NaN through; fm-run's float options refuse it (exit 2, the option named)."""
    p = run_cli("fm-run", *args[:1], "fm_runtime/assets/moons.onnx", *args[1:], check=False)
    assert p.returncode == 2 and args[-2] in p.stderr and ("finite" in p.stderr or "range" in p.stderr), p.stderr


def test_info_says_which_variant_suits_this_cpu():
    from fm_runtime.tools.bench import cpu, variant_advice
    fp32, int8 = {"precision": "fp32"}, {"precision": "fp32", "quantize": "int8"}
    assert "int8 variant (fm-export --quantize int8)" in variant_advice(fp32, {"avx2", "avx512_vnni"})
    assert "an int8 variant gains little" in variant_advice(fp32, {"avx2", "fma"})
    assert "suits this int8 file (avx_vnni" in variant_advice(int8, {"avx2", "avx_vnni"})
    assert "may be no faster than float32" in variant_advice(int8, {"avx2"})
    assert "unknown" in variant_advice(fp32, set())
    doc = json.loads(run_cli("fm-run", "info", "--json").stdout)
    model, flags = cpu()
    assert doc["this_cpu"].endswith(variant_advice({"precision": "fp32"}, flags))
