"""Velocity networks v_theta(x, t)."""
from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {"elu": nn.ELU, "relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class VelocityMLP(nn.Module):
    """The tutorial's network: concat(t, x) -> width -> ... -> dim, activation after each hidden
    layer (defaults: 3 hidden layers of 64, ELU). Takes x [B, dim] and t [B]."""

    def __init__(self, dim: int = 2, width: int = 64, depth: int = 3, activation: str = "elu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of: {', '.join(ACTIVATIONS)}")
        if depth < 1 or width < 1 or dim < 1:
            raise ValueError("dim, width and depth must be >= 1")
        layers: list[nn.Module] = []
        d_in = dim + 1
        for _ in range(depth):
            layers += [nn.Linear(d_in, width), ACTIVATIONS[activation]()]
            d_in = width
        layers.append(nn.Linear(d_in, dim))
        self.net = nn.Sequential(*layers)
        self.config = {"type": "mlp", "dim": dim, "width": width, "depth": depth, "activation": activation}

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([t.reshape(-1, 1).to(x.dtype), x], dim=-1))


def build_network(config: dict) -> nn.Module:
    """Rebuild a network from the architecture dict a checkpoint stores."""
    kind = config.get("type")
    if kind == "mlp":
        return VelocityMLP(config["dim"], config["width"], config["depth"], config["activation"])
    raise ValueError(f"unknown network type {kind!r}")
