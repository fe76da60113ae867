"""fm-run serve: models behind HTTP for Open Inference Protocol clients (Triton's and KServe's
REST API), with step-level batching of concurrent requests. Needs the serve extra (uvicorn,
starlette, prometheus_client); nothing else in fm_runtime imports this package."""
