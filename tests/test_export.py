"""Export: one self-contained file with the contract, verified against torch before success."""
import warnings

import numpy as np
import onnx
import pytest
import torch

import export.onnx_export as ox
from export.onnx_export import OPSET, ExportError, verify_against_torch
from training.export_checkpoint import export_model

from .conftest import run_cli, run_process


def test_exported_file_is_self_contained(trained):
    m = onnx.load(str(trained.onnx))
    onnx.checker.check_model(m, full_check=True)
    assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]
    assert not any(i.data_location == onnx.TensorProto.EXTERNAL for i in m.graph.initializer)
    assert list(trained.onnx.parent.glob("*.data")) == []
    x, t = m.graph.input
    assert (x.name, t.name, m.graph.output[0].name) == ("x", "t", "v")
    assert x.type.tensor_type.shape.dim[0].dim_param     # dynamic batch
    assert [d.dim_value for d in x.type.tensor_type.shape.dim[1:]] == [2]
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["fm.format_version"] == "1" and meta["fm.kind"] == '"velocity"'


def test_checkpoint_loads_with_weights_only(trained):
    payload = torch.load(trained.ckpt, weights_only=True)
    assert payload["config"]["dataset"] == "moons"
    assert payload["config"]["architecture"] == {"type": "mlp", "dim": 2, "width": 64, "depth": 3,
                                                 "activation": "elu"}
    assert isinstance(payload["config"]["final_loss"], float)


def test_broken_export_is_refused_and_writes_nothing(trained, tmp_path, monkeypatch):
    real = ox._to_onnx

    def tampered(*args):
        proto = real(*args)
        w = [i for i in proto.graph.initializer if i.data_type == onnx.TensorProto.FLOAT][0]
        arr = onnx.numpy_helper.to_array(w).copy()
        arr.flat[0] += 0.05                       # a small, plausible-looking corruption
        w.CopyFrom(onnx.numpy_helper.from_array(arr, w.name))
        return proto

    monkeypatch.setattr(ox, "_to_onnx", tampered)
    out = tmp_path / "broken.onnx"
    with pytest.raises(ExportError, match="onnxruntime and torch differ"):
        export_model(trained.model, trained.config, out)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow      # end to end through the CLIs in fresh interpreters: CI runs it with -m slow
def test_broken_export_fails_the_cli(trained, tmp_path):
    # the same refusal through fm-export, with its documented exit code
    code = f'''
import sys, onnx, export.onnx_export as ox
real = ox._to_onnx
def tampered(*args):
    p = real(*args)
    w = [i for i in p.graph.initializer if i.data_type == onnx.TensorProto.FLOAT][-1]
    a = onnx.numpy_helper.to_array(w) * onnx.numpy_helper.to_array(w).dtype.type(1.01)
    w.CopyFrom(onnx.numpy_helper.from_array(a, w.name))
    return p
ox._to_onnx = tampered
from training.export_cli import main
sys.argv = ["fm-export", {str(trained.ckpt)!r}, "--out", {str(tmp_path / "x.onnx")!r}]
main()
'''
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 8, p.stderr
    assert "differ" in p.stderr and "no file written" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_checker_rejection_is_an_export_error(trained, tmp_path, monkeypatch):
    real = ox._to_onnx

    def bad_types(*args):
        proto = real(*args)
        proto.graph.output[0].type.tensor_type.elem_type = onnx.TensorProto.INT64
        return proto

    monkeypatch.setattr(ox, "_to_onnx", bad_types)
    with pytest.raises(ExportError, match="onnx.checker rejected"):
        export_model(trained.model, trained.config, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_verify_catches_a_different_network(trained):
    data = trained.onnx.read_bytes()
    assert verify_against_torch(trained.model, data, (2,)) < 1e-4
    other = type(trained.model)(2)
    with pytest.raises(ExportError):
        verify_against_torch(other, data, (2,))


def test_export_keeps_an_existing_file_on_failure(trained, tmp_path, monkeypatch):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous")
    monkeypatch.setattr(ox, "verify_against_torch", lambda *a, **k: (_ for _ in ()).throw(ExportError("boom")))
    with pytest.raises(ExportError):
        export_model(trained.model, trained.config, out)
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.mark.parametrize("arch", [dict(width=16, depth=1, activation="relu"), dict(width=32, depth=4, activation="silu")])
def test_other_architectures_export_and_match(tmp_path, arch):
    import fm_runtime
    from training.nets import VelocityMLP
    from training.sample import sample
    torch.manual_seed(0)
    model = VelocityMLP(3, **arch).eval()
    config = {"architecture": model.config, "path": {"name": "ot", "sigma_min": 0.0},
              "dataset": "none", "data_shape": [3], "steps": 0, "final_loss": 0.0}
    export_model(model, config, tmp_path / "m.onnx")
    z = np.random.default_rng(0).standard_normal((40, 3)).astype(np.float32)
    got = fm_runtime.load(tmp_path / "m.onnx").sample(noise=z, steps=4, solver="rk4")
    assert np.abs(got - sample(model, z, 4, "rk4")).max() <= 1e-4


@pytest.mark.parametrize("how", ["checkpoint", "add-divergence"])
def test_fm_export_stops_at_its_timeout_and_writes_nothing(trained, tmp_path, how):
    # supervised as fm-run is: the deadline ends the export or the divergence check with exit 124,
    # one line, and no file (atomic_write will not rename a file into place after a stop)
    args = [str(trained.ckpt)] if how == "checkpoint" else ["--add-divergence", str(trained.onnx)]
    p = run_process("fm-export", *args, "--out", str(tmp_path / "m.onnx"), "--timeout", "0.05", check=False)
    assert p.returncode == 124 and p.stderr == "fm-export: stopped after --timeout 0.05 s; nothing written\n", p.stderr
    assert list(tmp_path.iterdir()) == []
    p = run_cli("fm-export", *args, "--out", str(tmp_path / "m.onnx"), "--timeout", "inf", check=False)
    assert p.returncode == 2 and "not a number of seconds" in p.stderr


def test_exports_in_one_process_reuse_torchs_operator_table_and_give_the_same_graph():
    """export.torch_onnx reuses torch.onnx's aten -> ONNX table across exports (building it is
    ~1.4 s of each); the graph must be the one torch.onnx.export makes on its own."""
    from torch.onnx._internal.exporter import _registration

    from export import torch_onnx

    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.SiLU(), torch.nn.Linear(8, 3)).eval()
    x = torch.randn(4, 3)
    options = dict(input_names=["x"], output_names=["v"], dynamic_shapes=({0: torch.export.Dim("batch")},),
                   opset_version=OPSET)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")         # torch's own deprecation notices
        plain = torch.onnx.export(net, (x,), dynamo=True, external_data=False, verbose=False, **options).model_proto
    built = _registration.ONNXRegistry.from_torchlib
    first = torch_onnx.export_program(net, (x,), what="a test net", **options)
    tables = dict(torch_onnx._tables)
    again = torch_onnx.export_program(net, (x,), what="a test net", **options)
    assert len(tables) >= 1 and torch_onnx._tables == tables          # built once, then reused
    assert _registration.ONNXRegistry.from_torchlib.__func__ is built.__func__   # torch left as it was
    plain = torch_onnx.without_stack_traces(plain)      # export_program leaves out the exporting machine's paths
    for proto in (first, again):
        assert proto.graph.SerializeToString() == plain.graph.SerializeToString()


def test_export_names_each_stage_as_it_starts(trained, tmp_path):
    # large networks take minutes to export: progress(text) hears each stage (fm-export --progress,
    # the default on a terminal, prints them; tests/test_cli.py::test_round_trip runs the CLI)
    stages = []
    export_model(trained.model, trained.config, tmp_path / "m.onnx", precision="fp16", progress=stages.append)
    assert [s.split(" (")[0] for s in stages] == [
        "tracing the network with torch.onnx",
        "deriving the log-likelihood graph and checking it against torch autodiff",
        "checking onnxruntime against torch at batch sizes 1, 7, 256",
        "making the fp16 variant and measuring it against float32"], stages
    assert all(s.endswith(" s)") for s in stages)
