"""A per-request cancel token: one request of a shared Sampler is cancelled from another thread
within a fraction of a second, while another request on the same Sampler finishes unharmed."""
import threading
import time

import numpy as np
import pytest

import fm_runtime


def test_a_token_cancels_its_request_and_no_other():
    s = fm_runtime.load(threads=1)
    token, caught, done = fm_runtime.CancelToken(), {}, {}

    def long_request():
        try:
            s.sample(1_000_000, steps=400, seed=0, cancel=token)
        except fm_runtime.FmError as e:
            caught["error"], caught["at"] = e, time.perf_counter()

    def other_request():
        done["x"] = s.sample(20_000, steps=40, seed=1)

    first, second = threading.Thread(target=long_request), threading.Thread(target=other_request)
    first.start()
    second.start()
    time.sleep(0.3)
    cancelled_at = time.perf_counter()
    token.cancel()
    first.join(10)
    second.join(60)
    assert isinstance(caught["error"], fm_runtime.Interrupted) and str(caught["error"]) == "cancelled"
    assert caught["at"] - cancelled_at < 1.0
    assert np.array_equal(done["x"], s.sample(20_000, steps=40, seed=1))
    with pytest.raises(fm_runtime.Interrupted):           # a cancelled token stays cancelled
        s.sample(10, seed=0, cancel=token)
    assert s.sample(10, seed=0, cancel=fm_runtime.CancelToken()).shape == (10, 2)
    with pytest.raises(fm_runtime.UsageError, match="CancelToken"):
        s.sample(10, cancel="stop")


def _cancelled_within(run, token, wait: float = 0.3) -> float:
    """Seconds from token.cancel() to `run` raising Interrupted("cancelled") (run is long)."""
    caught = {}

    def work():
        try:
            run()
        except fm_runtime.FmError as e:
            caught["error"], caught["at"] = e, time.perf_counter()
    thread = threading.Thread(target=work)
    thread.start()
    time.sleep(wait)
    assert thread.is_alive(), "the request ended before it was cancelled"
    at = time.perf_counter()
    token.cancel()
    thread.join(30)
    assert isinstance(caught.get("error"), fm_runtime.Interrupted) and str(caught["error"]) == "cancelled", caught
    return caught["at"] - at


@pytest.mark.parametrize("backend", ["log-likelihood"])
def test_a_token_stops_every_backend_within_one_graph_call(backend):
    """The request's own RunOptions reach every graph call: the divergence graph stops inside the
    call in progress. (Sampling on each backend, the device loop included, is cancelled in
    test_backends.py's shared body.)"""
    token = fm_runtime.CancelToken()
    s = fm_runtime.load(threads=1, tile=0, device_resident=backend == "device loop")
    assert type(s.backend).__name__ == ("DeviceBackend" if backend == "device loop" else "HostLoop")
    x = s.sample(200_000, seed=0, steps=1, solver="euler")
    one_call = time.perf_counter()
    s.sample(noise=x, steps=1, solver="euler")
    one_call = time.perf_counter() - one_call
    if backend == "log-likelihood":
        run = lambda: s.log_prob(x, steps=400, divergence="exact", cancel=token)
    else:
        run = lambda: s.sample(noise=x, steps=300, solver="rk4", cancel=token)
    assert _cancelled_within(run, token, wait=1.5) < max(1.0, 3 * one_call)
