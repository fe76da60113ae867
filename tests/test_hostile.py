"""Model files written on purpose to lie: the runtime refuses their output instead of passing it on."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import fm_runtime
from fm_runtime.contract import build_metadata, write_metadata

from .conftest import run_cli


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
        with pytest.raises(fm_runtime.ModelError, match="returned shape"):
            s.sample(n, seed=0)
    p = run_cli("fm-run", "sample", str(tmp_path / "liar.onnx"), "-n", "10", "--seed", "0",
                "--out", str(tmp_path / "x.npy"), check=False)
    assert p.returncode == 3 and "returned shape" in p.stderr and not (tmp_path / "x.npy").exists()
    assert np.array_equal(sorted(p.name for p in tmp_path.iterdir()), ["liar.onnx"])
