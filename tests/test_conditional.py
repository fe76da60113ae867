"""Class conditioning and classifier-free guidance: training with labels, the exported label
input, parity with torch for conditional and guided sampling, w = 0 as the unconditional model,
and conditional samples landing in the requested mode."""

import numpy as np
import pytest

import fm_runtime
from fm_runtime.errors import UsageError
from training.data import NUM_CLASSES
from training.sample import sample as torch_sample

from .conftest import run_cli

PARITY_ATOL = 1e-4
_S = 1.0 / np.sqrt(2)
CENTRES_8G = 4.0 / 1.414 * np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (_S, _S), (_S, -_S), (-_S, _S), (-_S, -_S)])


def moon_of(x: np.ndarray) -> np.ndarray:
    """Which half of the moons a point lies on: 0 (upper arc, centre (0, 0)) or 1 (lower arc,
    centre (1, 0.5)), by the distance to each unit arc."""
    def to_arc(p, centre, upper):
        q = p - centre
        ang = np.arctan2(q[:, 1], q[:, 0])
        ang = np.clip(ang, 0, np.pi) if upper else np.clip(ang, -np.pi, 0)
        return np.hypot(q[:, 0] - np.cos(ang), q[:, 1] - np.sin(ang))
    return (to_arc(x, np.array([1.0, 0.5]), False) < to_arc(x, np.array([0.0, 0.0]), True)).astype(int)


def test_the_file_declares_its_classes(conditional):
    s = fm_runtime.load(conditional["moons"][1])
    assert s.spec.format_version == 2 and s.num_classes == 2 and s.spec.null_class == 2
    types = {i.name: i.type for i in s.session.get_inputs()}
    assert types == {"x": "tensor(float)", "t": "tensor(float)", "y": "tensor(int64)"}
    assert fm_runtime.load(conditional["8gaussians"][1]).num_classes == NUM_CLASSES["8gaussians"] == 8


@pytest.mark.parametrize("label,guidance", [(0, 0.0), (0, 1.0), (0, 2.5), (1, 0.0), (1, 1.0), (1, 2.5),
                                            (None, 1.0)])
def test_conditional_and_guided_parity_with_torch(conditional, label, guidance):
    model, path, _ = conditional["moons"]
    z = np.random.default_rng(1).standard_normal((512, 2)).astype(np.float32)
    labels = None if label is None else np.full(512, label)
    got = fm_runtime.load(path).sample(noise=z, steps=8, labels=labels, guidance=guidance)
    ref = torch_sample(model, z, 8, "midpoint", labels=labels, guidance=guidance)
    assert np.abs(got - ref).max() <= PARITY_ATOL


def test_mixed_labels_and_tiles_match_torch(conditional):
    """Per-sample labels (with "no label" rows) through the tiled, multi-threaded loop."""
    model, path, _ = conditional["8gaussians"]
    z = np.random.default_rng(2).standard_normal((5000, 2)).astype(np.float32)
    labels = np.random.default_rng(3).integers(0, 9, 5000)
    got = fm_runtime.load(path, tile=512, threads=2).sample(noise=z, labels=labels, guidance=1.5)
    ref = torch_sample(model, z, 8, "midpoint", labels=labels, guidance=1.5)
    assert np.abs(got - ref).max() <= PARITY_ATOL


def test_guidance_zero_is_the_unconditional_model(conditional):
    s = fm_runtime.load(conditional["moons"][1])
    z = s.noise(1000, seed=4)
    uncond = s.sample(noise=z)                                  # the "no label" id for every row
    for label in (0, 1):
        assert np.abs(s.sample(noise=z, labels=label, guidance=0.0) - uncond).max() < 1e-5
    assert np.abs(s.sample(noise=z, labels=1) - uncond).max() > 0.1   # the label does something


def test_guided_velocity_is_the_cfg_combination(conditional):
    s = fm_runtime.load(conditional["moons"][1])
    x = np.random.default_rng(5).standard_normal((64, 2)).astype(np.float32)
    vc, vu = s.velocity(x, 0.3, labels=1), s.velocity(x, 0.3, labels=2)
    assert np.allclose(s.velocity(x, 0.3, labels=1, guidance=3.0), vu + 3.0 * (vc - vu), atol=1e-5)


@pytest.mark.parametrize("name,guidance,min_rate", [("moons", 1.0, 0.9), ("moons", 2.0, 0.95),
                                                    ("8gaussians", 1.0, 0.85), ("8gaussians", 2.0, 0.9)])
def test_conditional_samples_land_in_the_requested_mode(conditional, name, guidance, min_rate):
    s = fm_runtime.load(conditional[name][1])
    k = s.num_classes
    labels = np.repeat(np.arange(k), 2000 // k)
    x = s.sample(noise=s.noise(len(labels), seed=6), labels=labels, guidance=guidance)
    if name == "moons":
        got = moon_of(x)
    else:
        got = np.argmin(((x[:, None, :] - CENTRES_8G[None]) ** 2).sum(-1), 1)
    rate = float((got == labels).mean())
    print(f"{name}: {rate:.3f} of conditional samples in the requested mode at guidance {guidance} "
          f"(chance {1 / k:.3f})")
    assert rate >= min_rate


def test_label_errors(conditional, trained):
    s = fm_runtime.load(conditional["moons"][1])
    with pytest.raises(UsageError, match="out of range"):
        s.sample(5, seed=0, labels=3)
    with pytest.raises(UsageError, match="expected \\[5\\]"):
        s.sample(5, seed=0, labels=[0, 1])
    with pytest.raises(UsageError, match="not class-conditional"):
        fm_runtime.load(trained.onnx).sample(5, seed=0, labels=0)
    with pytest.raises(UsageError, match="guidance"):
        s.sample(5, seed=0, labels=0, guidance=float("nan"))
    with pytest.raises(UsageError, match="needs labels"):
        s.sample(5, seed=0, guidance=2.0)


def test_conditional_models_are_not_baked(conditional, tmp_path):
    from export.onnx_export import ExportError
    from training.export_checkpoint import export_checkpoint
    with pytest.raises(ExportError, match="class-conditional"):
        export_checkpoint(conditional["moons"][2], tmp_path / "b.onnx", bake="midpoint:4")
    assert not (tmp_path / "b.onnx").exists()


def test_cli_class_labels_and_guidance(conditional, trained, tmp_path):
    path = str(conditional["moons"][1])
    p = run_cli("fm-run", "sample", path, "-n", "400", "--seed", "0", "--class", "1", "--guidance", "2",
                "--out", str(tmp_path / "a.npy"))
    assert "class 1, guidance 2" in p.stderr
    s = fm_runtime.load(path)
    assert np.array_equal(np.load(tmp_path / "a.npy"), s.sample(400, seed=0, labels=1, guidance=2.0))
    labels = np.arange(400) % 2
    np.save(tmp_path / "y.npy", labels)
    run_cli("fm-run", "sample", path, "-n", "400", "--seed", "0", "--labels", str(tmp_path / "y.npy"),
            "--out", str(tmp_path / "b.npy"))
    assert np.array_equal(np.load(tmp_path / "b.npy"), s.sample(400, seed=0, labels=labels))
    info = run_cli("fm-run", "info", path).stdout
    assert "2 (labels 0..1; 2 = no label" in info
    for args, code, text in [(["--class", "5"], 2, "out of range"), (["--guidance", "2"], 2, "needs --class"),
                             (["--class", "0", "--labels", str(tmp_path / "y.npy")], 2, "not both")]:
        bad = run_cli("fm-run", "sample", path, "-n", "10", *args, check=False)
        assert bad.returncode == code and text in bad.stderr, bad.stderr
    bad = run_cli("fm-run", "sample", str(trained.onnx), "-n", "10", "--class", "0", check=False)
    assert bad.returncode == 2 and "not class-conditional" in bad.stderr
    run_cli("fm-train", "sample", str(conditional["moons"][2]), "-n", "400", "--seed", "0", "--class", "1",
            "--guidance", "2", "--out", str(tmp_path / "t.npy"))
    assert np.abs(np.load(tmp_path / "t.npy") - np.load(tmp_path / "a.npy")).max() <= PARITY_ATOL


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_conditional_log_prob_matches_torch(conditional, guidance):
    from training.data import fresh_data
    from training.sample import log_prob as torch_log_prob

    model, path, _ = conditional["moons"]
    x = fresh_data("moons", 200, 7)
    labels = np.arange(200) % 2
    got = fm_runtime.load(path).log_prob(x, 8, labels=labels, guidance=guidance)
    ref = torch_log_prob(model, x, 8, labels=labels, guidance=guidance)
    assert np.abs(got - ref).max() < 1e-3
