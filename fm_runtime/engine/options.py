"""Request options, declared once as data (contract.json "options"): their names, types, defaults,
ranges, help, which surfaces offer them for which operation, and the rules between them. The
Python API's keywords and signatures, fm-run's options, the server's parameters and the JavaScript
request are all built from that declaration; `take` checks every value of a request in one place.

Operations: "sample" (Sampler.sample, run, request, sample_chunks) and "logprob" (log_prob).
Surfaces: "python", "cli", "serve", "js"."""
from __future__ import annotations

import functools
import inspect
import math
from typing import Any

import numpy as np

from ..definitions import CONTRACT
from ..errors import InputError, UsageError, show
from ..model.control import CancelToken

DECLARED: dict[str, dict[str, Any]] = CONTRACT["options"]["declared"]
KIND_MESSAGES: dict[str, str] = CONTRACT["options"]["solver_kind_messages"]


def lookup(value):
    """A number or a list as declared, or the value a dotted path names in contract.json."""
    if not isinstance(value, str):
        return value
    node: Any = CONTRACT
    for part in value.split("."):
        node = node[part]
    return node


def choices(name: str) -> list[str] | None:
    """The allowed strings of an option (an object's keys when the declaration names one)."""
    enum = lookup(DECLARED[name].get("enum"))
    return list(enum) if enum is not None else None


def bounds(name: str) -> tuple[float | None, float | None]:
    entry = DECLARED[name]
    return lookup(entry.get("minimum")), lookup(entry.get("maximum"))


def offered(surface: str, op: str) -> dict[str, dict[str, Any]]:
    """The options `surface` offers for operation `op`, in declaration order (worked out once;
    read, never change, what it returns)."""
    return _table(surface, op)[0]


@functools.cache
def _table(surface: str, op: str) -> tuple[dict, dict, dict]:
    """(the options offered, each name or alias -> its option, each option's default): what every
    request of `op` reads, worked out once."""
    table = {name: entry for name, entry in DECLARED.items() if op in entry.get(surface, ())}
    names = {entry.get("alias", name): name for name, entry in table.items()} | {n: n for n in table}
    return table, names, {name: entry.get("default") for name, entry in table.items()}


def usage(key: str, message: str = "", field: str | None = None) -> UsageError:
    """A refused request argument: `key` names it (n, steps, cond, ...), `field` what inside it."""
    return UsageError(message, key=key, field=field)


def bad_input(key: str, message: str = "", field: str | None = None) -> InputError:
    """An unusable array of a request (noise, data, a condition)."""
    return InputError(message, key=key, field=field)


def real(v) -> bool:
    """A real number: int, float or a numpy scalar, not a bool or text."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def text(bound) -> str:
    """A bound as both runtimes write it: 2**63 for powers of two past 2**53, else 1000, 1e-12."""
    if bound >= 2**53:
        return f"2**{int(bound).bit_length() - 1}"
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


def _whole(name: str, v):
    lo, hi = bounds(name)
    whole = isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
    if not whole or not (lo <= v and (v < hi if DECLARED[name].get("exclusive_maximum") else v <= hi)):
        close = ")" if DECLARED[name].get("exclusive_maximum") else "]"
        raise usage(name, f"{name} must be a whole number in [{text(lo)}, {text(hi)}{close}, got {show(v)}")
    return int(v)


def _number(name: str, v):
    lo, hi = bounds(name)
    if isinstance(v, np.ndarray) and v.ndim == 0:
        v = v.item()
    if not real(v):
        raise usage(name, f"{name} must be a number, got {show(v)}")
    low_ok = lo is None or (float(v) > lo if DECLARED[name].get("exclusive_minimum") else float(v) >= lo)
    if not (math.isfinite(float(v)) and low_ok and (hi is None or float(v) <= hi)):
        raise usage(name, f"{name} must be a finite number in [{text(lo)}, {text(hi)}], got {show(v)}" if hi is not None
                    else f"{name} must be a finite number > {text(lo)}, got {show(v)}")
    return float(v)


def _string(name: str, v):
    allowed = choices(name)
    if not isinstance(v, str) or (allowed is not None and v not in allowed):
        raise usage(name, f"unknown {name} {show(v)}; choose one of: {describe_choices(name)}" if allowed is not None
                    else f"{name} must be a string, got {show(v)}")
    return v


def describe_choices(name: str) -> str:
    """The allowed strings in words, grouped by kind where the choices have one (solvers)."""
    enum = lookup(DECLARED[name]["enum"])
    if not isinstance(enum, dict):
        return ", ".join(enum)
    kinds: dict[str, list[str]] = {}
    for choice, entry in enum.items():
        kinds.setdefault("map" if entry.get("evaluates") == "map" else entry.get("kind", ""), []).append(choice)
    words = {"fixed": "fixed steps", "map": "flow-map files"}
    return ", ".join(f"{', '.join(c)} ({words.get(k, k)})" for k, c in kinds.items())


def _interval(name: str, v):
    lo, hi = bounds(name)
    if isinstance(v, str):
        try:
            v = tuple(float(p) for p in v.split(","))
        except ValueError:
            raise usage(name, f"{name} must be two times A,B, got {show(v)}") from None
    if isinstance(v, (bytes, dict)) or not hasattr(v, "__len__") or len(v) != 2 or not all(real(p) for p in v):
        raise usage(name, f"{name} must be two times (a, b), got {show(v)}")
    a, b = (float(p) for p in v)
    if not lo <= a <= b <= hi:
        raise usage(name, f"{name} must satisfy {text(lo)} <= a <= b <= {text(hi)}, got ({a:g}, {b:g})")
    return a, b


def _boolean(name: str, v):
    if not isinstance(v, (bool, np.bool_)):
        raise usage(name, f"{name} must be true or false, got {show(v)}")
    return bool(v)


def _token(name: str, v):
    if not isinstance(v, CancelToken):
        raise usage(name, f"{name} must be a fm_runtime.CancelToken, got {type(v).__name__}")
    return v


CHECKS = {"integer": _whole, "number": _number, "string": _string, "interval": _interval, "boolean": _boolean,
          "token": _token}


def check(name: str, value):
    """One option's value, checked against its declaration (None: not given, passes as None).
    Arrays, objects and schedules are checked where they are bound (conditions.py, schedules.py)."""
    if value is None:
        return None
    test = CHECKS.get(DECLARED[name]["type"])
    return value if test is None else test(name, value)


def take(op: str, given: dict[str, Any], surface: str = "python") -> dict[str, Any]:
    """Every option of `op` on `surface`: the given ones checked, the others at their declared
    defaults; aliases (return_trajectory) taken under their names; unknown names refused."""
    table, (_, names, defaults) = offered(surface, op), _table(surface, op)
    unknown = [k for k in given if k not in names]
    if unknown:
        raise usage(unknown[0], f"unknown option {show(unknown[0])}; {op} takes {', '.join(table)}")
    out = dict(defaults)
    for key, value in given.items():
        if value is not None:
            out[names[key]] = check(names[key], value)
    return out


def check_rules(opts: dict[str, Any], solver: str, solver_kind: str) -> None:
    """The declared rules between options: conflicts, and options that apply to some solver
    kinds only (rtol with dopri5; steps, a schedule, a trajectory or log-likelihoods without)."""
    for name in _RULED:
        entry, value = DECLARED[name], opts.get(name)
        if name not in opts or not given(name, value):
            continue
        for other in entry.get("conflicts", ()):
            if given(other, opts.get(other)):
                raise usage(name, f"{entry.get('alias', name)} and {DECLARED[other].get('alias', other)} cannot be combined")
        kinds = entry.get("solver_kinds")
        if kinds and solver_kind not in kinds:
            raise usage(name, KIND_MESSAGES[solver_kind].format(option=name, solver=solver))


_RULED = [name for name, entry in DECLARED.items() if entry.get("conflicts") or entry.get("solver_kinds")]


def given(name: str, value) -> bool:
    """Whether a value differs from the option's declared default (a rule applies only then)."""
    return value is not None and not (isinstance(value, (bool, str, int, float)) and value == DECLARED[name].get("default"))


def signature(op: str, head: tuple[str, ...], first: tuple = (), extra: tuple = (), alias: bool = False,
              omit: tuple[str, ...] = ()) -> inspect.Signature:
    """The Python signature of a method taking `op`'s options: `first` ((name, default) pairs of
    its own, default inspect.Parameter.empty for none), the options in `head` by position, then
    every other option offered for `op` as a keyword with its declared default, then `extra`
    (keywords of its own). alias: options under their aliases (Sampler.sample's return_trajectory);
    omit: options this method does not take."""
    table = offered("python", op)
    p = inspect.Parameter
    params = [p("self", p.POSITIONAL_OR_KEYWORD)] + [p(name, p.POSITIONAL_OR_KEYWORD, default=d) for name, d in first]
    params += [p(name, p.POSITIONAL_OR_KEYWORD, default=table[name].get("default")) for name in head]
    params += [p(entry.get("alias", name) if alias else name, p.KEYWORD_ONLY, default=entry.get("default"))
               for name, entry in table.items() if name not in head and name not in omit]
    params += [p(name, p.KEYWORD_ONLY, default=d) for name, d in extra]
    return inspect.Signature(params)


_POSITIONAL: dict[int, tuple] = {}      # id(signature) -> (the signature, its positional parameters)


def bind(sig: inspect.Signature, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The arguments of a call to a method with signature `sig` by name (self left out), as
    Python would bind them, refused with UsageError where Python would raise TypeError."""
    unknown = [k for k in kwargs if k not in sig.parameters or k == "self"]
    if unknown:
        names = [k for k, p in sig.parameters.items() if k != "self"]
        raise usage(unknown[0], f"unknown option {show(unknown[0])}; this takes {', '.join(names)}")
    known = _POSITIONAL.get(id(sig))
    if known is None or known[0] is not sig:    # every parameter but self has a default: binding is a zip
        known = _POSITIONAL[id(sig)] = (sig, [k for k, p in sig.parameters.items()
                                              if p.kind == p.POSITIONAL_OR_KEYWORD and k != "self"])
    positional = known[1]
    if len(args) <= len(positional) and not kwargs.keys() & set(positional[:len(args)]):
        return {**dict(zip(positional, args)), **kwargs}     # inspect's bind, without its cost (~30 us a call)
    try:
        bound = sig.bind(None, *args, **kwargs)
    except TypeError as e:
        raise UsageError(str(e), key=next(iter(kwargs), None)) from None
    return {k: v for k, v in bound.arguments.items() if k != "self"}


def describe(surface: str, op: str) -> list[dict[str, Any]]:
    """The options `surface` offers for `op` as records {name, type, default, help, minimum,
    maximum, enum}: what the server's model metadata lists."""
    out = []
    for name, entry in offered(surface, op).items():
        lo, hi = bounds(name)
        item = {"name": name, "type": entry["type"], "default": entry.get("default"), "help": entry["help"]}
        item.update({k: v for k, v in (("minimum", lo), ("maximum", hi), ("enum", choices(name))) if v is not None})
        out.append(item)
    return out
