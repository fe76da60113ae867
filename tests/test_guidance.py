"""Guidance on conditioned files: the three kinds of null (zeros, stored in the file, made by the
condition stage from the null request), guidance on a sub-interval of t, and the two-call mode,
each against a torch fixed-step solve of the original network with the same nulls."""
import numpy as np
import pytest
import torch

import fm_runtime
from export.errors import ExportError
from export.onnx_export import export_velocity

from . import cond_nets
from .conftest import run_cli
from .node_bridge import needs_node, node_sample
from .test_conditions import TOL, est_request, reference

SPK_NULL = np.array([0.4, -0.2, 0.9], np.float32)     # a "learned" speaker null


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    d = tmp_path_factory.mktemp("guidance")
    net = cond_nets.make_estimator()
    export_velocity(net, d / "est.onnx", data_shape="4,T", call="x,mask,mu,t,spks",
                    inputs={"mu": "float32[4,T]", "mask": "float32[1,T]:mask", "spks": "float32[3]"},
                    nulls={"mu": "zeros", "spks": SPK_NULL}, symbols={"T": {"min": 4, "max": 256, "multiple_of": 4}})
    return net, d / "est.onnx"


def field(net, cond, guidance, interval=(0.0, 1.0)):
    """The guided velocity in torch: nulls mu -> 0 and spks -> SPK_NULL, guidance for t in interval."""
    mask, mu = torch.from_numpy(cond["mask"]), torch.from_numpy(cond["mu"])
    spks = torch.from_numpy(np.broadcast_to(cond["spks"], (len(mu), 3)).copy())
    spk_null = torch.from_numpy(np.broadcast_to(SPK_NULL, (len(mu), 3)).copy())

    def f(x, t):
        tt = torch.full((len(x),), t, dtype=torch.float32)
        vc = net(x, mask, mu, tt, spks) * mask
        if not interval[0] <= t <= interval[1]:
            return vc
        vu = net(x, mask, torch.zeros_like(mu), tt, spk_null) * mask
        return vu + guidance * (vc - vu)
    return f


@pytest.mark.parametrize("solver", ["euler", "midpoint", "rk4"])
def test_a_stored_null_matches_torch(stored, solver):
    net, path = stored
    s = fm_runtime.load(path)
    assert np.array_equal(s.spec.null_values["spks"], SPK_NULL)
    for T in (8, 24):
        z, cond = est_request(T)
        got = s.sample(noise=z, cond=cond, steps=4, solver=solver, guidance=2.5)
        want = reference(field(net, cond, 2.5), z * cond["mask"], 4, solver)
        assert np.abs(got - want).max() <= TOL, T


def test_guidance_on_a_sub_interval_and_in_two_calls(stored):
    net, path = stored
    s = fm_runtime.load(path)
    z, cond = est_request(16)
    interval = (0.25, 0.6)
    got = s.sample(noise=z, cond=cond, steps=8, solver="midpoint", guidance=3.0, guidance_interval=interval)
    want = reference(field(net, cond, 3.0, interval), z * cond["mask"], 8, "midpoint")
    assert np.abs(got - want).max() <= TOL
    full = s.sample(noise=z, cond=cond, steps=8, solver="midpoint", guidance=3.0)
    assert np.abs(got - full).max() > 1e-3          # the interval changes the samples
    two = s.sample(noise=z, cond=cond, steps=8, solver="midpoint", guidance=3.0, guidance_interval=interval,
                   guidance_calls="two")
    assert np.abs(two - got).max() <= 1e-5
    masked = cond["mask"].repeat(4, 1) == 0
    assert np.all(two[masked] == 0)
    lp = s.log_prob(got, cond=cond, steps=4, guidance=3.0, guidance_interval=interval)
    assert np.isfinite(lp).all()
    assert not np.allclose(lp, s.log_prob(got, cond=cond, steps=4, guidance=3.0))


def test_a_null_from_the_condition_stage(tmp_path):
    """null "stage": the unconditional half gets the stage's output for a request of zeros (token 0 is
    padding: the empty prompt), computed in the same single stage call as the request's own."""
    net, stage = cond_nets.export_token_decoder(tmp_path / "tts.onnx", mu_null="stage")
    s = fm_runtime.load(tmp_path / "tts.onnx")
    tokens = np.array([[1, 5, 2, 7, 3], [3, 3, 1, 4, 6]], np.int64)
    spks = np.array([0.3, -1.0, 0.5], np.float32)
    with torch.no_grad():
        mu, mask = stage(torch.from_numpy(tokens))
        mu_null, _ = stage(torch.zeros_like(torch.from_numpy(tokens)))
    assert mu_null.abs().sum() > 0        # the empty prompt's embedding is not zeros
    z = np.random.default_rng(0).standard_normal((2, 4, 10)).astype(np.float32)
    got = s.sample(noise=z, cond={"tokens": tokens, "spks": spks}, solver="heun", steps=4, guidance=2.0)
    assert s.stage_calls == 1

    def f(x, t):
        tt = torch.full((len(x),), t, dtype=torch.float32)
        sp = torch.from_numpy(np.broadcast_to(spks, (2, 3)).copy())
        vc = net(x, mask, mu, tt, sp)
        vu = net(x, mask, mu_null, tt, torch.zeros_like(sp))
        return vu + 2.0 * (vc - vu)
    want = reference(f, z, 4, "heun")
    assert np.abs(got - want).max() <= TOL
    one = s.sample(2, cond={"tokens": tokens[0], "spks": spks}, seed=1, guidance=2.0)    # one prompt, every row
    assert one.shape == (2, 4, 10) and s.stage_calls == 2
    with pytest.raises(fm_runtime.UsageError, match="comes from the condition stage"):
        s.sample(2, cond={"mu": mu.numpy(), "mask": mask.numpy(), "spks": spks}, guidance=2.0)
    s.sample(2, cond={"mu": mu.numpy(), "mask": mask.numpy(), "spks": spks})     # unguided: no null needed


def test_export_refuses_nulls_it_cannot_store(tmp_path):
    net = cond_nets.make_estimator()
    kw = dict(data_shape="4,T", call="x,mask,mu,t,spks", symbols={"T": {"min": 4, "max": 64}},
              inputs={"mu": "float32[4,T]", "mask": "float32[1,T]:mask", "spks": "float32[3]"})
    with pytest.raises(ExportError, match="shape \\[3\\]"):
        export_velocity(net, tmp_path / "a.onnx", nulls={"spks": np.zeros(4)}, **kw)
    with pytest.raises(ExportError, match="shape \\[4, 1\\]"):
        export_velocity(net, tmp_path / "a.onnx", nulls={"mu": np.zeros((4, 8))}, **kw)
    with pytest.raises(ExportError, match="condition stage"):
        export_velocity(net, tmp_path / "a.onnx", nulls={"mu": "stage"}, **kw)
    assert not (tmp_path / "a.onnx").exists()


class Decay(torch.nn.Module):
    """v = -x t over x [4, T]: a net whose T no condition binds (--dim T=N)."""

    def forward(self, x, t):
        return -x * t[:, None, None]


def test_cli_guidance_options_and_a_length_past_the_memory_budget(stored, tmp_path):
    _, path = stored
    _, cond = est_request(12)
    files = []
    for k, v in cond.items():
        np.save(tmp_path / f"{k}.npy", v)
        files += ["--cond", f"{k}={tmp_path / (k + '.npy')}"]
    run_cli("fm-run", "sample", str(path), *files, "--seed", "2", "--guidance", "2", "--guidance-interval", "0.2,0.8",
            "--guidance-calls", "two", "--out", str(tmp_path / "x.npy"))
    want = fm_runtime.load(path).sample(cond=cond, seed=2, guidance=2.0, guidance_interval=(0.2, 0.8))
    assert np.abs(np.load(tmp_path / "x.npy") - want).max() <= 1e-5
    p = run_cli("fm-run", "sample", str(path), *files, "--guidance", "2", "--guidance-interval", "0.9,0.1",
                "--out", str(tmp_path / "y.npy"), check=False)
    assert p.returncode == 2 and "0 <= a <= b <= 1" in p.stderr and not (tmp_path / "y.npy").exists()
    export_velocity(Decay(), tmp_path / "long.onnx", data_shape="4,T", symbols={"T": {"min": 1, "max": 2**24}})
    p = run_cli("fm-run", "sample", str(tmp_path / "long.onnx"), "--dim", "T=16000000", "-n", "1", "--max-memory", "1G",
                "--out", str(tmp_path / "z.npy"), check=False)
    assert p.returncode == 9 and "T = 16,000,000" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not (tmp_path / "z.npy").exists()
    run_cli("fm-run", "sample", str(tmp_path / "long.onnx"), "--dim", "T=1000", "-n", "2", "--out", str(tmp_path / "z.npy"))
    assert np.load(tmp_path / "z.npy").shape == (2, 4, 1000)


@needs_node
def test_javascript_guides_the_same(stored, tmp_path):
    """onnxruntime-node: the stored null, a guidance interval, two calls and a condition stage (run
    in JavaScript, once per request, with its null request) give Python's samples to 1e-5."""
    _, path = stored
    s = fm_runtime.load(path)
    z, cond = est_request(12)
    asks = [dict(guidance=2.5), dict(guidance=2.5, guidance_interval=(0.2, 0.7)),
            dict(guidance=2.5, guidance_interval=(0.2, 0.7), guidance_calls="two")]
    wants = [s.sample(noise=z, cond=cond, steps=4, solver="heun", **a) for a in asks]
    net, stage = cond_nets.export_token_decoder(tmp_path / "tts.onnx", mu_null="stage")
    tokens = np.array([[1, 5, 2], [3, 3, 1]], np.int64)
    spks = np.array([0.3, -1.0, 0.5], np.float32)
    zt = np.random.default_rng(1).standard_normal((2, 4, 6)).astype(np.float32)
    tts = fm_runtime.load(tmp_path / "tts.onnx")
    want_tts = tts.sample(noise=zt, cond={"tokens": tokens, "spks": spks}, steps=3, guidance=2.0)
    camel = {"guidance_interval": "guidanceInterval", "guidance_calls": "guidanceCalls"}
    got = node_sample(tmp_path, [
        (path, [dict(noise=z, cond=cond, steps=4, solver="heun", **{camel.get(k, k): v for k, v in a.items()})
                for a in asks]),
        (tmp_path / "tts.onnx", [dict(noise=zt, cond={"tokens": tokens, "spks": spks}, steps=3, guidance=2.0),
                                 dict(n=2, cond={"mu": np.zeros((4, 6), np.float32), "spks": spks}, guidance=2.0)])])
    for (x, _), want in zip(got[:3], wants):
        assert np.abs(x - want).max() <= 1e-5
    x, calls = got[3]
    assert np.abs(x - want_tts).max() <= 1e-5 and calls == 1
    assert got[4]["error"] == "UsageError" and "comes from the condition stage" in got[4]["message"]


@pytest.mark.parametrize("variant", [dict(precision="fp16"), dict(quantize="int8"), dict(fmt="ort")],
                         ids=["fp16", "int8", "ort"])
def test_reduced_variants_of_a_conditioned_file(stored, tmp_path, variant):
    """fp16, int8 and ORT-format files of a conditioned network: they declare the same inputs and
    nulls, measure their deviation from float32 on example conditions, and sample at two lengths
    close to the float32 file."""
    net, path = stored
    out = tmp_path / "v.onnx"
    export_velocity(net, out, data_shape="4,T", call="x,mask,mu,t,spks",
                    inputs={"mu": "float32[4,T]", "mask": "float32[1,T]:mask", "spks": "float32[3]"},
                    nulls={"mu": "zeros", "spks": SPK_NULL}, symbols={"T": {"min": 4, "max": 256, "multiple_of": 4}},
                    **variant)
    s, ref = fm_runtime.load(out), fm_runtime.load(path)
    cost = s.spec.variant["vs_fp32"]
    print(f"{variant}: {cost}")
    assert cost["mean_dev"] <= (2e-2 if "quantize" in variant else 1e-3)
    assert [i["name"] for i in s.spec.inputs] == ["mu", "mask", "spks"] and "spks" in s.spec.null_values
    for T in (8, 28):
        z, cond = est_request(T)
        got = s.sample(noise=z, cond=cond, steps=4, guidance=2.0)
        want = ref.sample(noise=z, cond=cond, steps=4, guidance=2.0)
        assert np.abs(got - want).mean() <= (2e-2 if "quantize" in variant else 1e-3)
        assert np.all(got[cond["mask"].repeat(4, 1) == 0] == 0)
    with pytest.raises(fm_runtime.ModelError, match="is a reduced .* file, which leaves the divergence graph out"):
        s.log_prob(want, cond=cond)
