"""Baked conditioned files (fm-export --bake of a network with extra inputs, --bake-guidance):
one graph fed the noise and the conditions under their own names, run with plain onnxruntime in
Python and onnxruntime-node in Node, equal to the runtime's loop on the velocity file; the
runtime and the JavaScript sampler feed such files themselves, and refuse what their graph
cannot do."""
import json
import subprocess

import numpy as np
import onnxruntime as ort
import pytest
import torch

import fm_runtime
from export.errors import ExportError
from export.onnx_export import export_velocity

from . import cond_nets
from .conftest import run_cli
from .node_bridge import JS, needs_node, node_sample

SPEC = dict(data_shape="4,T", call="x,mask,mu,t,spks",
            inputs={"mu": "float32[4,T]", "mask": "float32[1,T]:mask", "spks": "float32[3]"},
            symbols={"T": {"min": 4, "max": 64, "multiple_of": 4}})
STORED = [0.5, -1.0, 2.0]           # spks's stored null: guidance runs it against a fixed speaker


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(velocity file, baked midpoint:4 file with guidance, baked euler:3 file without)."""
    torch.manual_seed(0)
    net = cond_nets.Estimator1D(width=8).eval()
    d = tmp_path_factory.mktemp("baked")
    nulls = {"mu": "zeros", "spks": np.array(STORED, np.float32)}
    export_velocity(net, d / "v.onnx", divergence=False, nulls=nulls, **SPEC)
    export_velocity(net, d / "g.onnx", bake="midpoint:4", bake_guidance=True, nulls=nulls, **SPEC)
    export_velocity(net, d / "p.onnx", bake="euler:3", nulls=nulls, **SPEC)
    return d / "v.onnx", d / "g.onnx", d / "p.onnx"


def request(rows: int, length: int, seed: int = 0) -> dict:
    """A plain onnxruntime feed: noise z, conditions, a mask with padding on the last row."""
    rng = np.random.default_rng(seed)
    mask = np.ones((rows, 1, length), np.float32)
    mask[-1, :, length // 2:] = 0.0
    return {"z": rng.standard_normal((rows, 4, length)).astype(np.float32),
            "mu": rng.standard_normal((rows, 4, length)).astype(np.float32), "mask": mask,
            "spks": rng.standard_normal((rows, 3)).astype(np.float32)}


def loop(path, feed: dict, guidance: float, solver: str, steps: int) -> np.ndarray:
    """The runtime's own loop on the velocity file, one request per row (each its own weight)."""
    s = fm_runtime.load(path)
    w = np.broadcast_to(np.float32(guidance), len(feed["z"]))
    return np.concatenate([s.sample(noise=feed["z"][i:i + 1], cond={k: feed[k][i:i + 1] for k in ("mu", "mask", "spks")},
                                    guidance=float(w[i]), solver=solver, steps=steps) for i in range(len(w))])


@pytest.mark.parametrize("length", [8, 20])
def test_plain_onnxruntime_runs_the_guided_solve_in_one_call(files, length):
    """Guidance against zeros and a stored null, per-row weights, a padded row, two lengths from one file."""
    velocity, guided, _ = files
    feed = request(3, length)
    w = np.array([1.0, 2.5, 4.0], np.float32)
    x = ort.InferenceSession(str(guided), providers=["CPUExecutionProvider"]).run(
        ["x"], {**feed, "guidance_scale": w})[0]
    ref = np.concatenate([loop(velocity, {k: v[i:i + 1] for k, v in feed.items()}, float(w[i]), "midpoint", 4)
                          for i in range(3)])
    np.testing.assert_allclose(x, ref, atol=1e-5)
    assert np.all(x[-1, :, length // 2:] == 0.0)             # the padding stays exactly 0
    unguided = loop(velocity, feed, 1.0, "midpoint", 4)
    assert np.abs(unguided - ref).max() > 1e-2                # the weights matter
    np.testing.assert_allclose(x[0], unguided[0], atol=1e-5)  # w = 1 is the conditional model


def test_the_runtime_feeds_a_baked_conditioned_file_itself(files, tmp_path):
    velocity, guided, plain = files
    feed = request(2, 12, seed=1)
    cond = {k: feed[k] for k in ("mu", "mask", "spks")}
    got = fm_runtime.load(guided).sample(noise=feed["z"], cond=cond, guidance=3.0)
    np.testing.assert_allclose(got, loop(velocity, feed, 3.0, "midpoint", 4), atol=1e-5)
    got = fm_runtime.load(plain).sample(noise=feed["z"], cond=cond)
    np.testing.assert_allclose(got, loop(velocity, feed, 1.0, "euler", 3), atol=1e-5)
    for name, value in cond.items():
        np.save(tmp_path / f"{name}.npy", value[:1])
    np.save(tmp_path / "z.npy", feed["z"][:1])
    out = tmp_path / "x.npy"
    r = run_cli("fm-run", "sample", str(guided), "--noise", str(tmp_path / "z.npy"), "--guidance", "3",
                *[a for k in cond for a in ("--cond", f"{k}={tmp_path / f'{k}.npy'}")], "--out", str(out))
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(np.load(out), loop(velocity, {k: v[:1] for k, v in feed.items()}, 3.0, "midpoint", 4),
                               atol=1e-5)
    info = run_cli("fm-run", "info", str(guided))
    assert "feed" in info.stdout and "guidance_scale float32[B]" in info.stdout and "mu float32[B, 4, T]" in info.stdout


@pytest.mark.parametrize("path, options, key", [
    (1, {"guidance": 2.0, "guidance_interval": (0.2, 0.8)}, "guidance_interval"),
    (1, {"guidance": 2.0, "null_cond": {"mu": np.zeros((4, 8), np.float32)}}, "null_cond"),
    (2, {"guidance": 2.0}, "guidance"),
    (1, {"steps": 8}, "solver"),
])
def test_what_a_baked_graph_cannot_do_is_refused(files, path, options, key):
    feed = request(1, 8)
    with pytest.raises(fm_runtime.UsageError) as e:
        fm_runtime.load(files[path]).sample(noise=feed["z"], cond={"mu": feed["mu"], "spks": feed["spks"]}, **options)
    assert e.value.key == key, str(e.value)


def test_guidance_from_a_stage_null_is_refused_at_export_and_the_stage_stays_outside(tmp_path):
    """A stage null cannot go inside the graph (the stage runs outside it): exit 8 naming it; baked
    without guidance, the runtime runs the stage and then the one call."""
    net, stage = cond_nets.make_estimator(), cond_nets.make_token_stage()
    kw = dict(data_shape="4,T", call="x,mask,mu,t,spks",
              inputs={"mu": "float32[4,T]", "mask": "float32[1,T]:mask", "spks": "float32[3]"},
              nulls={"mu": "stage", "spks": "zeros"}, symbols={"T": {"min": 2, "max": 64}, "L": {"min": 1, "max": 32}},
              condition={"module": stage, "inputs": {"tokens": "int64[L]"}, "outputs": ["mu", "mask"]})
    with pytest.raises(ExportError, match="'mu' comes from the condition stage"):
        export_velocity(net, tmp_path / "no.onnx", bake="euler:4", bake_guidance=True, **kw)
    assert not (tmp_path / "no.onnx").exists()
    export_velocity(net, tmp_path / "v.onnx", divergence=False, **kw)
    export_velocity(net, tmp_path / "b.onnx", bake="euler:4", **kw)
    cond = {"tokens": np.array([3, 1, 4, 1], np.int64), "spks": np.eye(3, dtype=np.float32)[1]}
    want = fm_runtime.load(tmp_path / "v.onnx").sample(n=2, seed=5, cond=cond, solver="euler", steps=4)
    np.testing.assert_allclose(fm_runtime.load(tmp_path / "b.onnx").sample(n=2, seed=5, cond=cond), want, atol=1e-5)


def lie(src, dst, change) -> None:
    """A copy of a baked file whose fm.inputs say what `change(inputs)` makes of them."""
    import onnx
    m = onnx.load(str(src))
    prop = next(p for p in m.metadata_props if p.key == "fm.inputs")
    inputs = json.loads(prop.value)
    change(inputs)
    prop.value = json.dumps(inputs)
    onnx.save(m, str(dst))


LIES = {
    "undeclared": lambda i: i.pop(0),                                       # the graph takes mu; the file hides it
    "dtype": lambda i: i[0].update(dtype="int64"),                          # mu declared int64
    "shape": lambda i: i[2].update(shape=[5]),                              # spks declared [5]
    "missing": lambda i: i.append({"name": "extra", "dtype": "float32", "shape": [2], "role": "condition"}),
    "null": lambda i: i[0].update(null="zeros"),                            # a null the graph does not use
}


@pytest.mark.parametrize("lie_name", sorted(LIES))
def test_a_baked_file_whose_feeds_lie_is_refused_by_both_readers(files, tmp_path, lie_name):
    bad = tmp_path / f"{lie_name}.onnx"
    lie(files[1], bad, LIES[lie_name])
    with pytest.raises(fm_runtime.ModelError):
        fm_runtime.load(bad)
    r = run_cli("fm-run", "info", str(bad), check=False)
    assert r.returncode == 3, r.stderr


@needs_node
def test_node_reads_the_lies_and_samples_the_baked_file(files, tmp_path):
    velocity, guided, _ = files
    bad = []
    for name, change in sorted(LIES.items()):
        bad.append(tmp_path / f"{name}.onnx")
        lie(guided, bad[-1], change)
    feed = request(2, 8, seed=2)
    cond = {k: feed[k] for k in ("mu", "mask", "spks")}
    refused = [{"noise": feed["z"], "cond": cond, "guidance": 2.0, "guidanceInterval": [0.2, 0.8]},
               {"noise": feed["z"], "cond": cond, "guidance": 2.0, "nullCond": {"mu": feed["mu"]}},
               {"noise": feed["z"], "cond": cond, "steps": 8}]
    results = node_sample(tmp_path, [(guided, [{"noise": feed["z"], "cond": cond, "guidance": 2.0}, *refused]),
                                     *[(b, [{"noise": feed["z"], "cond": cond}]) for b in bad]])
    np.testing.assert_allclose(results[0][0], loop(velocity, feed, 2.0, "midpoint", 4), atol=1e-5)
    assert [(r["error"], r["key"]) for r in results[1:4]] == [("UsageError", "guidanceInterval"),
                                                              ("UsageError", "nullCond"), ("UsageError", "solver")]
    assert [r["error"] for r in results[4:]] == ["ModelError"] * len(bad), results[4:]


@needs_node
def test_plain_onnxruntime_node_runs_the_baked_file(files, tmp_path):
    """No project code in Node: onnxruntime-node's InferenceSession, the feed fm-run info prints."""
    velocity, guided, _ = files
    feed = {**request(2, 8, seed=3), "guidance_scale": np.array([2.0, 3.0], np.float32)}
    (tmp_path / "feed.json").write_text(json.dumps({k: {"data": v.ravel().tolist(), "dims": list(v.shape)}
                                                    for k, v in feed.items()}))
    script = tmp_path / "plain.cjs"
    script.write_text(f"""
const ort = require({json.dumps(str(JS / "node_modules" / "onnxruntime-node"))});
const feed = require({json.dumps(str(tmp_path / "feed.json"))});
(async () => {{
  const session = await ort.InferenceSession.create({json.dumps(str(guided))});
  const inputs = Object.fromEntries(Object.entries(feed).map(([k, v]) => [k, new ort.Tensor('float32', Float32Array.from(v.data), v.dims)]));
  const {{ x }} = await session.run(inputs);
  console.log(JSON.stringify({{ data: Array.from(x.data), dims: x.dims }}));
}})();
""")
    p = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    x = np.array(out["data"], np.float32).reshape(out["dims"])
    ref = np.concatenate([loop(velocity, {k: v[i:i + 1] for k, v in feed.items()}, float(feed["guidance_scale"][i]),
                               "midpoint", 4) for i in range(2)])
    np.testing.assert_allclose(x, ref, atol=1e-5)
