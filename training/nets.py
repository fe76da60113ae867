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
            y = torch.full((batch,), self.num_classes, dtype=torch.int64, device=self.embed.weight.device)
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
                y = torch.full((x.shape[0],), self.num_classes, dtype=torch.int64, device=x.device)
            cond = cond + self.embed(y)
        h = self.inp(x)
        for i, block in enumerate(self.blocks):
            bias = cond[:, i * h.shape[1]:(i + 1) * h.shape[1], None, None]
            h = h + block(self.act(h + bias))
        return self.out(self.act(h))


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1] [B] -> [B, dim] (frequencies 1 .. 1000, as in DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / max(half - 1, 1))
    angles = 1000.0 * t.reshape(-1, 1).float() * freqs
    return torch.cat([torch.sin(angles), torch.cos(angles)], -1)


class _Conditioning(nn.Module):
    """t (and a label, id num_classes = no label) -> one vector per row."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.dim, self.num_classes = dim, num_classes
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.embed = nn.Embedding(num_classes + 1, dim) if num_classes else None

    def forward(self, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        c = self.mlp(time_embedding(t, self.dim))
        if self.embed is not None:
            if y is None:
                y = torch.full((t.shape[0],), self.num_classes, dtype=torch.int64, device=t.device)
            c = c + self.embed(y)
        return c


class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, cond: int, groups: int = 8):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(min(groups, c_in), c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.cond = nn.Linear(cond, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(min(groups, c_out), c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        out = self.conv1(nn.functional.silu(self.norm1(h))) + self.cond(c)[:, :, None, None]
        return self.skip(h) + self.conv2(nn.functional.silu(self.norm2(out)))


class VelocityUNet(nn.Module):
    """A small U-Net for images [C, H, W] (H, W even): 3x3 convolutions, GroupNorm, SiLU,
    a sinusoidal time embedding (plus a label embedding) added in every residual block, one
    downsampling to half resolution and back, with a skip connection across."""

    def __init__(self, data_shape, width: int = 32, num_classes: int = 0):
        super().__init__()
        c, h, w = data_shape
        if h % 2 or w % 2:
            raise ValueError(f"VelocityUNet needs even height and width, got {list(data_shape)}")
        self.data_shape, self.num_classes = tuple(data_shape), num_classes
        cond = 4 * width
        self.cond = _Conditioning(cond, num_classes)
        self.inp = nn.Conv2d(c, width, 3, padding=1)
        self.down1 = _ResBlock(width, width, cond)
        self.downsample = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.mid = _ResBlock(2 * width, 2 * width, cond)
        self.upsample = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.up1 = _ResBlock(2 * width, width, cond)
        self.out = nn.Sequential(nn.GroupNorm(8, width), nn.SiLU(), nn.Conv2d(width, c, 3, padding=1))
        self.config = {"type": "unet", "data_shape": list(data_shape), "width": width, "dim": c * h * w}
        if num_classes:
            self.config["num_classes"] = num_classes

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        c = self.cond(t, y)
        skip = self.down1(self.inp(x), c)
        h = self.mid(self.downsample(skip), c)
        h = self.up1(torch.cat([self.upsample(h), skip], 1), c)
        return self.out(h)


class _DiTBlock(nn.Module):
    """Pre-norm transformer block whose norms are modulated by the conditioning (adaLN-Zero:
    shift, scale and a gate per sub-layer, the gates starting at zero)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim, elementwise_affine=False), nn.LayerNorm(dim, elementwise_affine=False)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim))
        self.ada = nn.Linear(dim, 6 * dim)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def attention(self, h: torch.Tensor) -> torch.Tensor:
        b, n, d = h.shape
        q, k, v = self.qkv(h).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // self.heads), -1)
        return self.proj((weights @ v).transpose(1, 2).reshape(b, n, d))

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        s1, g1, a1, s2, g2, a2 = self.ada(nn.functional.silu(c))[:, None].chunk(6, -1)
        h = h + a1 * self.attention(self.norm1(h) * (1 + g1) + s1)
        return h + a2 * self.mlp(self.norm2(h) * (1 + g2) + s2)


class VelocityDiT(nn.Module):
    """A small DiT-style transformer for images [C, H, W]: non-overlapping patches as tokens with
    learned positions, `depth` adaLN-Zero blocks conditioned on t (and the label), a modulated
    final norm and a linear map back to patches."""

    def __init__(self, data_shape, width: int = 64, depth: int = 4, heads: int = 4, patch: int = 2,
                 num_classes: int = 0):
        super().__init__()
        c, h, w = data_shape
        if h % patch or w % patch or width % heads:
            raise ValueError(f"VelocityDiT: patch {patch} must divide {h}x{w} and heads {heads} the width {width}")
        self.data_shape, self.num_classes, self.patch = tuple(data_shape), num_classes, patch
        tokens = (h // patch) * (w // patch)
        self.cond = _Conditioning(width, num_classes)
        self.embed = nn.Linear(c * patch * patch, width)
        self.pos = nn.Parameter(0.02 * torch.randn(1, tokens, width))
        self.blocks = nn.ModuleList(_DiTBlock(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.ada = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, c * patch * patch)
        self.config = {"type": "dit", "data_shape": list(data_shape), "width": width, "depth": depth,
                       "heads": heads, "patch": patch, "dim": c * h * w}
        if num_classes:
            self.config["num_classes"] = num_classes

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        b, (c, h, w), p = x.shape[0], self.data_shape, self.patch
        tokens = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c * p * p)
        cond = self.cond(t, y)
        z = self.embed(tokens) + self.pos
        for block in self.blocks:
            z = block(z, cond)
        shift, scale = self.ada(nn.functional.silu(cond))[:, None].chunk(2, -1)
        out = self.out(self.norm(z) * (1 + scale) + shift)
        return out.reshape(b, h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(x.shape)


GAP_FEATURES = 32      # sinusoidal features of a flow map's gap t - s


def gap_features(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What a flow map sees of the gap t - s [B] -> [B, GAP_FEATURES]: sines and cosines at
    frequencies 1 .. 64, low enough that du/ds stays moderate (MeanFlow trains on it)."""
    half = GAP_FEATURES // 2
    freqs = torch.exp(math.log(64.0) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - 1))
    angles = (t.reshape(-1, 1) - s.reshape(-1, 1)).float() * freqs
    return torch.cat([torch.sin(angles), torch.cos(angles)], -1)


def zero_linear(d_in: int, d_out: int) -> nn.Linear:
    """A linear layer that starts at zero: a flow map's gap path, so the map starts as its velocity net."""
    layer = nn.Linear(d_in, d_out)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class FlowMapMLP(VelocityMLP):
    """A flow map u(x, s, t[, y]): the average velocity from time s to t, so that
    x_t = x_s + (t - s) u(x_s, s, t). It is VelocityMLP on (x, s) plus a path from the gap t - s
    (gap_features, through a zero-initialised linear layer) into the first hidden layer: with
    VelocityMLP's weights copied in it starts as that velocity net, u(x, s, t) = v(x, s), and
    u(x, t, t) is the instantaneous velocity whatever it learns."""

    flow_map = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gap = zero_linear(GAP_FEATURES, self.config["width"])
        self.config["flow_map"] = True

    def forward(self, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)
        h = (self.net[0](torch.cat([s.reshape(-1, 1).to(x.dtype), flat], dim=-1)) + self.class_bias(y, x.shape[0])
             + self.gap(gap_features(s, t)).to(x.dtype))
        for layer in list(self.net)[1:]:
            h = layer(h)
        return h.reshape(x.shape)


def build_network(config: dict) -> nn.Module:
    """Rebuild a network from the architecture dict a checkpoint stores."""
    kind = config.get("type")
    if config.get("flow_map"):
        if kind != "mlp":
            raise ValueError(f"flow maps are built on mlp networks, not {kind!r}")
        return FlowMapMLP(config["dim"], config["width"], config["depth"], config["activation"],
                          config.get("num_classes", 0), config.get("data_shape"))
    if kind == "mlp":
        return VelocityMLP(config["dim"], config["width"], config["depth"], config["activation"],
                           config.get("num_classes", 0), config.get("data_shape"))
    if kind == "conv":
        return VelocityConv(config["data_shape"], config["width"], config["depth"], config["activation"],
                            config.get("num_classes", 0))
    if kind == "unet":
        return VelocityUNet(config["data_shape"], config["width"], config.get("num_classes", 0))
    if kind == "dit":
        return VelocityDiT(config["data_shape"], config["width"], config["depth"], config["heads"],
                           config["patch"], config.get("num_classes", 0))
    raise ValueError(f"unknown network type {kind!r}")
