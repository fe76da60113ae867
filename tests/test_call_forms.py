"""Networks as other libraries write them, exported without wrappers: a call function and a call
string give the same file for a network with noise at t = 1 (and the export's check integrates the
network in its own time, so a file with the wrong sign cannot be written); outputs taken from a
tuple, a ModelOutput-like .sample or a dict, with constant keywords (return_dict=False); inputs
passed under their own names (mu=mu, mu=)."""
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

import fm_runtime
from export.adapters import VelocityAdapter
from export.errors import ExportError
from export.onnx_export import export_velocity


class SigmaNet(nn.Module):
    """A velocity network in σ with noise at σ = 1 (SD3, Flux, pi0): sampling runs σ from 1 to 0,
    x <- x - h net(x, σ)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.net = nn.Sequential(nn.Linear(3, 32), nn.Tanh(), nn.Linear(32, 2))

    def forward(self, x, sigma):
        return self.net(torch.cat([x, sigma[:, None]], 1))


def sigma_loop(net, z: np.ndarray, steps: int) -> np.ndarray:
    """The network's own Euler loop in σ, from σ = 1 (noise) to 0."""
    x, h = torch.from_numpy(z), 1.0 / steps
    with torch.no_grad():
        for i in range(steps):
            x = x - h * net(x, torch.full((len(x),), 1.0 - i * h))
    return x.numpy()


@pytest.mark.parametrize("call", ["x,t", lambda net, x, t, y: net(x, t)])
def test_noise_at_1_gives_the_networks_own_loop_whatever_the_call_form(tmp_path, call):
    net = SigmaNet().eval()
    path = tmp_path / "sigma.onnx"
    export_velocity(net, path, data_shape=[2], call=call, time_convention="noise-at-1")
    z = np.random.default_rng(0).standard_normal((64, 2)).astype(np.float32)
    got = fm_runtime.load(path).sample(noise=z, steps=8, solver="euler")
    np.testing.assert_allclose(got, sigma_loop(net, z, 8), atol=1e-5)


def test_a_file_whose_velocity_has_the_wrong_sign_fails_the_export_check(tmp_path, monkeypatch):
    """With the flip's negation left out (the bug a call function used to have), the graph still
    equals the adapter it was traced from; the convention check refuses it and writes nothing."""
    def unsigned(self, x, t, *rest):
        return self.native(x, 1.0 - t, None, ())
    monkeypatch.setattr(VelocityAdapter, "forward", unsigned)
    with pytest.raises(ExportError, match="own time convention"):
        export_velocity(SigmaNet().eval(), tmp_path / "wrong.onnx", data_shape=[2], call="x,t",
                        time_convention="noise-at-1", divergence=False)
    assert not (tmp_path / "wrong.onnx").exists()


@dataclass
class Output:           # what diffusers' Transformer2DModelOutput is to a caller: a .sample field
    sample: torch.Tensor


class LibraryNet(nn.Module):
    """Returns its velocity the ways libraries do: an output object unless return_dict=False (then
    a one-element tuple), or a dict."""

    def __init__(self, style: str):
        super().__init__()
        torch.manual_seed(5)
        self.style, self.net = style, nn.Linear(4, 2)

    def forward(self, hidden_states, timestep, cond, return_dict=True):
        v = self.net(torch.cat([hidden_states, timestep[:, None], cond], 1))
        if self.style == "dict":
            return {"prediction": v}
        return Output(v) if return_dict else (v,)


@pytest.mark.parametrize("style,call,field", [
    ("object", "hidden_states=x,timestep=t,cond=cond", ".sample"),
    ("object", "hidden_states=x,timestep=t,cond=,return_dict=False", "[0]"),
    ("dict", "x,t,cond=cond", "['prediction']"),
])
def test_outputs_as_libraries_return_them(tmp_path, style, call, field):
    net = LibraryNet(style).eval()
    path = tmp_path / "lib.onnx"
    report = export_velocity(net, path, data_shape=[2], call=call, inputs={"cond": "float32[1]"})
    assert report.output_field == field
    rng = np.random.default_rng(1)
    x, c = rng.standard_normal((5, 2)).astype(np.float32), rng.standard_normal((5, 1)).astype(np.float32)
    with torch.no_grad():
        want = net.net(torch.cat([torch.from_numpy(x), torch.full((5, 1), 0.25), torch.from_numpy(c)], 1)).numpy()
    s = fm_runtime.load(path)
    got = s.session.run(["v"], {"x": x, "t": np.full(5, 0.25, np.float32), "cond": c})[0]
    np.testing.assert_allclose(got, want, atol=1e-6)


class Keywords(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(6)
        self.net = nn.Linear(5, 2)

    def forward(self, x, t, mu, scale=1.0):
        return scale * self.net(torch.cat([x, t[:, None], mu], 1))


@pytest.mark.parametrize("call", ["x=x,t=t,mu=mu", "x=,t=,mu=", "x,t,mu=mu,scale=2.0", "x,t,mu"])
def test_an_input_passed_under_its_own_name(tmp_path, call):
    net = Keywords().eval()
    path = tmp_path / "kw.onnx"
    export_velocity(net, path, data_shape=[2], call=call, inputs={"mu": "float32[2]"})
    x, mu = np.ones((3, 2), np.float32), np.full((3, 2), 0.5, np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x), torch.full((3,), 0.5), torch.from_numpy(mu),
                   2.0 if "scale" in call else 1.0).numpy()
    got = fm_runtime.load(path).session.run(["v"], {"x": x, "t": np.full(3, 0.5, np.float32), "mu": mu})[0]
    np.testing.assert_allclose(got, want, atol=1e-6)


class IntLength(nn.Module):
    """A network that turns its length into a Python int (as F5-TTS's DiT does with int(seq_len))."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x, t, mu):
        length = int(x.shape[-1])
        h = x + mu + torch.arange(length, dtype=x.dtype) / length + t[:, None, None]
        return self.lin(h.transpose(1, 2)).transpose(1, 2)


def test_a_size_the_network_fixes_is_refused_naming_the_symbol(tmp_path):
    """torch.export fixes T to the example's size; the export says so (exit 8 from fm-export) before
    onnxruntime fails on another size, and writes nothing; one file per size still exports."""
    with pytest.raises(ExportError, match="fixed the symbol T"):
        export_velocity(IntLength().eval(), tmp_path / "t.onnx", data_shape="4,T", call="x,t,mu",
                        inputs={"mu": "float32[4,T]"}, symbols={"T": {"min": 2, "max": 64}}, divergence=False)
    assert not (tmp_path / "t.onnx").exists()
    export_velocity(IntLength().eval(), tmp_path / "t8.onnx", data_shape=[4, 8], call="x,t,mu",
                    inputs={"mu": "float32[4,8]"}, divergence=False)
    assert fm_runtime.load(tmp_path / "t8.onnx").sample(2, seed=0, cond={"mu": np.zeros((4, 8), np.float32)}).shape == (2, 4, 8)
