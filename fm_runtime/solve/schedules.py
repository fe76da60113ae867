"""Time schedules: where a fixed-step solve places its steps between noise (t = 0) and data (t = 1).

A schedule maps the uniform grid u_i = i / steps to times t_i, always with t_0 = 0 and
t_steps = 1 exactly, strictly increasing:

- uniform          t = u (the tutorial's grid)
- shift:S          t = S u / (1 + (S - 1) u), 1e-6 <= S <= 1e6 (the SD3-style time shift): S > 1 puts the
                   steps closer together near the data end, S < 1 near the noise end
- sway:S           t = u + S (cos(pi u / 2) - 1 + u), -1 <= S <= 1 / (pi / 2 - 1) (F5-TTS's
                   sway sampling; S = -1 gives t = 1 - cos(pi u / 2), small steps near the noise)
- cosine           t = (1 - cos(pi u)) / 2: small steps at both ends
- an explicit list of times 0 = t_0 < t_1 < ... < t_K = 1 (K steps), written "times:0,0.3,1"

Grids are computed in float64 once per solve; the runtime, the torch reference sampler and the
baked-graph exporter all take them from `Schedule.grid`, so they step through the same times.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..definitions import CONTRACT

_BOUNDS = CONTRACT["schedules"]
NAMES: tuple[str, ...] = tuple(_BOUNDS["names"])
SHIFT_MAX: float = _BOUNDS["shift_max"]
SWAY_MIN: float = _BOUNDS["sway_min"]
SWAY_MAX: float = _BOUNDS["sway_max"]    # 1 / (pi / 2 - 1): above it sway's grid is no longer increasing
MAX_TIMES: int = _BOUNDS["max_times"]
END_TOLERANCE: float = _BOUNDS["end_tolerance"]     # an explicit grid's ends this close to 0 and 1 are 0 and 1


def _num(v: float) -> str:
    s = repr(float(v))
    return s[:-2] if s.endswith(".0") else s


@dataclass(frozen=True)
class Schedule:
    name: str = "uniform"
    value: float | None = None              # S of shift and sway
    times: tuple[float, ...] = ()           # an explicit grid

    def __str__(self) -> str:
        if self.name == "times":
            return "times:" + ",".join(_num(t) for t in self.times)
        return self.name if self.value is None else f"{self.name}:{_num(self.value)}"

    @property
    def steps(self) -> int | None:
        """The number of steps an explicit grid fixes (None: any)."""
        return len(self.times) - 1 if self.name == "times" else None

    @property
    def uniform(self) -> bool:
        return self.name == "uniform"

    def at(self, u: float) -> float:
        """The schedule's time for uniform time u in [0, 1] (not for explicit grids)."""
        s = self.value
        if self.name == "shift":
            return s * u / (1.0 + (s - 1.0) * u)
        if self.name == "sway":
            return u + s * (math.cos(math.pi / 2 * u) - 1.0 + u)
        if self.name == "cosine":
            return (1.0 - math.cos(math.pi * u)) / 2.0
        return u

    def grid(self, steps: int, t0: float = 0.0, t1: float = 1.0) -> list[float]:
        """The steps + 1 times from t0 to t1 (float64, exact ends). A backward solve (t0 > t1)
        steps through the forward grid of [t1, t0] in reverse, so a likelihood solve visits the
        same times as the sampling solve."""
        if self.name == "times" and steps != self.steps:
            raise ValueError(f"the explicit time grid has {self.steps} steps, not {steps}")
        if self.uniform:
            h = (t1 - t0) / steps
            return [t0 + i * h for i in range(steps)] + [t1]
        lo, hi = min(t0, t1), max(t0, t1)
        unit = list(self.times) if self.name == "times" else [self.at(i / steps) for i in range(steps + 1)]
        grid = [lo] + [lo + (hi - lo) * t for t in unit[1:-1]] + [hi]
        return grid if t0 <= t1 else grid[::-1]


UNIFORM = Schedule()


def parse_schedule(spec) -> Schedule:
    """A Schedule from None (uniform), a Schedule, a string ("uniform", "shift:3", "sway:-1",
    "cosine", "times:0,0.5,1") or a sequence of times. Raises ValueError naming what is wrong."""
    if spec is None:
        return UNIFORM
    if isinstance(spec, Schedule):
        return spec
    if not isinstance(spec, str):
        try:
            times = [float(t) for t in spec]
        except (TypeError, ValueError) as e:
            raise ValueError(f"a time grid must be a sequence of numbers: {e}") from None
        return _explicit(times)
    name, colon, arg = spec.strip().partition(":")
    if name == "times":
        return parse_times(arg)
    if name in ("uniform", "cosine"):
        if colon:
            raise ValueError(f"schedule {name!r} takes no parameter, got {spec!r}")
        return Schedule(name)
    if name in ("shift", "sway"):
        try:
            value = float(arg)
        except ValueError:
            raise ValueError(f"schedule {name} needs a number, e.g. {name}:{'3' if name == 'shift' else '-1'}; "
                             f"got {spec!r}") from None
        if name == "shift" and not (math.isfinite(value) and 1 / SHIFT_MAX <= value <= SHIFT_MAX):
            raise ValueError(f"shift:S needs 1/{SHIFT_MAX:.0f} <= S <= {SHIFT_MAX:.0f}, got {spec!r}")
        if name == "sway" and not SWAY_MIN <= value <= SWAY_MAX:
            raise ValueError(f"sway:S needs -1 <= S <= {SWAY_MAX:.4f} (beyond, its times are not increasing), "
                             f"got {spec!r}")
        return Schedule(name, value)
    raise ValueError(f"unknown schedule {spec!r}; choose uniform, shift:S, sway:S, cosine, or explicit times "
                     "0,...,1")


def parse_times(text: str) -> Schedule:
    """An explicit grid from "0,0.1,...,1"."""
    try:
        return _explicit([float(t) for t in text.split(",")])
    except ValueError as e:
        raise ValueError(f"times must be comma-separated numbers from 0 to 1, e.g. 0,0.4,1 ({e})") from None


def _explicit(times: list[float]) -> Schedule:
    """mirrors: js/src/schedules.mjs explicit. Ends within END_TOLERANCE of 0 and 1 (a grid computed
    in float64 or float32, 0.9999999999999999) are taken as 0 and 1."""
    if not 2 <= len(times) <= MAX_TIMES:
        raise ValueError(f"an explicit time grid needs 2 to {MAX_TIMES} times, got {len(times)}")
    if abs(times[0]) <= END_TOLERANCE and abs(times[-1] - 1.0) <= END_TOLERANCE:
        times = [0.0, *times[1:-1], 1.0]
    if times[0] != 0.0 or times[-1] != 1.0:
        raise ValueError(f"an explicit time grid runs from 0 to 1, got {_num(times[0])} ... {_num(times[-1])}")
    if not all(math.isfinite(t) for t in times) or any(b <= a for a, b in zip(times, times[1:])):
        raise ValueError("an explicit time grid must be strictly increasing")
    return Schedule("times", times=tuple(times))
