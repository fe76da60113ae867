"""Flow-map files end to end without training: small two-time networks (random weights) exported
with fm-export's call strings, then sampled, differentiated and baked by the runtime and checked
against torch loops of the same jumps on the same noise, in this project's convention and in the
published ones (MeanFlow's u(z, r, t) with noise at 1, shortcut models' (t, d))."""
import math

import numpy as np
import pytest
import torch
from torch import nn

import fm_runtime
from export.errors import ExportError
from export.onnx_export import export_velocity
from fm_runtime.solve.solvers import integrate, time_grid
from tests.cond_nets import Estimator1D
from tests.node_bridge import needs_node, node_sample
from training.sample import exact_divergence


class TinyMap(nn.Module):
    """u(x, s, t) [B, 2] from an MLP on (x, s, t), labels optional (id `classes` = no label)."""

    def __init__(self, classes: int = 0, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(4, 32), nn.SiLU(), nn.Linear(32, 32), nn.SiLU(), nn.Linear(32, 2))
        self.embed = nn.Embedding(classes + 1, 4) if classes else None

    def forward(self, x, s, t, y=None):
        h = torch.cat([x, s[:, None], t[:, None]], 1)
        if self.embed is not None:
            h = h + self.embed(y)
        return self.net(h)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    net = TinyMap().eval()
    path = tmp_path_factory.mktemp("map") / "map.onnx"
    report = export_velocity(net, path, data_shape=[2], call="x,s,t")
    return net, path, report


def torch_jumps(u, z: np.ndarray, steps: int, schedule=None) -> np.ndarray:
    """x += h u(x, t_i, t_{i+1}) on the grid, in float32 torch."""
    x = torch.from_numpy(z)
    grid = time_grid(steps, schedule=schedule)
    with torch.no_grad():
        for a, b in zip(grid[:-1], grid[1:]):
            x = x + (b - a) * u(x, torch.full((len(x),), a), torch.full((len(x),), b))
    return x.numpy()


def noise(n: int = 64, shape=(2,), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def test_the_file_declares_a_flow_map_that_jumps_once_by_default(tiny):
    _, path, report = tiny
    s = fm_runtime.load(path)
    assert s.spec.flow_map and s.spec.s_name == "s" and s.spec.format_version == 5
    assert (s.spec.default_solver, s.spec.default_steps, s.nfe()) == ("jump", 1, 1)
    assert report.max_abs_diff < 1e-5 and report.divergence.startswith("yes")
    s.sample(n=8, seed=0)
    assert s.last_nfe == 1


@pytest.mark.parametrize("steps,schedule", [(1, None), (2, None), (4, None), (3, "shift:3")])
def test_jumps_equal_a_torch_loop_of_the_same_jumps(tiny, steps, schedule):
    net, path, _ = tiny
    z = noise()
    got = fm_runtime.load(path).sample(noise=z, steps=steps, schedule=schedule)
    np.testing.assert_allclose(got, torch_jumps(net, z, steps, schedule), atol=1e-5, rtol=0)


@pytest.mark.parametrize("solver", ["euler", "midpoint", "rk4"])
def test_velocity_solvers_run_on_the_map_at_equal_times(tiny, solver):
    net, path, _ = tiny
    z = noise()
    got = fm_runtime.load(path).sample(noise=z, steps=5, solver=solver)
    with torch.no_grad():
        ref = integrate(lambda x, t: net(x, torch.full((len(x),), t), torch.full((len(x),), t)),
                        torch.from_numpy(z), 5, solver).x.numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)


def test_log_p_is_torch_autograd_of_the_instantaneous_velocity(tiny):
    """fm-run logprob on a flow map: the divergence graph of u(x, t, t), against an exact torch
    log p of the same field (midpoint, 8 steps: the contract's defaults, which a map's own jump
    gives way to)."""
    net, path, _ = tiny
    s = fm_runtime.load(path)
    x = noise(32, seed=3)
    got = s.log_prob(x)
    assert s.last_nfe == 16

    def velocity(xx, t):
        tt = torch.full((len(xx),), t)
        return net(xx, tt, tt)

    def augmented(state, t):
        v, div = exact_divergence(velocity, state[:, :2], t)
        return torch.cat([v, div[:, None]], 1)

    end = integrate(augmented, torch.cat([torch.from_numpy(x), torch.zeros(len(x), 1)], 1), 8, "midpoint",
                    t0=1.0, t1=0.0).x.detach()
    ref = (-0.5 * (end[:, :2] ** 2).sum(1) - math.log(2 * math.pi) + end[:, 2]).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    with pytest.raises(fm_runtime.UsageError, match="no log-likelihoods"):
        s.log_prob(x, solver="jump")


def test_a_pair_of_times_evaluates_the_jump(tiny):
    net, path, _ = tiny
    s, z = fm_runtime.load(path), noise(8)
    with torch.no_grad():
        ref = net(torch.from_numpy(z), torch.full((8,), 0.25), torch.full((8,), 0.75)).numpy()
    np.testing.assert_allclose(s.velocity(z, (0.25, 0.75)), ref, atol=1e-6)
    np.testing.assert_allclose(s.velocity(z, 0.5), s.velocity(z, (0.5, 0.5)), atol=0)
    with pytest.raises(fm_runtime.UsageError, match="velocity model"):
        fm_runtime.load().velocity(z, (0.0, 1.0))       # the shipped moons velocity file


@pytest.mark.parametrize("bake,steps", [("jump:2", 2), ("map:3", 3)])
def test_baked_jumps_are_one_graph_that_equals_the_loop(tiny, tmp_path, bake, steps):
    net, path, _ = tiny
    out = tmp_path / "baked.onnx"
    export_velocity(net, out, data_shape=[2], call="x,s,t", bake=bake)
    b = fm_runtime.load(out)
    assert b.spec.kind == "baked" and b.spec.baked == {"solver": "jump", "steps": steps, "nfe": steps}
    z = noise()
    np.testing.assert_allclose(b.sample(noise=z), fm_runtime.load(path).sample(noise=z, steps=steps), atol=1e-5)


def test_a_velocity_network_cannot_bake_jumps(tmp_path):
    net = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(ExportError, match="jumps with a flow map"):
        export_velocity(lambda_net(net), tmp_path / "v.onnx", data_shape=[2], call="x,t", bake="jump:2")


def lambda_net(inner):
    class V(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner

        def forward(self, x, t):
            return self.inner(torch.cat([x, t[:, None]], 1))
    return V().eval()


def test_guidance_applies_per_jump(tmp_path):
    net = TinyMap(classes=3).eval()
    path = tmp_path / "cond.onnx"
    export_velocity(net, path, data_shape=[2], call="x,s,t,y", num_classes=3)
    z, labels, w = noise(16), np.arange(16) % 3, 2.5

    def guided(x, s, t):
        y = torch.as_tensor(labels)
        uc, uu = net(x, s, t, y), net(x, s, t, torch.full_like(y, 3))
        return uu + w * (uc - uu)
    got = fm_runtime.load(path).sample(noise=z, steps=2, labels=labels, guidance=w)
    np.testing.assert_allclose(got, torch_jumps(guided, z, 2), atol=1e-5)


class MaskedMap(nn.Module):
    """A TTS-style conditioned map: Estimator1D's velocity plus a gap term, masked."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.est, self.gap = Estimator1D(width=8), nn.Conv1d(4, 4, 1)

    def forward(self, x, mask, mu, s, t, spks):
        return self.est(x, mask, mu, s, spks) + (t - s)[:, None, None] * self.gap(mu) * mask


def test_conditions_masks_and_nulls_work_on_a_map(tmp_path):
    net = MaskedMap().eval()
    path = tmp_path / "est-map.onnx"
    export_velocity(net, path, data_shape="4,T", call="x,mask,mu,s,t,spks",
                    inputs={"mu": "float32[4,T]", "mask": "float32[1,T]:mask", "spks": "float32[3]"},
                    nulls={"mu": "zeros", "spks": "zeros"}, symbols={"T": {"min": 4, "max": 64, "multiple_of": 4}})
    s = fm_runtime.load(path)
    assert s.spec.flow_map and s.nfe() == 1
    rng = np.random.default_rng(0)
    mu, spks = rng.standard_normal((3, 4, 8)).astype(np.float32), rng.standard_normal((3, 3)).astype(np.float32)
    mask = np.ones((3, 1, 8), np.float32)
    mask[1, :, 5:] = 0
    z = noise(3, (4, 8))
    got = s.sample(noise=z, cond={"mu": mu, "mask": mask, "spks": spks}, steps=2, guidance=2.0)
    assert np.all(got[1, :, 5:] == 0)
    m, c, k = torch.from_numpy(mask), torch.from_numpy(mu), torch.from_numpy(spks)

    def guided(x, s_, t):
        uc = net(x, m, c, s_, t, k) * m
        uu = net(x, m, torch.zeros_like(c), s_, t, torch.zeros_like(k)) * m
        return uu + 2.0 * (uc - uu)
    np.testing.assert_allclose(got, torch_jumps(guided, z * mask, 2), atol=1e-5)
    assert np.isfinite(s.log_prob(got, cond={"mu": mu, "mask": mask, "spks": spks}, steps=2)).all()


class MeanFlowNet(nn.Module):
    """A network in MeanFlow's convention: u(z, r, t), noise at t = 1, data at 0, and
    z_r = z_t - (t - r) u(z_t, r, t)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))

    def forward(self, z, r, t):
        return self.net(torch.cat([z, r[:, None], t[:, None]], 1))


def test_meanflow_convention_is_x_t_s_with_noise_at_1(tmp_path):
    """MeanFlow samples z_0 = z_1 - u(z_1, 0, 1) from noise at 1; the file, exported with
    --call x,t,s --time-convention noise-at-1, must give the same samples from the same noise."""
    net = MeanFlowNet().eval()
    path = tmp_path / "meanflow.onnx"
    export_velocity(net, path, data_shape=[2], call="x,t,s", time_convention="noise-at-1")
    z = noise()
    for steps in (1, 2):
        x = torch.from_numpy(z)
        taus = [1.0 - g for g in time_grid(steps)]          # MeanFlow's own loop: 1 -> 0
        with torch.no_grad():
            for t, r in zip(taus[:-1], taus[1:]):
                x = x - (t - r) * net(x, torch.full((len(x),), r), torch.full((len(x),), t))
        np.testing.assert_allclose(fm_runtime.load(path).sample(noise=z, steps=steps), x.numpy(), atol=1e-5)


class ShortcutNet(nn.Module):
    """A shortcut model: s(x_t, t, d), noise at 0, x_{t+d} = x_t + d s(x_t, t, d)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.net = nn.Sequential(nn.Linear(4, 16), nn.SiLU(), nn.Linear(16, 2))

    def forward(self, x, t, d):
        return self.net(torch.cat([x, t[:, None], d[:, None]], 1))


def test_shortcut_convention_is_x_s_d(tmp_path):
    net = ShortcutNet().eval()
    path = tmp_path / "shortcut.onnx"
    export_velocity(net, path, data_shape=[2], call="x,s,d")
    z = noise()
    for steps in (1, 4):
        x, d = torch.from_numpy(z), 1.0 / steps
        with torch.no_grad():
            for i in range(steps):
                x = x + d * net(x, torch.full((len(x),), i * d), torch.full((len(x),), d))
        np.testing.assert_allclose(fm_runtime.load(path).sample(noise=z, steps=steps), x.numpy(), atol=1e-5)


@pytest.mark.parametrize("call", ["x,s", "x,s,t,d", "x,t,t", "x,d"])
def test_calls_that_name_the_times_wrongly_are_refused(call):
    from export.adapters import parse_call
    with pytest.raises(ExportError, match="exactly once"):
        parse_call(call)


@needs_node
def test_node_samples_a_flow_map_bit_for_bit_as_python(tiny, tmp_path):
    """The same file, noise, jumps (and velocity steps on u(x, t, t), labels and guidance) in Node:
    the very same float32 samples."""
    _, path, _ = tiny
    labelled = tmp_path / "labelled.onnx"
    export_velocity(TinyMap(classes=3).eval(), labelled, data_shape=[2], call="x,s,t,y", num_classes=3)
    z = noise(16)
    plain = [dict(noise=z), dict(noise=z, steps=4, schedule="shift:3"), dict(noise=z, steps=3, solver="midpoint"),
             dict(noise=z, solver="heun")]          # no steps: the contract's 8, not the file's one jump
    guided = [dict(noise=z, steps=2, labels=[1] * 16, guidance=2.5)]
    got = node_sample(tmp_path, [(path, plain), (labelled, guided)])
    want = [fm_runtime.load(path).sample(**r) for r in plain] + [fm_runtime.load(labelled).sample(**r) for r in guided]
    for (js, _), py in zip(got, want):
        assert np.array_equal(js, py)


@pytest.mark.parametrize("variant", [dict(precision="fp16"), dict(quantize="int8")])
def test_reduced_flow_maps_go_through_the_quality_budget(tiny, tmp_path, variant):
    net, path, _ = tiny
    out = tmp_path / "small.onnx"
    report = export_velocity(net, out, data_shape=[2], call="x,s,t", **variant)
    cost = report.variant["vs_fp32"]
    s = fm_runtime.load(out)
    assert s.spec.flow_map and s.nfe() == 1 and cost["mean_dev"] < 0.02 * cost["scale"]
    z = noise()
    np.testing.assert_allclose(s.sample(noise=z), fm_runtime.load(path).sample(noise=z), atol=0.05)


def test_a_velocity_solver_named_without_steps_takes_the_contracts_steps_not_the_files_jump(tiny):
    """A flow map's default steps count jumps (1); `solver="midpoint"` alone is the contract's
    midpoint:8 on u(x, t, t), in sampling, likelihoods and the NFE a sampler reports."""
    _, path, _ = tiny
    s, z = fm_runtime.load(path), noise(8)
    np.testing.assert_array_equal(s.sample(noise=z, solver="midpoint"), s.sample(noise=z, solver="midpoint", steps=8))
    assert s.last_nfe == 16 and s.nfe(solver="rk4") == 32 and s.nfe() == 1 and s.nfe(3) == 3
    s.log_prob(z, solver="heun")
    assert s.last_nfe == 16
    with pytest.raises(fm_runtime.UsageError, match="velocity model"):
        fm_runtime.load().nfe(solver="jump")


def test_times_per_row_as_a_list_are_not_a_jump(tiny):
    """Only a tuple is (s, t): a list gives one time per row, as an array does (velocity files too)."""
    _, path, _ = tiny
    s, z = fm_runtime.load(path), noise(2)
    np.testing.assert_array_equal(s.velocity(z, [0.2, 0.6]), s.velocity(z, np.array([0.2, 0.6], np.float32)))
    assert not np.allclose(s.velocity(z, [0.2, 0.6]), s.velocity(z, (0.2, 0.6)))
    moons = fm_runtime.load()
    np.testing.assert_array_equal(moons.velocity(z, [0.1, 0.9]), moons.velocity(z, np.array([0.1, 0.9])))


def test_add_divergence_on_a_flow_map_file_gives_the_log_p_of_its_export(tiny, tmp_path):
    """fm-export --add-divergence (no torch) on a map file without its divergence graph: the graph
    of u(x, t, t), and the same log-likelihoods as the export's own."""
    import onnx

    from export.divergence import add_divergence
    _, path, _ = tiny
    bare = onnx.load(str(path))
    kept = [p for p in bare.metadata_props if p.key != "fm.divergence"]
    del bare.metadata_props[:]
    bare.metadata_props.extend(kept)
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(fm_runtime.ModelError, match="add-divergence"):
        fm_runtime.load(tmp_path / "bare.onnx").log_prob(noise(4))
    add_divergence(tmp_path / "bare.onnx", tmp_path / "div.onnx")
    x = noise(32, seed=9)
    np.testing.assert_allclose(fm_runtime.load(tmp_path / "div.onnx").log_prob(x), fm_runtime.load(path).log_prob(x),
                               atol=1e-5)
