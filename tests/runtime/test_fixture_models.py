"""The committed fixtures exercise what the runtime does with the files the exporter writes, with
no torch at hand: each loads and passes its self-test, a baked graph gives what the solver gives
on its velocity file, the divergence graph's exact log-likelihood is what random probes estimate,
and a conditioned file's extra inputs, symbol bounds, mask and nulls act as declared."""
from __future__ import annotations

import numpy as np
import pytest

import fm_runtime
from fm_runtime.solve.solvers import SOLVERS

from .conftest import FIXTURES, TINY, TINY_BAKED, TINY_COND, read_metadata


@pytest.mark.parametrize("name, kwargs", [("tiny", {"steps": 2}), ("tiny_cond", {"steps": 2, "labels": 1}), ("tiny_baked", {})])
def test_exported_fixtures_pass_their_self_test_and_sample(name, kwargs):
    s = fm_runtime.load(FIXTURES / f"{name}.onnx")
    assert s.spec.selftest and s.spec.format_version >= 1 and s.spec.training["dataset"] == "moons"
    x = s.sample(16, seed=0, **kwargs)
    assert x.shape == (16, 2) and x.dtype == np.float32 and np.isfinite(x).all()
    np.testing.assert_array_equal(x, s.sample(16, seed=0, **kwargs))


def test_baked_graph_is_the_solve_of_its_velocity_file():
    baked, velocity = fm_runtime.load(TINY_BAKED), fm_runtime.load(TINY)
    assert baked.baked and baked.spec.baked == {"solver": "heun", "steps": 3, "nfe": 3 * SOLVERS["heun"].evals_per_step}
    z = np.random.default_rng(3).standard_normal((500, 2)).astype(np.float32)
    got = baked.sample(noise=z)
    assert baked.last_nfe == 6
    np.testing.assert_allclose(got, velocity.sample(noise=z, steps=3, solver="heun"), atol=1e-4)
    assert np.abs(got - velocity.sample(noise=z, steps=3, solver="euler")).max() > 1e-3   # the solver matters
    with pytest.raises(fm_runtime.UsageError):
        baked.sample(noise=z, steps=5)


def test_exact_divergence_agrees_with_the_probe_estimate():
    s = fm_runtime.load(TINY)
    assert "onnx_base64" in s.spec.divergence
    x = s.sample(200, seed=1)
    exact = s.run(noise=None, n=200, seed=1, logprob=True, divergence="exact")
    assert np.array_equal(exact.samples, x) and exact.logprob.shape == (200,) and np.isfinite(exact.logprob).all()
    probed = s.run(n=200, seed=1, logprob=True, divergence="hutchinson", probes=512)
    assert np.abs(probed.logprob - exact.logprob).mean() < 0.05
    assert np.abs(probed.logprob - exact.logprob).max() > 0           # a different estimator, not a copy


def test_labels_change_a_class_conditional_model_and_are_checked():
    s = fm_runtime.load(TINY_COND)
    assert s.spec.num_classes == 2 and read_metadata(TINY_COND)["fm.num_classes"] == "2"
    a, b = s.sample(64, seed=0, labels=0), s.sample(64, seed=0, labels=1)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(s.sample(64, seed=0, labels=np.zeros(64, np.int64)), a)
    assert not np.array_equal(s.sample(64, seed=0, labels=1, guidance=3.0), b)
    unlabelled = s.sample(64, seed=0, labels=2)            # 2 = C: "no label"
    assert not np.array_equal(unlabelled, a) and not np.array_equal(unlabelled, b)
    with pytest.raises(fm_runtime.UsageError, match="out of range"):
        s.sample(4, labels=3)


def _est_request(T: int, n: int = 3):
    rng = np.random.default_rng(T)
    mask = np.zeros((n, 1, T), np.float32)
    for r, v in enumerate([T, T - 3, max(1, T // 2)][:n]):
        mask[r, :, :v] = 1.0
    mu = rng.standard_normal((n, 4, T)).astype(np.float32) * mask
    return rng.standard_normal((n, 4, T)).astype(np.float32), {"mu": mu, "mask": mask,
                                                               "spks": rng.standard_normal(3).astype(np.float32)}


def test_conditioned_file_declares_its_inputs_and_symbols():
    s = fm_runtime.load(FIXTURES / "est.onnx")
    assert s.spec.data_shape == (4, "T") and s.spec.symbols["T"] == {"min": 4, "max": 64, "multiple_of": 4}
    assert [(i["name"], i["role"]) for i in s.spec.inputs] == [("mu", "condition"), ("mask", "mask"), ("spks", "condition")]
    z, cond = _est_request(8)
    x = s.sample(noise=z, cond=cond, steps=4)
    assert x.shape == (3, 4, 8) and np.isfinite(x).all()
    # the network masks its input: padding past a row's valid length is zero in, zero out
    assert np.all(x[1, :, 5:] == 0) and np.any(x[1, :, :5] != 0)
    # a row alone gives what it gives in the batch
    alone = s.sample(noise=z[1:2], cond={"mu": cond["mu"][1:2], "mask": cond["mask"][1:2], "spks": cond["spks"]}, steps=4)
    np.testing.assert_allclose(alone[0], x[1], atol=1e-5)
    # guidance replaces the conditions by their nulls (zeros) for the unconditioned pass
    assert not np.allclose(s.sample(noise=z, cond=cond, steps=4, guidance=2.0), x, atol=1e-4)
    for T in (6, 68, 2):       # not a multiple of 4, past the max, under the min
        z, cond = _est_request(T)
        with pytest.raises(fm_runtime.FmError, match="T"):
            s.sample(noise=z, cond=cond, steps=2)
    z, cond = _est_request(8)
    with pytest.raises(fm_runtime.UsageError, match="mu"):
        s.sample(noise=z, cond={"mask": cond["mask"], "spks": cond["spks"]}, steps=2)


def test_a_distilled_flow_map_jumps_in_one_evaluation_where_its_teacher_needs_many():
    """tiny_map.onnx, distilled from tiny.onnx's network: one jump lands where the teacher's
    16-evaluation solve does, far nearer than the teacher's own single Euler step; velocity
    solvers and log-likelihoods run on its u(x, t, t)."""
    from fm_runtime.solve.metrics import energy_distance
    flow_map, teacher = fm_runtime.load(FIXTURES / "tiny_map.onnx"), fm_runtime.load(TINY)
    assert flow_map.spec.flow_map and flow_map.spec.format_version == 5 and flow_map.nfe() == 1
    z = np.random.default_rng(5).standard_normal((2000, 2)).astype(np.float32)
    reference = teacher.sample(noise=z, steps=8, solver="midpoint")
    jumped = flow_map.sample(noise=z)
    assert flow_map.last_nfe == 1
    euler = teacher.sample(noise=z, steps=1, solver="euler")
    assert energy_distance(jumped, reference) < 0.1 * energy_distance(euler, reference)
    assert np.abs(flow_map.sample(noise=z, steps=2) - reference).mean() < 0.1
    ode = flow_map.sample(noise=z, steps=8, solver="midpoint")       # u(x, t, t): the teacher's field, learnt
    assert np.abs(ode - reference).mean() < 0.1
    lp_map, lp_teacher = flow_map.log_prob(reference[:200]), teacher.log_prob(reference[:200])
    assert flow_map.last_nfe == 16 and abs(lp_map.mean() - lp_teacher.mean()) < 0.1
    with pytest.raises(fm_runtime.UsageError, match="jumps with a flow map"):
        teacher.sample(noise=z, solver="jump")
