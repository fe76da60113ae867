"""Guidance against a negative prompt chosen per request (null_cond): the unconditional half takes
the request's own conditions instead of the file's nulls, as v = v_neg + w (v_pos - v_neg) (SD3's
convention); with a condition stage the negative prompt may be given as the stage's inputs (its
tokens, run through the stage) or as its outputs. Against torch loops, in Python, fm-run and the
server's batching."""
import numpy as np
import pytest
import torch

import fm_runtime
from export.onnx_export import export_velocity

from . import cond_nets
from .conftest import run_cli
from .node_bridge import needs_node, node_sample

ESTIMATOR = dict(data_shape="4,T", call="x,mask,mu,t,spks",
                 inputs={"mu": "float32[4,T]", "mask": "float32[1,T]:mask", "spks": "float32[3]"},
                 nulls={"mu": "zeros", "spks": "zeros"}, symbols={"T": {"min": 4, "max": 64, "multiple_of": 4}})


@pytest.fixture(scope="module")
def estimator(tmp_path_factory):
    torch.manual_seed(0)
    net = cond_nets.Estimator1D(width=8).eval()
    path = tmp_path_factory.mktemp("neg") / "est.onnx"
    export_velocity(net, path, divergence=False, **ESTIMATOR)
    return net, path


def request(seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((2, 4, 8)).astype(np.float32), rng.standard_normal((2, 3)).astype(np.float32),
            rng.standard_normal((4, 8)).astype(np.float32), rng.standard_normal((2, 4, 8)).astype(np.float32))


def test_a_negative_condition_replaces_the_files_null_in_the_unconditional_half(estimator):
    net, path = estimator
    mu, spks, negative, z = request()
    s = fm_runtime.load(path)
    got = s.sample(noise=z, cond={"mu": mu, "spks": spks}, guidance=2.0, steps=3, solver="euler",
                   null_cond={"mu": negative})
    mask = torch.ones(2, 1, 8)
    x = torch.from_numpy(z)
    with torch.no_grad():
        for i in range(3):
            t = torch.full((2,), i / 3)
            vc = net(x, mask, torch.from_numpy(mu), t, torch.from_numpy(spks))
            vn = net(x, mask, torch.from_numpy(negative).expand(2, 4, 8), t, torch.zeros(2, 3))   # spks: its own null
            x = x + (1 / 3) * (vn + 2.0 * (vc - vn))
    np.testing.assert_allclose(got, x.numpy(), atol=1e-5)
    plain = s.sample(noise=z, cond={"mu": mu, "spks": spks}, guidance=2.0, steps=3, solver="euler")
    assert np.abs(plain - got).max() > 1e-2          # the negative prompt matters
    zeros = s.sample(noise=z, cond={"mu": mu, "spks": spks}, guidance=2.0, steps=3, solver="euler",
                     null_cond={"mu": np.zeros((2, 4, 8), np.float32)})
    np.testing.assert_array_equal(zeros, plain)      # a negative equal to the file's null changes nothing


@pytest.mark.parametrize("null_cond, guidance, error, field", [
    ({"mu": "negative"}, 1.0, fm_runtime.UsageError, None),
    ({"mask": "negative"}, 2.0, fm_runtime.UsageError, "mask"),
    ({"tokens": "negative"}, 2.0, fm_runtime.UsageError, "tokens"),
    ({"mu": "short"}, 2.0, fm_runtime.InputError, "mu"),
])
def test_null_cond_that_cannot_apply_is_refused_by_name(estimator, null_cond, guidance, error, field):
    _, path = estimator
    mu, spks, negative, z = request()
    arrays = {"negative": negative, "short": negative[:, :4]}
    with pytest.raises(error) as e:
        fm_runtime.load(path).sample(noise=z, cond={"mu": mu, "spks": spks}, guidance=guidance,
                                     null_cond={k: arrays[v] for k, v in null_cond.items()})
    assert (e.value.key, e.value.field) == ("null_cond", field), str(e.value)


def test_a_negative_prompt_through_the_condition_stage(tmp_path):
    """The stage's inputs (a negative prompt's tokens) or its outputs give the same samples."""
    path = tmp_path / "decoder.onnx"
    cond_nets.export_token_decoder(path, t_max=64, l_max=32)
    s = fm_runtime.load(path)
    cond = {"tokens": np.array([3, 1, 4, 1], np.int64), "spks": np.eye(3, dtype=np.float32)[1]}
    negative = np.array([2, 2, 5, 0], np.int64)           # the same length: the same frames
    made, _ = s.through_stage({"tokens": negative, "spks": cond["spks"]})
    by_tokens = s.sample(2, seed=1, cond=cond, guidance=2.5, null_cond={"tokens": negative})
    by_output = s.sample(2, seed=1, cond=cond, guidance=2.5, null_cond={"mu": made["mu"]})
    np.testing.assert_array_equal(by_tokens, by_output)
    assert np.abs(by_tokens - s.sample(2, seed=1, cond=cond, guidance=2.5)).max() > 1e-3


def test_fm_run_takes_a_negative_prompt_file(estimator, tmp_path):
    _, path = estimator
    mu, spks, negative, _ = request()
    for name, arr in (("mu", mu), ("spks", spks), ("neg", negative)):
        np.save(tmp_path / f"{name}.npy", arr)
    run_cli("fm-run", "sample", str(path), "--cond", f"mu={tmp_path / 'mu.npy'}", "--cond", f"spks={tmp_path / 'spks.npy'}",
            "--null-cond", f"mu={tmp_path / 'neg.npy'}", "--guidance", "2", "--seed", "3", "--out", str(tmp_path / "x.npy"))
    want = fm_runtime.load(path).sample(2, seed=3, cond={"mu": mu, "spks": spks}, guidance=2.0, null_cond={"mu": negative})
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), want)


def test_the_server_batches_negative_prompts_apart(estimator):
    """Requests with and without a negative prompt share calls; each gets its solo samples."""
    pytest.importorskip("starlette")
    from fm_runtime.serve.jobs import Job
    from fm_runtime.serve.scheduler import StepScheduler
    _, path = estimator
    s = fm_runtime.load(path, tile=0)
    mu, spks, negative, _ = request()
    cases = [dict(n=2, seed=1, cond={"mu": mu, "spks": spks}, guidance=2.0, null_cond={"mu": negative}),
             dict(n=2, seed=2, cond={"mu": mu, "spks": spks}, guidance=2.0),
             dict(n=2, seed=3, cond={"mu": mu, "spks": spks}, guidance=2.0, null_cond={"mu": -negative})]
    runner = StepScheduler(s.session)
    futures = [runner.submit(Job("est", 1, s.request(**c))) for c in cases]
    for c, f in zip(cases, futures):
        np.testing.assert_allclose(f.result(60).samples, s.run(**c).samples, atol=1e-6)
    runner.close(10)


@needs_node
def test_node_takes_the_same_negative_prompts(estimator, tmp_path):
    """nullCond in JavaScript: the same samples as Python's null_cond, directly and through the
    condition stage, and the same refusals."""
    _, path = estimator
    decoder = tmp_path / "decoder.onnx"
    cond_nets.export_token_decoder(decoder, t_max=64, l_max=32)
    mu, spks, negative, z = request()
    tokens = {"tokens": np.array([3, 1, 4, 1], np.int64), "spks": np.eye(3, dtype=np.float32)[1]}
    est = [dict(noise=z, cond={"mu": mu, "spks": spks}, guidance=2.0, steps=3, nullCond={"mu": negative}),
           dict(noise=z, cond={"mu": mu, "spks": spks}, guidance=1.0, nullCond={"mu": negative})]
    dec = [dict(n=2, seed=1, cond=tokens, guidance=2.5, nullCond={"tokens": np.array([2, 2, 5, 0], np.int64)})]
    got = node_sample(tmp_path, [(path, est), (decoder, dec)])
    py_est = fm_runtime.load(path).sample(noise=z, cond={"mu": mu, "spks": spks}, guidance=2.0, steps=3,
                                          null_cond={"mu": negative})
    py_dec = fm_runtime.load(decoder).sample(2, seed=1, cond=tokens, guidance=2.5,
                                             null_cond={"tokens": np.array([2, 2, 5, 0], np.int64)})
    assert np.array_equal(got[0][0], py_est) and np.array_equal(got[2][0], py_dec)
    assert (got[1]["error"], got[1]["key"]) == ("UsageError", "nullCond")
