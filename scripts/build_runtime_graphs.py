"""Rebuild the tiny helper graph the runtime ships: fm_runtime/assets/axpy.onnx, Y = X + A * K.

The runtime uses it to keep the solver state on an accelerator: the update of each solver stage
runs on the device as this graph, so nothing crosses to the host between steps. It is written
here (with onnx) because the runtime itself does not depend on the onnx package.

    python scripts/build_runtime_graphs.py
"""
from pathlib import Path

import onnx
from onnx import TensorProto, helper

OUT = Path(__file__).resolve().parents[1] / "fm_runtime" / "assets" / "axpy.onnx"


def axpy_model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, None)   # any shape
    k = helper.make_tensor_value_info("K", TensorProto.FLOAT, None)
    a = helper.make_tensor_value_info("A", TensorProto.FLOAT, [])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Mul", ["A", "K"], ["AK"]), helper.make_node("Add", ["X", "AK"], ["Y"])]
    model = helper.make_model(helper.make_graph(nodes, "axpy", [x, k, a], [y]),
                              opset_imports=[helper.make_opsetid("", 17)], producer_name="fm-runtime")
    model.ir_version = 8
    # no onnx.checker here: it insists on a fixed rank, and these inputs take any shape
    return model


if __name__ == "__main__":
    OUT.write_bytes(axpy_model().SerializeToString())
    print(f"{OUT}: {OUT.stat().st_size} bytes")
