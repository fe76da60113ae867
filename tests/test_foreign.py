"""Networks trained elsewhere, in the call shapes people use, through the one export path
(export_velocity): runtime samples equal a torch fixed-step reference on the same noise for every
solver, runtime log p equals torch autograd's exact-divergence log p (2-D), and the Hutchinson
estimate agrees with the exact one in expectation (64-D)."""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

import fm_runtime
from export import ExportError, export_velocity
from training.nets import VelocityDiT, VelocityUNet
from training.sample import log_prob as torch_log_prob
from training.sample import sample as torch_sample

from .conftest import run_cli

SOLVERS = ("euler", "midpoint", "heun", "rk4")


class CfmMLP(nn.Module):
    """The shape of torchcfm's MLP: one input, [x, t] concatenated, SELU."""

    def __init__(self, dim: int = 2, w: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, w), nn.SELU(), nn.Linear(w, w), nn.SELU(), nn.Linear(w, dim))

    def forward(self, x):
        return self.net(x)


class KeywordMLP(nn.Module):
    """flow_matching's example style: called as net(x=x, t=t) with t one scalar for the batch."""

    def __init__(self, dim: int = 2, w: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, w), nn.Softplus(), nn.Linear(w, w), nn.GELU(), nn.Linear(w, dim))

    def forward(self, x, t):
        t = t.reshape(-1, 1).expand(x.shape[0], 1)
        return self.net(torch.cat([x, t], -1))


class TxUNet(nn.Module):
    """A U-Net called as net(t, x), the order torchcfm's U-Net uses."""

    def __init__(self):
        super().__init__()
        self.unet = VelocityUNet((1, 8, 8), 16)

    def forward(self, t, x):
        return self.unet(x, t)


@dataclass
class Case:
    net: nn.Module
    call: str
    time: str
    shape: tuple
    reference: object       # (x, t [B]) -> v, calling the network as its own code would


def _cases() -> dict[str, Case]:
    torch.manual_seed(0)
    cfm, kw, unet, dit = CfmMLP(), KeywordMLP(), TxUNet(), VelocityDiT((1, 8, 8), 32, 1)
    for net in (unet, dit):          # leave the zero-initialised gates: a field worth comparing
        for p in net.parameters():
            p.data += 0.05 * torch.randn_like(p)
    return {
        "torchcfm-mlp cat(x,t)": Case(cfm, "cat(x,t)", "B", (2,), lambda x, t: cfm(torch.cat([x, t[:, None]], -1))),
        "keyword x=,t= scalar t": Case(kw, "x=,t=", "scalar", (2,), lambda x, t: kw(x=x, t=t[0])),
        "unet t,x": Case(unet, "t,x", "B", (1, 8, 8), lambda x, t: unet(t, x)),
        "dit x,t": Case(dit, "x,t", "B", (1, 8, 8), lambda x, t: dit(x, t)),
    }


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("foreign")
    out = {}
    for i, (name, case) in enumerate(_cases().items()):
        case.net.eval()
        report = export_velocity(case.net, d / f"{i}.onnx", data_shape=case.shape, call=case.call, time=case.time)
        assert report.divergence.startswith("yes"), report.divergence
        out[name] = (case, fm_runtime.load(d / f"{i}.onnx"))
    return out


@pytest.mark.parametrize("name", list(_cases()))
def test_samples_match_torch_for_every_solver(exported, name):
    case, sampler = exported[name]
    z = sampler.noise(32 if case.shape == (2,) else 8, seed=3)
    for solver in SOLVERS:
        got = sampler.sample(noise=z, steps=4, solver=solver)
        want = torch_sample(case.reference, z, 4, solver)
        assert np.abs(got - want).max() <= 1e-4, (solver, np.abs(got - want).max())


@pytest.mark.parametrize("name", ["torchcfm-mlp cat(x,t)", "keyword x=,t= scalar t"])
def test_log_prob_matches_torch_exact_2d(exported, name):
    case, sampler = exported[name]
    x = np.random.default_rng(1).standard_normal((64, 2)).astype(np.float32)
    got = sampler.log_prob(x, steps=8, divergence="exact")
    want = torch_log_prob(case.reference, x, steps=8)
    assert np.abs(got - want).max() <= 1e-4


@pytest.mark.parametrize("name", ["unet t,x", "dit x,t"])
def test_image_log_prob_exact_and_hutchinson(exported, name):
    """64-D: exact runtime log p equals torch's; Hutchinson's is unbiased (its mean error over
    rows lies within 4 standard errors of zero)."""
    case, sampler = exported[name]
    x = sampler.noise(12, seed=5)
    exact = sampler.log_prob(x, steps=2, divergence="exact")
    want = torch_log_prob(case.reference, x[:2], steps=2)
    assert np.abs(exact[:2] - want).max() <= 1e-4 * np.abs(want).max()
    hutch = sampler.log_prob(x, steps=2, divergence="hutchinson", probes=4, probe_seed=7)
    err = hutch - exact
    assert np.all(err != 0) and abs(err.mean()) <= 4 * err.std(ddof=1) / np.sqrt(len(err)) + 1e-3, err


def test_export_api_refuses_bad_inputs(tmp_path):
    net = CfmMLP()
    out = tmp_path / "m.onnx"
    for kwargs, words in [
        (dict(data_shape=None, call="cat(x,t)"), "data_shape must be"),
        (dict(data_shape=[0], call="cat(x,t)"), "data_shape must be"),
        (dict(data_shape=2, call="x"), "must pass x and t"),
        (dict(data_shape=2, call="x,t"), "calling the network as net(x, t)"),
        (dict(data_shape=3, call="cat(x,t)"), "calling the network"),
        (dict(data_shape=2, call="cat(x,t)", time="column"), "time must be"),
        (dict(data_shape=2, call="cat(x,t)", num_classes=3), "does not pass labels y"),
        (dict(data_shape=2, call="cat(x,t)", path={}), "path must be a dict with a name"),
    ]:
        with pytest.raises(ExportError, match=re.escape(words)):
            export_velocity(net, out, **kwargs)
    with pytest.raises(ExportError, match="returned shape"):
        export_velocity(nn.Linear(3, 1), out, data_shape=2, call="cat(x,t)")

    class Raises(nn.Module):
        def forward(self, x, t):
            raise RuntimeError("boom")
    with pytest.raises(ExportError, match="RuntimeError: boom"):
        export_velocity(Raises(), out, data_shape=2)
    assert not out.exists()


class AtanField(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x, t):
        return torch.atan(self.lin(torch.cat([x, t[:, None]], -1)))


def test_unsupported_op_is_named_not_guessed(tmp_path):
    report = export_velocity(AtanField(), tmp_path / "a.onnx", data_shape=2)
    assert report.divergence.startswith("none") and "Atan" in report.warnings[0]
    s = fm_runtime.load(tmp_path / "a.onnx")
    assert s.sample(4, seed=0).shape == (4, 2)
    with pytest.raises(fm_runtime.ModelError, match="uses Atan"):
        s.log_prob(np.zeros((2, 2), np.float32))
    np.save(tmp_path / "x.npy", np.zeros((2, 2), np.float32))
    p = run_cli("fm-run", "logprob", str(tmp_path / "a.onnx"), str(tmp_path / "x.npy"), check=False)
    assert p.returncode == 2 and "uses Atan" in p.stderr and "re-export" not in p.stderr


MODULE = '''
import torch
from torch import nn

class MLP(nn.Module):
    def __init__(self, w=32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, w), nn.SELU(), nn.Linear(w, 2))
    def forward(self, x):
        return self.net(x)

def make_mlp():
    return MLP()

def make_wide():
    return MLP(64)

def broken():
    raise ValueError("no config")


def quits():
    import sys
    sys.exit(0)
'''


@pytest.mark.slow
def test_cli_exports_a_module_with_weights_and_adds_divergence(tmp_path):
    (tmp_path / "mynets.py").write_text(MODULE)
    torch.manual_seed(0)
    net = CfmMLP(w=32)
    net.net = nn.Sequential(nn.Linear(3, 32), nn.SELU(), nn.Linear(32, 2))
    torch.save({"net_model": net.state_dict(), "step": 10}, tmp_path / "w.pt")
    args = ["--module", "mynets:make_mlp", "--weights", "w.pt", "--data-shape", "2", "--call", "cat(x,t)"]
    p = run_cli("fm-export", *args, "--out", "m.onnx", cwd=tmp_path)
    assert "log-likelihoods: yes" in p.stderr
    z = np.random.default_rng(0).standard_normal((50, 2)).astype(np.float32)
    want = torch_sample(lambda x, t: net(torch.cat([x, t[:, None]], -1)), z, 8, "midpoint")
    got = fm_runtime.load(tmp_path / "m.onnx").sample(noise=z)
    assert np.abs(got - want).max() <= 1e-4
    for bad, code, words in [
        (["--module", "mynets:make_wide", "--weights", "w.pt", "--data-shape", "2", "--call", "cat(x,t)"], 8, "do not fit"),
        (["--module", "mynets:broken", "--data-shape", "2"], 8, "calling broken() failed"),
        (["--module", "nosuch:make", "--data-shape", "2"], 8, "cannot import nosuch"),
        (["--module", "mynets:make_mlp"], 2, "--data-shape is required"),
        (["--module", "mynets:make_mlp", "--data-shape", "2", "--call", "x,q"], 8, "cannot read 'q'"),
        (["m.onnx"], 2, "fm-run sample m.onnx"),
        (["--module", "mynets:quits", "--data-shape", "2"], 8, "quits() called sys.exit(0); nothing written"),
        (["--module", "mynets:make_mlp", "--data-shape", "2", "--input", "mu=float32[1000000000]"], 8,
         "sizes are positive integers up to 268,435,456, got 1000000000"),
        (["--module", "mynets:make_mlp", "--data-shape", "9" * 5000], 2, "(5,000 digits)"),
    ]:
        p = run_cli("fm-export", *bad, "--out", "bad.onnx", cwd=tmp_path, check=False)
        assert p.returncode == code and words in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr

    # a plain ONNX file (no fm.* metadata, no divergence) gets log-likelihoods added, no torch involved
    import onnx
    plain = onnx.load(str(tmp_path / "m.onnx"))
    del plain.metadata_props[:]
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    p = run_cli("fm-export", "--add-divergence", "plain.onnx", "--out", "plain-lp.onnx", cwd=tmp_path)
    assert "finite differences" in p.stderr
    x = z[:20]
    np.testing.assert_allclose(fm_runtime.load(tmp_path / "plain-lp.onnx").log_prob(x),
                               fm_runtime.load(tmp_path / "m.onnx").log_prob(x), atol=1e-5)


def test_torch_export_program(tmp_path):
    torch.manual_seed(0)
    net = KeywordMLP().eval()
    batch = torch.export.Dim("batch")
    program = torch.export.export(net, (torch.randn(4, 2), torch.rand(4)),
                                  dynamic_shapes={"x": {0: batch}, "t": {0: batch}})
    torch.export.save(program, str(tmp_path / "net.pt2"))
    run_cli("fm-export", "net.pt2", "--data-shape", "2", "--out", "p.onnx", cwd=tmp_path)
    z = np.random.default_rng(0).standard_normal((40, 2)).astype(np.float32)
    got = fm_runtime.load(tmp_path / "p.onnx").sample(noise=z)
    assert np.abs(got - torch_sample(net, z, 8, "midpoint")).max() <= 1e-4


@pytest.mark.slow      # end to end through the CLIs in fresh interpreters: CI runs it with -m slow
def test_torchcfm_classes():
    """torchcfm's own MLP and U-Net, when torchcfm is installed (without moving torch)."""
    models = pytest.importorskip("torchcfm.models.models")
    unet_mod = pytest.importorskip("torchcfm.models.unet")
    import tempfile
    torch.manual_seed(0)
    mlp = models.MLP(dim=2, time_varying=True).eval()
    unet = unet_mod.UNetModel(dim=(1, 8, 8), num_channels=32, num_res_blocks=1, channel_mult=(1, 2),
                              attention_resolutions="4", num_heads=2, dropout=0.0).eval()
    with tempfile.TemporaryDirectory() as d:
        export_velocity(mlp, f"{d}/mlp.onnx", data_shape=2, call="cat(x,t)")
        export_velocity(unet, f"{d}/unet.onnx", data_shape=(1, 8, 8), call="t,x")
        s_mlp, s_unet = fm_runtime.load(f"{d}/mlp.onnx"), fm_runtime.load(f"{d}/unet.onnx")
    z = s_mlp.noise(64, seed=0)
    ref = lambda x, t: mlp(torch.cat([x, t[:, None]], -1))       # noqa: E731
    assert np.abs(s_mlp.sample(noise=z) - torch_sample(ref, z, 8, "midpoint")).max() <= 1e-4
    assert np.abs(s_mlp.log_prob(z[:16]) - torch_log_prob(ref, z[:16])).max() <= 1e-4
    zi = s_unet.noise(4, seed=0)
    assert np.abs(s_unet.sample(noise=zi, steps=2) - torch_sample(lambda x, t: unet(t, x), zi, 2, "midpoint")).max() <= 1e-4


def test_flow_matching_solver_agrees():
    """flow_matching's own ODESolver (midpoint, step 1/8) on a network in its calling convention
    gives the runtime's samples and exact log-likelihoods, when flow_matching is installed."""
    solver_mod = pytest.importorskip("flow_matching.solver")
    import tempfile
    torch.manual_seed(1)
    net = KeywordMLP().eval()
    with tempfile.TemporaryDirectory() as d:
        export_velocity(net, f"{d}/kw.onnx", data_shape=2, call="x=,t=", time="scalar")
        s = fm_runtime.load(f"{d}/kw.onnx")
    z = s.noise(64, seed=0)
    ode = solver_mod.ODESolver(velocity_model=net)
    with torch.no_grad():
        peer = ode.sample(x_init=torch.from_numpy(z), step_size=1 / 8, method="midpoint").numpy()
    assert np.abs(s.sample(noise=z, steps=8, solver="midpoint") - peer).max() <= 1e-4
    x1 = torch.from_numpy(peer[:16])
    log_p0 = lambda x: -0.5 * (x ** 2).sum(-1) - np.log(2 * np.pi)       # noqa: E731
    _, peer_lp = ode.compute_likelihood(x_1=x1, log_p0=log_p0, step_size=1 / 8, method="midpoint",
                                        exact_divergence=True)
    assert np.abs(s.log_prob(peer[:16], steps=8) - peer_lp.detach().numpy()).max() <= 1e-4


def test_foreign_network_bakes_and_shrinks(tmp_path):
    """Baked solves and reduced variants apply to any network, as to fm-train's."""
    torch.manual_seed(2)
    net = CfmMLP().eval()
    ref = lambda x, t: net(torch.cat([x, t[:, None]], -1))       # noqa: E731
    z = np.random.default_rng(0).standard_normal((64, 2)).astype(np.float32)
    export_velocity(net, tmp_path / "b.onnx", data_shape=2, call="cat(x,t)", bake="rk4:4")
    baked = fm_runtime.load(tmp_path / "b.onnx")
    assert baked.baked and np.abs(baked.sample(noise=z) - torch_sample(ref, z, 4, "rk4")).max() <= 1e-4
    report = export_velocity(net, tmp_path / "h.onnx", data_shape=2, call="cat(x,t)", precision="fp16")
    assert report.variant["vs_fp32"]["max_dev"] < 0.05
    half = fm_runtime.load(tmp_path / "h.onnx")
    assert np.abs(half.sample(noise=z) - torch_sample(ref, z, 8, "midpoint")).max() < 0.05
    with pytest.raises(fm_runtime.ModelError, match="float32"):
        half.log_prob(z[:4])
