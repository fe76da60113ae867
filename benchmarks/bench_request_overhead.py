"""What one small request costs beyond its graph call: the shipped moons model sampled one row at
a time (1 Euler step, one network evaluation, given noise) through Sampler.sample, against the
same evaluation as a bare onnxruntime session.run on the same session. Best of 5 runs of 2000
requests each, one thread. The difference is the runtime's own work per request (checking the
options, resolving the request, the solver loop), which bounds the latency of one-jump flow-map
requests at batch 1.

    python benchmarks/bench_request_overhead.py
"""
from __future__ import annotations

import time

import numpy as np

import fm_runtime
from fm_runtime.tools.bench import machine


def best_us(fn, reps: int = 5, n: int = 2000) -> float:
    best = float("inf")
    for _ in range(reps):
        clock = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - clock) / n * 1e6)
    return best


def main() -> None:
    print(machine(1))
    s = fm_runtime.load(threads=1)
    z = s.noise(1, 0)
    feed = {s.spec.x_name: z, s.spec.t_name: np.zeros(1, np.float32)}
    request = lambda: s.sample(noise=z, steps=1, solver="euler")     # noqa: E731
    bare = lambda: s.session.run([s.spec.v_name], feed)             # noqa: E731
    for _ in range(500):
        request(), bare()
    r, b = best_us(request), best_us(bare)
    print("| one request (sample, 1 Euler step, batch 1) | bare session.run | the runtime's own work |")
    print("|---|---|---|")
    print(f"| {r:.1f} us | {b:.1f} us | {r - b:.1f} us ({(r - b) / r:.0%}) |")


if __name__ == "__main__":
    main()
