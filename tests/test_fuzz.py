"""Bounded fuzzing in CI: mutated model files, and random command lines (hypothesis)."""
import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fm_runtime
from fuzz.fuzz_models import DOCUMENTED, fuzz
from training.export_checkpoint import export_model

from .conftest import run_cli


def test_mutated_model_files(trained, tmp_path):
    export_model(trained.model, trained.config, tmp_path / "b.onnx", bake="heun:3")
    seeds = [fm_runtime.default_model_path().read_bytes(), trained.onnx.read_bytes(),
             (tmp_path / "b.onnx").read_bytes()]
    counts = fuzz(seeds, cases=300, seed=0, log=None)
    print({k: v for k, v in counts.items() if k != "examples"})
    assert counts["cases"] == 300
    assert counts["crashes"] == counts["hangs"] == counts["tracebacks"] == counts["other failures"] == 0, \
        counts["examples"]
    assert counts["ok exits"] > 0      # some mutations are harmless, and those must still sample


ints = st.one_of(st.integers(-5, 5), st.integers(-(10**15), 10**15), st.sampled_from([2**31, 2**63]))
words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789:/-._ ", max_size=12)


def _option(name: str, values) -> st.SearchStrategy:
    """`name VALUE`, the value drawn from `values`."""
    return values.map(lambda v: [name, str(v)])


def _sample_options(folder: Path) -> list:
    """The optional parts of an `fm-run sample` command line, in the order drawn, each with valid,
    edge and junk values."""
    return [
        # the solve
        _option("-n", st.one_of(st.integers(-3, 3000), st.sampled_from([10**13, 10**20]))),
        _option("--steps", st.one_of(st.integers(-3, 20), ints)),
        _option("--solver", st.one_of(st.sampled_from(["euler", "midpoint", "heun", "rk4"]), words)),
        _option("--seed", ints),
        # where and how it runs
        _option("--provider", st.one_of(st.sampled_from(["cpu", "cuda", "CPU"]), words)),
        _option("--shard", st.one_of(st.sampled_from(["0/2", "1/2", "2/2", "0/0"]), words)),
        _option("--tile", st.one_of(st.integers(-2, 5000), ints)),
        _option("--threads", st.integers(-1, 9)),
        # files read and written, and the flags
        _option("--noise", st.sampled_from(["good.npy", "bad.npy", "nan.npy", "none.npy"]).map(lambda f: folder / f)),
        _option("--out", st.sampled_from(["x.npy", "sub/x.npy", ""]).map(lambda f: folder / "out" / f)),
        st.sampled_from(["--keep-partial", "--progress", "--cuda-graph", "--bogus"]).map(lambda flag: [flag]),
        # labels and guidance
        _option("--class", st.one_of(st.integers(-2, 12), ints)),
        _option("--guidance", st.one_of(st.sampled_from(["0", "1", "2.5", "nan", "inf", "-1e9"]), words)),
        _option("--labels", st.sampled_from(["labels.npy", "good.npy", "none.npy"]).map(lambda f: folder / f)),
        # log-likelihoods and the image grid
        _option("--logprob", st.sampled_from(["lp.npy", "sub/lp.npy"]).map(lambda f: folder / "out" / f)),
        st.tuples(st.one_of(st.sampled_from(["exact", "hutchinson", "auto"]), words), st.integers(-1, 2000)).map(
            lambda d: ["--divergence", d[0], "--probes", str(d[1])]),
        st.just(["--grid", str(folder / "out" / "g.png")]),
    ]


@st.composite
def command_lines(draw, folder: Path):
    args = ["sample"]
    for part in _sample_options(folder):
        if draw(st.booleans()):
            args += draw(part)
    return args


FOLDER = Path(tempfile.mkdtemp(prefix="fm-hypo-"))
atexit.register(shutil.rmtree, FOLDER, True)
np.save(FOLDER / "good.npy", np.zeros((7, 2), np.float32))
np.save(FOLDER / "bad.npy", np.zeros((7, 3), np.float32))
np.save(FOLDER / "nan.npy", np.full((2, 2), np.nan, np.float32))
np.save(FOLDER / "labels.npy", np.arange(7) % 2)
(FOLDER / "out").mkdir()


@settings(max_examples=int(os.environ.get("FM_FUZZ_EXAMPLES", "150")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command_lines(FOLDER))
def test_random_command_lines(argv):
    for f in (FOLDER / "out").iterdir():
        f.unlink()
    p = run_cli("fm-run", *argv, check=False)      # as fm-run's main() runs it, state put back after
    code, text = p.returncode, p.stderr
    assert code in DOCUMENTED, (argv, code, text)
    assert "Traceback" not in text and "internal error" not in text, (argv, text)
    if code != 0:
        assert len(text.strip().splitlines()) == 1, (argv, text)
        assert list((FOLDER / "out").iterdir()) == [], argv
