"""Build the small model files the torch-free runtime suite (tests/runtime/) samples, refuses and
inspects: tests/runtime/fixtures/*.onnx, a few KiB each, committed.

The runtime suite runs where only `pip install ".[test]"` is installed (numpy, onnxruntime, click,
pytest): no torch to train a model and no onnx to write a graph, so every file it needs is written
here, once, with torch, onnx and the project's own training and export code:

- tiny.onnx: a moons MLP (width 16, depth 2, 200 Adam steps), exported as fm-train's models are,
  with its self-test and divergence graph; tiny_cond.onnx the same with class labels (2 classes,
  guidance); tiny_baked.onnx the same network baked as one heun:3 graph z -> x; tiny_map.onnx a
  flow map distilled from it (300 steps), sampled with one jump by default (contract version 5).
- est.onnx: a conditioned network (tests/cond_nets.py's Estimator1D): extra inputs (a condition,
  a mask, a speaker vector), a symbol T, nulls for guidance.
- plain*.onnx: v = t - x with no fm.* metadata at all (a file from elsewhere): data width symbolic
  and inputs state/time [B, 1]; fixed width 2 and inputs a/b [B]; width 1 and inputs p/q alike.
- bad/*.onnx: files the runtime must refuse, each in its own way (test_robustness.py's table;
  those edited from a good file start from tiny.onnx's network exported without a divergence graph),
  and nan_half.onnx, a valid plain file whose velocity turns NaN past t = 0.55.

    python scripts/runtime_fixtures.py            # rewrite tests/runtime/fixtures/
    python scripts/runtime_fixtures.py --out DIR  # elsewhere (tests/test_runtime_fixtures.py compares)

Rerun it only when a change is meant to change the files (a new contract version, a new fixture),
and commit what it writes. The build is deterministic: the same venv writes the same bytes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "runtime" / "fixtures"
TINY = dict(steps=200, batch_size=256, lr=5e-3, lr_schedule="constant", ema=0.0, width=16, depth=2,
            activation="elu", seed=0, progress=False)


def _save(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def _plain(nodes, inputs, outputs, inits=()) -> onnx.ModelProto:
    m = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(inits)),
                          opset_imports=[helper.make_opsetid("", 17)], producer_name="fm-runtime-fixtures")
    m.ir_version = 8
    return m


def _vi(name, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


def nan_half() -> onnx.ModelProto:
    """Plain velocity v = x * log(0.55 - t): finite until t passes 0.55, then NaN."""
    nodes = [helper.make_node("Sub", ["c", "t"], ["d"]), helper.make_node("Log", ["d"], ["l"]),
             helper.make_node("Unsqueeze", ["l", "axis"], ["l2"]), helper.make_node("Mul", ["x", "l2"], ["v"])]
    inits = [numpy_helper.from_array(np.array(0.55, np.float32), "c"),
             numpy_helper.from_array(np.array([1], np.int64), "axis")]
    return _plain(nodes, [_vi("x", TensorProto.FLOAT, ["B", 2]), _vi("t", TensorProto.FLOAT, ["B"])],
                  [_vi("v", TensorProto.FLOAT, ["B", 2])], inits)


def plain_linear(dim="D", t_shape=("B", 1), names=("state", "time")) -> onnx.ModelProto:
    """v(x, t) = t - x, no fm.* metadata. Exact flow from t = 0: x(1) = (x0 + 1) / e."""
    return _plain([helper.make_node("Sub", [names[1], names[0]], ["velocity"])],
                  [_vi(names[0], TensorProto.FLOAT, ["B", dim]), _vi(names[1], TensorProto.FLOAT, list(t_shape))],
                  [_vi("velocity", TensorProto.FLOAT, ["B", dim])])


def wrong_io(kind: str) -> onnx.ModelProto:
    x, t = _vi("x", TensorProto.FLOAT, ["B", 2]), _vi("t", TensorProto.FLOAT, ["B"])
    if kind == "three_inputs":
        return _plain([helper.make_node("Add", ["x", "y"], ["v"])], [x, t, _vi("y", TensorProto.FLOAT, ["B", 2])],
                      [_vi("v", TensorProto.FLOAT, ["B", 2])])
    if kind == "output_shape":
        return _plain([helper.make_node("Concat", ["x", "x"], ["v"], axis=1)], [x, t], [_vi("v", TensorProto.FLOAT, ["B", 4])])
    if kind == "int_dtype":
        return _plain([helper.make_node("Identity", ["x"], ["v"])], [_vi("x", TensorProto.INT64, ["B", 2]), t],
                      [_vi("v", TensorProto.INT64, ["B", 2])])
    assert kind == "custom_op", kind
    m = _plain([helper.make_node("Fancy", ["x", "t"], ["v"], domain="com.example")], [x, t],
               [_vi("v", TensorProto.FLOAT, ["B", 2])])
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    return m


def edited(src: Path, **changes) -> onnx.ModelProto:
    """A copy of src with fm.* metadata changed (values as written, JSON text)."""
    m = onnx.load(str(src))
    meta = {p.key: p.value for p in m.metadata_props}
    meta.update({"fm." + k: v for k, v in changes.items()})
    del m.metadata_props[:]
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=v)
    return m


def bit_flipped(src: Path) -> bytes:
    """src with a high exponent bit of one weight of its 16 x 16 hidden layer flipped: still a
    well-formed file, but its network no longer gives what its self-test recorded."""
    data = bytearray(src.read_bytes())
    w = next(i for i in onnx.load(str(src)).graph.initializer if list(i.dims) == [16, 16])
    raw = numpy_helper.to_array(w).astype("<f4").tobytes()
    at = data.find(raw)
    assert at > 0 and data.find(raw, at + 1) < 0
    data[at + 4 * 10 + 3] ^= 0x40
    return bytes(data)


def tiny_models(out: Path) -> None:
    import torch

    from export.onnx_export import export_velocity
    from training.checkpoint import save_checkpoint
    from training.export_checkpoint import export_model
    from training.flowmap import MapRecipe, distill
    from training.train import fit

    sys.path.insert(0, str(REPO))
    from tests import cond_nets

    torch.manual_seed(0)
    model, config = fit("moons", **TINY)
    export_model(model, config, out / "tiny.onnx")
    export_model(model, config, out / "tiny_baked.onnx", bake="heun:3")
    export_model(model, config, out / "bad" / "base.onnx", divergence=False)   # what bad/ files start from
    save_checkpoint(out / "teacher.ckpt", model, config)
    flow_map, map_config = distill(out / "teacher.ckpt", MapRecipe(steps=300, batch_size=256, teacher_steps=8, pool=4),
                                   progress=False)
    (out / "teacher.ckpt").unlink()
    export_model(flow_map, map_config, out / "tiny_map.onnx")
    model, config = fit("moons", conditional=True, **TINY)
    export_model(model, config, out / "tiny_cond.onnx")
    torch.manual_seed(0)
    export_velocity(cond_nets.Estimator1D(width=8).eval(), out / "est.onnx", data_shape="4,T", call="x,mask,mu,t,spks",
                    inputs={"mu": "float32[4,T]", "mask": "float32[1,T]:mask", "spks": "float32[3]"},
                    nulls={"mu": "zeros", "spks": "zeros"}, symbols={"T": {"min": 4, "max": 64, "multiple_of": 4}}, divergence=False)


def build(out: Path) -> list[Path]:
    (out / "bad").mkdir(parents=True, exist_ok=True)
    tiny_models(out)
    bad = out / "bad"
    base = bad / "base.onnx"
    _save(nan_half(), out / "nan_half.onnx")
    _save(plain_linear(), out / "plain.onnx")
    _save(plain_linear(dim=2, t_shape=("B",), names=("a", "b")), out / "plain_fixed.onnx")
    _save(plain_linear(dim=1, t_shape=("B", 1), names=("p", "q")), out / "plain_ambiguous.onnx")
    for kind in ("three_inputs", "output_shape", "int_dtype", "custom_op"):
        _save(wrong_io(kind), bad / f"{kind}.onnx")
    _save(edited(base, format_version="7"), bad / "future_version.onnx")
    _save(edited(base, default_steps='"eight"'), bad / "wrong_type.onnx")
    _save(edited(base, data_shape="[3]"), bad / "disagrees.onnx")
    (bad / "bitflip.onnx").write_bytes(bit_flipped(base))
    (bad / "external.data").unlink(missing_ok=True)       # onnx appends to an existing data file
    onnx.save_model(onnx.load(str(base)), str(bad / "external.onnx"), save_as_external_data=True,
                    location="external.data", size_threshold=0)
    base.unlink()
    return sorted(p for p in out.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    files = build(ap.parse_args().out)
    for p in files:
        print(f"{p}: {p.stat().st_size} bytes")
    print(f"total {sum(p.stat().st_size for p in files)} bytes")


if __name__ == "__main__":
    main()
