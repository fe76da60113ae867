"""Adapt a user's network to the one signature an exported velocity graph has: v(x, t[, y]).

`call` says how the network is called, as the comma-separated argument list it takes:
  "x,t"        net(x, t)                  (fm-runtime's own nets, flow_matching's examples)
  "t,x"        net(t, x)                  (torchcfm's U-Net, torchdiffeq-style fields)
  "cat(x,t)"   net(torch.cat([x, t], -1))  (torchcfm's MLP; x flattened, t one column)
  "cat(t,x)"   net(torch.cat([t, x], -1))  (the tutorial's MLP)
  "x=,t="      net(x=x, t=t)              keyword arguments; "sample=x,timestep=t" renames them
  labels: add "y" (or "class_labels=y") where the network takes them, e.g. "x,t,y", "t,x,y=".
  flow maps u(x, s, t) (the average velocity from s to t) name two times: s (start), t (end) or
  d (t - s): "x,s,t" (this project's maps), "x,s,d" (shortcut models' (t, d)); MeanFlow's u(z, r, t)
  with noise at 1 is "x,t,s" with time_convention "noise-at-1" (its r is the jump's end).
or any callable `call(net, x, t, y) -> v`. `time` says what t the network expects: "B" (one per
row, shape [B]; the default), "B,1" (a column) or "scalar" (one number for the whole batch:
fm-runtime always calls with one time per call, and the export checks the graph that way).
"""
from __future__ import annotations

import re
from typing import Callable

import torch
from torch import nn

from fm_runtime.model.session import one_line

from .errors import ExportError

TIMES = ("B", "B,1", "scalar")
_ITEM = re.compile(r"^(?:(?P<cat>cat\((?P<a>[xt]),(?P<b>[xt])\))|(?P<key>[A-Za-z_]\w*)=(?P<val>[xstdy]?)|(?P<pos>[xstdy]))$")
_LETTERS = ("x", "s", "t", "d", "y")


def parse_call(call: str, extras: tuple[str, ...] = ()) -> list[tuple[str | None, str]]:
    """'x,t,y' -> [(None, 'x'), (None, 't'), (None, 'y')]; 'cat(x,t)' -> [(None, 'cat(x,t)')];
    'sample=x,timestep=t' -> [('sample', 'x'), ('timestep', 't')]; the names of declared extra
    inputs (`extras`, e.g. mu, mask) go where the network takes them. Raises ExportError."""
    text = call.replace(" ", "")
    for name in extras:               # an extra input by name: positional, or KEYWORD=name
        text = re.sub(rf"(?<![\w=]){re.escape(name)}(?![\w(])", f"@{name}", text)
        text = re.sub(rf"=(?:@)?{re.escape(name)}(?![\w(])", f"=@{name}", text)
    items = re.findall(r"cat\([^)]*\)|[^,]+", text)
    if not items or ",".join(items) != text:
        raise ExportError(f"call {call!r} is not an argument list like 'x,t', 't,x', 'cat(x,t)' or 'x=,t='")
    parsed: list[tuple[str | None, str]] = []
    for item in items:
        extra = re.match(r"^(?:(?P<key>[A-Za-z_]\w*)=)?@(?P<name>\w+)$", item)
        if extra:
            parsed.append((extra["key"], "@" + extra["name"]))
            continue
        m = _ITEM.match(item)
        if not m or (m["cat"] and m["a"] == m["b"]):
            raise ExportError(f"call {call!r}: cannot read {item!r}; each argument is x, t, y, cat(x,t), "
                              "cat(t,x) or KEYWORD=x|t|y (x= is short for x=x); a flow map's times s, t, d")
        if m["cat"]:
            parsed.append((None, f"cat({m['a']},{m['b']})"))
        elif m["key"]:
            parsed.append((m["key"], m["val"] or m["key"]))
        else:
            parsed.append((None, m["pos"]))
        if parsed[-1][1] not in _LETTERS and not parsed[-1][1].startswith("cat("):
            raise ExportError(f"call {call!r}: keyword {item!r} must name x, t or y (e.g. {m['key']}=x), or a "
                              "flow map's s or d")
    given = [v[1:] for _, v in parsed if v.startswith("@")]
    if sorted(given) != sorted(extras):
        raise ExportError(f"call {call!r} must pass every declared input exactly once ({', '.join(extras)})")
    seen = "".join(v if not v.startswith("cat(") else v[4] + v[6] for _, v in parsed if not v.startswith("@"))
    times = sorted(seen.replace("y", "").replace("x", ""))
    if seen.count("x") != 1 or times not in (["t"], ["s", "t"], ["d", "s"], ["d", "t"]) or seen.count("y") > 1:
        raise ExportError(f"call {call!r} must pass x and t exactly once (and y at most once); a flow map "
                          "passes two of its times s, t and d = t - s once each")
    keywords = [k is not None for k, _ in parsed]
    if keywords != sorted(keywords):
        raise ExportError(f"call {call!r}: positional arguments must come before keyword ones")
    return parsed


TIME_CONVENTIONS = ("noise-at-0", "noise-at-1")


class VelocityAdapter(nn.Module):
    """forward(x [B, *shape], t [B][, s [B]][, y [B]], *extras) -> v [B, *shape], calling `net` as
    `call` says (s, the start time, when the call names a flow map's two times: `flow_map`). A net trained with noise at t = 1 (time_convention "noise-at-1": pi0, SD3, Flux) gets
    1 - t and its velocity is negated; time_scale multiplies the time it gets (1000 for nets that
    take sigma * 1000), so the graph keeps this project's convention: t = 0 noise, t = 1 data."""

    def __init__(self, net: nn.Module, call: str | Callable = "x,t", time: str = "B", num_classes: int = 0,
                 extras: tuple[str, ...] = (), time_convention: str = "noise-at-0", time_scale: float = 1.0):
        super().__init__()
        if not isinstance(net, nn.Module):
            raise ExportError(f"the network must be a torch.nn.Module, got {type(net).__name__}")
        if time not in TIMES:
            raise ExportError(f"time must be one of {', '.join(TIMES)}; got {time!r}")
        if time_convention not in TIME_CONVENTIONS:
            raise ExportError(f"time convention must be one of {', '.join(TIME_CONVENTIONS)}; got {time_convention!r}")
        if not (isinstance(time_scale, (int, float)) and 0 < time_scale < 1e9):
            raise ExportError(f"time scale must be a positive number, got {time_scale!r}")
        self.net, self.time, self.num_classes = net, time, int(num_classes)
        self.extras, self.flip, self.scale = tuple(extras), time_convention == "noise-at-1", float(time_scale)
        self.custom = call if callable(call) else None
        if self.custom is not None and extras:
            raise ExportError("a call function takes (net, x, t, y); with extra inputs give call as a list of names")
        self.args = [] if callable(call) else parse_call(call, self.extras)
        self.flow_map = any(v in ("s", "d") for _, v in self.args)
        takes_y = any(v == "y" for _, v in self.args)
        if self.args and takes_y != bool(num_classes):
            raise ExportError(f"call {call!r} " + ("passes labels y but num_classes is 0" if takes_y else
                              f"does not pass labels y, but num_classes is {num_classes}; add y, e.g. 'x,t,y'"))

    def forward(self, x: torch.Tensor, t: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        s, rest = (rest[0], rest[1:]) if self.flow_map else (t, rest)
        y = rest[0] if self.num_classes and rest else None
        extras = rest[1:] if self.num_classes else rest
        if y is None and self.num_classes:      # the runtime's "no label" id
            y = torch.full((x.shape[0],), self.num_classes, dtype=torch.int64)
        if self.flip:
            t, s = 1.0 - t, 1.0 - s
        if self.scale != 1.0:
            t, s = t * self.scale, s * self.scale
        if self.custom is not None:
            return self.custom(self.net, x, t, y)
        v = self._call(x, t, y, extras, s)
        return -v if self.flip else v

    def _call(self, x, t, y, extras, s=None):
        def shaped(a):
            return {"B": a, "B,1": a.reshape(-1, 1), "scalar": a[0]}[self.time]
        values = {"x": x, "t": shaped(t), "y": y, **{"@" + k: e for k, e in zip(self.extras, extras)}}
        if self.flow_map:           # d = t - s in the network's own time (flipped: s - t there, still the gap)
            values.update(s=shaped(s), d=shaped(s - t if self.flip else t - s))
        pos, kw = [], {}
        for key, what in self.args:
            if what.startswith("cat("):
                col = t.reshape(-1, 1).to(x.dtype)
                flat = x.reshape(x.shape[0], -1)
                value = torch.cat([flat, col] if what[4] == "x" else [col, flat], -1)
            else:
                value = values[what]
            if key is None:
                pos.append(value)
            else:
                kw[key] = value
        v = self.net(*pos, **kw)
        flat_out = any(w.startswith("cat(") for _, w in self.args)
        if flat_out and isinstance(v, torch.Tensor) and v.dim() == 2 and v.shape[1] == x[0].numel():
            v = v.reshape(x.shape)     # a network on flat rows gives flat velocities
        return v


def check_adapter(adapter: VelocityAdapter, data_shape: tuple[int, ...], extras: dict | None = None) -> None:
    """Call the adapted network once on a small batch (extras: example extra inputs for 3 rows,
    numpy); turn what goes wrong into ExportError."""
    x = torch.randn(3, *data_shape)
    t = torch.full((3,), 0.5) if adapter.time == "scalar" else torch.rand(3)
    c = adapter.num_classes
    y = torch.tensor([0, c - 1, c]) if c else None     # c: the "no label" id guidance needs
    rest = ((t * 0.5,) if adapter.flow_map else ()) + ((y,) if c else ()) + \
        tuple(torch.from_numpy(v) for v in (extras or {}).values())
    try:
        with torch.no_grad():
            v = adapter(x, t, *rest)
    except Exception as e:
        hint = (f"; labels {y.tolist()} were passed: a conditional network must also accept id {c} as "
                "\"no label\"" if c else "")
        raise ExportError(f"calling the network as {_describe(adapter)} on x {list(x.shape)} failed: "
                          f"{type(e).__name__}: {one_line(e)} (check --call, --time and --data-shape{hint})") from None
    if not isinstance(v, torch.Tensor):
        raise ExportError(f"the network returned {type(v).__name__}, not a tensor; wrap it with a call "
                          "function that returns the velocity tensor")
    if tuple(v.shape) != tuple(x.shape):
        raise ExportError(f"the network returned shape {list(v.shape)} for x of shape {list(x.shape)}; "
                          "a velocity has the shape of x (check --data-shape and --call)")
    if v.dtype != torch.float32:
        raise ExportError(f"the network returned {v.dtype}; fm-runtime graphs are float32 (call .float() on it)")


def _describe(adapter: VelocityAdapter) -> str:
    if adapter.custom is not None:
        return "call(net, x, t, y)"
    args = [w if k is None else f"{k}={w}" for k, w in adapter.args]
    t = "one scalar t" if adapter.time == "scalar" else f"t [{adapter.time}]"
    return f"net({', '.join(args)}) with {t}"
