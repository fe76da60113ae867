"""Why fm-run serve runs on uvicorn + Starlette: the HTTP stack's own cost per request, measured.

    python benchmarks/bench_http_stack.py            # about 30 s on 2 cores

Two servers answer the same Open Inference Protocol infer request with the same small fixed
response (no model behind it, so only the stack is measured): uvicorn with Starlette (what
fm-run serve uses) and aiohttp's web server. tritonclient's asyncio client sends requests back to
back for --seconds at concurrency 1 and 16, on loopback; requests/s and p50/p99 latency printed.
Each server runs in its own process; client and server share the machine's cores.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
import time

import numpy as np

BODY = json.dumps({"model_name": "m", "model_version": "1", "outputs": [
    {"name": "samples", "datatype": "FP32", "shape": [1, 2], "data": [0.25, -0.5]}]}).encode()


def starlette_server(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def infer(request):
        await request.body()
        return Response(BODY, media_type="application/json")
    app = Starlette(routes=[Route("/v2/models/{name}/infer", infer, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def aiohttp_server(port: int) -> None:
    from aiohttp import web

    async def infer(request):
        await request.read()
        return web.Response(body=BODY, content_type="application/json")
    app = web.Application()
    app.router.add_post("/v2/models/{name}/infer", infer)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def load(port: int, concurrency: int, seconds: float) -> dict:
    from bench_serve import closed_loop
    from tritonclient.http.aio import InferenceServerClient
    client = InferenceServerClient(f"127.0.0.1:{port}", conn_limit=concurrency + 4)

    async def call():
        (await client.infer("m", [], parameters={"n": 1})).as_numpy("samples")
    lat, wall = await closed_loop(call, concurrency, seconds)
    await client.close()
    return {"rps": len(lat) / wall, "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    for name, target in (("uvicorn + starlette", starlette_server), ("aiohttp", aiohttp_server)):
        port = free_port()
        proc = multiprocessing.Process(target=target, args=(port,), daemon=True)
        proc.start()
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        try:
            for conc in (1, 16):
                r = asyncio.run(load(port, conc, args.seconds))
                print(f"{name:20s} concurrency {conc:2d}: {r['rps']:7.0f} req/s  p50 {r['p50']:.2f} ms  "
                      f"p99 {r['p99']:.2f} ms", flush=True)
        finally:
            proc.terminate()
            proc.join(5)


if __name__ == "__main__":
    main()
