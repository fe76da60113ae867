"""Image models: digits through training, export and the runtime, PNG grids without heavy
dependencies."""
import struct
import zlib

import numpy as np
import pytest

import fm_runtime
from fm_runtime.tools.png import auto_scale, encode_png, image_grid
from training.sample import sample as torch_sample

from .conftest import run_cli


def decode_png(data: bytes) -> np.ndarray:
    """Just enough PNG reading to check what encode_png writes (8-bit grey or RGB, filter 0)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0] == zlib.crc32(kind + body)
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    w, h, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    channels = {0: 1, 2: 3}[colour]
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(h, 1 + w * channels)
    assert depth == 8 and (raw[:, 0] == 0).all()
    return raw[:, 1:].reshape(h, w) if channels == 1 else raw[:, 1:].reshape(h, w, 3)


@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 3)])
def test_png_round_trip(shape):
    pixels = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    assert np.array_equal(decode_png(encode_png(pixels)), pixels)


def test_image_grid_layout():
    imgs = np.stack([np.full((1, 2, 2), v, np.float32) for v in (-1.0, 0.0, 1.0)])
    g = image_grid(imgs, cols=2, value_range=(-1, 1), scale=1, pad=1)
    assert g.shape == (1 + 2 * 3, 1 + 2 * 3)                 # 2 rows x 2 columns of 2x2 plus padding
    assert g[1, 1] == 0 and g[1, 4] == 128 and g[4, 1] == 255 and g[4, 4] == 0 and g[0].max() == 0


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from training.checkpoint import save_checkpoint
    from training.export_checkpoint import export_model
    from training.train import fit

    d = tmp_path_factory.mktemp("digits")
    # parity, shapes and layout only (bench_digits measures quality): a few steps are enough
    model, config = fit("digits", steps=60, batch_size=128, lr=2e-3, width=128, activation="silu",
                        conditional=True, progress=False)
    save_checkpoint(d / "digits.ckpt", model, config)
    export_model(model, config, d / "digits.onnx")
    return model, d / "digits.onnx"


def test_digit_model_round_trip(digits, tmp_path):
    model, path = digits
    s = fm_runtime.load(path)
    assert s.data_shape == (1, 8, 8) and s.num_classes == 10 and s.spec.value_range == (-1.0, 1.0)
    labels = np.arange(20) % 10
    z = s.noise(20, seed=0)
    x = s.sample(noise=z, labels=labels, guidance=2.0)
    assert x.shape == (20, 1, 8, 8) and x.dtype == np.float32 and np.isfinite(x).all()
    ref = torch_sample(model, z, 8, "midpoint", labels=labels, guidance=2.0)
    assert np.abs(x - ref).max() <= 1e-4
    logp = s.log_prob(x, labels=labels, divergence="hutchinson", probes=2)
    assert logp.shape == (20,) and np.isfinite(logp).all()
    # with no probes asked for: one per 16 dimensions (4 for 64), each estimate with its standard error
    default = s.log_prob(x[:4], labels=labels[:4])
    assert np.array_equal(default, s.log_prob(x[:4], labels=labels[:4], divergence="hutchinson", probes=4))
    assert np.isfinite(s.last_std_error).all() and (s.last_std_error > 0).all()


def test_an_image_batch_is_split_over_the_workers(digits, monkeypatch):
    """A 64-value row is work enough: 16 rows on 2 workers run as 2 calls of 8 (a 2-D row needs
    128 rows a worker), sampling and likelihoods alike, with the same numbers as one call."""
    _, path = digits
    s = fm_runtime.load(path, threads=2)
    rows, solve = [], s.backend.solve
    s.backend.solve = lambda x0, *a, **k: rows.append(len(x0)) or solve(x0, *a, **k)
    z = s.noise(16, seed=0)
    x = s.sample(noise=z, labels=3)
    assert rows == [8, 8]
    assert np.array_equal(x, fm_runtime.load(path, threads=1).sample(noise=z, labels=3))
    from fm_runtime.engine import likelihoods
    rows.clear()
    solve_lp = likelihoods.solve_with_divergence
    monkeypatch.setattr(likelihoods, "solve_with_divergence", lambda jvp, x0, *a: rows.append(len(x0)) or solve_lp(jvp, x0, *a))
    s.log_prob(x, labels=3, probes=2)
    assert rows == [8, 8]


def test_grid_cli(digits, trained, tmp_path):
    _, path = digits
    p = run_cli("fm-run", "sample", str(path), "--seed", "0", "--grid", str(tmp_path / "g.png"),
                "--grid-cols", "4", "--guidance", "2")
    assert "grid of 40 images (4 per row, labelled by class)" in p.stderr
    img = decode_png((tmp_path / "g.png").read_bytes())
    # one row per class, 4 columns of 8x8 digits enlarged 16x (the most auto_scale gives), a
    # margin on the left with each row's class drawn in it
    k = auto_scale(4, 8)
    cells = 1 + 4 * (8 * k + 1)
    assert k == 16 and img.shape[0] == 1 + 10 * (8 * k + 1) and img.shape[1] > cells
    s = fm_runtime.load(path)
    x = s.sample(40, seed=0, labels=np.repeat(np.arange(10), 4), guidance=2.0)
    want = image_grid(x, 4, (-1.0, 1.0), row_labels=list(range(10)))
    assert np.array_equal(img, want) and np.array_equal(img[:, -cells:], image_grid(x, 4, (-1.0, 1.0), k))
    margin = img[:, :img.shape[1] - cells]
    row = lambda r: margin[1 + r * (8 * k + 1):(r + 1) * (8 * k + 1)]
    assert all(row(r).max() == 255 for r in range(10)) and not np.array_equal(row(1), row(7))   # digits drawn
    run_cli("fm-run", "sample", str(path), "--seed", "0", "--grid", str(tmp_path / "s.png"), "--grid-cols", "4",
            "--grid-scale", "2", "--class", "3", "-n", "8")
    small = decode_png((tmp_path / "s.png").read_bytes())
    assert small.shape[0] == 1 + 2 * (8 * 2 + 1) and small.shape[1] > 1 + 4 * (8 * 2 + 1)      # --class 3: both rows "3"
    bad = run_cli("fm-run", "sample", str(trained.onnx), "--grid", str(tmp_path / "m.png"), check=False)
    assert bad.returncode == 2 and "needs image data" in bad.stderr and not (tmp_path / "m.png").exists()


def test_conv_network_round_trip(tmp_path):
    """The tiny conv net trains, exports (with the divergence graph differentiated from its ONNX
    graph) and samples and takes log-likelihoods in the runtime like torch."""
    from training.checkpoint import load_checkpoint, save_checkpoint
    from training.export_checkpoint import export_model
    from training.sample import log_prob as torch_log_prob
    from training.train import fit

    model, config = fit("digits", steps=20, batch_size=64, net="conv", width=16, depth=2, conditional=True,
                        ema=0.0, progress=False)
    save_checkpoint(tmp_path / "c.ckpt", model, config)
    model, config = load_checkpoint(tmp_path / "c.ckpt")
    export_model(model, config, tmp_path / "c.onnx")
    s = fm_runtime.load(tmp_path / "c.onnx")
    z, labels = s.noise(8, seed=1), np.arange(8)
    x = s.sample(noise=z, labels=labels, guidance=1.5)
    assert x.shape == (8, 1, 8, 8)
    assert np.abs(x - torch_sample(model, z, 8, "midpoint", labels=labels, guidance=1.5)).max() <= 1e-4
    got = s.log_prob(x[:4], labels=labels[:4], divergence="exact", steps=4)
    want = torch_log_prob(model, x[:4], steps=4, labels=labels[:4])
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
