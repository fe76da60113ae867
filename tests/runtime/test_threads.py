"""One Sampler shared by many threads: each request gets exactly what a private Sampler gives."""
from __future__ import annotations

import threading

import numpy as np

import fm_runtime

from .conftest import TINY, TINY_COND


def test_eight_threads_share_one_sampler():
    shared = fm_runtime.load(TINY, threads=2, tile=64)
    cond_shared = fm_runtime.load(TINY_COND, threads=2, tile=64)
    blowup = np.full((300, 2), 3e38, np.float32)          # the first matmul overflows to Inf
    jobs = []
    for i in range(8):
        solver, steps = ["euler", "midpoint", "heun", "rk4"][i % 4], 2 + i
        if i % 3 == 2:
            jobs.append(("cond", dict(n=200 + i, seed=i, steps=steps, solver=solver, labels=i % 2, guidance=1.5)))
        elif i == 7:
            jobs.append(("plain", dict(noise=blowup, steps=steps, solver=solver, keep_partial=True)))
        else:
            jobs.append(("plain", dict(n=500 + 37 * i, seed=i, steps=steps, solver=solver,
                                       logprob=i % 2 == 1)))
    got: dict[int, tuple] = {}
    barrier = threading.Barrier(len(jobs))

    def work(i: int) -> None:
        kind, kwargs = jobs[i]
        s = cond_shared if kind == "cond" else shared
        barrier.wait()
        results = [s.run(**kwargs) for _ in range(3)]
        got[i] = (results, s.last_nfe)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, (kind, kwargs) in enumerate(jobs):
        private = fm_runtime.load(TINY_COND if kind == "cond" else TINY, threads=1, tile=64)
        want = private.run(**kwargs)
        results, last_nfe = got[i]
        assert last_nfe == want.nfe
        for r in results:
            np.testing.assert_array_equal(r.samples, want.samples)
            assert r.nfe == want.nfe
            assert (r.logprob is None) == (want.logprob is None)
            if want.logprob is not None:
                np.testing.assert_array_equal(r.logprob, want.logprob)
            assert sorted(r.nonfinite) == sorted(want.nonfinite)
    assert got[7][0][0].nonfinite, "the blow-up job reports where its solve went non-finite"
    assert all(not got[i][0][0].nonfinite for i in range(7))


def test_intra_op_threads_give_the_same_samples_and_bench_names_the_fastest_mode():
    from fm_runtime.tools.bench import fastest_modes
    one = fm_runtime.load(TINY).sample(5, seed=3)
    inside = fm_runtime.load(TINY, threads=1, tile=0, intra_op_threads=2).sample(5, seed=3)
    np.testing.assert_allclose(inside, one, atol=1e-6)
    modes = {"tiled (default)": {}, "2 threads in a call": {"tile": 0, "threads": 1, "intra_op_threads": 2}}
    rows = [{"mode": "tiled (default)", "batch": 1, "seconds": 1.0}, {"mode": "2 threads in a call", "batch": 1, "seconds": 0.5},
            {"mode": "tiled (default)", "batch": 256, "seconds": 1.0}, {"mode": "2 threads in a call", "batch": 256, "seconds": 0.95}]
    lines = fastest_modes(rows, modes)
    assert "2 threads in a call is 2.00x the default: fm-run sample --tile 0 --threads 1 --intra-op-threads 2" in lines[0]
    assert "load(path, tile=0, threads=1, intra_op_threads=2)" in lines[0]
    assert "the default is fastest" in lines[1]
