"""Training side: datasets, the OT path, determinism and checkpoints."""
import time

import numpy as np
import pytest
import torch

from training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from training.data import DATASETS, sample_data
from training.paths import OTPath
from training.train import fit

from .conftest import QUICK


@pytest.mark.parametrize("name", list(DATASETS))
def test_datasets_are_seeded_float32(name):
    a = sample_data(name, 1001, 5)
    shape = (1, 8, 8) if name == "digits" else (2,)
    assert a.shape == (1001, *shape) and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.array_equal(a, sample_data(name, 1001, 5))
    assert not np.array_equal(a, sample_data(name, 1001, 6))
    assert 0.3 < a.std() < 5


def test_dataset_shapes_match_their_definitions():
    g = sample_data("8gaussians", 4000, 0) * 1.414 / 4      # back to unit-circle centres
    angles = np.round(np.arctan2(g[:, 1], g[:, 0]) / (np.pi / 4)) % 8
    assert len(np.unique(angles)) == 8
    c = sample_data("checkerboard", 4000, 0) / 2              # squares of side 1 in [-2, 2)^2
    assert np.all(np.abs(c) <= 2)
    assert np.all((np.floor(c[:, 0]) + np.floor(c[:, 1])) % 2 == 0)   # only the "black" squares
    m = sample_data("moons", 4000, 0)
    assert -1.5 < m[:, 0].min() and m[:, 0].max() < 2.5 and -0.8 < m[:, 1].min() and m[:, 1].max() < 1.3
    with pytest.raises(ValueError, match="unknown dataset"):
        sample_data("mnist", 10)


def test_moons_are_sklearns_points_without_importing_sklearn():
    """training.data.moons reimplements make_moons (sklearn costs every fm-train start 1.6 s):
    the same points and labels, to the bit, for odd, even and tiny sizes."""
    from sklearn.datasets import make_moons

    from training.data import _sk_seed, moons
    for n, seed in [(1, 0), (2, 1), (7, 2), (256, 3), (1001, 4)]:
        x, y = moons(n, np.random.default_rng(seed))
        want_x, want_y = make_moons(n, noise=0.05, random_state=_sk_seed(np.random.default_rng(seed)))
        assert np.array_equal(x, want_x) and np.array_equal(y, want_y) and y.dtype == want_y.dtype


@pytest.mark.parametrize("sigma_min", [0.0, 0.1])
def test_ot_path_ends_and_velocity(sigma_min):
    path = OTPath(sigma_min)
    x0, x1 = torch.randn(50, 2), torch.randn(50, 2)
    ones, zeros = torch.ones(50), torch.zeros(50)
    assert torch.allclose(path.sample_xt(x0, x1, zeros), x0)
    assert torch.allclose(path.sample_xt(x0, x1, ones), sigma_min * x0 + x1)
    t, h = torch.full((50,), 0.3, dtype=torch.float64), 1e-6
    x0, x1 = x0.double(), x1.double()
    fd = (path.sample_xt(x0, x1, t + h) - path.sample_xt(x0, x1, t - h)) / (2 * h)
    assert torch.allclose(fd, path.target(x0, x1, t), atol=1e-6)


def test_training_is_deterministic_for_a_seed():
    a, ca = fit("moons", steps=30, **QUICK, seed=3, progress=False)
    b, cb = fit("moons", steps=30, **QUICK, seed=3, progress=False)
    c, _ = fit("moons", steps=30, **QUICK, seed=4, progress=False)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert ca["final_loss"] == cb["final_loss"]


def test_training_reduces_the_loss():
    _, short = fit("moons", steps=20, **QUICK, seed=0, progress=False)
    _, longer = fit("moons", steps=400, **QUICK, lr=5e-3, seed=0, progress=False)
    assert longer["final_loss"] < short["final_loss"]


def test_checkpoint_round_trip(tmp_path):
    model, config = fit("8gaussians", steps=5, **QUICK, width=16, depth=2, activation="silu", progress=False)
    save_checkpoint(tmp_path / "m.ckpt", model, config)
    loaded, cfg = load_checkpoint(tmp_path / "m.ckpt")
    assert cfg == config
    x, t = torch.randn(4, 2), torch.rand(4)
    assert torch.equal(loaded(x, t), model(x, t))


def test_bad_checkpoints_are_refused(tmp_path):
    model, config = fit("moons", steps=2, **QUICK, progress=False)
    cases = {
        "junk.ckpt": lambda p: p.write_bytes(b"not a checkpoint"),
        "other.ckpt": lambda p: torch.save({"weights": 1}, p),
        "nokey.ckpt": lambda p: save_checkpoint(p, model, {k: v for k, v in config.items() if k != "path"}),
        "badtype.ckpt": lambda p: save_checkpoint(p, model, {**config, "steps": "many"}),
        "mismatch.ckpt": lambda p: save_checkpoint(p, model, {**config, "architecture": {**config["architecture"], "width": 8}}),
        "deep.ckpt": lambda p: save_checkpoint(p, model, {**config, "architecture": {**config["architecture"], "depth": 10**7}}),
        "huge.ckpt": lambda p: save_checkpoint(p, model, {**config, "data_shape": [10**6, 10**6]}),
    }
    words = {"junk.ckpt": "not a readable checkpoint", "other.ckpt": "not an fm-train checkpoint",
             "nokey.ckpt": "missing 'path'", "badtype.ckpt": "'steps' has the wrong type",
             "mismatch.ckpt": "does not match its architecture", "deep.ckpt": "'depth' is 10000000: not a size",
             "huge.ckpt": "data_shape .* is not the shape of one sample"}
    for name, make in cases.items():
        make(tmp_path / name)
        start = time.perf_counter()
        with pytest.raises(CheckpointError, match=words[name]):
            load_checkpoint(tmp_path / name)
        assert time.perf_counter() - start < 5         # refused before building (depth 10^7 took minutes)


@pytest.mark.parametrize("option, words", [(("--ema", "nan"), "finite"), (("--lr", "inf"), "finite"), (("--lr", "nan"), "finite"),
                                           (("--grad-clip", "inf"), "finite"), (("--seed", "-1"), "range"),
                                           (("--seed", "1" + "0" * 29), "range")])
def test_options_that_would_poison_the_weights_are_refused_before_training(tmp_path, option, words):
    from .conftest import run_cli
    p = run_cli("fm-train", "fit", "--data", "moons", "--steps", "5", *option, "--out", str(tmp_path / "m.ckpt"),
                check=False)
    assert p.returncode == 2 and words in p.stderr and option[0] in p.stderr and not (tmp_path / "m.ckpt").exists()


def test_a_loss_that_turns_nan_stops_training_and_writes_nothing(tmp_path):
    """A learning rate that diverges: exit 5 (NumericalError) naming the step, no checkpoint of NaN
    weights written."""
    from fm_runtime.errors import NumericalError
    with pytest.raises(NumericalError, match="NaN or infinite; nothing written"):
        fit("moons", steps=120, batch_size=64, lr=1e6, ema=0.0, out=tmp_path / "m.ckpt", progress=False)
    assert not (tmp_path / "m.ckpt").exists()


def test_no_trainer_can_write_a_checkpoint_of_nan_weights(tmp_path):
    """save_checkpoint, which every trainer (fit, the tasks, distill, MeanFlow, reflow) writes through,
    refuses weights that are not finite and leaves no file."""
    from fm_runtime.errors import NumericalError
    model, config = fit("moons", steps=3, batch_size=64, progress=False)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(NumericalError, match="NaN or infinite; nothing written"):
        save_checkpoint(tmp_path / "m.ckpt", model, config)
    assert not (tmp_path / "m.ckpt").exists()
