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
_CAT = re.compile(r"^cat\((?P<a>[xt]),(?P<b>[xt])\)$")
_KEYWORD = re.compile(r"^(?P<key>[A-Za-z_]\w*)=(?P<val>[^=]*)$")
_CONSTANT = re.compile(r"^(True|False|-?\d+|-?(\d+\.\d*|\.\d+|\d+)(e-?\d+)?)$")
_LETTERS = ("x", "s", "t", "d", "y")


def _argument(item: str, extras: tuple[str, ...], call: str) -> tuple[str | None, str]:
    """One argument of a call: (keyword or None, what it passes): a letter (x, t, y; a flow map's
    s, d), "cat(x,t)", "@NAME" (a declared input) or "#VALUE" (a constant: True, False, a number)."""
    m = _CAT.match(item)
    if m:
        if m["a"] == m["b"]:
            raise ExportError(f"call {call!r}: cannot read {item!r}; cat() joins x and t")
        return None, item
    key, value = None, item
    m = _KEYWORD.match(item)
    if m:
        key, value = m["key"], m["val"] or m["key"]        # KEY= is short for KEY=KEY
    if value in extras:
        return key, "@" + value
    if value in _LETTERS:
        return key, value
    if key is not None and _CONSTANT.match(value):
        return key, "#" + value
    raise ExportError(f"call {call!r}: cannot read {item!r}; each argument is x, t, y (a flow map's s, d), "
                      f"cat(x,t), cat(t,x), a declared input{' (' + ', '.join(extras) + ')' if extras else ''}, or "
                      "KEYWORD=one of those (KEYWORD= is short for KEYWORD=KEYWORD) or KEYWORD=a constant "
                      "(True, False, a number: return_dict=False)")


def parse_call(call: str, extras: tuple[str, ...] = ()) -> list[tuple[str | None, str]]:
    """'x,t,y' -> [(None, 'x'), (None, 't'), (None, 'y')]; 'cat(x,t)' -> [(None, 'cat(x,t)')];
    'sample=x,timestep=t' -> [('sample', 'x'), ('timestep', 't')]; the names of declared extra
    inputs (`extras`, e.g. mu, mask) go where the network takes them, positionally or by keyword
    (mu, mu=mu, mu=, cond=mu); constants by keyword (return_dict=False). Raises ExportError."""
    text = call.replace(" ", "")
    items = re.findall(r"cat\([^)]*\)|[^,]+", text)
    if not items or ",".join(items) != text:
        raise ExportError(f"call {call!r} is not an argument list like 'x,t', 't,x', 'cat(x,t)' or 'x=,t='")
    parsed = [_argument(item, tuple(extras), call) for item in items]
    given = [v[1:] for _, v in parsed if v.startswith("@")]
    if sorted(given) != sorted(extras):
        raise ExportError(f"call {call!r} must pass every declared input exactly once ({', '.join(extras)})")
    seen = "".join(v if not v.startswith("cat(") else v[4] + v[6] for _, v in parsed if v[0] not in "@#")
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
        self.output_field = ""          # where the network's output holds the velocity (check_adapter)
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
        v = self.native(x, t, y, extras, s)
        return -v if self.flip else v

    def native(self, x, t, y, extras=(), s=None) -> torch.Tensor:
        """The network's own output at its own time t (s) in [0, 1] (time_scale applied here): what
        a loop in the network's convention integrates (noise-at-1: dx/dσ = native, σ from 1 to 0),
        taken out of a tuple, a ModelOutput's .sample or a one-tensor dict (tensor_of)."""
        return tensor_of(self.raw(x, t, y, extras, s))[0]

    def raw(self, x, t, y, extras=(), s=None):
        """What the network returns, as it returns it, at its own time (time_scale applied here)."""
        if self.scale != 1.0:
            t, s = t * self.scale, (None if s is None else s * self.scale)
        return self.custom(self.net, x, t, y) if self.custom is not None else self._call(x, t, y, extras, s)

    def _call(self, x, t, y, extras, s=None):
        def shaped(a):
            return {"B": a, "B,1": a.reshape(-1, 1), "scalar": a[0]}[self.time]
        values = {"x": x, "t": shaped(t), "y": y, **{"@" + k: e for k, e in zip(self.extras, extras)}}
        if self.flow_map:           # d = t - s in the network's own time (flipped: s - t there, still the gap)
            values.update(s=shaped(s), d=shaped(s - t if self.flip else t - s))
        pos, kw = [], {}
        for key, what in self.args:
            if what.startswith("#"):           # a constant keyword: return_dict=False
                value = {"True": True, "False": False}.get(what[1:]) if what[1:] in ("True", "False") else \
                    (int(what[1:]) if re.fullmatch(r"-?\d+", what[1:]) else float(what[1:]))
            elif what.startswith("cat("):
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


def tensor_of(out) -> tuple:
    """(the tensor a network's output holds, where it was): the tensor itself (""), the first of a
    tuple or list ("[0]"), a ModelOutput's or dataclass's .sample (".sample", diffusers), or the one
    tensor of a dict ("['name']"); anything else is returned as it is, for check_adapter to refuse."""
    if isinstance(out, torch.Tensor):
        return out, ""
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0], "[0]"
    if isinstance(getattr(out, "sample", None), torch.Tensor):
        return out.sample, ".sample"
    if isinstance(out, dict):
        tensors = [k for k, v in out.items() if isinstance(v, torch.Tensor)]
        if len(tensors) == 1:
            return out[tensors[0]], f"[{tensors[0]!r}]"
    return out, ""


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
            extras_in = rest[(1 if adapter.flow_map else 0) + (1 if c else 0):]
            adapter.output_field = tensor_of(adapter.raw(x, t, y, extras_in, t * 0.5 if adapter.flow_map else None))[1]
    except Exception as e:
        hint = (f"; labels {y.tolist()} were passed: a conditional network must also accept id {c} as "
                "\"no label\"" if c else "")
        raise ExportError(f"calling the network as {_describe(adapter)} on x {list(x.shape)} failed: "
                          f"{type(e).__name__}: {one_line(e)} (check --call, --time and --data-shape{hint})") from None
    if not isinstance(v, torch.Tensor):
        raise ExportError(f"the network returned {type(v).__name__}, which holds no tensor this export can take "
                          "(a tensor, a tuple's first, .sample, a dict's one tensor); pass a keyword that makes it "
                          "return one (--call ...,return_dict=False) or give a call function")
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
