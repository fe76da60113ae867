"""One Sampler shared by many threads: each request gets exactly what a private Sampler gives."""
from __future__ import annotations

import json
import os
import shutil
import threading

import numpy as np
import pytest

import fm_runtime

from .conftest import TINY, TINY_COND, run_cli


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


def test_a_saved_execution_choice_is_used_where_the_caller_chooses_none(tmp_path, monkeypatch):
    from fm_runtime.model import execution
    monkeypatch.setenv("FM_RUNTIME_CACHE", str(tmp_path / "cache" / "execution.json"))
    model = tmp_path / "m.onnx"
    shutil.copyfile(TINY, model)
    plain = fm_runtime.load(model)
    assert plain.execution is None and plain.session_options.intra_op_num_threads == 1
    execution.save(model, {"tile": 0, "threads": 1, "intra_op_threads": 2}, "2 threads in a call at batch 1")
    chosen = fm_runtime.load(model)
    assert chosen.execution["why"] == "2 threads in a call at batch 1"
    assert chosen.session_options.intra_op_num_threads == 2 and chosen.tiler.tile == 0 and chosen.tiler.workers == 1
    np.testing.assert_allclose(chosen.sample(5, seed=3), plain.sample(5, seed=3), atol=1e-6)
    asked = fm_runtime.load(model, threads=2)                  # any speed option of the caller's wins
    assert asked.execution is None and asked.session_options.intra_op_num_threads == 1
    os.utime(model, ns=(1, 1))                                 # a changed file: its choice is gone
    assert fm_runtime.load(model).execution is None


@pytest.mark.parametrize("cache", ["not json", "[1, 2]", '{"%(key)s": {"options": {"tile": "0"}}}',
                                   '{"%(key)s": {"options": {"rm -rf": 1}}}', '{"%(key)s": {"options": {"threads": -1}}}'])
def test_a_malformed_cache_counts_as_no_choice(tmp_path, monkeypatch, cache):
    from fm_runtime.model import execution
    path = tmp_path / "execution.json"
    monkeypatch.setenv("FM_RUNTIME_CACHE", str(path))
    path.write_text(cache % {"key": execution._key(TINY).replace("\\", "\\\\")})
    s = fm_runtime.load(TINY)
    assert s.execution is None and s.session_options.intra_op_num_threads == 1 and len(s.sample(3, seed=0)) == 3


def test_bench_save_keeps_the_fastest_mode_and_info_shows_it(tmp_path, monkeypatch):
    monkeypatch.setenv("FM_RUNTIME_CACHE", str(tmp_path / "execution.json"))
    model = tmp_path / "m.onnx"
    shutil.copyfile(TINY, model)
    refused = run_cli("fm-run", "bench", str(model), "--batch", "1", "--batch", "4", "--save", check=False)
    assert refused.returncode == 2 and "exactly one --batch" in refused.stderr
    r = run_cli("fm-run", "bench", str(model), "--batch", "4", "--save", "--steps", "2")
    assert f"saved for {model} on this machine" in r.stdout
    entry, = json.loads((tmp_path / "execution.json").read_text()).values()
    # a one-call mode is kept with the default tile size: one call at this batch, tiles past it
    assert entry["options"] in ({}, {"threads": 1}, {"threads": 1, "intra_op_threads": os.cpu_count()})
    assert "at batch 4" in entry["why"]
    info = run_cli("fm-run", "info", str(model), "--json")
    assert json.loads(info.stdout)["execution"] == f"{entry['why']} (saved by fm-run bench --save)"
