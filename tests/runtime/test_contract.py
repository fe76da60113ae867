"""The metadata contract: plain ONNX files with user-supplied facts, and bad metadata refused."""
import shutil

import numpy as np
import pytest

import fm_runtime
from fm_runtime.errors import ModelError

from .conftest import FIXTURES, TINY, run_cli, with_metadata


def plain_linear_model(path, fixture="plain"):
    """v(x, t) = t - x, no fm.* metadata (tests/runtime/fixtures/plain*.onnx, copied to path).
    Exact flow: x(1) = (x0 + 1)/e (from t = 0)."""
    shutil.copyfile(FIXTURES / f"{fixture}.onnx", path)
    return path


def test_plain_onnx_needs_dim_and_says_so(tmp_path):
    path = plain_linear_model(tmp_path / "plain.onnx")
    with pytest.raises(ModelError, match="does not fix the data shape.*pass --dim"):
        fm_runtime.load(path)
    p = run_cli("fm-run", "sample", str(path), "-n", "5", check=False)
    assert p.returncode == 3 and "--dim" in p.stderr


def test_plain_onnx_with_dim_samples_the_exact_flow(tmp_path):
    path = plain_linear_model(tmp_path / "plain.onnx")
    s = fm_runtime.load(path, data_shape=3)
    assert (s.spec.x_name, s.spec.t_name, s.spec.t_rank, s.spec.format_version) == ("state", "time", 2, None)
    z = np.random.default_rng(0).standard_normal((10, 3)).astype(np.float32)
    x = s.sample(noise=z, steps=32, solver="rk4")
    assert np.abs(x - (z + 1) / np.e).max() < 1e-5
    p = run_cli("fm-run", "info", str(path), "--dim", "3")
    assert "plain ONNX" in p.stdout and "state" in p.stdout


def test_plain_onnx_with_fixed_shape_needs_nothing(tmp_path):
    path = plain_linear_model(tmp_path / "p.onnx", "plain_fixed")
    s = fm_runtime.load(path)
    assert s.data_shape == (2,) and (s.spec.x_name, s.spec.t_name) == ("a", "b")


def test_plain_onnx_ambiguous_inputs_need_names(tmp_path):
    path = plain_linear_model(tmp_path / "p.onnx", "plain_ambiguous")
    with pytest.raises(ModelError, match="pass --x-name and --t-name"):
        fm_runtime.load(path)
    s = fm_runtime.load(path, x_name="p", t_name="q")
    assert s.data_shape == (1,)


@pytest.mark.parametrize("changes, words", [
    ({"format_version": "6"}, "contract version 6 is newer"),
    ({"format_version": '"one"'}, "fm.format_version must be a positive integer"),
    ({"data_shape": '"2"'}, "fm.data_shape must be a list"),
    ({"data_shape": "[100000, 100000]"}, "10,000,000,000 values per sample"),
    ({"training": '{"a": ' + "[" * 50 + "]" * 50 + "}"}, "fm.training a is nested more than"),
    ({"baked": "[" * 900 + "]" * 900}, "fm.baked must be an object"),
    ({"training": "[" * 100000 + "]" * 100000}, "fm.training is nested more than"),
    ({"producer": '{"torch": ' + "9" * 5000 + "}"}, "fm.producer is not valid JSON"),
    ({"architecture": '{"type": "mlp", "dim": "2", "width": 4, "depth": 2}'}, "fm.architecture dim must be an integer"),
    ({"variant": '{"vs_fp32": {"size_bytes": 1}}'}, "fm.variant vs_fp32.max_dev is missing"),
    ({"selftest": '{"inputs": {"x": [[1, "a"]]}, "output": [1]}'}, "fm.selftest inputs x must hold arrays of numbers"),
    ({"selftest": '{"inputs": {"x": [[1, 2]]}, "output": [1], "atol": NaN}'}, "fm.selftest atol must be a finite number"),
    ({"divergence": '{"unsupported_ops": [1]}'}, "fm.divergence unsupported_ops[0] must be text"),
    ({"value_range": "[0, Infinity]"}, "fm.value_range [1] must be a finite number"),
    ({"value_range": "[0, 1" + "0" * 400 + "]"}, "fm.value_range [1] must be a finite number"),
    ({"path": '{"name": "ot", "note": "' + "a" * 5000 + '"}'}, "fm.path note holds a text of 5,000 characters"),
    ({"training": '"' + "a" * (2 << 20) + '"'}, "more than the 1,048,576 this key may hold"),
    ({"data_shape": "[3]"}, "data shape is [3]"),
    ({"data_shape": "[0]"}, "positive integers"),
    ({"kind": '"classifier"'}, 'fm.kind must be one of velocity, baked, got "classifier"'),
    ({"path": None}, "fm.path is missing"),
    ({"default_steps": "{"}, "not valid JSON"),
    ({"default_solver": '"dopri"'}, "fm.default_solver must be one of euler, midpoint, heun, rk4"),
    ({"input_x": '"state"'}, "no input named 'state'"),
])
def test_bad_metadata_is_refused_by_name(tmp_path, changes, words):
    path = with_metadata(TINY, tmp_path / "m.onnx", **changes)
    with pytest.raises(ModelError) as e:
        fm_runtime.load(path)
    assert words in str(e.value) and str(path) in str(e.value)


def test_metadata_stripped_model_still_samples_identically(tmp_path):
    with_metadata(TINY, tmp_path / "plain.onnx", strip=True)
    plain = fm_runtime.load(tmp_path / "plain.onnx")
    assert plain.spec.format_version is None and not plain.spec.selftest
    a = plain.sample(20, seed=0)
    assert np.array_equal(a, fm_runtime.load(TINY).sample(20, seed=0))


def test_not_a_model_files(tmp_path):
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "junk.onnx").write_bytes(np.random.default_rng(0).bytes(1000))
    for name, words in [("empty.onnx", "file is empty"), ("junk.onnx", "not an ONNX model, or truncated or corrupted"),
                        ("missing.onnx", "model file not found"), (".", "is a directory")]:
        with pytest.raises(ModelError, match=words):
            fm_runtime.load(tmp_path / name)
