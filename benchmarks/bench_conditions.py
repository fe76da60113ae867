"""A conditioned TTS-style decoder (tests/cond_nets.py's 1-D conv estimator called (x, mask, mu,
t, spks), T symbolic) sampled by the runtime against torch eager on the same weights, same
process, one thread each: 10 Euler steps, batch 1 and 16, T = 64 and 512, without and with
classifier-free guidance (both halves in one call in both). Prints medians and the ratio. Then
what the condition stage costs once per request against what running it at every evaluation
(as a graph that unrolls the loop with the text encoder inside would) would cost. Last, the same
decoder baked (fm-export --bake euler:10 --bake-guidance) and run by plain onnxruntime in one
session.run, against the runtime's loop on the velocity file (both single-threaded).

    python benchmarks/bench_conditions.py
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fm_runtime  # noqa: E402
from export.onnx_export import export_velocity  # noqa: E402
from fm_runtime.tools.bench import machine, median_seconds  # noqa: E402
from tests.cond_nets import export_token_decoder, make_estimator  # noqa: E402

STEPS = 10


def torch_solve(net, z, mask, mu, spks, w):
    """The same Euler solve in torch eager: guidance as one batched call on 2B rows."""
    x, h = torch.from_numpy(z) * mask, 1.0 / STEPS
    both_mask, both_mu = torch.cat([mask, mask]), torch.cat([mu, torch.zeros_like(mu)])
    both_spks = torch.cat([spks, torch.zeros_like(spks)])
    with torch.no_grad():
        for i in range(STEPS):
            if w == 1.0:
                v = net(x, mask, mu, torch.full((len(x),), i * h), spks)
            else:
                out = net(torch.cat([x, x]), both_mask, both_mu, torch.full((2 * len(x),), i * h), both_spks)
                vc, vu = out[:len(x)], out[len(x):]
                v = vu + w * (vc - vu)
            x = x + h * v * mask
    return x.numpy()


ESTIMATOR = dict(data_shape="4,T", call="x,mask,mu,t,spks",
                 inputs={"mu": "float32[4,T]", "mask": "float32[1,T]:mask", "spks": "float32[3]"},
                 nulls={"mu": "zeros", "spks": "zeros"}, symbols={"T": {"min": 4, "max": 4096, "multiple_of": 4}})


def main() -> None:
    print(machine(1), flush=True)
    torch.set_num_threads(1)
    net = make_estimator()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "est.onnx"
        export_velocity(net, path, **ESTIMATOR)
        s = fm_runtime.load(path, threads=1)
        print("| T | batch | guidance | torch eager | runtime | runtime vs torch | max |diff| |")
        print("|---|---|---|---|---|---|---|")
        for T in (64, 512):
            for b in (1, 16):
                rng = np.random.default_rng(T + b)
                mu = rng.standard_normal((b, 4, T)).astype(np.float32)
                mask = np.ones((b, 1, T), np.float32)
                spks = rng.standard_normal((b, 3)).astype(np.float32)
                z = rng.standard_normal((b, 4, T)).astype(np.float32)
                cond = {"mu": mu, "mask": mask, "spks": spks}
                tm, tmu, tspks = map(torch.from_numpy, (mask, mu, spks))
                for w in (1.0, 2.0):
                    got = s.sample(noise=z, cond=cond, steps=STEPS, solver="euler", guidance=w)
                    diff = float(np.abs(got - torch_solve(net, z, tm, tmu, tspks, w)).max())
                    tt = median_seconds(lambda: torch_solve(net, z, tm, tmu, tspks, w), min_time=1.0)  # noqa: B023
                    tr = median_seconds(lambda: s.sample(noise=z, cond=cond, steps=STEPS, solver="euler",  # noqa: B023
                                                         guidance=w), min_time=1.0)
                    print(f"| {T} | {b} | {w:g} | {tt * 1e3:.2f} ms | {tr * 1e3:.2f} ms | {tt / tr:.2f}x | {diff:.1e} |")


def stage_saving() -> None:
    """The TTS-style file with its condition stage (token ids -> mu, mask; T = 2 L): one request's
    solve with the stage's outputs given, the stage alone, and the share of the request the stage
    takes once versus at each of the NFE evaluations."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "tts.onnx"
        export_token_decoder(path, t_max=4096, l_max=2048)
        s = fm_runtime.load(path, threads=1)
        print("\n| L (T = 2 L) | batch | stage once | solve (10 Euler, guidance 2) | stage at every evaluation would add |")
        print("|---|---|---|---|---|")
        for length, b in ((32, 1), (256, 1), (256, 16)):
            tokens = np.random.default_rng(length).integers(1, 8, (b, length))
            spks = np.zeros(3, np.float32)
            made, _ = s.through_stage({"tokens": tokens, "spks": spks})
            t_stage = median_seconds(lambda: s.through_stage({"tokens": tokens, "spks": spks}), min_time=0.5)  # noqa: B023
            t_solve = median_seconds(lambda: s.sample(cond=made, steps=STEPS, solver="euler", guidance=2.0,  # noqa: B023
                                                      seed=0), min_time=1.0)
            print(f"| {length} | {b} | {t_stage * 1e3:.3f} ms | {t_solve * 1e3:.2f} ms | "
                  f"{(STEPS - 1) * t_stage * 1e3:.2f} ms ({(STEPS - 1) * t_stage / t_solve:.0%}) |")


def baked_in_one_call() -> None:
    """The decoder baked with guidance inside (one graph: z, mu, mask, spks, guidance_scale -> x),
    run by plain onnxruntime, against the runtime's loop on the velocity file: same steps, same
    noise, guidance 2."""
    import onnxruntime as ort
    net = make_estimator()
    with tempfile.TemporaryDirectory() as d:
        export_velocity(net, Path(d) / "v.onnx", divergence=False, **ESTIMATOR)
        export_velocity(net, Path(d) / "b.onnx", bake=f"euler:{STEPS}", bake_guidance=True, **ESTIMATOR)
        loop = fm_runtime.load(Path(d) / "v.onnx", threads=1)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
        baked = ort.InferenceSession(str(Path(d) / "b.onnx"), opts, providers=["CPUExecutionProvider"])
        print(f"\n| T | batch | runtime loop ({STEPS} Euler, guidance 2) | baked, plain session.run | "
              "baked vs loop | max |diff| |")
        print("|---|---|---|---|---|---|")
        for T in (64, 512):
            for b in (1, 16):
                rng = np.random.default_rng(T + b)
                feed = {"z": rng.standard_normal((b, 4, T)).astype(np.float32),
                        "mu": rng.standard_normal((b, 4, T)).astype(np.float32), "mask": np.ones((b, 1, T), np.float32),
                        "spks": rng.standard_normal((b, 3)).astype(np.float32),
                        "guidance_scale": np.full(b, 2.0, np.float32)}
                cond = {k: feed[k] for k in ("mu", "mask", "spks")}
                want = loop.sample(noise=feed["z"], cond=cond, steps=STEPS, solver="euler", guidance=2.0)
                diff = float(np.abs(baked.run(["x"], feed)[0] - want).max())
                tl = median_seconds(lambda: loop.sample(noise=feed["z"], cond=cond, steps=STEPS,  # noqa: B023
                                                        solver="euler", guidance=2.0), min_time=1.0)
                tb = median_seconds(lambda: baked.run(["x"], feed), min_time=1.0)  # noqa: B023
                print(f"| {T} | {b} | {tl * 1e3:.2f} ms | {tb * 1e3:.2f} ms | {tl / tb:.2f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
    stage_saving()
    baked_in_one_call()
