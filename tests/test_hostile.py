"""Model files written on purpose to lie: the runtime refuses their output instead of passing it on."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import fm_runtime
from fm_runtime.model.contract import build_metadata, write_metadata
from fuzz.hostile_files import loop, loop_inits, model

from .conftest import busy_for, cli_argv, run_cli, run_process, start_process
from .node_bridge import needs_node, node_sample


def lying_baked(path, rows_out: str) -> None:
    """A baked file declaring data shape [2] whose output has other rows: the first row only
    ("one") or the batch twice over ("double")."""
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 2])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])
    starts, ends = (helper.make_tensor("s", TensorProto.INT64, [1], [0]), helper.make_tensor("e", TensorProto.INT64, [1], [1]))
    nodes = ([helper.make_node("Slice", ["z", "s", "e"], ["x"])] if rows_out == "one"
             else [helper.make_node("Concat", ["z", "z"], ["x"], axis=0)])
    graph = helper.make_graph(nodes, "liar", [z], [x], [starts, ends] if rows_out == "one" else [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=9)
    write_metadata(model.metadata_props, build_metadata(data_shape=[2], path={"name": "ot"},
                                                        baked={"solver": "euler", "steps": 1}))
    onnx.save(model, str(path))


@pytest.mark.parametrize("rows_out", ["one", "double"])
def test_output_of_the_wrong_shape_is_refused_on_every_call(tmp_path, rows_out):
    lying_baked(tmp_path / "liar.onnx", rows_out)
    s = fm_runtime.load(tmp_path / "liar.onnx")
    for n in (1 if rows_out == "double" else 3, 10):
        with pytest.raises(fm_runtime.ModelError, match="returned samples of shape"):
            s.sample(n, seed=0)
    p = run_cli("fm-run", "sample", str(tmp_path / "liar.onnx"), "-n", "10", "--seed", "0",
                "--out", str(tmp_path / "x.npy"), check=False)
    assert p.returncode == 3 and "returned samples of shape" in p.stderr and not (tmp_path / "x.npy").exists()
    assert np.array_equal(sorted(p.name for p in tmp_path.iterdir()), ["liar.onnx"])


# --- the crafted-file corpus, stopping, memory and the user's home --------------------------



@pytest.mark.slow
def test_crafted_corpus_never_crashes_lies_or_hangs(tmp_path):
    """Every hostile file through sample/info/logprob/bench/sample --grid at the default budget and a time limit:
    documented non-1 codes (the expected one where stated), one clean stderr line, nothing left
    behind, peak memory under fuzz.hostile.PEAK_BOUND (see fuzz/hostile.py)."""
    import json
    p = subprocess.run([sys.executable, "-m", "fuzz.hostile", str(tmp_path / "c"), "--json", str(tmp_path / "r.json")],
                       capture_output=True, text=True, timeout=900, cwd=Path(__file__).parents[1])
    print(p.stdout)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    results = json.loads((tmp_path / "r.json").read_text())
    files = {(r["class"], r["name"]) for r in results}
    assert len(files) >= 40 and len(results) == 5 * len(files)
    assert {cls for cls, _ in files} == {"metadata", "lies", "bombs", "endless", "terminal", "files"}
    assert not any(r["problems"] for r in results) and 1 not in {r["rc"] for r in results}
    stopped = {r["rc"] for r in results if r["class"] in ("bombs", "endless") and r["command"] == "sample"}
    assert {9, 3} <= stopped        # bombs refused for memory, unbounded loops at load


@pytest.mark.slow
def test_crafted_checkpoints_are_refused_naming_what_is_wrong(tmp_path):
    """Every crafted checkpoint and training state through fm-export, fm-train sample and fm-train
    fit --resume: exit 3 where the command reads the hostile part (2 where fm-export tells what it
    takes first), one clean line, nothing left behind, bounded time and memory (fuzz/hostile_checkpoints.py)."""
    import json
    p = subprocess.run([sys.executable, "-m", "fuzz.hostile_checkpoints", str(tmp_path / "c"), "--json",
                        str(tmp_path / "r.json")], capture_output=True, text=True, timeout=900,
                       cwd=Path(__file__).parents[1])
    print(p.stdout)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    results = json.loads((tmp_path / "r.json").read_text())
    assert len(results) == 3 * len({r["name"] for r in results}) >= 90
    assert not any(r["problems"] for r in results) and {r["rc"] for r in results} == {0, 2, 3}
    refusals = [r for r in results if r["rc"] == 3]
    assert all(r["stderr"].count("\n") == 1 and "checkpoint" in r["stderr"] for r in refusals)
    assert max(r["seconds"] for r in results if r["class"] != "control") < 10


def _never_ending(path) -> None:
    onnx.save(model([loop("x", "v")], loop_inits("v")), str(path))


@pytest.mark.parametrize("how, sig", [(["--tile", "0"], signal.SIGTERM), (["--threads", "4", "--tile", "16"], signal.SIGTERM),
                                      (["--threads", "2", "--tile", "16"], signal.SIGINT)])
def test_a_run_that_never_ends_stops_on_signal_within_2_s(tmp_path, how, sig):
    _never_ending(tmp_path / "loop.onnx")
    proc = subprocess.Popen(cli_argv("fm-run", "sample", str(tmp_path / "loop.onnx"), "-n", "64", "--seed", "0",
                                    "--out", str(tmp_path / "x.npy"), "--allow-loops", *how),
                            stderr=subprocess.PIPE, text=True)
    # loaded and inside the Loop: a second of CPU is well past fm-run's imports (0.4 s)
    assert busy_for(proc.pid, 1.0) and proc.poll() is None
    sent = time.monotonic()
    proc.send_signal(sig)
    proc.wait(timeout=10)
    latency = time.monotonic() - sent
    err = proc.stderr.read()
    print(f"stopped {latency * 1e3:.0f} ms after the signal")
    assert proc.returncode == 130 and latency < 2.0, (proc.returncode, latency, err)
    assert err.strip() == "fm-run: interrupted; nothing written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loop.onnx"]


def test_a_loop_the_file_does_not_bound_is_refused_unless_trusted(tmp_path):
    """A Loop with no fixed trip count (or nested loops past limits.max_loop_trips) may never end,
    and no timeout stops a running onnxruntime call in JavaScript: refused at load, exit 3, with
    the option that trusts the file named; a small fixed loop runs."""
    from fuzz.hostile_files import _nested_loops
    _never_ending(tmp_path / "loop.onnx")
    onnx.save(model(*_nested_loops(1000, 1000)), str(tmp_path / "nested.onnx"))
    onnx.save(model([onnx.helper.make_node("Shape", ["x"], ["s"]),
                     onnx.helper.make_node("ReduceProd", ["s"], ["M_v"], keepdims=0), loop("x", "v")],
                    loop_inits("v")[1:]), str(tmp_path / "dynamic.onnx"))
    for name, words in [("dynamic.onnx", "Loop node making 'v' has no trip count the file fixes"),
                        ("loop.onnx", "Loop node making 'v' runs 1,000,000,000,000,000 times, more than"),
                        ("nested.onnx", "runs 1,000,000 times (nested loops counted together), more than the 65,536")]:
        p = run_cli("fm-run", "sample", str(tmp_path / name), "-n", "8", "--out", str(tmp_path / "x.npy"), check=False)
        assert p.returncode == 3 and words in p.stderr and "--allow-loops" in p.stderr, p.stderr
        assert p.stderr.count("\n") == 1
        with pytest.raises(fm_runtime.ModelError, match="allow_loops=True"):
            fm_runtime.load(tmp_path / name)
    assert fm_runtime.load(tmp_path / "nested.onnx", allow_loops=True).sample(noise=np.ones((3, 2), np.float32),
                                                                              steps=1).shape == (3, 2)
    onnx.save(model([loop("x", "h", 4), onnx.helper.make_node("Mul", ["h", "half"], ["v"])],
                    [*loop_inits("h", 4), onnx.helper.make_tensor("half", onnx.TensorProto.FLOAT, [], [0.5])]),
              str(tmp_path / "small.onnx"))
    x = fm_runtime.load(tmp_path / "small.onnx").sample(noise=np.ones((3, 2), np.float32), steps=1, solver="euler")
    np.testing.assert_allclose(x, 1.5)      # x + 0.5 x


def test_timeout_ends_a_run_with_its_own_code(tmp_path):
    _never_ending(tmp_path / "loop.onnx")
    clock = time.monotonic()
    p = run_process("fm-run", "sample", str(tmp_path / "loop.onnx"), "-n", "8", "--out", str(tmp_path / "x.npy"),
                    "--timeout", "1", "--allow-loops", check=False)
    assert p.returncode == 124 and "stopped after --timeout 1 s" in p.stderr and time.monotonic() - clock < 15
    assert sorted(q.name for q in tmp_path.iterdir()) == ["loop.onnx"]


def test_a_self_test_that_never_ends_is_stopped_at_load(tmp_path, monkeypatch):
    from fm_runtime.model import session
    onnx.save(model([loop("x", "v")], loop_inits("v"),
                    selftest='{"inputs": {"x": [[1, 2]], "t": [0]}, "output": [[1, 2]]}'), str(tmp_path / "m.onnx"))
    monkeypatch.setattr(session, "SELFTEST_SECONDS", 0.5)
    clock = time.monotonic()
    with pytest.raises(fm_runtime.ModelError, match="self-test .* did not finish within 0.5 s"):
        fm_runtime.load(tmp_path / "m.onnx", allow_loops=True)
    assert time.monotonic() - clock < 5


HIGH_WATER = """
import atexit, sys
def report():
    hwm = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
    open(REPORT, "w").write(hwm)
atexit.register(report)
from fm_runtime.cli.main import main
sys.argv[0] = "fm-run"
main()
"""


def _peak_rss(args, cwd) -> tuple[int, str, int]:
    """(exit code, stderr, peak RSS in bytes) of fm-run args, as the process itself saw it (the
    kernel's ru_maxrss of a child also counts the forking parent's pages, here all of pytest's)."""
    report = Path(cwd) / ".hwm"
    code = HIGH_WATER.replace("REPORT", repr(str(report)))
    p = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    peak = int(report.read_text()) * 1024
    report.unlink()
    return p.returncode, p.stderr, peak


STREAM_BOUND = 512 << 20


def test_image_model_streams_in_bounded_memory(tmp_path):
    """[3, 64, 64] samples streamed to disk: peak RSS under STREAM_BOUND, and under a 1 GiB
    budget, where drawing whole 65 536-row noise blocks (3 GiB) used to fail."""
    from fm_runtime.solve.noise import noise_rows
    onnx.save(model(shape=(3, 64, 64)), str(tmp_path / "img.onnx"))
    n = 3000
    rc, err, peak = _peak_rss(["sample", "img.onnx", "-n", str(n), "--seed", "3", "--steps", "1", "--solver", "euler",
                               "--out", "x.npy", "--max-memory", "1G"], tmp_path)
    print(f"peak RSS {peak / 2**20:.0f} MiB for {n} samples of [3, 64, 64] ({n * 4 * 3 * 64 * 64 / 2**20:.0f} MiB written)")
    assert rc == 0, err
    assert peak < STREAM_BOUND
    x = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert x.shape == (n, 3, 64, 64)
    for a, b in [(0, 3), (1364, 1366), (n - 2, n)]:          # rows across chunk boundaries
        np.testing.assert_allclose(x[a:b], 1.5 * noise_rows(3, a, b, (3, 64, 64)), rtol=1e-6)


@pytest.mark.parametrize("n, solver, threads", [(2000, "euler", 2), (8000, "rk4", 2), (8000, "midpoint", 1)])
def test_in_memory_accounting_covers_the_measured_peak(tmp_path, n, solver, threads):
    """The in-memory refusal's accounting (limits.in_memory_bytes) is at least the peak measured,
    and not wildly above it."""
    from fm_runtime.engine.tiler import default_tile
    from fm_runtime.tools import limits
    onnx.save(model(shape=(3, 32, 32)), str(tmp_path / "img.onnx"))
    dim = 3 * 32 * 32
    rc, err, peak = _peak_rss(["sample", "img.onnx", "-n", str(n), "--seed", "0", "--steps", "2", "--solver", solver,
                               "--threads", str(threads)], tmp_path)
    assert rc == 0, err
    need = limits.in_memory_bytes(n, 4 * dim, tile_rows=default_tile(dim), workers=threads,
                                  stages=fm_runtime.nfe(solver, 1))
    print(f"{n} rows, {solver}, {threads} threads: measured {peak / 2**20:.0f} MiB, accounted {need / 2**20:.0f} MiB")
    # "not wildly above": whether the worker threads' tiles are in flight at the same moment is up
    # to the scheduler, so the same run peaks anywhere from 159 to 193 MiB (2000 rows, 2 threads)
    assert peak <= need < 2.5 * peak


@needs_node
def test_a_velocity_of_the_wrong_size_is_refused_in_both_languages(tmp_path):
    """A graph whose output size depends on values (no static shape to check) and returns v [B, 4]
    for data [2]: refused at the first evaluation (ModelError, exit 3) by Python and by
    JavaScript, not broadcast into samples."""
    T, h = TensorProto, helper
    nodes = [h.make_node("Mul", ["t", "zero"], ["t0"]), h.make_node("ReduceMax", ["t0"], ["m"], keepdims=0),
             h.make_node("Add", ["m", "two"], ["m2"]), h.make_node("Cast", ["m2"], ["k"], to=T.INT64),
             h.make_node("Reshape", ["k", "one"], ["k1"]), h.make_node("Concat", ["one", "k1"], ["reps"], axis=0),
             h.make_node("Tile", ["x", "reps"], ["v"])]          # v [B, 4]: repeats computed from t's values
    graph = h.make_graph(nodes, "liar", [h.make_tensor_value_info("x", T.FLOAT, ["B", 2]),
                                         h.make_tensor_value_info("t", T.FLOAT, ["B"])],
                         [h.make_tensor_value_info("v", T.FLOAT, ["B", "D"])],
                         [h.make_tensor("one", T.INT64, [1], [1]), h.make_tensor("zero", T.FLOAT, [], [0.0]),
                          h.make_tensor("two", T.FLOAT, [], [2.0])])
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=9)
    write_metadata(m.metadata_props, build_metadata(data_shape=[2], path={"name": "ot"}))
    onnx.save(m, tmp_path / "liar.onnx")
    with pytest.raises(fm_runtime.ModelError, match=r"returned v of shape \[4, 4\]"):
        fm_runtime.load(tmp_path / "liar.onnx").sample(4, seed=0)
    got = node_sample(tmp_path, [(tmp_path / "liar.onnx", [{"n": 4, "seed": 0}])])[0]
    assert got["error"] == "ModelError" and "returned v of shape [4, 4]" in got["message"], got


BOMBS = {name: make for cls, name, make, _ in __import__("fuzz.hostile_files", fromlist=["corpus"]).corpus()
         if cls == "bombs"}


# fm-run in a fresh interpreter that writes its own peak RSS (VmHWM: this process image only;
# ru_maxrss would carry the parent's, inherited at fork, across exec)
PEAK = """
import atexit, sys
def peak(path=sys.argv[1]):
    with open(path, "w") as f:
        f.write(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1])
atexit.register(peak)
from fm_runtime.cli.main import main
sys.argv = ["fm-run", *sys.argv[2:]]
main()
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak memory read from /proc")
@pytest.mark.parametrize("name", sorted(BOMBS))
def test_a_memory_bomb_is_refused_before_it_allocates(tmp_path, name):
    # at the default budget (half the machine's memory, so onnxruntime's own allocation failure
    # would come only after gigabytes): the file alone says what its graph will take
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(BOMBS[name]())
    for argv in (["sample", str(path), "-n", "64", "--out", str(tmp_path / "x.npy")], ["info", str(path)]):
        p = subprocess.run([sys.executable, "-c", PEAK, str(tmp_path / "peak"), *argv], capture_output=True, text=True,
                           timeout=300)
        peak = int((tmp_path / "peak").read_text()) / 1024
        print(f"{name} {argv[0]}: exit {p.returncode}, peak RSS {peak:.0f} MiB: {p.stderr.strip()}")
        assert p.returncode == 9 and "refused before loading" in p.stderr, p.stderr
        assert p.stderr.count("\n") == 1 and peak < 512
    assert sorted(q.name for q in tmp_path.iterdir()) == sorted(["peak", f"{name}.onnx"])


def _grows_at_run_time(path) -> None:
    """v = x tiled 10^8 times along its last axis, the count computed from t's values (so no
    static shape tells the loader): 800 MB a row, allocated inside onnxruntime's first call."""
    T, h = TensorProto, helper
    nodes = [h.make_node("Mul", ["t", "zero"], ["t0"]), h.make_node("ReduceMax", ["t0"], ["m"], keepdims=0),
             h.make_node("Add", ["m", "big"], ["m2"]), h.make_node("Cast", ["m2"], ["k"], to=T.INT64),
             h.make_node("Reshape", ["k", "one"], ["k1"]), h.make_node("Concat", ["one", "k1"], ["reps"], axis=0),
             h.make_node("Tile", ["x", "reps"], ["v"])]
    graph = h.make_graph(nodes, "grows", [h.make_tensor_value_info("x", T.FLOAT, ["B", 2]),
                                          h.make_tensor_value_info("t", T.FLOAT, ["B"])],
                         [h.make_tensor_value_info("v", T.FLOAT, ["B", "D"])],
                         [h.make_tensor("one", T.INT64, [1], [1]), h.make_tensor("zero", T.FLOAT, [], [0.0]),
                          h.make_tensor("big", T.FLOAT, [], [1e8])])
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=9)
    write_metadata(m.metadata_props, build_metadata(data_shape=[2], path={"name": "ot"}))
    onnx.save(m, path)


@pytest.mark.skipif(sys.platform != "linux", reason="the budget is RLIMIT_DATA, enforced as Linux does")
def test_the_memory_budget_limits_the_real_process(tmp_path):
    """fm-run's --max-memory is a data limit on its process (the in-process runner of the tests
    records the budget without setting it): an allocation past it fails inside onnxruntime, and
    the run ends with exit 9; under the default budget the same graph allocates and is refused for
    its output's shape instead."""
    _grows_at_run_time(tmp_path / "grows.onnx")
    args = ("fm-run", "sample", str(tmp_path / "grows.onnx"), "-n", "2", "--steps", "1", "--out", str(tmp_path / "x.npy"))
    p = run_process(*args, "--max-memory", "512M", check=False)
    assert p.returncode == 9 and "more memory than the budget allows" in p.stderr, p.stderr
    assert p.stderr.count("\n") == 1
    p = run_process(*args, check=False)
    assert p.returncode == 3 and "returned v of shape" in p.stderr, p.stderr
    assert sorted(q.name for q in tmp_path.iterdir()) == ["grows.onnx"]


@needs_node
def test_both_readers_refuse_every_bomb_the_same_way(tmp_path):
    # the JavaScript reader checks the same bounds (js/src/preflight.mjs) with the same message
    from fm_runtime.errors import ResourceError
    jobs, want = [], []
    for name, make in sorted(BOMBS.items()):
        path = tmp_path / f"{name}.onnx"
        path.write_bytes(make())
        with pytest.raises(ResourceError) as e:
            fm_runtime.load(path)
        want.append(str(e.value))
        jobs.append((path, [{"n": 4, "seed": 0}]))
    got = node_sample(tmp_path, jobs)
    assert [g.get("error") for g in got] == ["ResourceError"] * len(BOMBS), got
    assert [g["message"] for g in got] == want


@needs_node
def test_both_readers_refuse_a_loop_the_file_does_not_bound(tmp_path):
    # js/src/preflight.mjs checks the same Loop bound (its option is allowLoops); in JavaScript a
    # running onnxruntime call cannot be stopped at all, so this check is the only bound there
    from fuzz.hostile_files import _nested_loops
    files = {"fixed": model([loop("x", "v")], loop_inits("v")), "nested": model(*_nested_loops(1000, 1000)),
             "dynamic": model([onnx.helper.make_node("Shape", ["x"], ["s"]),
                               onnx.helper.make_node("ReduceProd", ["s"], ["M_v"], keepdims=0), loop("x", "v")],
                              loop_inits("v")[1:]),
             "small": model([loop("x", "h", 4), onnx.helper.make_node("Mul", ["h", "half"], ["v"])],
                            [*loop_inits("h", 4), onnx.helper.make_tensor("half", onnx.TensorProto.FLOAT, [], [0.5])])}
    want = {}
    for name, m in files.items():
        onnx.save(m, str(tmp_path / f"{name}.onnx"))
        try:
            fm_runtime.load(tmp_path / f"{name}.onnx")
        except fm_runtime.ModelError as e:
            want[name] = str(e).split("; refused")[0]
    z = np.ones((3, 2), np.float32)
    req = [{"noise": z, "steps": 1, "solver": "euler"}]
    got = node_sample(tmp_path, [(tmp_path / f"{name}.onnx", req) for name in files]
                      + [(tmp_path / "nested.onnx", req, {"allowLoops": True})])
    for (name, _), g in zip(files.items(), got):
        if name == "small":
            np.testing.assert_allclose(g[0], 1.5)
        else:
            assert g["error"] == "ModelError" and g["message"].split("; refused")[0] == want[name], (name, g)
            assert "allowLoops: true" in g["message"]
    assert set(want) == {"fixed", "nested", "dynamic"}
    np.testing.assert_allclose(got[-1][0], 1.5)     # trusted: the million-trip loop runs


def _outcome(kind: str, message: str) -> tuple[str, str]:
    """(error class, message) without what differs by language on purpose: onnxruntime's own text
    in parentheses (its Python binding prefixes a status code) and the name of the trust option."""
    for quoted in ("the graph failed while running (", "not a loadable ONNX model ("):
        message = message.split(quoted)[0]
    return kind, message.split("; refused")[0]


# the Python reader refuses these from the output shape the graph declares, at load; the
# JavaScript reader from the output the graph returns, at its first call: same class, other words
DECLARED_SHAPE = {"velocity_wider", "velocity_rank_3"}


@needs_node
def test_both_readers_give_every_crafted_file_the_same_outcome(tmp_path):
    from fuzz.hostile_files import corpus
    jobs, want = [], []
    for _cls, name, make, _ in corpus():
        if not callable(make):
            continue            # a directory, a FIFO, a sparse file: paths, not bytes
        path = tmp_path / f"{name}.onnx"
        path.write_bytes(make())
        try:
            fm_runtime.load(path).sample(n=4, seed=0)
            want.append((name, ("ok", "")))
        except fm_runtime.FmError as e:
            want.append((name, _outcome(type(e).__name__, str(e))))
        jobs.append((path, [{"n": 4, "seed": 0}]))
    got = node_sample(tmp_path, jobs)
    assert len(want) >= 80
    for (name, (kind, message)), g in zip(want, got):
        js = ("ok", "") if not isinstance(g, dict) else _outcome(g["error"], g["message"])
        assert js[0] == kind, (name, kind, message, g)
        if name not in DECLARED_SHAPE:
            assert js[1] == message, (name, message, js[1])


def test_info_says_whether_a_file_samples(tmp_path):
    # v = 1e30 t x passes its self-test (recorded at t = 0) and overflows in any real solve:
    # info shows what the file declares, then says it does not sample, with sample's exit code
    from onnx import TensorProto as T
    nodes = [helper.make_node("Unsqueeze", ["t", "ax"], ["tc"]), helper.make_node("Mul", ["x", "huge"], ["xb"]),
             helper.make_node("Mul", ["xb", "tc"], ["v"])]
    inits = [helper.make_tensor("ax", T.INT64, [1], [1]), helper.make_tensor("huge", T.FLOAT, [], [1e30])]
    onnx.save(model(nodes, inits, selftest='{"inputs": {"x": [[1, 2]], "t": [0]}, "output": [[0, 0]]}'),
              str(tmp_path / "m.onnx"))
    p = run_cli("fm-run", "info", str(tmp_path / "m.onnx"), check=False)
    assert p.returncode == 5 and "samples" in p.stdout and "no: " in p.stdout and "NaN/Inf" in p.stderr, p
    p = run_cli("fm-run", "info", check=False)
    assert p.returncode == 0 and "yes (3 rows at its defaults, 16 NFE" in p.stdout


# --- the torch tools (fm-train, fm-export) under --timeout, signals and --max-memory ----------

TRAIN = ("fit", "--width", "16", "--depth", "2", "--batch-size", "32", "--lr-schedule", "constant", "--no-progress")


def test_fm_train_stops_on_sigterm_and_keeps_its_last_checkpoint(tmp_path):
    out, log = tmp_path / "m.ckpt", tmp_path / "loss.csv"
    proc = start_process("fm-train", *TRAIN, "--steps", "1000000", "--checkpoint-every", "20",
                         "--loss-log", str(log), "--out", str(out))
    deadline = time.monotonic() + 120
    # training, past its first checkpoints: the loss rows of a step reach the log just before its
    # checkpoint is written, so a row past step 80 means the step-60 checkpoint is complete
    while not (log.is_file() and log.read_text().count("\n") > 82) and time.monotonic() < deadline:
        time.sleep(0.05)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    latency = time.monotonic() - sent
    # within seconds: the step under way ends, and a torch process takes a while to exit (2.0-2.5 s
    # measured with a CPU hog beside it, against fm-run's 0.1 s)
    assert proc.returncode == 130 and latency < 5.0 and err.count("\n") == 1, (latency, err)
    assert err.startswith("fm-train: interrupted at step ") and f"(continue with --resume {out})" in err
    held = int(err.split(" holds step ")[1].split()[0])
    from training.resume import read
    # a complete checkpoint that --resume accepts (read() checks every field it restores)
    assert read(out)["step"] == held >= 60 and sorted(q.name for q in tmp_path.iterdir()) == ["loss.csv", "m.ckpt"]


@pytest.mark.slow      # the same stop as SIGTERM's above, from the deadline
def test_fm_train_stops_at_its_timeout_with_nothing_half_written(tmp_path):
    p = run_process("fm-train", *TRAIN, "--steps", "1000000", "--out", str(tmp_path / "m.ckpt"), "--timeout", "1",
                    check=False)
    assert p.returncode == 124 and p.stderr.startswith("fm-train: stopped after --timeout 1 s"), p.stderr
    assert p.stderr.count("\n") == 1 and p.stderr.strip().endswith("nothing written")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("tool", ["fm-train", pytest.param("fm-export", marks=pytest.mark.slow)])
def test_the_torch_tools_stop_past_their_memory_budget(tmp_path, trained, tool):
    # torch fails its own allocations under an OS data limit (SystemError, then an abort), so
    # fm-train and fm-export watch their resident memory instead: importing torch alone is past 300M
    args = (*TRAIN, "--steps", "300", "--out", str(tmp_path / "m.ckpt")) if tool == "fm-train" \
        else (str(trained.ckpt), "--out", str(tmp_path / "m.onnx"))
    p = run_process(tool, *args, "--max-memory", "300M", check=False)
    assert p.returncode == 9 and p.stderr.count("\n") == 1, p.stderr
    assert "more than its 300 MiB budget (--max-memory); nothing written" in p.stderr
    assert list(tmp_path.iterdir()) == []      # (every other test runs these tools under the default budget)


def test_a_network_past_the_memory_budget_is_refused_before_it_is_built(tmp_path):
    """Its size is worked out on torch's meta device: exit 9 in a moment, not after filling the budget."""
    clock = time.monotonic()
    p = run_cli("fm-train", "fit", "--width", "1000000000", "--steps", "2", "--out", str(tmp_path / "m.ckpt"), check=False)
    assert p.returncode == 9 and "parameters" in p.stderr and "nothing trained" in p.stderr, p.stderr
    assert time.monotonic() - clock < 30 and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_fm_train_nproc_stops_its_whole_job_at_the_timeout(tmp_path):
    out = tmp_path / "m.ckpt"
    proc = subprocess.Popen(cli_argv("fm-train", *TRAIN, "--batch-size", "64", "--steps", "1000000", "--nproc", "2",
                                     "--checkpoint-every", "100", "--out", str(out), "--timeout", "20"),
                            stderr=subprocess.PIPE, text=True)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 124, err
    assert f"{out} holds the last --checkpoint-every step (continue with --resume {out})" in err.splitlines()[-1]
    time.sleep(1)
    left = subprocess.run(["pgrep", "-f", "torch.distributed.run|training.cli"], capture_output=True, text=True).stdout
    assert left.split() == [], left       # torchrun and both workers are gone


def test_add_divergence_names_a_graph_that_fails_its_checks(tmp_path):
    # a plain velocity graph that only runs one row at a time: the derived graph's checks run a
    # batch, and onnxruntime's failure there is an export error (8) in one line, not an internal one
    from onnx import TensorProto as T
    from onnx import helper as h
    g = h.make_graph([h.make_node("Reshape", ["x", "one_row"], ["r"]), h.make_node("Mul", ["r", "half"], ["m"]),
                      h.make_node("Reshape", ["m", "rows"], ["v"])], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, ["B", 2]), h.make_tensor_value_info("t", T.FLOAT, ["B"])],
                     [h.make_tensor_value_info("v", T.FLOAT, ["B", 2])],
                     [h.make_tensor("one_row", T.INT64, [2], [1, 2]), h.make_tensor("rows", T.INT64, [2], [-1, 2]),
                      h.make_tensor("half", T.FLOAT, [], [0.5])])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)], ir_version=9), str(tmp_path / "one.onnx"))
    p = run_cli("fm-export", "--add-divergence", str(tmp_path / "one.onnx"), "--data-shape", "2",
                "--out", str(tmp_path / "lp.onnx"), check=False)
    assert p.returncode == 8 and p.stderr.count("\n") == 1 and "failed while being checked" in p.stderr, p.stderr
    assert sorted(q.name for q in tmp_path.iterdir()) == ["one.onnx"]


def test_add_divergence_runs_the_preflight_before_it_loads_the_file(tmp_path):
    """A constant-folding bomb (a scalar expanded to 24 GiB) is refused by fm-run's own pre-flight,
    exit 9 in a moment, instead of being loaded and differentiated."""
    from onnx import numpy_helper
    io = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 2]),
          helper.make_tensor_value_info("t", TensorProto.FLOAT, ["B"])]
    nodes = [helper.make_node("Expand", ["one", "shape"], ["bomb"]), helper.make_node("ReduceSum", ["bomb"], ["s"], keepdims=0),
             helper.make_node("Mul", ["x", "s"], ["v"])]
    inits = [numpy_helper.from_array(np.array([40000, 40000, 4], np.int64), "shape"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one")]
    graph = helper.make_graph(nodes, "bomb", io, [helper.make_tensor_value_info("v", TensorProto.FLOAT, ["B", 2])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "bomb.onnx")
    clock = time.monotonic()
    p = run_cli("fm-export", "--add-divergence", str(tmp_path / "bomb.onnx"), "--out", str(tmp_path / "lp.onnx"), check=False)
    assert p.returncode == 9 and "refused before loading" in p.stderr, p.stderr
    assert time.monotonic() - clock < 10 and not (tmp_path / "lp.onnx").exists()


@needs_node
def test_a_self_test_label_past_int64_is_a_malformed_self_test_in_both(tmp_path):
    import json as _json
    m = onnx.load(str(Path(__file__).parent / "runtime" / "fixtures" / "tiny_cond.onnx"))
    prop = next(p for p in m.metadata_props if p.key == "fm.selftest")
    probe = _json.loads(prop.value)
    label = next(k for k in probe["inputs"] if k not in ("x", "t"))
    probe["inputs"][label][0] = 2**70
    prop.value = _json.dumps(probe)
    onnx.save(m, str(tmp_path / "st.onnx"))
    p = run_cli("fm-run", "info", str(tmp_path / "st.onnx"), check=False)
    assert p.returncode == 3 and "fm.selftest is malformed" in p.stderr, p.stderr
    got = node_sample(tmp_path, [(tmp_path / "st.onnx", [{"n": 1}])])[0]
    assert got["error"] == "ModelError" and "fm.selftest is malformed" in got["message"], got
