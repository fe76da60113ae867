"""What fm-run serve tells Prometheus (GET /metrics) and its access log (one JSON line per
request on stderr)."""
from __future__ import annotations

import json
import sys
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

ROW_BUCKETS = tuple(2.0 ** k for k in range(0, 17))
SECOND_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("fm_serve_requests", "Infer requests answered, by model and HTTP status",
                                ["model", "status"], registry=r)
        self.rows = Counter("fm_serve_rows", "Rows (samples or densities) returned", ["model"], registry=r)
        self.batch = Histogram("fm_serve_batch_rows", "Rows per network call (step-level) or per solve "
                               "(request-level)", ["model"], buckets=ROW_BUCKETS, registry=r)
        self.latency = Histogram("fm_serve_request_seconds", "Infer latency from body read to response",
                                 ["model"], buckets=SECOND_BUCKETS, registry=r)
        self.queue = Gauge("fm_serve_queue_depth", "Requests waiting to start", ["model"], registry=r)
        self.active = Gauge("fm_serve_active_requests", "Requests being solved", ["model"], registry=r)

    def watch(self, model: str, runner) -> None:
        """Queue depth and active requests read from the runner at each scrape."""
        self.queue.labels(model).set_function(lambda: runner.depth()[0])
        self.active.labels(model).set_function(lambda: runner.depth()[1])

    def on_call(self, model: str):
        hist = self.batch.labels(model)
        return hist.observe

    def text(self) -> bytes:
        return generate_latest(self.registry)


class AccessLog:
    """ASGI middleware: one JSON line per HTTP request (method, path, status, ms, client)."""

    def __init__(self, app, stream=None):
        self.app, self.stream = app, stream or sys.stderr

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), {"code": 0}

        async def sending(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)
        try:
            await self.app(scope, receive, sending)
        finally:
            client = scope.get("client") or ("", 0)
            line = {"ts": round(time.time(), 3), "method": scope["method"], "path": scope["path"],
                    "status": status["code"], "ms": round(1e3 * (time.perf_counter() - start), 2),
                    "client": f"{client[0]}:{client[1]}"}
            self.stream.write(json.dumps(line) + "\n")
            self.stream.flush()
