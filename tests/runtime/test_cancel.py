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
