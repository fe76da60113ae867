"""Velocity networks v_theta(x, t[, y])."""
from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATIONS = {"elu": nn.ELU, "relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class VelocityMLP(nn.Module):
    """The tutorial's network: concat(t, x) -> width -> ... -> dim, activation after each hidden
    layer (defaults: 3 hidden layers of 64, ELU). Takes x [B, *data_shape] (flattened inside) and
    t [B]. With num_classes > 0 it also takes labels y [B] (int64): a learned per-class vector is
    added to the first hidden layer; id num_classes means "no label" (classifier-free guidance
    trains it by label dropout), and y=None means "no label" for every row."""

    def __init__(self, dim: int = 2, width: int = 64, depth: int = 3, activation: str = "elu",
                 num_classes: int = 0, data_shape: tuple[int, ...] | list[int] | None = None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of: {', '.join(ACTIVATIONS)}")
        if depth < 1 or width < 1 or dim < 1 or num_classes < 0:
            raise ValueError("dim, width and depth must be >= 1 and num_classes >= 0")
        self.data_shape = tuple(data_shape) if data_shape else (dim,)
        if math.prod(self.data_shape) != dim:
            raise ValueError(f"data_shape {list(self.data_shape)} does not hold {dim} values")
        layers: list[nn.Module] = []
        d_in = dim + 1
        for _ in range(depth):
            layers += [nn.Linear(d_in, width), ACTIVATIONS[activation]()]
            d_in = width
        layers.append(nn.Linear(d_in, dim))
        self.net = nn.Sequential(*layers)
        self.num_classes = num_classes
        self.embed = nn.Embedding(num_classes + 1, width) if num_classes else None
        self.config = {"type": "mlp", "dim": dim, "width": width, "depth": depth, "activation": activation}
        if num_classes:
            self.config["num_classes"] = num_classes
        if self.data_shape != (dim,):
            self.config["data_shape"] = list(self.data_shape)

    def class_bias(self, y: torch.Tensor | None, batch: int) -> torch.Tensor | float:
        """What the label adds to the first hidden layer (0 for an unconditional network)."""
        if self.embed is None:
            return 0.0
        if y is None:
            y = torch.full((batch,), self.num_classes, dtype=torch.int64)
        return self.embed(y)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)
        h = self.net[0](torch.cat([t.reshape(-1, 1).to(x.dtype), flat], dim=-1)) + self.class_bias(y, x.shape[0])
        for layer in list(self.net)[1:]:
            h = layer(h)
        return h.reshape(x.shape)


class VelocityConv(nn.Module):
    """A tiny convolutional velocity network for small images [B, C, H, W]: 3x3 convolutions at
    full resolution, `depth` blocks of `width` channels, each adding a per-channel vector made from
    t (a small MLP on t) and, with num_classes > 0, from the label (id num_classes = no label).
    Written to compare against VelocityMLP on digits (benchmarks/bench_digits.py --net conv)."""

    def __init__(self, data_shape, width: int = 64, depth: int = 3, activation: str = "silu",
                 num_classes: int = 0):
        super().__init__()
        if len(data_shape) != 3 or depth < 1 or width < 1:
            raise ValueError(f"VelocityConv takes images [C, H, W] and depth, width >= 1; got {data_shape}")
        c = data_shape[0]
        self.data_shape, self.num_classes = tuple(data_shape), num_classes
        self.act = ACTIVATIONS[activation]()
        self.time = nn.Sequential(nn.Linear(1, width), self.act, nn.Linear(width, width * depth))
        self.embed = nn.Embedding(num_classes + 1, width * depth) if num_classes else None
        self.inp = nn.Conv2d(c, width, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in range(depth))
        self.out = nn.Conv2d(width, c, 3, padding=1)
        self.config = {"type": "conv", "data_shape": list(data_shape), "width": width, "depth": depth,
                       "activation": activation, "dim": math.prod(data_shape)}
        if num_classes:
            self.config["num_classes"] = num_classes

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        cond = self.time(t.reshape(-1, 1).to(x.dtype))
        if self.embed is not None:
            if y is None:
                y = torch.full((x.shape[0],), self.num_classes, dtype=torch.int64)
            cond = cond + self.embed(y)
        h = self.inp(x)
        for i, block in enumerate(self.blocks):
            bias = cond[:, i * h.shape[1]:(i + 1) * h.shape[1], None, None]
            h = h + block(self.act(h + bias))
        return self.out(self.act(h))


def build_network(config: dict) -> nn.Module:
    """Rebuild a network from the architecture dict a checkpoint stores."""
    kind = config.get("type")
    if kind == "mlp":
        return VelocityMLP(config["dim"], config["width"], config["depth"], config["activation"],
                           config.get("num_classes", 0), config.get("data_shape"))
    if kind == "conv":
        return VelocityConv(config["data_shape"], config["width"], config["depth"], config["activation"],
                            config.get("num_classes", 0))
    raise ValueError(f"unknown network type {kind!r}")
