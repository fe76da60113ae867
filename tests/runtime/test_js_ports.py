"""JavaScript ports of Python logic stay ports (scripts/mirrors.py has the markers and the record).

1. Every `// mirrors: fm_runtime/<path>.py (<function>, ...)` marker in js/src names a Python file
   and function (or Class.method) that exist, found by AST: renaming or removing the Python side
   fails here; and a JS function in a mirroring file that bears the camelCase name of a function
   of a module the file mirrors must carry a marker.
2. Drift, cheaply (diffusers' check_copies cut to hashes): js/src/mirrors.json records a sha256 of
   both sources of each marked pair; a side that changed while the record did not fails, naming the
   pair and `python scripts/mirrors.py --update` to run once both sides are reviewed.
3. Behaviour: the shared conformance vectors (tests/conformance/*.json) run in both languages
   (test_conformance.py, js/test/conformance.test.mjs). A pair counts as covered by them when the
   vectors execute both its Python function (traced here) and its JS function (node's V8 coverage
   of conformance.test.mjs): 78 of the 94 pairs. Pairs the vectors do not reach are compared
   Python against Node elsewhere where that was cheap (DIRECT: test_backends.py's JS case, the
   schema checks and load failures below). These remain uncovered (checked: exactly the pairs
   neither reaches):

   - js/src/contract.mjs#bindSpec <- fm_runtime/model/spec.py#ModelSpec.bind (symbols are bound in
     requests vectors only after a refusal; est.onnx is not a vector model)
   - js/src/conditions.mjs#guiding <- fm_runtime/engine/request.py#guiding (JS only: no refusal
     vector gets past Python's checks to its guiding)
   - js/src/errors.mjs#printable <- fm_runtime/errors.py#printable (they differ: Python writes a
     newline as \\n, JS as \\x0a; vectors compare error class, key and field, not messages)
   - js/src/noise.mjs#newSeed <- fm_runtime/solve/noise.py#new_seed (random by design)
   - js/src/options.mjs#boolean <- fm_runtime/engine/options.py#_boolean (no boolean option is
     offered in JavaScript)
   - js/src/options.mjs#signal <- fm_runtime/engine/options.py#_token (an AbortSignal against a
     CancelToken: different objects; test_backends.py cancels both)
   - js/src/preflight.mjs#describe <- fm_runtime/model/preflight.py#_describe (sizes in messages of
     files too big to load)
   - js/src/solvers.mjs#integrate <- fm_runtime/solve/solvers.py#tableau_step (Python's in-place
     loop steps through `stepping`; tableau_step is the out-of-place step of integrate())
   - js/src/stage.mjs#openStage <- fm_runtime/model/session.py#open_stage and
     js/src/stage.mjs#throughStage <- fm_runtime/engine/conditions.py#through_stage (no committed
     file has a condition stage; tests/test_js.py's parity run covers them with torch)
"""
from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from . import test_conformance as conformance
from .conftest import REPO

JS_SRC = REPO / "js" / "src"
HAS_NODE = shutil.which("node") is not None and (REPO / "js" / "node_modules" / "onnxruntime-node").is_dir()
needs_node = pytest.mark.skipif(not HAS_NODE, reason="node or js/node_modules is missing (install node, then `npm ci` in js/)")


def _load_mirrors():
    """scripts/mirrors.py, by path: it is standard library only (checked below), unlike the rest of
    scripts/, which tests/runtime may not import."""
    spec = importlib.util.spec_from_file_location("fm_mirrors", REPO / "scripts" / "mirrors.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


mirrors = _load_mirrors()
UNCOVERED = {
    "js/src/errors.mjs#printable -> fm_runtime/errors.py#printable",
    "js/src/noise.mjs#newSeed -> fm_runtime/solve/noise.py#new_seed",
    "js/src/options.mjs#boolean -> fm_runtime/engine/options.py#_boolean",
    "js/src/options.mjs#signal -> fm_runtime/engine/options.py#_token",
    "js/src/preflight.mjs#describe -> fm_runtime/model/preflight.py#_describe",
    "js/src/solvers.mjs#integrate -> fm_runtime/solve/solvers.py#tableau_step",
    "js/src/stage.mjs#openStage -> fm_runtime/model/session.py#open_stage",
    "js/src/stage.mjs#throughStage -> fm_runtime/engine/conditions.py#through_stage",
}
# pairs the vectors miss that another test compares Python against Node
DIRECT = {
    "js/src/sampler.mjs#Sampler.watch -> fm_runtime/engine/backends.py#Watch.on_step": "test_backends.py (NaN messages)",
    "js/src/sampler.mjs#Sampler.velocityFn -> fm_runtime/engine/velocity.py#velocity_fn": "test_backends.py (labels, guidance)",
    "js/src/sampler.mjs#Sampler.velocityFn -> fm_runtime/engine/velocity.py#halves": "test_backends.py (guidance)",
    "js/src/sampler.mjs#Sampler.rawVelocity -> fm_runtime/engine/velocity.py#_call": "test_backends.py (samples)",
    "js/src/schema.mjs#check -> fm_runtime/model/schema.py#check": "test_schema_checks_and_load_failures_read_the_same",
    "js/src/session.mjs#loadFailure -> fm_runtime/model/session.py#load_failure": "test_schema_checks_and_load_failures_read_the_same",
    "js/src/sampler.mjs#Sampler.runBaked -> fm_runtime/engine/backends.py#BakedGraph":
        "test_baked_conditioned.py (samples of a baked conditioned file)",
    "js/src/request.mjs#checkBakedGuidance -> fm_runtime/engine/request.py#check_baked_guidance":
        "test_baked_conditioned.py (refusals)",
    "js/src/preflight.mjs#keepsBounds -> fm_runtime/model/preflight.py#_keeps_bounds":
        "test_hostile.py::test_both_readers_refuse_every_bomb_the_same_way (a shape from the input's)",
}


def test_mirrors_script_needs_the_standard_library_only():
    tree = ast.parse((REPO / "scripts" / "mirrors.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def test_every_marker_names_a_python_function_that_exists():
    markers = mirrors.js_markers(REPO)
    assert len([m for m in markers if m.function]) >= 80, "the markers are not found"
    missing = [f"{m.js}:{m.line}: {m.python} ({name})" for m in markers for name in m.names
               if mirrors.python_source(REPO, m.python, name) is None]
    assert not missing, "markers naming Python functions that do not exist (renamed or removed?):\n" + "\n".join(missing)


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


NOT_PORTS = {("js/src/stage.mjs", "usage")}      # a local shortcut (key "cond"), not conditions.py's usage


def test_a_port_of_a_mirrored_module_carries_its_marker():
    """A JS function named as a function of a Python module its file mirrors (checkLabels and
    check_labels) ports it: it must say so, so that the drift check sees it."""
    markers = mirrors.js_markers(REPO)
    marked = {(m.js, m.function.rsplit(".", 1)[-1]) for m in markers if m.function}
    unmarked = []
    for js in sorted({m.js for m in markers}):
        modules = {m.python for m in markers if m.js == js}
        python = set()
        for path in modules:
            tree = ast.parse((REPO / path).read_text())
            python |= {n.name.lstrip("_") for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        for line in (REPO / js).read_text().splitlines():
            declared = mirrors._declared(line)
            if declared and not declared[1] and _snake(declared[0]) in python and (js, declared[0]) not in marked | NOT_PORTS:
                unmarked.append(f"{js}: {declared[0]}")
    assert not unmarked, "JS functions named as the Python they port, without a `// mirrors:` marker:\n" + "\n".join(unmarked)


def test_the_record_matches_both_sides_of_every_pair():
    now, broken = mirrors.current(REPO)
    assert not broken, broken
    found = mirrors.problems(now, mirrors.recorded(REPO))
    assert not found, "js/src/mirrors.json and the sources disagree:\n" + "\n".join(found)


@pytest.fixture
def copy(tmp_path) -> Path:
    """The files the drift check reads, copied: fm_runtime/**.py, js/src and the record."""
    shutil.copytree(REPO / "fm_runtime", tmp_path / "fm_runtime", ignore=shutil.ignore_patterns("__pycache__", "*.onnx"))
    shutil.copytree(JS_SRC, tmp_path / "js" / "src")
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


def test_a_change_to_one_side_fails_until_the_pair_is_reviewed(copy):
    key = "js/src/request.mjs#checkLabels -> fm_runtime/engine/request.py#check_labels"
    _edit(copy / "fm_runtime" / "engine" / "request.py", "def check_labels(", "def check_labels(  ")
    found = mirrors.problems(mirrors.current(copy)[0], mirrors.recorded(copy))
    assert found == [f"{key}: the Python side changed but not its JavaScript port; {mirrors.HOW}"]
    assert "scripts/mirrors.py --update" in found[0]
    _edit(copy / "js" / "src" / "schedules.mjs", "export function parseTimes(text) {", "export function parseTimes(text)  {")
    found = mirrors.problems(mirrors.current(copy)[0], mirrors.recorded(copy))
    assert any(f.startswith("js/src/schedules.mjs#parseTimes -> fm_runtime/solve/schedules.py#parse_times: the "
                            "JavaScript port changed") for f in found), found
    # --update records what is there now, from the markers alone (an emptied record too)
    (copy / mirrors.RECORD).write_text('{"pairs": {}}')
    assert mirrors.main(["--update", "--root", str(copy)]) == 0
    assert mirrors.main(["--root", str(copy)]) == 0
    # a renamed Python function: the marker no longer resolves, and the check says which
    _edit(copy / "fm_runtime" / "engine" / "request.py", "def check_labels(", "def labels_checked(")
    now, broken = mirrors.current(copy)
    assert broken == [f"js/src/request.mjs:{_marker_line(copy, 'checkLabels')}: checkLabels mirrors "
                      "fm_runtime/engine/request.py (check_labels), which does not exist"]
    assert key not in now and mirrors.main(["--root", str(copy)]) == 1


def _marker_line(root: Path, function: str) -> int:
    return next(m.line for m in mirrors.js_markers(root) if m.function == function)


def _python_calls() -> set[tuple[str, str]]:
    """(file, qualified name) of every function of the repository the vectors run in Python."""
    called = set()

    def profile(frame, event, arg):
        if event == "call":
            called.add((frame.f_code.co_filename, frame.f_code.co_qualname))
    runs = [(conformance.test_metadata, "metadata"), (conformance.test_schedules, "schedules"),
            (conformance.test_tableaus, "tableaus"), (conformance.test_requests, "requests"),
            (conformance.test_noise, "noise")]
    sys.setprofile(profile)
    threading.setprofile(profile)
    try:
        for run, name in runs:
            for case in conformance.vectors(name):
                run(case)
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    root = str(REPO) + os.sep
    return {(Path(f).relative_to(REPO).as_posix(), q) for f, q in called if f.startswith(root)}


def _js_calls(tmp: Path) -> set[tuple[str, str]]:
    """(file, function name) of every js/src function conformance.test.mjs runs (V8 coverage)."""
    p = subprocess.run(["node", "--test", "test/conformance.test.mjs"], cwd=REPO / "js", capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, NODE_V8_COVERAGE=str(tmp)))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    ran = set()
    for report in tmp.glob("*.json"):
        for script in json.loads(report.read_text())["result"]:
            if "/js/src/" in script["url"]:
                rel = "js/src/" + script["url"].rsplit("/js/src/", 1)[1]
                ran |= {(rel, f["functionName"]) for f in script["functions"] if f["ranges"][0]["count"] > 0}
    return ran


@needs_node
def test_the_vectors_cover_every_pair_not_listed_as_uncovered(tmp_path):
    now, _ = mirrors.current(REPO)
    py, js = _python_calls(), _js_calls(tmp_path)
    covered = {k for k, p in now.items()
               if (p["python"], p["function"]) in py and (p["js"], p["js_function"].rsplit(".", 1)[-1]) in js}
    print(f"the conformance vectors run both sides of {len(covered)} of {len(now)} marked pairs")
    assert not (set(DIRECT) | UNCOVERED) - set(now), "listed pairs that no marker names any more"
    assert not covered & UNCOVERED, f"now covered by the vectors, take them off UNCOVERED: {sorted(covered & UNCOVERED)}"
    missed = set(now) - covered - set(DIRECT) - UNCOVERED
    assert not missed, ("marked pairs that no vector and no direct comparison reaches: add a vector "
                        "(scripts/conformance_vectors.py) or list them in UNCOVERED:\n" + "\n".join(sorted(missed)))


PROBE = """
import { check } from %(schema)s;
import { loads } from %(pyjson)s;
import { loadFailure } from %(session)s;
const { checks, failures } = JSON.parse(process.argv[2]);
console.log(JSON.stringify({
  checks: checks.map(([key, raw]) => check(key, loads(raw))),
  failures: failures.map((m) => { const e = loadFailure('m.onnx', new Error(m)); return [e.name, e.message]; }),
}));
"""
CHECKS = [("data_shape", "[2, 3]"), ("data_shape", "[0]"), ("data_shape", '["T", 4]'), ("default_steps", "0"),
          ("default_steps", '"eight"'), ("num_classes", "-1"), ("baked", '{"solver": "heun", "steps": 3}'),
          ("baked", '{"solver": 1}'), ("path", '{"name": "ot"}'), ("format_version", "1.5")]
# (Python's onnxruntime prefixes "[ONNXRuntimeError] : 10 : ", which Python's one_line drops and
# onnxruntime-node never writes, and "Protobuf parsing failed.", which JS reports before onnxruntime
# sees the bytes (sampler.mjs inspect), differ on purpose: not compared)
FAILURES = ["INVALID_GRAPH : This is an invalid model.",
            "Could not find an implementation for Fancy(1) node with name ''", "external data"]


@needs_node
def test_schema_checks_and_load_failures_read_the_same(tmp_path):
    """Two exported ports the vectors do not reach with these inputs, called directly in both
    languages: schema.check's words for a value, and the message of a file onnxruntime refuses."""
    from fm_runtime.model.schema import check
    from fm_runtime.model.session import load_failure
    script = tmp_path / "probe.mjs"
    script.write_text(PROBE % {name: json.dumps((JS_SRC / f"{name}.mjs").as_uri()) for name in ("schema", "pyjson", "session")})
    p = subprocess.run(["node", str(script), json.dumps({"checks": CHECKS, "failures": FAILURES})],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    js = json.loads(p.stdout)
    assert js["checks"] == [check(key, json.loads(raw)) for key, raw in CHECKS]
    assert any(js["checks"]) and not all(js["checks"])
    py = [load_failure("m.onnx", Exception(m)) for m in FAILURES]
    assert js["failures"] == [[type(e).__name__, str(e)] for e in py]
