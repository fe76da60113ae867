"""fm-run serve under load: requests/s and latency for each batching mode, with tritonclient's
asyncio HTTP client (a client this project did not write) on loopback only.

    python benchmarks/bench_serve.py                          # moons, all modes, ~3 minutes
    python benchmarks/bench_serve.py --models moons,digits --soak 300 --out serve.json

For each model and --batching mode (step, request, none) one server is started; then for each
request size (--rows) and concurrency (--concurrency) that many clients each send requests back
to back for --seconds (after a one-second warm-up) and the requests/s and p50/p99 latency are
reported. Every request is bounded: the run ends by itself. `digits` is an untrained
class-conditional U-Net on 8x8 digits (speed does not depend on the weights), made here.
--soak S runs step batching at the highest concurrency for S seconds and reports the server's
resident memory over time. Client and server share the machine's cores: the figures are what
one machine serving itself can do, not the server alone.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.test_serve import Server  # noqa: E402  (starts fm-run serve on a free loopback port)

MOONS = "fm_runtime/assets/moons.onnx"


def digits_file(folder: Path) -> str:
    from training.export_checkpoint import export_model
    from training.train import fit
    model, config = fit("digits", steps=2, net="unet", conditional=True, progress=False)
    path = folder / "digits.onnx"
    export_model(model, config, path, divergence=False, default_steps=8, default_solver="midpoint")
    return str(path)


async def closed_loop(call, concurrency: int, seconds: float, warmup: float = 1.0) -> tuple[np.ndarray, float]:
    """`concurrency` clients, each awaiting call() back to back: `warmup` seconds untimed, then
    `seconds` timed. Returns (latencies in ms, timed wall seconds). bench_http_stack.py uses it too."""
    latencies: list[float] = []

    async def worker(end: float, record: bool):
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            await call()
            if record:
                latencies.append(time.perf_counter() - t0)
    await asyncio.gather(*(worker(time.perf_counter() + warmup, False) for _ in range(concurrency)))
    start = time.perf_counter()
    await asyncio.gather(*(worker(start + seconds, True) for _ in range(concurrency)))
    return np.array(latencies) * 1e3, time.perf_counter() - start


async def load(url: str, model: str, rows: int, concurrency: int, seconds: float, classes: int) -> dict:
    from tritonclient.http.aio import InferenceServerClient

    client = InferenceServerClient(url, conn_limit=concurrency + 4)
    params = {"n": rows, "steps": 8, "solver": "midpoint"}
    inputs = []
    if classes:
        from tritonclient.http import InferInput
        labels = InferInput("labels", [rows], "INT64")
        labels.set_data_from_numpy(np.arange(rows, dtype=np.int64) % classes)
        inputs = [labels]
    errors, seeds = 0, iter(range(1 << 62))

    async def call():
        nonlocal errors
        try:
            (await client.infer(model, inputs, parameters={**params, "seed": next(seeds)})).as_numpy("samples")
        except Exception:
            errors += 1
    lat, wall = await closed_loop(call, concurrency, seconds)
    await client.close()
    return {"requests_per_s": len(lat) / wall, "rows_per_s": len(lat) * rows / wall,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)), "errors": errors,
            "requests": len(lat)}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="moons", help="comma-separated: moons, digits")
    ap.add_argument("--modes", default="step,request,none")
    ap.add_argument("--rows", default="1,256")
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--soak", type=float, default=0.0, help="seconds of the soak (0: none)")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()
    os.chdir(Path(__file__).resolve().parents[1])
    results = {"cores": os.cpu_count(), "runs": []}
    rows_list = [int(r) for r in args.rows.split(",")]
    conc_list = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        files = {"moons": (MOONS, 0)}
        if "digits" in args.models:
            files["digits"] = (digits_file(Path(tmp)), 10)
        for name in args.models.split(","):
            path, classes = files[name]
            for mode in args.modes.split(","):
                server = Server(path, "--batching", mode)
                try:
                    for rows in rows_list:
                        for conc in conc_list:
                            r = asyncio.run(load(server.url, Path(path).stem, rows, conc, args.seconds, classes))
                            r.update(model=name, mode=mode, rows=rows, concurrency=conc)
                            results["runs"].append(r)
                            print(f"{name:7s} {mode:8s} rows {rows:4d} conc {conc:3d}: {r['requests_per_s']:8.1f} req/s "
                                  f"p50 {r['p50_ms']:8.1f} ms  p99 {r['p99_ms']:8.1f} ms  errors {r['errors']}", flush=True)
                finally:
                    server.stop()
        if args.soak:
            server = Server(MOONS, "--batching", "step")
            conc, samples, end = max(conc_list), [], time.monotonic() + args.soak
            try:
                while time.monotonic() < end:
                    r = asyncio.run(load(server.url, "moons", 1, conc, min(10.0, end - time.monotonic()), 0))
                    samples.append({"t": round(args.soak - (end - time.monotonic())), "rss_mb": rss_mb(server.proc.pid),
                                    "requests_per_s": r["requests_per_s"]})
                    print(f"soak t={samples[-1]['t']:4d} s: RSS {samples[-1]['rss_mb']:.1f} MB, "
                          f"{r['requests_per_s']:.0f} req/s", flush=True)
            finally:
                server.stop()
            results["soak"] = samples
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
