"""Timing helpers shared by `fm-run bench` and benchmarks/ (numpy + onnxruntime): medians, the
matmul rate, and the machine line every benchmark prints first."""
from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np

from ..model.execution import cpu
from ..model.onnx_wire import WireError, weight_count

CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "fma")


VNNI = ("avx512_vnni", "avx_vnni", "amx_int8")        # int8 dot products in one instruction


def variant_advice(variant: dict, flags: set[str]) -> str:
    """Which reduced-precision file suits a CPU with these flags, for a file of this fm.variant,
    in one line (the measurements behind it: docs/performance.md)."""
    if not flags:
        return "its flags are unknown here; see docs/performance.md for which variant suits which CPU"
    vnni = "/".join(f for f in VNNI if f in flags)
    if variant.get("quantize") == "int8":
        return (f"suits this int8 file ({vnni}: int8 dot products)" if vnni else
                "has no VNNI, so this int8 file's integer products run without their instruction: it may be no "
                "faster than float32 here")
    if vnni:
        return (f"has {vnni} (int8 dot products): the int8 variant (fm-export --quantize int8) ran conv and "
                "transformer nets 1.2-1.8x faster than float32 on such a CPU")
    return "has no VNNI, so an int8 variant gains little here; fp16 halves the file"


def machine(threads: int = 1) -> str:
    """The CPU model, its vector and matrix flags, the thread setting and the load average, in one
    line: timings compare only within one run on one machine."""
    import onnxruntime as ort
    model, flags = cpu()
    return (f"CPU {model}, {os.cpu_count()} cores, flags {' '.join(f for f in CPU_FLAGS if f in flags) or '?'}; "
            f"onnxruntime {ort.__version__}, {threads} intra-op thread{'s' if threads != 1 else ''}; "
            f"load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


def median_seconds(fn: Callable[[], object], min_time: float = 0.3, max_repeats: int = 200,
                   warmup: int = 2) -> float:
    """Median wall time of fn() after warm-up; repeats until min_time is spent (>= 3 runs)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < min_time and len(times) < max_repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def matmul_gflops(size: int = 2048) -> float:
    """Measured float32 matmul rate of this machine (numpy's BLAS, all cores): the yardstick
    that `fm-run bench` puts each achieved rate beside."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    return 2 * size**3 / median_seconds(lambda: a @ b, min_time=1.0, max_repeats=20) / 1e9


def mlp_flops_per_eval(architecture: dict, model: bytes) -> int | None:
    """Multiply-add FLOPs of one evaluation of the fm MLP for one sample (2 per MAC); None unless
    the file's weights (values in its initializers) are those of that MLP, its biases and a few
    constants, since a rate from metadata that lies about the network would be nonsense."""
    if architecture.get("type") != "mlp":
        return None
    try:
        weights = weight_count(model)
    except WireError:               # an ORT-format file: no ONNX graph to count
        return None
    d, w, depth = architecture["dim"], architecture["width"], architecture["depth"]
    macs = (d + 1) * w + (depth - 1) * w * w + w * d
    return 2 * macs if macs <= weights <= macs + depth * w + d + 1024 else None


MARGIN = 1.1       # another mode replaces the default only when this many times faster


def winner(times: dict[str, float], margin: float = MARGIN) -> str:
    """The mode to use of {mode: seconds}: the first (the default) unless another is `margin` times faster."""
    default, best = next(iter(times)), min(times, key=times.get)
    return default if best == default or times[default] < margin * times[best] else best


def fastest_modes(rows: list[dict], modes: dict[str, dict], margin: float = MARGIN) -> list[str]:
    """Per batch of bench_table's rows, the mode to use (winner), with the fm-run sample options
    and load() arguments that choose it."""
    lines = []
    for n in dict.fromkeys(r["batch"] for r in rows):
        times = {r["mode"]: r["seconds"] for r in rows if r["batch"] == n}
        default, best = next(iter(times)), winner(times, margin)
        if best == default:
            lines.append(f"  batch {n:>7}: the default is fastest (within {margin - 1:.0%})")
            continue
        kw = modes[best]
        flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in kw.items())
        args = ", ".join(f"{k}={v}" for k, v in kw.items())
        lines.append(f"  batch {n:>7}: {best} is {times[default] / times[best]:.2f}x the default: "
                     f"fm-run sample {flags}, or load(path, {args})")
    return lines


def choice(rows: list[dict], modes: dict[str, dict]) -> tuple[dict, str]:
    """(load() arguments, why in words) of the winner among bench_table's rows at one batch, for
    model/execution.save. A mode measured as one call keeps the default tile size: the same call at
    that batch, while a larger batch is still solved tile by tile, within its memory."""
    times = {r["mode"]: r["seconds"] for r in rows}
    best, default, n = winner(times), next(iter(times)), rows[0]["batch"]
    why = (f"{best} at batch {n}, {times[default] / times[best]:.2f}x the default" if best != default
           else f"the default was fastest at batch {n} (within {MARGIN - 1:.0%})") + f", {time.strftime('%Y-%m-%d')}"
    return {k: v for k, v in modes[best].items() if (k, v) != ("tile", 0)}, why


def bench_table(sampler_for: Callable[[dict], object], modes: dict[str, dict], batches, steps: int,
                solver: str, seed: int = 0) -> list[dict]:
    """Median seconds of sampler.sample(n) for each mode (load kwargs) and batch size."""
    rows = []
    for name, kwargs in modes.items():
        s = sampler_for(kwargs)
        for n in batches:
            z = np.random.default_rng(seed).standard_normal((n, *s.data_shape), dtype=np.float32)
            run_kw = {} if s.baked else {"steps": steps, "solver": solver}
            sec = median_seconds(lambda: s.sample(noise=z, **run_kw), min_time=0.5 if n < 10_000 else 2.0)
            rows.append({"mode": name, "batch": n, "seconds": sec})
    return rows
