"""Log-likelihoods: the runtime (numpy + onnxruntime, divergence graph from the file) against the
torch reference with the exact autograd divergence, Hutchinson against exact, the same-pass
density of samples against the backward solve, and a known density."""
import numpy as np
import pytest

import fm_runtime
from fm_runtime.solve.likelihood import probe_vectors
from training.data import LOG_DENSITY, fresh_data
from training.sample import log_prob as torch_log_prob

from .conftest import run_cli

LOGP_ATOL = 1e-3    # nats; float32 graphs against float32 autograd, same solver and steps


@pytest.mark.parametrize("solver,steps", [("euler", 4), ("midpoint", 8), ("rk4", 4)])
def test_runtime_log_prob_matches_torch_exact(trained, solver, steps):
    x = fresh_data("moons", 300, 3)
    got = fm_runtime.load(trained.onnx).log_prob(x, steps, solver, divergence="exact")
    ref = torch_log_prob(trained.model, x, steps, solver)
    diff = float(np.abs(got - ref).max())
    print(f"log p runtime vs torch ({solver} x {steps}): max |diff| {diff:.2e} nats, mean log p {ref.mean():.3f}")
    assert got.shape == (300,) and got.dtype == np.float64
    assert diff <= LOGP_ATOL


def test_hutchinson_is_unbiased_around_exact(trained):
    s = fm_runtime.load(trained.onnx)
    x = fresh_data("moons", 200, 4)
    exact = s.log_prob(x, 8, divergence="exact")
    one = s.log_prob(x, 8, divergence="hutchinson", probes=1, probe_seed=1)
    many = s.log_prob(x, 8, divergence="hutchinson", probes=256, probe_seed=1)
    print(f"hutchinson - exact: 1 probe mean {np.mean(one - exact):+.3f} (mean abs {np.abs(one - exact).mean():.3f}), "
          f"256 probes mean {np.mean(many - exact):+.4f} (mean abs {np.abs(many - exact).mean():.4f})")
    assert not np.allclose(one, exact, atol=1e-3)            # it is an estimate...
    assert abs(np.mean(one - exact)) < 0.1                    # ...centred on the exact value
    assert np.abs(many - exact).mean() < 0.25 * np.abs(one - exact).mean()
    assert np.array_equal(s.log_prob(x[:50], 8, divergence="hutchinson", probes=1, probe_seed=1), one[:50])  # by row


def test_probe_vectors():
    e = probe_vectors(3, (2,), "exact")
    assert e.shape == (3, 2, 2) and np.array_equal(e[1], np.eye(2))
    h = probe_vectors(5, (1, 2, 2), "hutchinson", probes=3, seed=0, start=10)
    assert h.shape == (5, 3, 1, 2, 2) and set(np.unique(h)) == {-1.0, 1.0}
    assert np.array_equal(h[2], probe_vectors(1, (1, 2, 2), "hutchinson", 3, 0, start=12)[0])


def test_sample_logprob_agrees_with_the_backward_solve(trained):
    s = fm_runtime.load(trained.onnx)
    x, logp = s.sample(n=300, seed=2, steps=32, solver="rk4", return_logprob=True)
    # the same samples, up to float32 rounding (the divergence graph computes v in its own ops)
    assert np.abs(x - s.sample(n=300, seed=2, steps=32, solver="rk4")).max() < 1e-5
    back = s.log_prob(x, 32, "rk4")
    print(f"same-pass log p vs backward solve: max |diff| {np.abs(logp - back).max():.2e}")
    assert np.abs(logp - back).max() < 2e-2


def test_known_density_gaussian(tmp_path):
    """Trained on a correlated Gaussian, the model's mean log-likelihood of fresh data is the
    true mean log density (minus the entropy) within 0.05 nats per dimension. (800 steps, seeds 0
    and 1: -0.003 nats/dim, per-point mean |diff| 0.09-0.10, correlation 0.994-0.995; 1500 steps
    halve the per-point error at twice the time.)"""
    from training.export_checkpoint import export_model
    from training.train import fit

    model, config = fit("gaussian", steps=800, batch_size=512, lr=3e-3, lr_schedule="cosine", ema=0.99,
                        progress=False)
    export_model(model, config, tmp_path / "g.onnx")
    x = fresh_data("gaussian", 2000, 5)
    got = fm_runtime.load(tmp_path / "g.onnx").log_prob(x, 16)
    truth = LOG_DENSITY["gaussian"](x)
    per_dim = (got.mean() - truth.mean()) / 2
    print(f"gaussian: model {got.mean() / 2:.4f} nats/dim, truth {truth.mean() / 2:.4f} nats/dim "
          f"(diff {per_dim:+.4f}); per-point mean |diff| {np.abs(got - truth).mean():.3f} nats")
    assert abs(per_dim) < 0.05
    assert np.abs(got - truth).mean() < 0.15
    assert np.corrcoef(got, truth)[0, 1] > 0.98


def test_logprob_cli(trained, tmp_path):
    x = fresh_data("moons", 100, 6)
    np.save(tmp_path / "x.npy", x)
    p = run_cli("fm-run", "logprob", str(trained.onnx), str(tmp_path / "x.npy"), "--out", str(tmp_path / "lp.npy"))
    assert "nats/dim" in p.stderr and "bits/dim" in p.stderr
    got = np.load(tmp_path / "lp.npy")
    assert np.allclose(got, fm_runtime.load(trained.onnx).log_prob(x), atol=1e-9)
    p = run_cli("fm-run", "sample", str(trained.onnx), "-n", "50", "--seed", "1", "--out", str(tmp_path / "s.npy"),
                "--logprob", str(tmp_path / "slp.npy"))
    assert np.load(tmp_path / "slp.npy").shape == (50,) and "bits/dim" in p.stderr
    bad = run_cli("fm-run", "logprob", str(trained.onnx), str(tmp_path / "lp.npy"), check=False)
    assert bad.returncode == 4 and "expected [n, 2]" in bad.stderr


def test_files_without_divergence_graph_say_so(trained, tmp_path):
    from training.export_checkpoint import export_model
    export_model(trained.model, trained.config, tmp_path / "nodiv.onnx", divergence=False)
    export_model(trained.model, trained.config, tmp_path / "baked.onnx", bake="midpoint:4")
    x = fresh_data("moons", 10, 0)
    with pytest.raises(fm_runtime.ModelError, match="no divergence graph"):
        fm_runtime.load(tmp_path / "nodiv.onnx").log_prob(x)
    with pytest.raises(fm_runtime.ModelError, match="baked sampler"):
        fm_runtime.load(tmp_path / "baked.onnx").log_prob(x)
    np.save(tmp_path / "x.npy", x)
    p = run_cli("fm-run", "logprob", str(tmp_path / "nodiv.onnx"), str(tmp_path / "x.npy"), check=False)
    assert p.returncode == 2 and "fm-export --add-divergence" in p.stderr and "--logprob" not in p.stderr


def test_hutchinson_estimates_carry_a_calibrated_standard_error(tmp_path):
    # each probe integrates its own estimate of the log-likelihood; their spread over sqrt(K) is
    # the standard error (last_std_error): 0 for exact, NaN for one probe, and on the shipped model
    # against the exact value, errors / standard error have a spread of about 1
    s = fm_runtime.load()
    x = s.sample(200, seed=1)
    exact = s.log_prob(x, divergence="exact")
    assert np.array_equal(s.last_std_error, np.zeros(200))
    s.log_prob(x, divergence="hutchinson", probes=1)
    assert np.isnan(s.last_std_error).all()
    est = s.log_prob(x, divergence="hutchinson", probes=16)
    se = s.last_std_error
    z = (est - exact) / se
    assert se.shape == (200,) and (se > 0).all()
    assert 0.8 < np.std(z) < 1.25 and np.mean(np.abs(z) < 1.96) > 0.88, (np.std(z), np.mean(np.abs(z) < 1.96))
    np.save(tmp_path / "x.npy", x[:50])
    p = run_cli("fm-run", "logprob", str(tmp_path / "x.npy"), "--divergence", "hutchinson", "--probes", "8")
    assert "Hutchinson divergence, 8 probes (standard error per sample: median " in p.stderr, p.stderr
    p = run_cli("fm-run", "logprob", str(tmp_path / "x.npy"), "--divergence", "hutchinson")   # the default: 2 for 2-D
    assert "Hutchinson divergence, 2 probes (standard error per sample: median " in p.stderr, p.stderr


def test_default_probes_grow_with_the_dimension_within_a_budget():
    from fm_runtime.solve.likelihood import default_probes
    assert [default_probes(d) for d in (2, 17, 32, 33, 64, 256, 768, 12288)] == [2, 2, 2, 3, 4, 16, 16, 16]
