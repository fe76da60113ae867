"""The shared conformance vectors (tests/conformance/, written by scripts/conformance_vectors.py)
run against the Python runtime; js/test/conformance.test.mjs runs the same files against the
JavaScript one. Refusals compare error class, key and field, not message text."""
import json

import numpy as np
import pytest

import fm_runtime
from fm_runtime.model.contract import read_spec
from fm_runtime.solve.schedules import parse_schedule
from fm_runtime.solve.solvers import integrate_inplace

from .conftest import CONFORMANCE as HERE
from .conftest import REPO


def vectors(name: str) -> list[dict]:
    return json.loads((HERE / f"{name}.json").read_text())


@pytest.mark.parametrize("case", vectors("metadata"), ids=lambda c: c["name"])
def test_metadata(case):
    io = {k: {n: (d["type"], d["shape"]) for n, d in case[k].items()} for k in ("inputs", "outputs")}
    options = case.get("options", {})
    expect = case["expect"]

    def read():
        return read_spec("model.onnx", case["metadata"], io["inputs"], io["outputs"],
                         data_shape=options.get("data_shape"))

    if "spec" in expect:
        spec = read()
        for field, want in expect["spec"].items():
            got = getattr(spec, field)
            assert (list(got) if isinstance(got, tuple) else got) == want, field
    else:
        with pytest.raises(getattr(fm_runtime, expect["error"])) as e:
            read()
        assert (e.value.key, e.value.field) == (expect["key"], expect["field"]), str(e.value)


@pytest.mark.parametrize("case", vectors("schedules"), ids=lambda c: f"{c['schedule']}:{c.get('steps', 'error')}")
def test_schedules(case):
    if "error" in case:
        with pytest.raises(ValueError):
            parse_schedule(case["schedule"]).grid(4, 0.0, 1.0)
    else:
        assert parse_schedule(case["schedule"]).grid(case["steps"], 0.0, 1.0) == case["grid"]


@pytest.mark.parametrize("case", vectors("tableaus"), ids=lambda c: f"{c['solver']}-{c['steps']}-{c['schedule']}")
def test_tableaus(case):
    fields = {"t - x": lambda x, t: np.float32(t) - x,      # a flow map's jump gets t = (s, t)
              "s + t - x": lambda x, st: np.float32(np.float32(st[0]) + np.float32(st[1])) - x}
    x, nfe = integrate_inplace(fields[case["field"]], np.array(case["x0"], dtype=np.float32),
                               case["steps"], case["solver"], schedule=case["schedule"])
    assert x.tolist() == np.array(case["x"], dtype=np.float32).tolist() and nfe == case["nfe"]


def _array(v: dict, dtype=np.float32) -> np.ndarray:
    return np.array([np.nan if x == "nan" else x for x in v["data"]], dtype).reshape(v["dims"])


@pytest.mark.parametrize("case", vectors("requests"), ids=lambda c: c["name"])
def test_requests(case):
    s = fm_runtime.load(None if case["model"] == "moons" else HERE / "cond.onnx")
    request = dict(case["request"])
    if "noise" in request:
        request["noise"] = _array(request["noise"])
    for key in ("cond", "null_cond"):
        if key in request:
            request[key] = {k: _array(v) for k, v in request[key].items()}
    expect = case["expect"]
    with pytest.raises(getattr(fm_runtime, expect["error"])) as e:
        s.sample(**request)
    assert (e.value.key, e.value.field) == (expect["key"], expect["field"]), str(e.value)


def test_the_vectors_cover_every_key_and_solver():
    """Every fm.* key of contract.json is refused by some vector, and every fixed-step solver has
    tableau vectors: a new key or solver needs new vectors."""
    from fm_runtime.definitions import CONTRACT
    refused = {c["expect"].get("key") for c in vectors("metadata")}
    missing = {"fm." + key for key in CONTRACT["keys"]} - refused
    assert not missing, f"no vector refuses {sorted(missing)}"
    methods = {m for m, d in CONTRACT["solvers"]["methods"].items() if d["kind"] == "fixed"}
    assert {c["solver"] for c in vectors("tableaus")} == methods


def test_a_new_key_touches_contract_json_alone(tmp_path):
    """A made-up optional key added to a copy of contract.json, and nothing else: both runtimes,
    run from that copy, accept a file without it, accept a valid value and refuse a bad one with
    the same key and field."""
    import shutil
    import subprocess
    import sys

    root = REPO
    shutil.copytree(root / "fm_runtime", tmp_path / "fm_runtime", ignore=shutil.ignore_patterns("__pycache__", "*.onnx"))
    shutil.copytree(root / "js" / "src", tmp_path / "js" / "src")
    contract = json.loads((tmp_path / "fm_runtime" / "contract.json").read_text())
    contract["keys"]["made_up_limit"] = {"since": 3, "required_for": [], "schema": {
        "type": "object", "properties": {"rows": {"type": "integer", "minimum": 1, "maximum": 5}}, "required": ["rows"]}}
    (tmp_path / "fm_runtime" / "contract.json").write_text(json.dumps(contract))
    (tmp_path / "js" / "src" / "contract.json").write_text(json.dumps(contract))    # the JS package's copy (npm's prepare)
    base = vectors("metadata")[0]
    cases = [None, '{"rows": 3}', '{"rows": 9}', '{"cols": 1}']
    metas = [{**base["metadata"], "fm.format_version": "3", **({} if raw is None else {"fm.made_up_limit": raw})}
             for raw in cases]     # a file using a key declares the version that key came in
    io = json.dumps({"inputs": base["inputs"], "outputs": base["outputs"], "metas": metas})
    want = [None, None, ["fm.made_up_limit", "rows"], ["fm.made_up_limit", "rows"]]

    py = """
import json, sys
from fm_runtime.model.contract import read_spec
from fm_runtime.errors import ModelError
d = json.loads(sys.stdin.read()); out = []
io = {k: {n: (v["type"], v["shape"]) for n, v in d[k].items()} for k in ("inputs", "outputs")}
for m in d["metas"]:
    try:
        read_spec("m.onnx", m, io["inputs"], io["outputs"]); out.append(None)
    except ModelError as e:
        out.append([e.key, e.field])
print(json.dumps(out))
"""
    got = subprocess.run([sys.executable, "-c", py], input=io, capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == want
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    js = """
import { readSpec } from './js/src/contract.mjs';
let text = ''; for await (const chunk of process.stdin) text += chunk;
const d = JSON.parse(text);
console.log(JSON.stringify(d.metas.map((m) => { try { readSpec('m.onnx', m, d.inputs, d.outputs); return null; }
  catch (e) { return [e.key, e.field]; } })));
"""
    (tmp_path / "probe.mjs").write_text(js)
    got = subprocess.run([node, "probe.mjs"], input=io, capture_output=True, text=True, cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == want


@pytest.mark.parametrize("case", vectors("noise"), ids=lambda c: f"{c['seed']}-{c['start']}")
def test_noise(case):
    from fm_runtime.solve.noise import noise_rows
    got = noise_rows(int(case["seed"]), case["start"], case["stop"], (case["dim"],)).ravel()
    assert got.tolist() == np.float32(case["values"]).tolist()
