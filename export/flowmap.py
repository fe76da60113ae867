"""Flow maps at export: the instantaneous velocity u(x, t, t) of a flow map as the torch module the
divergence graph is checked against (`Diagonal`); its ONNX twin is export.divergence.diagonal."""
from __future__ import annotations

import torch


class Diagonal(torch.nn.Module):
    """forward(x, t, *rest) = map(x, t, t, *rest): the velocity of an adapted flow map."""

    def __init__(self, flow_map: torch.nn.Module):
        super().__init__()
        self.flow_map = flow_map

    def forward(self, x: torch.Tensor, t: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        return self.flow_map(x, t, t, *rest)
