"""Hostile requests to fm-run serve, sent as an attacker or a careless client would.

    python -m fuzz.hostile_server [FOLDER] [--json results.json]

One server, on 127.0.0.1 at a free port, serves the shipped moons model and a token model
written here (v = x / 2 + table[ids], 256 values a row, ids declared in [0, 9]) under
--max-memory 256M, --max-body 4M and --request-timeout 30. Each probe is one exchange of at most
PROBE_TIMEOUT seconds; it passes when the answer has its documented status (docs/serve.md) with a
one-line error (JSON "error"; the HTTP layer's 431 in plain text) and the server is ready after
it. At the end the server's resident memory must be within RSS_BOUND of its level after the
first answers, and SIGTERM must end it with exit 0 within its --grace. Prints a table by class
(probes, statuses, worst seconds, failed); exit status 1 if any probe failed.
"""
from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

PROBE_TIMEOUT = 30.0
RSS_BOUND = 200 << 20
INFER = "/v2/models/{}/infer"
MOONS = Path(__file__).resolve().parents[1] / "fm_runtime" / "assets" / "moons.onnx"
GOOD = {"inputs": [], "parameters": {"n": 2, "seed": 0}}


def _tensor(name: str, datatype: str, shape: list, data) -> dict:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def _ids(data, datatype="INT64") -> dict:
    return {"inputs": [_tensor("ids", datatype, [len(data)], data)], "parameters": {"n": len(data), "seed": 0}}


def _noise(shape, data) -> dict:
    return {"inputs": [_tensor("noise", "FP32", shape, data)]}


def probes() -> list[tuple[str, str, str, object, int]]:
    """(class, name, model, what to send, expected status): what to send is a dict (JSON), str or
    bytes (the body), or ("raw", bytes) for a whole request written to the socket."""
    p = []
    add = lambda cls, name, doc, status, model="moons": p.append((cls, name, model, doc, status))   # noqa: E731
    add("control", "moons", GOOD, 200)
    add("control", "tokens", _ids([0, 9]), 200, "tokens")

    add("bodies", "not_json", b"{not json", 400)
    add("bodies", "not_utf8", b"\xff\xfe{}", 400)
    add("bodies", "empty", b"", 400)
    add("bodies", "a_list", "[]", 400)
    add("bodies", "inputs_an_object", {"inputs": {}}, 400)
    add("bodies", "nested_100k", "[" * 100_000 + "]" * 100_000, 400)
    add("bodies", "data_nested_10k", '{"inputs": [{"name": "noise", "datatype": "FP32", "shape": [1, 2], "data": '
        + "[" * 10_000 + "1" + "]" * 10_000 + "}]}", 400)
    add("bodies", "over_max_body", b" " * (5 << 20), 413)
    add("bodies", "binary_header_past_body",
        ("raw", b"POST /v2/models/moons/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n"
                b"inference-header-content-length: 99\r\n\r\n{}"), 400)

    add("numbers", "seed_401_digits", {"inputs": [], "parameters": {"n": 2, "seed": 10**400}}, 400)
    add("numbers", "seed_negative", {"inputs": [], "parameters": {"n": 2, "seed": -1}}, 400)
    add("numbers", "n_zero", {"inputs": [], "parameters": {"n": 0}}, 400)
    add("numbers", "n_fraction", {"inputs": [], "parameters": {"n": 2.5}}, 400)
    add("numbers", "n_true", {"inputs": [], "parameters": {"n": True}}, 400)
    add("numbers", "n_1e400", '{"inputs": [], "parameters": {"n": 1e400}}', 400)
    add("numbers", "steps_zero", {"inputs": [], "parameters": {"n": 2, "steps": 0}}, 400)
    add("numbers", "guidance_nan", '{"inputs": [], "parameters": {"n": 2, "guidance": NaN}}', 400)
    add("numbers", "probe_seed_negative", {"inputs": [_tensor("x", "FP32", [1, 2], [0.0, 0.0])],
                                           "parameters": {"probe_seed": -1}}, 400, "moons-logprob")
    add("numbers", "shape_product_past_int64", _noise([65536] * 4, []), 400)
    add("numbers", "shape_negative", _noise([-1, 2], [0.0, 0.0]), 400)
    add("numbers", "noise_nan", '{"inputs": [{"name": "noise", "datatype": "FP32", "shape": [1, 2], "data": [NaN, 0]}]}',
        400)

    add("tensors", "same_name_twice", {"inputs": [_tensor("noise", "FP32", [1, 2], [0, 0])] * 2}, 400)
    add("tensors", "unknown_input", {"inputs": [_tensor("nope", "FP32", [1, 2], [0, 0])]}, 400)
    add("tensors", "datatype_text", {"inputs": [_tensor("noise", "TEXT", [1], ["a"])]}, 400)
    add("tensors", "too_few_values", _noise([2, 2], [1.0]), 400)
    add("tensors", "data_a_string", _noise([1, 2], "0000"), 400)
    add("tensors", "logprob_x_scalar", {"inputs": [_tensor("x", "FP32", [], [1.0])]}, 400, "moons-logprob")
    add("tensors", "ids_as_float32", _ids([1.0, 2.0], "FP32"), 400, "tokens")

    add("ids", "negative", _ids([0, -1]), 400, "tokens")
    add("ids", "past_the_table", _ids([0, 10]), 400, "tokens")
    add("ids", "uint64_max", _ids([2**64 - 1], "UINT64"), 400, "tokens")
    add("ids", "fraction", _ids([1.5]), 400, "tokens")
    add("ids", "past_int64", _ids([2**70]), 400, "tokens")

    add("memory", "rows_past_max_rows", {"inputs": [], "parameters": {"n": 10**6}}, 413)
    add("memory", "past_max_memory", _ids([0] * 65536), 413, "tokens")
    add("memory", "binary_size_lie", ("raw", b"POST /v2/models/moons/infer HTTP/1.1\r\nhost: x\r\n"
                                              b"content-length: 100000000\r\n\r\n{}"), 413)

    add("head", "header_100_kib", ("raw", b"GET /v2/health/ready HTTP/1.1\r\nhost: x\r\nx-a: " + b"a" * 100_000
                                   + b"\r\n\r\n"), 431)
    add("head", "url_200_kib", ("raw", b"GET /v2/models/" + b"a" * 200_000 + b" HTTP/1.1\r\nhost: x\r\n\r\n"), 431)
    add("head", "10k_headers", ("raw", b"GET /v2/health/ready HTTP/1.1\r\nhost: x\r\n" + b"x-a: b\r\n" * 10_000
                                + b"\r\n"), 431)

    add("time", "timeout_1_ms", {"inputs": [], "parameters": {"n": 20000, "steps": 1000, "timeout": 1000}}, 408)
    add("time", "after_a_timeout", GOOD, 200)

    add("routes", "unknown_model", GOOD, 404, "nomodel")
    add("routes", "dot_dot", GOOD, 404, "../../etc")
    add("routes", "escape_in_name", GOOD, 404, "%1b%5b31m")
    return p


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) << 10
    return 0


def write_token_model(path: Path) -> None:
    """v = x / 2 + table[ids]: x [B, 256], ids [B] int64 declared in [0, 9]."""
    import numpy as np
    from onnx import TensorProto as T
    from onnx import helper as h

    from fuzz.hostile_files import _bytes, _vi, model
    table = h.make_tensor("table", T.FLOAT, [10, 256], np.linspace(-1, 1, 2560, dtype=np.float32))
    nodes = [h.make_node("Mul", ["x", "half"], ["hx"]), h.make_node("Gather", ["table", "ids"], ["row"], axis=0),
             h.make_node("Add", ["hx", "row"], ["v"])]
    inputs = [{"name": "ids", "dtype": "int64", "shape": [], "role": "condition", "range": [0, 9]}]
    path.write_bytes(_bytes(model(nodes, [table, h.make_tensor("half", T.FLOAT, [], [0.5])], shape=(256,),
                                  meta={"inputs": inputs},
                                  inputs=[_vi("x", ["B", 256]), _vi("t", ["B"]), _vi("ids", ["B"], T.INT64)])))


class Server:
    def __init__(self, folder: Path):
        write_token_model(folder / "tokens.onnx")
        self.port = _free_port()
        argv = [sys.executable, "-c", "import sys; from fm_runtime.cli.main import main; sys.argv[0] = 'fm-run'; main()",
                "serve", str(MOONS), str(folder / "tokens.onnx"), "--port", str(self.port), "--max-memory", "256M",
                "--max-body", "4M", "--request-timeout", "30", "--grace", "5", "--no-access-log"]
        self.proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
        end = time.monotonic() + 120
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"fm-run serve did not start: {self.proc.stderr.read() if self.proc.poll() is not None else ''}")
            time.sleep(0.2)

    def ready(self) -> bool:
        try:
            return self.exchange("GET", "/v2/health/ready", b"")[0] == 200
        except OSError:
            return False

    def exchange(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=PROBE_TIMEOUT)
        try:
            conn.request(method, path, body, {"content-type": "application/json"})
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def raw(self, request: bytes) -> tuple[int, bytes]:
        with socket.create_connection(("127.0.0.1", self.port), timeout=PROBE_TIMEOUT) as s:
            try:
                s.sendall(request)
            except OSError:             # the server stopped reading and closed: its answer is waiting
                pass
            answer = b""
            try:
                while chunk := s.recv(65536):
                    answer += chunk
                    if b"\r\n\r\n" in answer and len(answer) > answer.index(b"\r\n\r\n") + 4:
                        break
            except OSError:
                pass
        status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
        return status, answer.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in answer else b""


def _body(doc) -> bytes:
    if isinstance(doc, bytes):
        return doc
    return (doc if isinstance(doc, str) else json.dumps(doc)).encode()


def _problems(status: int, body: bytes, want: int, ready: bool) -> list[str]:
    found = [] if status == want else [f"status {status}, expected {want}"]
    if status >= 500:
        found.append("a server error")
    if status >= 400:
        try:
            error = json.loads(body)["error"] if status != 431 else body.decode()
            if "\n" in error.strip() or "Traceback" in error:
                found.append("an error of more than one line")
        except (ValueError, KeyError, TypeError):
            found.append(f"an error body that is not one JSON error: {body[:80]!r}")
    if not ready:
        found.append("the server is not ready after it")
    return found


def run_probes(folder: Path) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    server = Server(folder)
    results = []
    try:
        server.exchange("POST", INFER.format("moons"), _body(GOOD))
        idle = _rss(server.proc.pid)
        for cls, name, model, doc, want in probes():
            start = time.monotonic()
            try:
                if isinstance(doc, tuple):
                    status, body = server.raw(doc[1])
                else:
                    status, body = server.exchange("POST", INFER.format(model), _body(doc))
            except OSError as e:
                status, body = 0, str(e).encode()
            seconds = time.monotonic() - start
            results.append({"class": cls, "name": name, "path": model, "command": "POST", "rc": status,
                            "seconds": seconds, "stderr": body[:200].decode("utf-8", "replace"), "peak": _rss(server.proc.pid),
                            "problems": _problems(status, body, want, server.ready())})
        grown = _rss(server.proc.pid) - idle
        last = results[-1]
        if grown > RSS_BOUND:
            last["problems"].append(f"the server's memory grew by {grown >> 20} MiB over the probes")
    finally:
        server.proc.terminate()
        try:
            code = server.proc.wait(10)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            code = "no exit within 10 s of SIGTERM"
        err = server.proc.stderr.read()
    if code != 0 or "Traceback" in err:
        results[-1]["problems"].append(f"SIGTERM: exit {code}; {err.strip()[-300:]}")
    return results


def main() -> None:
    from fuzz.hostile import corpus_main
    corpus_main(__doc__, run_probes, {"| files | runs | exit codes (count) | worst peak MiB |":
                                      "| probes | answers | statuses (count) | server RSS MiB |"})


if __name__ == "__main__":
    main()
