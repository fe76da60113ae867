"""Request options are declared once (contract.json "options"): a made-up option added to a copy of
that file, and nothing else, reaches the Python API's signature and checks, fm-run's --help, the
server's parameters and metadata, and the JavaScript request's checks."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fm_runtime
from fm_runtime.engine import options

ROOT = Path(__file__).resolve().parents[2]
DUMMY = {"type": "integer", "minimum": 0, "maximum": 9, "default": 3, "help": "A made-up option for the test.",
         "python": ["sample"], "cli": ["sample"], "serve": ["sample"], "js": ["sample"]}


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    """The runtime and the JavaScript sources with one option more in contract.json."""
    tmp = tmp_path_factory.mktemp("declared")
    shutil.copytree(ROOT / "fm_runtime", tmp / "fm_runtime", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "js" / "src", tmp / "js" / "src")
    if (ROOT / "js" / "node_modules").is_dir():
        (tmp / "js" / "node_modules").symlink_to(ROOT / "js" / "node_modules")
    contract = json.loads((tmp / "fm_runtime" / "contract.json").read_text())
    contract["options"]["declared"]["dummy"] = DUMMY
    (tmp / "fm_runtime" / "contract.json").write_text(json.dumps(contract))
    (tmp / "js" / "src" / "contract.json").write_text(json.dumps(contract))    # the JS package's copy (npm's prepare)
    return tmp


PY = """
import inspect, json
from click.testing import CliRunner
import fm_runtime
from fm_runtime.cli.main import cli
from fm_runtime.serve import protocol
s = fm_runtime.load()
out = {"sample": str(inspect.signature(s.sample).parameters.get("dummy")),
       "log_prob": "dummy" in inspect.signature(s.log_prob).parameters,
       "help": "--dummy INTEGER RANGE" in CliRunner().invoke(cli, ["sample", "--help"]).output,
       "request": s.request(2, seed=0, dummy=5).options["dummy"], "default": s.request(2, seed=0).options["dummy"],
       "serve": protocol.parameters({"parameters": {"dummy": 4}}, protocol.SAMPLE_PARAMS),
       "metadata": [p for p in json.loads(protocol.metadata("m", s.spec)["parameters"]["request_parameters"])
                    if p["name"] == "dummy"]}
try:
    s.sample(2, dummy=12)
except fm_runtime.UsageError as e:
    out["refused"] = [e.key, str(e)]
run = CliRunner().invoke(cli, ["sample", "-n", "2", "--dummy", "7", "--out", "x.npy"])
out["cli"] = [run.exit_code, run.output[-200:]]
print(json.dumps(out))
"""

JS = """
import { load } from './js/src/node.mjs';
const s = await load();
const out = {};
try { await s.sample({ n: 2, dummy: 12 }); } catch (e) { out.refused = [e.constructor.name, e.key, e.message]; }
out.accepted = (await s.sample({ n: 2, seed: 0, dummy: 5 })).data.length;
console.log(JSON.stringify(out));
"""


def test_a_new_option_touches_contract_json_alone(copy):
    got = subprocess.run([sys.executable, "-c", PY], capture_output=True, text=True, cwd=copy,
                         env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin", "HOME": str(copy)})
    assert got.returncode == 0, got.stderr
    out = json.loads(got.stdout)
    assert out["sample"] == "dummy=3" and out["log_prob"] is False       # offered for sampling only
    assert out["help"] and out["request"] == 5 and out["default"] == 3
    assert out["serve"] == {"dummy": 4}
    assert out["metadata"] == [{"name": "dummy", "type": "integer", "default": 3, "help": DUMMY["help"],
                                "minimum": 0, "maximum": 9}]
    assert out["refused"] == ["dummy", "dummy must be a whole number in [0, 9], got 12"]
    assert out["cli"][0] == 0, out["cli"]
    node = shutil.which("node")
    if node is None or not (copy / "js" / "node_modules").exists():
        pytest.skip("node or js/node_modules missing (npm ci in js/)")
    (copy / "probe.mjs").write_text(JS)
    got = subprocess.run([node, "probe.mjs"], capture_output=True, text=True, cwd=copy)
    assert got.returncode == 0, got.stderr
    js = json.loads(got.stdout)
    assert js == {"refused": ["UsageError", "dummy", "dummy must be a whole number in [0, 9], got 12"], "accepted": 4}


def test_every_surface_is_built_from_the_declaration():
    """fm-run's options, the server's parameters and Sampler's keywords are the declared ones."""
    import inspect

    from click.testing import CliRunner

    from fm_runtime.cli.main import cli
    from fm_runtime.serve import protocol
    s = fm_runtime.load()
    for op, method in (("sample", s.run), ("logprob", s.log_prob)):
        declared = set(options.offered("python", op))
        assert declared <= set(inspect.signature(method).parameters), op
    assert set(protocol.SAMPLE_PARAMS) == set(options.offered("serve", "sample"))
    assert set(protocol.LOGPROB_PARAMS) == set(options.offered("serve", "logprob"))
    for op, command in (("sample", "sample"), ("logprob", "logprob")):
        text = CliRunner().invoke(cli, [command, "--help"], terminal_width=200).output
        for name in options.offered("cli", op):
            assert "--" + name.replace("_", "-") in text, (op, name)


@pytest.mark.parametrize("given, key", [
    ({"n": 0}, "n"), ({"n": True}, "n"), ({"n": 2, "steps": 0}, "steps"), ({"n": 2, "seed": 2**63}, "seed"),
    ({"n": 2, "guidance": float("nan")}, "guidance"), ({"n": 2, "guidance_calls": "three"}, "guidance_calls"),
    ({"n": 2, "guidance_interval": (0.5, 0.2)}, "guidance_interval"), ({"n": 2, "probes": 0}, "probes"),
    ({"n": 2, "rtol": 1e-3}, "rtol"), ({"n": 2, "solver": "dopri5", "steps": 3}, "steps"),
    ({"n": 2, "return_logprob": True, "return_trajectory": True}, "logprob"), ({"n": 2, "nope": 1}, "nope"),
    ({"n": 2, "cancel": object()}, "cancel"), ({"n": 2, "keep_partial": "yes"}, "keep_partial"),
])
def test_each_refusal_names_its_option(given, key):
    with pytest.raises(fm_runtime.UsageError) as e:
        fm_runtime.load().sample(**given)
    assert e.value.key == key, str(e.value)


def test_positional_and_keyword_arguments_bind_as_python_does():
    s = fm_runtime.load()
    a = s.sample(5, 4, "rk4", 11)
    assert (a == s.sample(n=5, steps=4, solver="rk4", seed=11)).all()
    with pytest.raises(fm_runtime.UsageError, match="multiple values"):
        s.sample(5, n=5)
    lp = s.log_prob(a, 4, "rk4", divergence="exact")
    assert lp.shape == (5,) and (lp == s.log_prob(a, steps=4, solver="rk4", divergence="exact")).all()
