"""fm-run serve: step-level batching gives every request its solo samples (in process, for every
solver, with labels, guidance, intervals, schedules and tensor conditions), and the server,
started as a user starts it, answers a client this project did not write (tritonclient) with
the arrays fm-run gives, refuses with the documented statuses, cancels on disconnect and
drains on SIGTERM without losing an accepted request."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
torch = pytest.importorskip("torch")

from fm_runtime import load  # noqa: E402
from fm_runtime.serve.jobs import Job, RequestBatcher  # noqa: E402
from fm_runtime.serve.scheduler import StepScheduler  # noqa: E402
from fm_runtime.solve.solvers import VELOCITY_SOLVERS  # noqa: E402

from . import cond_nets  # noqa: E402
from .conftest import cli_argv, run_cli  # noqa: E402

MOONS = "fm_runtime/assets/moons.onnx"


class Labelled(torch.nn.Module):
    """A tiny class-conditional velocity net v(x, t, y) (3 classes, id 3 = no label)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(4, 8)
        self.net = torch.nn.Sequential(torch.nn.Linear(11, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))

    def forward(self, x, t, y):
        return self.net(torch.cat([x, t[:, None], self.emb(y)], 1))


class LabelledMap(torch.nn.Module):
    """A tiny class-conditional flow map u(x, s, t, y) (3 classes, id 3 = no label)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.emb = torch.nn.Embedding(4, 8)
        self.net = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))

    def forward(self, x, s, t, y):
        return self.net(torch.cat([x, s[:, None], t[:, None], self.emb(y)], 1))


def test_jumps_of_different_requests_share_calls_and_equal_their_solo_solves(tmp_path):
    """A flow-map file's jumps (each row its own s and t) merge with each other and with the
    velocity stages (s = t) of other requests on the same file."""
    from export.onnx_export import export_velocity
    path = tmp_path / "map.onnx"
    export_velocity(LabelledMap().eval(), path, data_shape=2, call="x,s,t,y", num_classes=3, divergence=False)
    sampler = load(path, tile=0)
    cases = [dict(n=3, seed=1, labels=0), dict(n=5, seed=2, steps=4, labels=[0, 1, 2, 0, 1], guidance=2.0),
             dict(n=2, seed=3, steps=3, schedule="shift:3", labels=2, guidance=3.0, guidance_interval=(0.3, 1.0)),
             dict(n=4, seed=4, solver="midpoint", steps=2, labels=1), dict(n=3, seed=5, labels=2)]
    runner = StepScheduler(sampler.session)
    futures = [runner.submit(Job("map", 1, sampler.request(**c))) for c in cases]
    for c, f in zip(cases, futures):
        got, want = f.result(60), sampler.run(**c)
        np.testing.assert_allclose(got.samples, want.samples, atol=1e-6, err_msg=str(c))
        assert got.nfe == want.nfe == sampler.nfe(c.get("steps"), c.get("solver"))
    assert runner.calls < sum(sampler.nfe(c.get("steps"), c.get("solver")) for c in cases)
    runner.close(10)


def test_a_request_that_cannot_join_waits_while_a_lone_one_steps():
    """--max-batch-rows 50: the second request waits for the first, which runs its steps alone
    (back to back), then runs; both get their solo samples."""
    sampler = load(MOONS, tile=0)
    runner = StepScheduler(sampler.session, max_rows=50)
    cases = [dict(n=50, seed=1, steps=200), dict(n=50, seed=2, steps=3), dict(n=1, seed=3, steps=5)]
    futures = []
    for c in cases:
        futures.append(runner.submit(Job("moons", c["n"], sampler.request(**c))))
        time.sleep(0.01)
    for c, f in zip(cases, futures):
        np.testing.assert_allclose(f.result(60).samples, sampler.run(**c).samples, atol=1e-6)
    runner.close(10)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from export.onnx_export import export_velocity
    d = tmp_path_factory.mktemp("serve")
    export_velocity(Labelled().eval(), d / "labelled.onnx", data_shape=2, call="x,t,y", num_classes=3, divergence=False)
    cond_nets.export_token_decoder(d / "decoder.onnx", t_max=64, l_max=32)
    torch.manual_seed(1)
    plain = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).eval()
    export_velocity(plain, d / "baked.onnx", data_shape=2, call="cat(x,t)", bake="heun:4")
    return {"moons": MOONS, "labelled": str(d / "labelled.onnx"), "decoder": str(d / "decoder.onnx"),
            "baked": str(d / "baked.onnx")}


def requests_for(name: str, solver: str) -> list[dict]:
    """Requests that differ in everything a shared call allows: rows, seeds, steps, schedules,
    labels, guidance and its interval, condition lengths."""
    fixed = solver != "dopri5"
    steps = (lambda k: {"steps": k}) if fixed else (lambda k: {"rtol": 1e-4})
    if name == "moons":
        return [dict(n=3, seed=1, **steps(8)), dict(n=40, seed=2, **steps(5), **({"schedule": "shift:2"} if fixed else {})),
                dict(n=1, seed=3, **steps(2)), dict(n=5, seed=11, **steps(8))]   # the last: a cohort with the first
    if name == "labelled":
        return [dict(n=4, seed=1, labels=[0, 1, 2, 0], guidance=2.0, **steps(6)), dict(n=2, seed=2, labels=1, **steps(3)),
                dict(n=3, seed=3, labels=2, guidance=3.0, guidance_interval=(0.2, 0.7), **steps(4)), dict(n=2, seed=4, **steps(4)),
                dict(n=3, seed=5, labels=[2, 0, 1], guidance=2.0, **steps(6))]
    tokens = lambda L, k: {"tokens": np.arange(1, L + 1, dtype=np.int64) % 5 + k, "spks": np.eye(3, dtype=np.float32)[k]}
    return [dict(n=2, seed=1, cond=tokens(5, 0), guidance=2.0, **steps(4)), dict(n=1, seed=2, cond=tokens(5, 1), **steps(3)),
            dict(n=2, seed=3, cond=tokens(8, 2), guidance=1.5, **steps(5))]


@pytest.mark.parametrize("solver", [*VELOCITY_SOLVERS, "dopri5"])
def test_merged_rows_equal_solo_rows_for_every_solver(files, solver):
    for name, path in files.items():
        if name == "baked":
            continue
        sampler = load(path, tile=0)
        cases = requests_for(name, solver)
        for mode in ("step", "request"):
            runner = StepScheduler(sampler.session) if mode == "step" else RequestBatcher(sampler.solve, max_delay=0.05)
            jobs = [Job(name, 1, sampler.request(solver=solver, **c)) for c in cases]
            futures = [runner.submit(j) for j in jobs]
            for c, f in zip(cases, futures):
                got, want = f.result(60), sampler.run(solver=solver, **c)
                assert got.samples.shape == want.samples.shape
                np.testing.assert_allclose(got.samples, want.samples, atol=1e-6, err_msg=f"{name} {mode} {c}")
                assert got.nfe == want.nfe
            if mode == "step" and solver != "dopri5":
                # one call per stage of the longest request per layout, not one per request
                solo = sum(sampler.nfe(c.get("steps"), solver) for c in cases)
                assert runner.calls < solo, (name, runner.calls, solo)
            runner.close(10)


# --- the server as users start it -----------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *args: str):
        self.port = free_port()
        self.url = f"127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(cli_argv("fm-run", "serve", *args, "--port", str(self.port), "--no-access-log"),
                                     stderr=subprocess.PIPE, text=True)
        end = time.monotonic() + 120
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"fm-run serve exited {self.proc.returncode}: {self.proc.stderr.read()}")
            try:
                if urllib.request.urlopen(f"http://{self.url}/v2/health/ready", timeout=2).status == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("fm-run serve did not become ready")

    def post(self, model: str, doc: dict | str, timeout: float = 60) -> tuple[int, dict]:
        """POST an infer request: `doc` as JSON, or a string sent as it is."""
        conn = http.client.HTTPConnection(self.url, timeout=timeout)
        conn.request("POST", f"/v2/models/{model}/infer", doc if isinstance(doc, str) else json.dumps(doc),
                     {"content-type": "application/json"})
        r = conn.getresponse()
        body = r.read()
        conn.close()
        return r.status, json.loads(body) if body else {}

    def metric(self, name: str) -> float:
        text = urllib.request.urlopen(f"http://{self.url}/metrics", timeout=10).read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        finally:
            self.proc.stderr.close()


@pytest.fixture(scope="module")
def server(files):
    s = Server(files["moons"], files["labelled"], files["decoder"], files["baked"])
    yield s
    assert s.stop() == 0


def test_tritonclient_reads_metadata_samples_and_densities_equal_to_fm_run(server, files, tmp_path):
    http_client = pytest.importorskip("tritonclient.http")
    c = http_client.InferenceServerClient(server.url)
    assert c.is_server_ready() and c.is_model_ready("moons") and c.is_model_ready("moons-logprob")
    meta = c.get_model_metadata("moons")
    assert {i["name"]: i["shape"] for i in meta["inputs"]} == {"noise": [-1, 2]}
    assert meta["outputs"] == [{"name": "samples", "datatype": "FP32", "shape": [-1, 2]}]
    assert json.loads(meta["parameters"]["contract"])["default_steps"] == 8
    assert [i["name"] for i in c.get_model_metadata("decoder")["inputs"]] == ["noise", "spks", "tokens"]

    answer = c.infer("moons", [], parameters={"n": 300, "seed": 7, "steps": 8, "solver": "midpoint"})
    got = answer.as_numpy("samples")
    assert answer.get_response()["parameters"]["nfe"] == 16
    run_cli("fm-run", "sample", MOONS, "-n", "300", "--seed", "7", "--steps", "8", "--solver", "midpoint",
            "--out", str(tmp_path / "s.npy"))
    np.testing.assert_allclose(got, np.load(tmp_path / "s.npy"), atol=1e-6)

    x = http_client.InferInput("x", list(got.shape), "FP32")
    x.set_data_from_numpy(got)
    logp = c.infer("moons-logprob", [x], parameters={"steps": 8}).as_numpy("logprob")
    run_cli("fm-run", "logprob", MOONS, str(tmp_path / "s.npy"), "--steps", "8", "--out", str(tmp_path / "lp.npy"))
    np.testing.assert_allclose(logp, np.load(tmp_path / "lp.npy"), rtol=1e-5, atol=1e-4)

    # labels as an INT64 input, noise sent as JSON and samples asked as JSON, guidance
    sampler = load(files["labelled"])
    noise = sampler.noise(4, seed=3)
    inputs = [http_client.InferInput("noise", [4, 2], "FP32"), http_client.InferInput("labels", [4], "INT64")]
    inputs[0].set_data_from_numpy(noise, binary_data=False)
    inputs[1].set_data_from_numpy(np.array([0, 1, 2, 3]))
    out = c.infer("labelled", inputs, outputs=[http_client.InferRequestedOutput("samples", binary_data=False)],
                  parameters={"guidance": 2.0, "steps": 6}).as_numpy("samples")
    np.testing.assert_allclose(out, sampler.sample(noise=noise, labels=[0, 1, 2, 3], guidance=2.0, steps=6), atol=1e-6)

    # a baked file (the whole solve is its graph): whole requests merged, the same samples
    baked = [c.infer("baked", [], parameters={"n": k, "seed": k}) for k in (3, 5)]
    for k, r in zip((3, 5), baked):
        np.testing.assert_allclose(r.as_numpy("samples"), load(files["baked"]).sample(k, seed=k), atol=1e-6)

    # a condition stage's input under its own name: token ids for every row
    cond = {"tokens": np.arange(1, 7), "spks": np.array([[0, 1, 0], [1, 0, 0]], np.float32)}
    inputs = [http_client.InferInput("tokens", [6], "INT64"), http_client.InferInput("spks", [2, 3], "FP32")]
    for i in inputs:
        i.set_data_from_numpy(cond[i.name()])
    out = c.infer("decoder", inputs, parameters={"n": 2, "seed": 1, "guidance": 2.0}).as_numpy("samples")
    want = load(files["decoder"]).sample(2, seed=1, cond=cond, guidance=2.0)
    np.testing.assert_allclose(out, want, atol=1e-6)

    # a negative prompt: the input null:tokens is the unconditional half's tokens
    negative = http_client.InferInput("null:tokens", [6], "INT64")
    negative.set_data_from_numpy(np.array([2, 2, 5, 0, 0, 1]))
    out = c.infer("decoder", inputs + [negative], parameters={"n": 2, "seed": 1, "guidance": 2.0}).as_numpy("samples")
    want = load(files["decoder"]).sample(2, seed=1, cond=cond, guidance=2.0, null_cond={"tokens": np.array([2, 2, 5, 0, 0, 1])})
    np.testing.assert_allclose(out, want, atol=1e-6)


@pytest.mark.parametrize("doc, status, words", [
    ({"inputs": [], "parameters": {"n": 2, "solver": "nope"}}, 400, "unknown solver"),
    ({"inputs": [], "parameters": {"n": 2, "solver": "jump"}}, 400, "is a velocity model"),
    ({"inputs": [], "parameters": {"n": 2, "stepz": 3}}, 400, "unknown parameter 'stepz'"),
    ({"inputs": [], "parameters": {"n": 2, "steps": 5000}}, 400, "at most 1000"),
    ({"inputs": [], "parameters": {"n": 10**6}}, 413, "at most 65536"),
    ({"inputs": [{"name": "noise", "datatype": "FP32", "shape": [2, 3], "data": [0.0] * 6}]}, 400, "noise"),
    ({"inputs": [{"name": "noise", "datatype": "FP32", "shape": [2, 2], "data": [1.0]}]}, 400, "1 values for shape"),
    ({"inputs": [{"name": "noise", "datatype": "TEXT", "shape": [1], "data": [1]}]}, 400, "datatype"),
    ({"inputs": [], "parameters": {"n": 2, "seed": "zero"}}, 400, "not an integer"),
    ({"inputs": [{"name": "noise", "datatype": "FP32", "shape": [65536, 65536, 65536, 65536], "data": []}]}, 400,
     "0 values for shape"),
    ({"inputs": [{"name": "noise", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}] * 2}, 400, "given twice"),
    ({"inputs": [{"name": "labels", "datatype": "INT64", "shape": [1], "data": [1.7]}]}, 400, "whole numbers"),
    ("[" * 100_000 + "]" * 100_000, 400, "nested too deep"),
])
def test_bad_requests_get_their_status_and_one_line(server, doc, status, words):
    got, body = server.post("moons", doc)
    assert got == status and words in body["error"] and "\n" not in body["error"], body
    assert server.post("nomodel", {"inputs": []})[0] == 404
    conn = http.client.HTTPConnection(server.url, timeout=30)
    conn.request("POST", "/v2/models/moons/infer", b"{not json")
    assert conn.getresponse().status == 400


def test_binary_bodies_that_lie_and_requests_past_their_time(server):
    head = json.dumps({"inputs": [{"name": "noise", "datatype": "FP32", "shape": [2, 2],
                                   "parameters": {"binary_data_size": 16}}]}).encode()
    for length, tail, words in ((len(head), b"\0" * 8, "binary_data_size 16"), (len(head) + 99, b"\0" * 16, "past the body"),
                                (len(head), b"\0" * 20, "no input claims")):
        conn = http.client.HTTPConnection(server.url, timeout=30)
        conn.request("POST", "/v2/models/moons/infer", head + tail, {"Inference-Header-Content-Length": str(length)})
        r = conn.getresponse()
        assert r.status == 400 and words in json.loads(r.read())["error"]
    # Triton's timeout parameter (microseconds): 1 ms for a solve of seconds is 408, and the
    # server goes on serving
    status, body = server.post("moons", {"inputs": [], "parameters": {"n": 20000, "steps": 1000, "timeout": 1000}})
    assert status == 408 and "longer than 0.001 s" in body["error"]
    assert server.post("moons", {"inputs": [], "parameters": {"n": 1}})[0] == 200


def test_a_request_head_past_its_bound_is_431_and_the_server_stops_reading_it(server):
    """A header line sent without end is cut at 64 KiB: the client gets 431 and a closed
    connection long before it has sent its 8 MB, and the server goes on serving."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"POST /v2/models/moons/infer HTTP/1.1\r\nhost: x\r\nx-big: ")
        sent, answer = 0, b""
        try:
            while sent < 8 << 20:
                s.sendall(b"a" * 16384)
                sent += 16384
        except OSError:         # the server closed the connection on us
            pass
        try:
            while chunk := s.recv(4096):
                answer += chunk
        except OSError:
            pass
    assert answer.startswith(b"HTTP/1.1 431") and b"64 KiB" in answer, answer[:200]
    assert sent < 8 << 20
    assert server.post("moons", {"inputs": [], "parameters": {"n": 1}})[0] == 200


def test_hostile_requests_get_their_documented_status_and_the_server_stays_up(tmp_path):
    """fuzz/hostile_server.py: malformed bodies, numbers, tensors, ids, memory, request heads,
    timeouts and routes, each answered with its status and one error line; the server ready after
    each, its memory back within 200 MB, exit 0 on SIGTERM."""
    import sys
    p = subprocess.run([sys.executable, "-m", "fuzz.hostile_server", str(tmp_path / "c"), "--json", str(tmp_path / "r.json")],
                       capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[1])
    print(p.stdout)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    results = json.loads((tmp_path / "r.json").read_text())
    assert {r["class"] for r in results} >= {"bodies", "numbers", "tensors", "ids", "memory", "head", "time", "routes"}
    assert len(results) >= 40 and not any(r["problems"] for r in results)
    assert {r["rc"] for r in results} == {200, 400, 404, 408, 413, 431}


@pytest.mark.slow
def test_full_queue_is_429_and_disconnect_cancels(files):
    # the second slow request waits for the first: with a busy machine the two took past the
    # default 60 s request timeout (408), which is not what this test is about
    s = Server(MOONS, "--max-queue", "1", "--max-batch-rows", "1", "--request-timeout", "600")
    try:
        slow = {"inputs": [], "parameters": {"n": 20000, "steps": 1000, "seed": 0}}
        results, took = [], []

        def post_slow():
            clock = time.monotonic()
            results.append(s.post("moons", slow)[0])
            took.append(time.monotonic() - clock)
        threads = [threading.Thread(target=post_slow) for _ in range(2)]
        for t in threads:
            t.start()
            time.sleep(0.5)
        status, body = s.post("moons", {"inputs": [], "parameters": {"n": 1}})
        assert status == 429 and "wait" in body["error"]
        for t in threads:
            t.join(120)
        assert results == [200, 200]
        # a client that leaves: its rows stop at the next step, the server says 499 in its metrics
        sock = socket.create_connection(("127.0.0.1", s.port))
        body = json.dumps(slow).encode()
        sock.sendall(b"POST /v2/models/moons/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        time.sleep(0.5)
        assert s.metric("fm_serve_active_requests") == 1
        sock.close()
        # its rows leave the solve at the next step boundary, long before the solve would end
        clock = time.monotonic()
        gone = 'fm_serve_requests_total{model="moons",status="499"}'
        while (s.metric("fm_serve_active_requests") or not s.metric(gone)) and time.monotonic() - clock < min(took) / 2:
            time.sleep(0.05)
        left = time.monotonic() - clock
        print(f"a disconnected request left the solve {left:.2f} s after its client (a whole solve: {min(took):.1f} s)")
        assert s.metric("fm_serve_active_requests") == 0 and left < min(took) / 2
        assert s.metric(gone) == 1
    finally:
        assert s.stop() == 0


@pytest.mark.slow
def test_sigterm_drains_every_accepted_request(files):
    s = Server(MOONS)
    n, results = 6, []
    work = {"inputs": [], "parameters": {"n": 2000, "steps": 200, "seed": 1}}
    threads = [threading.Thread(target=lambda: results.append(s.post("moons", work, timeout=120))) for _ in range(n)]
    for t in threads:
        t.start()
    end = time.monotonic() + 30
    while s.metric("fm_serve_active_requests") + s.metric("fm_serve_queue_depth") < n and time.monotonic() < end:
        time.sleep(0.05)
    s.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(120)
    assert s.stop() == 0
    assert [status for status, _ in results] == [200] * n
    want = load(MOONS).sample(2000, seed=1, steps=200)
    for _, body in results:
        np.testing.assert_allclose(np.reshape(body["outputs"][0]["data"], (2000, 2)), want, atol=1e-6)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{s.url}/v2/health/ready", timeout=2)


def test_refusals_at_start_are_the_clis(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    p = run_cli("fm-run", "serve", str(bad), check=False)
    assert p.returncode == 3 and "bad.onnx" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        p = run_cli("fm-run", "serve", "--port", str(taken.getsockname()[1]), check=False)
    assert p.returncode == 2 and "cannot listen on 127.0.0.1" in p.stderr, p.stderr


def test_the_memory_budget_admits_requests_by_their_working_memory(files):
    """A request whose working memory alone is over --max-memory is 413 before any work; one that
    would take the requests in flight past it is 429 (retry); what a request held is given back."""
    s = Server(MOONS, "--max-memory", "300M", "--max-rows", "100000000", "--batching", "none", "--threads", "1")
    try:
        status, body = s.post("moons", {"inputs": [], "parameters": {"n": 5_000_000, "seed": 0}})
        assert status == 413 and "--max-memory" in body["error"], body
        results = []
        first = threading.Thread(target=lambda: results.append(
            s.post("moons", {"inputs": [], "parameters": {"n": 700_000, "steps": 10, "seed": 0}}, timeout=120)))
        first.start()
        end = time.monotonic() + 30
        while not s.metric("fm_serve_active_requests") + s.metric("fm_serve_queue_depth") and time.monotonic() < end:
            time.sleep(0.02)
        status, body = s.post("moons", {"inputs": [], "parameters": {"n": 700_000, "steps": 2, "seed": 1}})
        assert status == 429 and "memory budget" in body["error"], body
        first.join(120)
        assert results[0][0] == 200
        assert s.post("moons", {"inputs": [], "parameters": {"n": 700_000, "steps": 2, "seed": 1}})[0] == 200
    finally:
        assert s.stop() == 0


@pytest.mark.slow
def test_sigterm_past_grace_cancels_what_still_runs(files):
    """Requests that cannot finish within --grace are cancelled and answered 503; the server exits 0
    within the grace, its graph calls ended rather than left running."""
    s = Server(MOONS, "--grace", "1", "--batching", "none", "--threads", "2")
    results = []
    work = {"inputs": [], "parameters": {"n": 60000, "steps": 1000, "seed": 1}}      # half a minute of work each
    threads = [threading.Thread(target=lambda: results.append(s.post("moons", work, timeout=120))) for _ in range(2)]
    for t in threads:
        t.start()
    end = time.monotonic() + 30
    while s.metric("fm_serve_active_requests") + s.metric("fm_serve_queue_depth") < 2 and time.monotonic() < end:
        time.sleep(0.05)
    time.sleep(0.5)
    clock = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(30) == 0
    took = time.monotonic() - clock
    for t in threads:
        t.join(30)
    assert took < 5, took
    assert [status for status, _ in results] == [503, 503], results
    assert all("--grace" in body["error"] for _, body in results)
    s.stop()


def _cpu_and_rss(pid: int) -> tuple[float, int]:
    """(CPU seconds the process has used, its resident bytes), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return (int(fields[11]) + int(fields[12])) / tick, rss


@pytest.mark.slow
@pytest.mark.parametrize("logprob", [False, True], ids=["sample", "logprob"])
def test_a_timed_out_request_stops_computing_and_gives_its_memory_back(files, logprob):
    """After its 408 the request's graph calls end: the server uses (almost) no CPU in the next
    two seconds, and its resident memory returns near its level before the request."""
    s = Server(MOONS, "--batching", "none", "--threads", "1", "--request-timeout", "1")
    try:
        s.post("moons", {"inputs": [], "parameters": {"n": 10, "seed": 0}})        # warm: sessions, arenas
        _, rss_before = _cpu_and_rss(s.proc.pid)
        x = np.random.default_rng(0).standard_normal((60000, 2)).astype(np.float32)
        doc = ({"inputs": [{"name": "x", "shape": [60000, 2], "datatype": "FP32", "data": x.ravel().tolist()}],
                "parameters": {"steps": 1000}} if logprob else
               {"inputs": [], "parameters": {"n": 60000, "steps": 1000, "seed": 0}})
        status, body = s.post("moons-logprob" if logprob else "moons", doc)
        assert status == 408, body
        time.sleep(0.3)                 # the graph call under way when the deadline passed ends
        cpu0, _ = _cpu_and_rss(s.proc.pid)
        time.sleep(2.0)
        cpu1, rss_after = _cpu_and_rss(s.proc.pid)
        print(f"after the 408: {cpu1 - cpu0:.2f} CPU s in 2 s; RSS {rss_before >> 20} -> {rss_after >> 20} MiB")
        assert cpu1 - cpu0 < 0.3, f"{cpu1 - cpu0:.2f} CPU s used after the 408"
        assert rss_after - rss_before < 100 << 20, (rss_before >> 20, rss_after >> 20)
    finally:
        assert s.stop() == 0
