"""Rebuild the moons model shipped inside fm_runtime (fm_runtime/assets/moons.onnx).

Reproducible: fm-train's default recipe (the tutorial's network size, 3 hidden layers of 64, with
SiLU; OT path with sigma_min = 0; batch 2048, Adam lr 3e-3 with cosine decay, EMA 0.999, 10 000
steps: see training/train.py) with a fixed seed, then the verified export. Run from the repo root:

    python scripts/build_default_model.py
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from training.checkpoint import save_checkpoint
from training.export_checkpoint import export_model
from training.train import fit

OUT = Path(__file__).resolve().parents[1] / "fm_runtime" / "assets" / "moons.onnx"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    model, config = fit("moons", steps=args.steps, seed=args.seed, progress=True)
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(Path(tmp) / "moons.ckpt", model, config)  # proves the config round-trips
    report = export_model(model, config, args.out)
    print(f"{report.path}: {report.size_bytes / 1024:.1f} KiB, final loss {config['final_loss']}, "
          f"max |onnx - torch| {report.max_abs_diff:.2e}")


if __name__ == "__main__":
    main()
