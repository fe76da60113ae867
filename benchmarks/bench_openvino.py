"""OpenVINO against onnxruntime on the same files: should the runtime have an OpenVINO backend?

    pip install openvino          # not a dependency of this project
    python benchmarks/bench_openvino.py            # about two minutes on 2 cores

For the U-Net-style conv net and the digits DiT of bench_networks.py (random weights, perturbed),
exported once as float32 and once as the int8 variant (`fm-export --quantize int8`), at batch 1
and 64 and at 1 and 2 threads, interleaved in one process:
- onnxruntime float32, as the runtime runs it (one intra-op thread per call, rows in tiles over
  `threads` workers: `fm_runtime.load(threads=...)`; the solve is `Sampler.sample`);
- onnxruntime int8, the same way;
- OpenVINO float32 and bf16 (INFERENCE_PRECISION_HINT; bf16 runs on AVX512-BF16 or AMX, else
  it is emulated), LATENCY hint, INFERENCE_NUM_THREADS as given, the runtime's midpoint solver
  around it;
Each row: median seconds of one evaluation and of an 8-step midpoint solve, the speed-up over
onnxruntime float32, and the largest deviation of an evaluation and of the solve's samples from
onnxruntime float32. The project's rule: a backend is kept only if it leads onnxruntime float32
by 1.2x or more on a class of nets; a reduced-precision mode only where the int8 variant, which
the runtime already runs, does not do as well.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_networks import networks  # noqa: E402

import fm_runtime  # noqa: E402
from export import export_velocity  # noqa: E402
from fm_runtime.solve.solvers import integrate  # noqa: E402
from fm_runtime.tools.bench import machine, median_seconds  # noqa: E402

STEPS = 8


def solve(velocity, z: np.ndarray) -> np.ndarray:
    """The runtime's 8-step midpoint solve around any velocity function v(x, t[B])."""
    return integrate(lambda x, t: velocity(x, np.full(len(x), t, np.float32)), z, STEPS, "midpoint").x


def openvino_velocity(core, path: Path, threads: int, precision: str):
    """v(x, t) through an OpenVINO compiled model: one infer request per call site (this
    benchmark calls from one thread)."""
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {
        "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    out = compiled.outputs[0]
    return lambda x, t: request.infer({"x": x, "t": t})[out]


def tiled(sampler):
    """v(x, t) as the runtime evaluates a batch: rows in tiles over its worker threads."""
    def velocity(x, t):
        bounds = sampler.tiler.bounds(len(x), None, sampler.spec.dim)
        return np.concatenate(sampler.tiler.map(lambda ab: sampler.velocity(x[ab[0]:ab[1]], t[ab[0]:ab[1]]), bounds))
    return velocity


def rows_for(name: str, shape, files: dict, threads: int, batch: int, ov) -> list[tuple]:
    core = ov.Core()
    fp32 = fm_runtime.load(files["fp32"], threads=threads)
    int8 = fm_runtime.load(files["int8"], threads=threads)
    evaluate = {"onnxruntime float32": tiled(fp32), "onnxruntime int8": tiled(int8),
                "openvino float32": openvino_velocity(core, files["fp32"], threads, "f32"),
                "openvino bf16": openvino_velocity(core, files["fp32"], threads, "bf16")}
    run = {"onnxruntime float32": lambda z: fp32.sample(noise=z, steps=STEPS, solver="midpoint"),
           "onnxruntime int8": lambda z: int8.sample(noise=z, steps=STEPS, solver="midpoint"),
           "openvino float32": lambda z: solve(evaluate["openvino float32"], z),
           "openvino bf16": lambda z: solve(evaluate["openvino bf16"], z)}
    x = fp32.noise(batch, seed=0)
    t = np.full(batch, 0.3, np.float32)
    ref_eval, ref_solve = evaluate["onnxruntime float32"](x, t), run["onnxruntime float32"](x)
    evals = {m: median_seconds(lambda v=v: v(x, t), min_time=0.4) for m, v in evaluate.items()}
    solves = {m: median_seconds(lambda r=r: r(x), min_time=0.8) for m, r in run.items()}
    rows = []
    for m, v in evaluate.items():
        dev_eval = float(np.abs(v(x, t) - ref_eval).max())
        dev_solve = float(np.abs(run[m](x) - ref_solve).max())
        rows.append((name, threads, batch, m, evals[m], evals["onnxruntime float32"] / evals[m], solves[m],
                     solves["onnxruntime float32"] / solves[m], dev_eval, dev_solve))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--threads", default="1,2")
    args = ap.parse_args()
    try:
        import openvino as ov
    except ImportError:
        sys.exit("bench_openvino.py needs OpenVINO: pip install openvino (it is not a dependency of fm-runtime)")
    print(machine(1) + f"; OpenVINO {ov.__version__}")
    tmp = Path(tempfile.mkdtemp())
    print(f"| net | threads | batch | mode | one evaluation | vs ort fp32 | {STEPS}-step midpoint solve | vs ort fp32 "
          "| max dev, evaluation | max dev, samples |\n|---|---|---|---|---|---|---|---|---|---|")
    for name, (net, shape) in networks().items():
        files = {"fp32": tmp / "fp32.onnx", "int8": tmp / "int8.onnx"}
        export_velocity(net, files["fp32"], data_shape=shape, divergence=False)
        export_velocity(net, files["int8"], data_shape=shape, divergence=False, quantize="int8", force=True)
        for threads in (int(k) for k in args.threads.split(",")):
            for batch in (int(b) for b in args.batches.split(",")):
                for r in rows_for(name, shape, files, threads, batch, ov):
                    print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4] * 1e3:.3f} ms | {r[5]:.2f}x | {r[6] * 1e3:.2f} ms "
                          f"| {r[7]:.2f}x | {r[8]:.3g} | {r[9]:.3g} |", flush=True)
    print(machine(1))


if __name__ == "__main__":
    main()
