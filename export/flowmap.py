"""Flow maps at export: the instantaneous velocity u(x, t, t) of a flow-map graph u(x, s, t), as an
ONNX graph (`diagonal`: s fed from t) and as the torch module it is checked against (`Diagonal`).
The divergence graph for log-likelihoods is derived from the first and proved against the second,
exactly as for a velocity file."""
from __future__ import annotations

import onnx
import torch
from onnx import helper

from fm_runtime.model.spec import NAMES


def diagonal(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The flow-map graph with its start-time input s removed and fed from t: v(x, t) = u(x, t, t)."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    kept = [i for i in g.input if i.name != NAMES.s]
    del g.input[:]
    g.input.extend(kept)
    g.node.insert(0, helper.make_node("Identity", [NAMES.t], [NAMES.s], name="flow_map/s_is_t"))
    return out


class Diagonal(torch.nn.Module):
    """forward(x, t, *rest) = map(x, t, t, *rest): the velocity of an adapted flow map."""

    def __init__(self, flow_map: torch.nn.Module):
        super().__init__()
        self.flow_map = flow_map

    def forward(self, x: torch.Tensor, t: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        return self.flow_map(x, t, t, *rest)
