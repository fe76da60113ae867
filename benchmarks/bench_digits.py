"""Class-conditional digits: train, export, sample with the runtime, and measure.

    python benchmarks/bench_digits.py                      # the default recipe, a few CPU minutes
    python benchmarks/bench_digits.py --steps 2000 --width 256 --out /tmp/digits

Trains a class-conditional velocity network on scikit-learn's 8x8 digits (the training split,
1437 images), exports it, samples 100 images per class with fm_runtime (numpy + onnxruntime) at
several guidance weights, and reports how often a classifier trained on the real training images
(logistic regression on the pixels) recognises the requested class, beside its accuracy on the
360 held-out real digits. Also: log-likelihood of the held-out digits in bits per dimension
(Hutchinson estimator), a memorisation check (distance from each generated image to its
nearest training image, beside the same for held-out real images), and a PNG grid with one row
per class.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import fm_runtime
from fm_runtime.tools.png import image_grid, write_png
from training.data import digit_images, pixels_to_unit


def unit_to_pixels(x: np.ndarray) -> np.ndarray:
    """Inverse of pixels_to_unit at u = 0.5: [-1, 1) back to 0..16."""
    return np.clip((x + 1.0) / 2.0 * 17.0 - 0.5, 0, 16)


def nearest(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = (a ** 2).sum(1)[:, None] - 2 * a @ b.T + (b ** 2).sum(1)[None]
    return np.sqrt(np.maximum(d2.min(1), 0))


def classifier():
    from sklearn.linear_model import LogisticRegression
    images, labels = digit_images("train")
    clf = LogisticRegression(max_iter=5000, C=0.1)
    clf.fit(images.reshape(len(images), -1), labels)
    return clf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--activation", default="silu")
    ap.add_argument("--net", choices=["mlp", "conv", "unet", "dit"], default="mlp",
                    help="unet: try --width 32 --steps 3000; dit: --width 64 --depth 4 --steps 4000 --lr 1e-3")
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--sample-steps", type=int, default=16)
    ap.add_argument("--out", default="digits-out")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from training.checkpoint import save_checkpoint
    from training.export_checkpoint import export_model
    from training.train import fit

    clock = time.process_time()
    model, config = fit("digits", steps=args.steps, batch_size=args.batch_size, lr=args.lr, width=args.width, depth=args.depth,
                        activation=args.activation, lr_schedule="cosine", ema=0.999, conditional=True,
                        progress=False, net=args.net)
    train_cpu = time.process_time() - clock
    save_checkpoint(out / "digits.ckpt", model, config)
    report = export_model(model, config, out / "digits.onnx", default_steps=args.sample_steps)
    print(f"trained {args.steps} steps ({args.net}, width {args.width}, depth {args.depth}, {args.activation}) in "
          f"{config['train_seconds']:.0f} s wall, {train_cpu:.0f} s CPU; exported {report.size_bytes / 1024:.0f} KiB "
          f"in {report.seconds:.1f} s; log-likelihoods: {report.divergence}")

    clf = classifier()
    test_images, test_labels = digit_images("test")
    real_acc = float(clf.score(test_images.reshape(len(test_images), -1), test_labels))
    print(f"classifier accuracy on held-out real digits: {real_acc:.3f}")

    s = fm_runtime.load(out / "digits.onnx")
    labels = np.repeat(np.arange(10), args.per_class)
    results = {"net": args.net, "train_seconds": config["train_seconds"], "train_cpu_seconds": train_cpu,
               "file_bytes": report.size_bytes, "export_seconds": report.seconds, "real_accuracy": real_acc,
               "guidance": {}, "ms_per_1000_images": {}}
    for w in (0.0, 1.0, 2.0, 3.0):
        clock = time.perf_counter()
        x = s.sample(noise=s.noise(len(labels), seed=1), steps=args.sample_steps, labels=labels, guidance=w)
        took = time.perf_counter() - clock
        pred = clf.predict(unit_to_pixels(x).reshape(len(x), -1))
        rate = float((pred == labels).mean())
        results["guidance"][w] = rate
        results["ms_per_1000_images"][w] = 1e6 * took / len(x)
        print(f"guidance {w:.1f}: classifier recognises the requested class in {rate:.3f} of "
              f"{len(x)} generated images ({took:.2f} s to sample, {args.sample_steps} midpoint steps)")
        if w == 1.0:
            train_px = digit_images("train")[0].reshape(-1, 64).astype(np.float64)
            gen_nn = nearest(unit_to_pixels(x).reshape(len(x), -1), train_px)
            real_nn = nearest(test_images.reshape(len(test_images), -1).astype(np.float64), train_px)
            results["nearest_train_distance"] = {"generated_median": float(np.median(gen_nn)),
                                                 "held_out_real_median": float(np.median(real_nn))}
            print(f"  distance to the nearest training image (pixel units, median): generated "
                  f"{np.median(gen_nn):.1f}, held-out real {np.median(real_nn):.1f} (much smaller for "
                  f"generated would mean copies of the training set)")
        if w == 2.0:
            keep = np.concatenate([np.arange(c * args.per_class, c * args.per_class + 10) for c in range(10)])
            write_png(out / "digits-grid.png", image_grid(x[keep], 10, s.spec.value_range))
    if not s.spec.divergence:
        print("(no divergence graph for this network: log-likelihood not measured)")
        (out / "results.json").write_text(json.dumps(results, indent=2))
        return
    rng = np.random.default_rng(0)
    held = pixels_to_unit(test_images, rng)[:, None].astype(np.float32)
    clock = time.perf_counter()
    logp = s.log_prob(held, steps=args.sample_steps, labels=test_labels, divergence="hutchinson", probes=4)
    d = held[0].size
    # density of the dequantised pixels in [-1, 1); per pixel level (17 levels of width 2/17):
    bpd = -(logp.mean() + d * np.log(2 / 17)) / d / np.log(2)
    results.update(test_logp_nats=float(logp.mean()), test_bits_per_dim_pixels=float(bpd))
    print(f"held-out digits, log p(x | class): {logp.mean():.2f} nats ({logp.mean() / d:.3f} nats/dim in [-1, 1) "
          f"units; {bpd:.3f} bits per 17-level pixel), Hutchinson with 4 probes, {time.perf_counter() - clock:.1f} s")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"grid (guidance 2, one row per class) -> {out / 'digits-grid.png'}")


if __name__ == "__main__":
    main()
