"""The contract's rules between keys and its defaults are data (contract.json "rules" and each key's
"default"): a rule or a default changed in a copy of contract.json, and nothing else, changes what
both readers (Python read_spec, JavaScript readSpec), each run from that copy, accept and refuse,
with the same key and field."""
import json
import shutil
import subprocess
import sys

import pytest

from .conftest import CONFORMANCE, REPO

PY_PROBE = """
import json, sys
from fm_runtime.model.contract import read_spec
from fm_runtime.errors import ModelError
d = json.loads(sys.stdin.read()); out = []
io = {k: {n: (v["type"], v["shape"]) for n, v in d[k].items()} for k in ("inputs", "outputs")}
for m in d["metas"]:
    try:
        out.append({"default_steps": read_spec("m.onnx", m, io["inputs"], io["outputs"]).default_steps})
    except ModelError as e:
        out.append([e.key, e.field])
print(json.dumps(out))
"""

JS_PROBE = """
import { readSpec } from './js/src/contract.mjs';
let text = ''; for await (const chunk of process.stdin) text += chunk;
const d = JSON.parse(text);
console.log(JSON.stringify(d.metas.map((m) => {
  try { return { default_steps: readSpec('m.onnx', m, d.inputs, d.outputs).defaultSteps }; }
  catch (e) { return [e.key, e.field]; } })));
"""


def copy_of_the_readers(root, change=None):
    """fm_runtime and js/src copied under `root`, with `change(contract)` applied to the copy's
    contract.json."""
    shutil.copytree(REPO / "fm_runtime", root / "fm_runtime", ignore=shutil.ignore_patterns("__pycache__", "*.onnx"))
    shutil.copytree(REPO / "js" / "src", root / "js" / "src")
    path = root / "fm_runtime" / "contract.json"
    contract = json.loads(path.read_text())
    if change:
        change(contract)
    path.write_text(json.dumps(contract))
    (root / "js" / "src" / "contract.json").write_text(path.read_text())    # the JS package's copy (npm's prepare)
    return root


def read_in_both(root, metas: list[dict], io: dict) -> tuple[list, list | None]:
    """What each reader, run from the copy at `root`, makes of each metadata: {"default_steps"} of
    the spec, or [key, field] of the refusal. JavaScript's answer is None without node."""
    text = json.dumps({"inputs": io["inputs"], "outputs": io["outputs"], "metas": metas})
    got = subprocess.run([sys.executable, "-c", PY_PROBE], input=text, capture_output=True, text=True, cwd=root,
                         env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert got.returncode == 0, got.stderr
    py = json.loads(got.stdout)
    node = shutil.which("node")
    if node is None:
        return py, None
    (root / "probe.mjs").write_text(JS_PROBE)
    got = subprocess.run([node, "probe.mjs"], input=text, capture_output=True, text=True, cwd=root)
    assert got.returncode == 0, got.stderr
    return py, json.loads(got.stdout)


def velocity_file() -> tuple[dict, dict]:
    base = json.loads((CONFORMANCE / "metadata.json").read_text())[0]
    assert base["name"] == "a velocity file"
    return base["metadata"], {"inputs": base["inputs"], "outputs": base["outputs"]}


def test_a_new_rule_touches_contract_json_alone(tmp_path):
    """A made-up rule between two fields of fm.architecture, added to the copy's "rules" only: both
    readers refuse a file that breaks it (key fm.architecture, field width) and accept one that
    keeps it or lacks a side; the same files without the rule are all accepted."""
    base, io = velocity_file()
    archs = [None, {"type": "mlp", "dim": 2, "width": 64}, {"type": "mlp", "width": 4}, {"type": "mlp", "dim": 8, "width": 4}]
    metas = [{**base, **({} if a is None else {"fm.architecture": json.dumps(a)})} for a in archs]
    ok = {"default_steps": 8}
    with_rule = copy_of_the_readers(tmp_path / "with", lambda c: c["rules"].append(
        {"key": "architecture.width", "at_least": "architecture.dim"}))
    py, js = read_in_both(with_rule, metas, io)
    assert py == [ok, ok, ok, ["fm.architecture", "width"]]
    if js is None:
        pytest.skip("node is not installed")
    assert js == py
    without = copy_of_the_readers(tmp_path / "without")
    assert read_in_both(without, metas, io) == ([ok] * 4, [ok] * 4)


def test_defaults_come_from_contract_json(tmp_path):
    """A key's "default" changed in the copy is what both readers use when a file leaves the key out,
    and what the rules check against."""
    base, io = velocity_file()
    metas = [{k: v for k, v in base.items() if k != "fm.default_steps"},
             {**{k: v for k, v in base.items() if k != "fm.default_steps"}, "fm.format_version": "3",
              "fm.default_schedule": '"times:0,0.5,1"'}]
    root = copy_of_the_readers(tmp_path, lambda c: c["keys"]["default_steps"].update(default=2))
    py, js = read_in_both(root, metas, io)
    assert py == [{"default_steps": 2}, {"default_steps": 2}]
    if js is None:
        pytest.skip("node is not installed")
    assert js == py


def test_every_rule_names_contract_keys():
    """Each rule of contract.json compares keys the contract declares, with one verb."""
    from fm_runtime.definitions import CONTRACT, KEYS
    verbs = {"at_most", "at_least", "steps_agree_with", "needs"}
    for rule in CONTRACT["rules"]:
        assert len(verbs & set(rule)) == 1 and set(rule) <= verbs | {"key", "when", "kinds", "when_in"}, rule
        assert ("needs" in rule) == ("kinds" in rule) == ("when_in" in rule), rule
        for path in [rule["key"], rule.get("when", rule["key"]), *(rule[v] for v in verbs & set(rule))]:
            assert path.split(".")[0] in KEYS, (rule, path)
