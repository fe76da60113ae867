"""The HTTP application of fm-run serve (Starlette, run by uvicorn): the Open Inference
Protocol's REST routes over the loaded models, each model's requests handed to its runner
(step-level batching, request-level batching or none; see scheduler.py and jobs.py), the
library's errors mapped to statuses with one-line messages, Prometheus metrics."""
from __future__ import annotations

import asyncio
import math
import threading
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import __version__
from ..errors import FmError, InputError, Interrupted, ModelError, NumericalError, ResourceError, TimedOut, UsageError, printable
from ..model.control import CancelToken
from ..tools import limits as budget
from . import protocol
from .jobs import Job, Pool, QueueFull, RequestBatcher
from .metrics import AccessLog, Metrics
from .scheduler import StepScheduler


@dataclass
class Limits:
    batching: str = "step"          # "step", "request" or "none"
    max_batch_rows: int = 8192      # rows of one network call (step) or one solve (request)
    max_delay: float = 0.002        # request-level batching: seconds to wait for more requests
    max_queue: int = 256            # requests waiting per model before 429
    max_rows: int = 65536           # rows of one request (413 beyond)
    max_body: int = 64 << 20        # bytes of one request body (413 beyond)
    max_steps: int = 1000           # steps of one request (400 beyond)
    timeout: float = 60.0           # seconds of one request (408 beyond)
    workers: int = 2                # threads of the no-batching pool and of log densities
    max_memory: int = field(default_factory=budget.budget)    # bytes the requests in flight may hold (413/429)


STATUS = [(QueueFull, 429), (protocol.TooLarge, 413), (TimedOut, 408), (Interrupted, 499), (UsageError, 400),
          (InputError, 400), (NumericalError, 422), (ResourceError, 413), (MemoryError, 413), (ModelError, 500),
          (FmError, 500)]


class Model:
    """One served model: the file's sampler, its runner, and for files with a divergence graph
    a pool for `{name}-logprob`."""

    def __init__(self, name: str, sampler, limits: Limits, metrics: Metrics):
        self.name, self.sampler, self.limits = name, sampler, limits
        on_call = metrics.on_call(name)
        if limits.batching == "none":
            self.runner = Pool(sampler.solve, limits.workers, limits.max_queue)
        elif limits.batching == "step" and not sampler.baked:
            self.runner = StepScheduler(sampler.session, limits.max_batch_rows, limits.max_queue, on_call, limits.workers)
        else:                   # baked files: whole requests merged into one call of the graph
            self.runner = RequestBatcher(sampler.solve, limits.max_batch_rows, limits.max_delay, limits.max_queue,
                                         on_call)
        metrics.watch(name, self.runner)
        self.densities = Pool(None, limits.workers, limits.max_queue) if sampler.spec.divergence else None
        self._lock, self._live, self.held = threading.Lock(), {}, 0     # jobs not finished by id, their bytes
        self.stopped = False            # shutting down: the jobs in flight were cancelled

    def sample_job(self, doc: dict, tensors: dict) -> Job:
        params = protocol.parameters(doc, protocol.SAMPLE_PARAMS)
        noise, labels = tensors.pop("noise", None), tensors.pop("labels", None)
        self._check(params, None if noise is None else len(noise) if noise.ndim else 0)
        token = CancelToken()
        negative = protocol.null_inputs(tensors)
        req = self.sampler.request(noise=noise, labels=labels, cond=tensors or None, cancel=token, null_cond=negative,
                                   **params)
        rows = req.n * (2 if req.conditioning().guided(req.spec) else 1)
        stages = 7 if req.kind == "adaptive" else 1 if req.kind == "baked" else self.sampler.nfe(1, req.solver)
        inputs = sum(4 * int(math.prod(v.shape[1:])) for v in req.inputs.values())
        need = budget.in_memory_bytes(rows, 4 * req.spec.dim + inputs, tile_rows=self.limits.max_batch_rows,
                                      workers=self.limits.workers, stages=stages) - budget.BASE_BYTES
        return self._admit(Job(self.name, rows, req, token=token), need + _answer_bytes(doc, req.n * req.spec.dim))

    def logprob_job(self, doc: dict, tensors: dict) -> Job:
        params = protocol.parameters(doc, protocol.LOGPROB_PARAMS)
        x, labels = tensors.pop("x", None), tensors.pop("labels", None)
        if x is None or x.ndim == 0:
            raise UsageError(f"{self.name}-logprob needs the input x [n, {', '.join(map(str, self.sampler.data_shape))}]"
                             + ("" if x is None else ", not a single number"))
        self._check(params, len(x))
        negative = protocol.null_inputs(tensors)
        need = budget.in_memory_bytes(len(x), 4 * self.sampler.spec.dim, tile_rows=self.limits.max_batch_rows,
                                      workers=self.limits.workers, logprob=True) - budget.BASE_BYTES + _answer_bytes(doc, len(x))
        job = self._admit(Job(self.name + "-logprob", len(x)), need)      # last: nothing may fail once it holds memory
        job.run = lambda: self.sampler.log_prob(x, labels=labels, cond=tensors or None, cancel=job.token,
                                                null_cond=negative, **params)
        return job

    def _admit(self, job: Job, need: int) -> Job:
        """The job, its memory held until it finishes: ResourceError (413) when it alone needs more
        than the budget, QueueFull (429, retry) when the jobs in flight hold the rest."""
        cap = self.limits.max_memory - budget.BASE_BYTES
        if need > cap:
            raise ResourceError(f"{job.where}: this request needs about {budget.describe(need)} of working memory, more "
                                f"than this server's budget of {budget.describe(cap)} (--max-memory); ask for fewer rows")
        with self._lock:
            if self.held + need > cap:
                raise QueueFull(f"the requests in flight hold {budget.describe(self.held)} of the "
                                f"{budget.describe(cap)} memory budget; retry")
            self.held += need
            self._live[id(job)] = job

        def release(_):
            with self._lock:
                self.held -= need
                self._live.pop(id(job), None)
        job.future.add_done_callback(release)
        return job

    def cancel_all(self) -> None:
        """Every job not finished cancelled: graph calls end within milliseconds (shutdown)."""
        with self._lock:
            self.stopped = True
            live = list(self._live.values())
        for job in live:
            job.cancel()

    def _check(self, params: dict, rows: int | None) -> None:
        rows = params.get("n", 1) if rows is None else rows
        if rows > self.limits.max_rows:
            raise protocol.TooLarge(f"{rows} rows in one request; this server takes at most {self.limits.max_rows}")
        if params.get("steps", 0) > self.limits.max_steps:
            raise UsageError(f"{params['steps']} steps; this server takes at most {self.limits.max_steps}")

    def close(self) -> None:
        self.cancel_all()
        self.runner.close()
        if self.densities is not None:
            self.densities.close()


def _answer_bytes(doc: dict, values: int) -> int:
    """What encoding `values` float32 outputs takes: a few copies in binary; as JSON text, a Python
    float and list slot per value and its text twice (measured: about 70 bytes a value)."""
    return values * (12 if protocol.binary_outputs(doc) else 72)


def error_response(e: BaseException) -> Response:
    status = next((code for kind, code in STATUS if isinstance(e, kind)), 500)
    msg = printable(" ".join(str(e).split()))[:500] if isinstance(e, (FmError, QueueFull)) else \
        "out of memory for this request (the server's --max-memory); ask for fewer rows" if isinstance(e, MemoryError) \
        else f"internal error: {type(e).__name__}"
    headers = {"retry-after": "1"} if status == 429 else None
    return JSONResponse({"error": msg}, status_code=status, headers=headers)


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def build_app(models: dict, limits: Limits, access_log: bool = True) -> Starlette:
    """The ASGI app over {name: Sampler}; app.state.draining turns readiness off (SIGTERM)."""
    metrics = Metrics()
    served = {name: Model(name, s, limits, metrics) for name, s in models.items()}

    async def server_meta(request):
        return JSONResponse({"name": "fm-runtime", "version": __version__, "extensions": ["binary_tensor_data"]})

    async def live(request):
        return Response(status_code=200)

    async def ready(request):
        return Response(status_code=503 if app.state.draining else 200)

    async def model_meta(request):
        try:
            model, logprob = _lookup(served, request.path_params["name"])
        except LookupError:
            return JSONResponse({"error": f"no model {printable(request.path_params['name'])[:80]!r}"}, 404)
        return JSONResponse(protocol.metadata(request.path_params["name"], model.sampler.spec, logprob))

    async def model_ready(request):
        try:
            _lookup(served, request.path_params["name"])
        except LookupError:
            return Response(status_code=404)
        return Response(status_code=503 if app.state.draining else 200)

    async def scrape(request):
        return Response(metrics.text(), media_type="text/plain; version=0.0.4")

    async def infer(request: Request):
        name = request.path_params["name"]
        try:
            model, logprob = _lookup(served, name)
        except LookupError:
            return JSONResponse({"error": f"no model {printable(name)[:80]!r}"}, 404)
        if app.state.draining:
            return JSONResponse({"error": "the server is shutting down"}, 503, headers={"connection": "close"})
        label = name
        clock = asyncio.get_running_loop().time
        start = clock()
        response = await _inference(request, name, model, logprob, limits, metrics)
        metrics.requests.labels(label, str(response.status_code)).inc()
        metrics.latency.labels(label).observe(clock() - start)
        return response

    routes = [Route("/v2", server_meta), Route("/v2/health/live", live), Route("/v2/health/ready", ready),
              Route("/v2/models/{name}", model_meta), Route("/v2/models/{name}/versions/{v}", model_meta),
              Route("/v2/models/{name}/ready", model_ready), Route("/v2/models/{name}/versions/{v}/ready", model_ready),
              Route("/v2/models/{name}/infer", infer, methods=["POST"]),
              Route("/v2/models/{name}/versions/{v}/infer", infer, methods=["POST"]), Route("/metrics", scrape)]
    async def http_error(request: Request, e: HTTPException) -> Response:     # no route, wrong method: JSON too
        where = printable(f"{request.method} {request.url.path}")[:120]
        return JSONResponse({"error": f"{e.detail.lower()}: {where}"}, e.status_code, headers=e.headers)

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    app.state.draining = False
    app.state.models = served
    if access_log:
        app.add_middleware(AccessLog)
    return app


def _lookup(served: dict, name: str) -> tuple[Model, bool]:
    """The model a route names, and whether the name is its log-density endpoint (NAME-logprob,
    for a model that has one); LookupError for any other name."""
    logprob = name.endswith("-logprob") and name[:-8] in served and served[name[:-8]].densities is not None
    model = served.get(name[:-8] if logprob else name)
    if model is None:
        raise LookupError(name)
    return model, logprob


async def _inference(request: Request, name: str, model: Model, logprob: bool, limits: Limits,
                     metrics: Metrics) -> Response:
    """One inference request run: the body read and parsed, the job run by the model's runner
    (samples or log densities), the outputs encoded; any error as its status and one line."""
    try:
        body = await _read(request, limits.max_body)
        doc, tensors = protocol.parse_infer(body, request.headers.get("inference-header-content-length"))
        make = model.logprob_job if logprob else model.sample_job
        # a condition stage runs while the request is built: off the event loop
        job = await asyncio.to_thread(make, doc, tensors) if model.sampler.spec.stage else make(doc, tensors)
        runner = model.densities if logprob else model.runner
        try:
            future = runner.submit(job)
        except Exception as e:          # a full queue: what the job held goes back
            job.future.set_exception(e)
            raise
        result = await _finish(future, job, request, _timeout(doc, limits.timeout))
        out = {"logprob": result} if logprob else {"samples": result.samples}
        data, headers = protocol.encode(name, doc, out, protocol.binary_outputs(doc), None if logprob else result.nfe)
        metrics.rows.labels(name).inc(len(next(iter(out.values()))))
        return Response(data, headers=headers)
    except Exception as e:
        if model.stopped:
            return JSONResponse({"error": "the server shut down (its --grace ran out) before this request finished; "
                                          "send it again"}, 503, headers={"connection": "close", "retry-after": "1"})
        return error_response(e)


async def _read(request: Request, limit: int) -> bytes:
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > limit:
        raise protocol.TooLarge(f"a body of {int(size)} bytes; this server takes at most {limit}")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise protocol.TooLarge(f"a body over {limit} bytes; this server takes at most {limit}")
        chunks.append(chunk)
    return b"".join(chunks)


def _timeout(doc: dict, limit: float) -> float:
    """The server's limit, or less when the request asks (Triton's `timeout`, microseconds)."""
    asked = (doc.get("parameters") or {}).get("timeout") if isinstance(doc.get("parameters"), dict) else None
    if isinstance(asked, (int, float)) and not isinstance(asked, bool) and math.isfinite(asked) and asked > 0:
        return min(limit, asked / 1e6)
    return limit


async def _finish(future, job: Job, request: Request, timeout: float):
    """The job's result; its client leaving or its time running out cancels it."""
    waiting = asyncio.wrap_future(future)
    gone = asyncio.ensure_future(_disconnected(request))
    done, _ = await asyncio.wait({waiting, gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    gone.cancel()
    if waiting in done:
        return waiting.result()
    job.cancel()
    waiting.add_done_callback(lambda f: f.cancelled() or f.exception())
    if gone in done:
        raise Interrupted("the client disconnected")
    raise TimedOut(f"{job.where}: the request took longer than {timeout:g} s")
