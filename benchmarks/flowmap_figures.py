"""One picture per model: the velocity model at its 10 evaluations beside its flow map at one jump,
from the same noise, sampled by the runtime from exported files (docs/flowmap-*.png).

    python benchmarks/flowmap_figures.py --ckpt-dir DIR [--out docs]

DIR holds NAME-teacher.ckpt and NAME-map.ckpt for NAME in moons, reach, digits-text and tts (as
benchmarks/bench_flowmap_training.py leaves them); a missing pair is skipped with a note.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import fm_runtime  # noqa: E402
from training.tasks import digits_text, reach, tts  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def export(ckpt: Path, out: Path) -> fm_runtime.Sampler:
    subprocess.run([sys.executable, "-c", "from training.launch import export_main; export_main()", str(ckpt),
                    "--out", str(out)], check=True, cwd=ROOT, capture_output=True)
    return fm_runtime.load(out)


def moons(axes, velocity, flow_map) -> None:
    z = np.random.default_rng(0).standard_normal((2000, 2)).astype(np.float32)
    for ax, x in zip(axes, (velocity.sample(noise=z, steps=10, solver="euler"), flow_map.sample(noise=z))):
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5)
        ax.set_aspect("equal")
        ax.set_xlim(-1.5, 2.5)
        ax.set_ylim(-1.2, 1.7)


def reach_paths(axes, velocity, flow_map) -> None:
    obs = reach.observations(1, np.random.default_rng(7))[0]
    cond = {"obs": np.repeat(obs[None], 32, 0)}
    for ax, paths in zip(axes, (velocity.sample(cond=cond, seed=0, steps=10, solver="euler"), flow_map.sample(cond=cond, seed=0))):
        reach.draw_paths(ax, obs, paths)


def digits(axes, velocity, flow_map, guidance: float = 3.0) -> None:
    for ax, s, kw in zip(axes, (velocity, flow_map), ({"steps": 10, "solver": "euler"}, {})):
        rows = []
        for word in digits_text.WORDS:
            text = digits_text.encode([word])[0]
            x = s.sample(n=8, seed=0, cond={"text": text}, guidance=guidance, **kw)
            rows.append(np.concatenate(list(x[:, 0]), 1))
        ax.imshow(np.concatenate(rows, 0), cmap="gray_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks(np.arange(10) * 8 + 3.5, digits_text.WORDS)


def mels(axes, velocity, flow_map, guidance: float = 2.0) -> None:
    req = tts.requests(1, np.random.default_rng(3), 12)
    cond = {"tokens": req["tokens"][0], "speaker": req["speaker"][0]}
    template = tts.clean(req["tokens"], req["speaker"])[0]
    lim = float(np.abs(template).max())
    for ax, s, kw in zip(axes, (velocity, flow_map), ({"steps": 10, "solver": "euler"}, {})):
        mel = s.sample(n=1, seed=0, cond=cond, guidance=guidance, **kw)[0]
        ax.imshow(np.concatenate([mel, template], 0), aspect="auto", origin="lower", cmap="magma", vmin=-lim, vmax=lim,
                  interpolation="nearest")
        ax.set_yticks([8, 24], ["sampled", "template"])


DRAW = {"moons": (moons, ""), "reach": (reach_paths, "32 paths for one observation; blue pass left, orange right"),
        "digits-text": (digits, "8 samples per prompt, guidance 3"), "tts": (mels, "one utterance of 12 tokens, guidance 2")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name, (draw, note) in DRAW.items():
            teacher, flow_map = args.ckpt_dir / f"{name}-teacher.ckpt", args.ckpt_dir / f"{name}-map.ckpt"
            if not (teacher.exists() and flow_map.exists()):
                print(f"{name}: no {teacher.name} and {flow_map.name} in {args.ckpt_dir}; skipped")
                continue
            v, m = export(teacher, Path(tmp) / f"{name}.onnx"), export(flow_map, Path(tmp) / f"{name}-map.onnx")
            fig, axes = plt.subplots(1, 2, figsize=(9, 4.2 if name != "digits-text" else 6.5), dpi=100)
            draw(axes, v, m)
            axes[0].set_title("velocity model, 10 Euler evaluations")
            axes[1].set_title("flow map, 1 jump (1 evaluation)")
            fig.suptitle(f"{name}" + (f": {note}" if note else ""))
            fig.tight_layout()
            path = args.out / f"flowmap-{name}.png"
            fig.savefig(path)
            plt.close(fig)
            print(f"{name} -> {path}")


if __name__ == "__main__":
    main()
