"""fm-run serve: the models behind HTTP, for any Open Inference Protocol client (fm_runtime.serve)."""
from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from pathlib import Path

import click

from ..errors import UsageError
from ..tools import limits as budget
from ..tools.options import FiniteRange
from .options import memory_option, open_sampler

CORES = os.cpu_count() or 1


def _listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound here so that a port in use is one line and exit code 2."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as e:
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def _size(ctx, param, value):
    try:
        return budget.parse_size(value, "--max-body", 1024)
    except UsageError as e:
        raise click.BadParameter(str(e).split(": ", 1)[-1]) from None


@click.command()
@click.argument("models", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="Port to listen on.")
@click.option("--batching", type=click.Choice(["step", "request", "none"]), default="step", show_default=True,
              help="step: the rows of all in-flight requests share one network call per solver stage, and "
                   "requests join at the next step; request: whole requests with the same settings are merged "
                   "into one solve (waiting up to --max-delay-ms for more); none: each request alone.")
@click.option("--max-batch-rows", type=click.IntRange(1, 1 << 20), default=8192, show_default=True,
              help="Rows of one network call (step) or one merged solve (request); larger requests run alone.")
@click.option("--max-delay-ms", type=FiniteRange(0, 1000), default=2.0, show_default=True,
              help="Request-level batching: how long the first waiting request waits for others.")
@click.option("--max-queue", type=click.IntRange(1, 1 << 20), default=256, show_default=True,
              help="Requests that may wait per model; beyond it the answer is 429 with Retry-After.")
@click.option("--max-rows", type=click.IntRange(1, 1 << 30), default=65536, show_default=True,
              help="Rows one request may ask for (413 beyond).")
@click.option("--max-body", default="64M", show_default=True, callback=_size, metavar="SIZE",
              help="Bytes one request body may have (413 beyond).")
@click.option("--max-steps", type=click.IntRange(1, 100000), default=1000, show_default=True,
              help="Solver steps one request may ask for (400 beyond).")
@click.option("--request-timeout", type=FiniteRange(0, 86400, min_open=True), default=60.0, show_default=True,
              metavar="SECONDS", help="Time one request may take; then it is cancelled and answered 408.")
@click.option("--threads", type=click.IntRange(1, 1024), default=CORES, show_default=True,
              help="Worker threads, each running single-threaded graph calls: the parts of a slow merged "
                   "call (step), the tiles of a solve (request, as fm-run sample does), requests at once (none).")
@click.option("--grace", type=FiniteRange(0, 3600), default=30.0, show_default=True, metavar="SECONDS",
              help="On SIGTERM: stop accepting, finish the requests in flight within this time (then cancel "
                   "what still runs), exit 0.")
@memory_option("Memory the server may use (e.g. 2G, 512M, 25% of RAM): a request whose working memory alone is "
               "over it is answered 413, one that would take the requests in flight past it 429 (retry).")
@click.option("--access-log/--no-access-log", default=True, show_default=True,
              help="One JSON line per HTTP request on stderr.")
@click.option("--provider", default="cpu", show_default=True, help="onnxruntime execution provider.")
def serve(models, host, port, batching, max_batch_rows, max_delay_ms, max_queue, max_rows, max_body, max_steps,
          request_timeout, threads, grace, access_log, provider):
    """Serve MODEL files over HTTP with the Open Inference Protocol (KServe v2, Triton's HTTP API),
    so tritonclient, KServe clients or curl can sample them. No MODEL: the shipped moons model.

    \b
    Each file is model NAME (its file's stem): POST /v2/models/NAME/infer with parameters n, seed,
    steps, solver, schedule, guidance (optional input noise; labels; conditions by name) returns
    FP32 samples, the same as fm-run sample with the same arguments. Files with a divergence graph
    are also NAME-logprob (input x, output logprob). GET /v2/health/ready, /v2/models/NAME for
    metadata, /metrics for Prometheus. Needs the serve extra: pip install ".[serve]" in the fm-runtime checkout.

    \b
    Examples:
      fm-run serve moons.onnx --port 8000
      curl -s localhost:8000/v2/models/moons/infer -d '{"inputs": [], "parameters": {"n": 2, "seed": 0}}'
    """
    try:
        import uvicorn

        from ..serve.app import Limits, build_app
        from ..serve.http import MAX_HEAD, protocol
    except ImportError as e:
        raise UsageError(f'fm-run serve needs the serve extra ({e.name} is missing): in the fm-runtime checkout, pip install ".[serve]"') from None
    samplers = {}
    for path in models or (None,):
        # single-threaded graph calls, parallel over --threads workers: tiles of a solve as fm-run
        # sample runs them, or the parts of a slow merged call (step batching)
        sampler = open_sampler(path, provider, threads=threads)
        name = Path(sampler.path).stem
        if name in samplers or (name.endswith("-logprob") and name[:-8] in samplers):
            raise UsageError(f"two models would be named {name!r}; rename one file")
        samplers[name] = sampler
    limits = Limits(batching, max_batch_rows, max_delay_ms / 1e3, max_queue, max_rows, max_body, max_steps,
                    request_timeout, threads)
    app = build_app(samplers, limits, access_log)
    names = [n for name, s in samplers.items() for n in ([name, name + "-logprob"] if s.spec.divergence else [name])]

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):      # readiness off at once; uvicorn drains
            if not app.state.draining:          # what still runs near the end of --grace is cancelled, answered 503
                app.state.draining = True
                timer = threading.Timer(max(0.0, grace - 0.5), lambda: [m.cancel_all() for m in app.state.models.values()])
                timer.daemon = True
                timer.start()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=grace, lifespan="off",
                            http=protocol(), h11_max_incomplete_event_size=MAX_HEAD)
    server = Server(config)
    click.echo(f"fm-run serve: {', '.join(names)} at http://{host}:{port}/v2/models/ ({batching}-level batching"
               if batching != "none" else f"fm-run serve: {', '.join(names)} at http://{host}:{port}/v2/models/ (no batching",
               err=True, nl=False)
    click.echo(f", {threads} threads); SIGTERM drains within {grace:g} s", err=True)
    sock = _listen(host, port)
    signal.signal(signal.SIGTERM, lambda *_: None)      # after uvicorn's drain, exit 0
    try:
        server.run(sockets=[sock])
    finally:        # past --grace: the requests still running are cancelled, their graph calls end
        for model in app.state.models.values():
            model.close()
    sys.stderr.flush()
    return 0
