"""Time schedules: grids (endpoints, monotone, formulas), refusals by name, in the API and the CLI
(parity with torch on every solver x schedule: tests/test_schedules.py)."""
import math

import numpy as np
import pytest

from fm_runtime.solve.schedules import SWAY_MAX, parse_schedule
from fm_runtime.solve.solvers import integrate, time_grid

from .conftest import TINY, run_cli

NAMED = ["uniform", "shift:3", "shift:0.3", "sway:-1", "sway:0.8", f"sway:{SWAY_MAX}", "cosine"]
EXPLICIT = [0.0, 0.05, 0.2, 0.55, 1.0]
ALL = NAMED + ["times:" + ",".join(map(str, EXPLICIT))]


@pytest.mark.parametrize("name", NAMED)
def test_grids_start_at_noise_end_at_data_and_increase(name):
    for steps in (1, 2, 3, 8, 50):
        g = time_grid(steps, schedule=name)
        assert len(g) == steps + 1 and g[0] == 0.0 and g[-1] == 1.0
        assert all(b > a for a, b in zip(g, g[1:])), (name, steps, g)
        back = time_grid(steps, 1.0, 0.0, schedule=name)     # a likelihood solve: same times, reversed
        assert np.allclose(back, g[::-1], rtol=0, atol=1e-15)


def test_grid_formulas():
    u = np.arange(5) / 4
    assert np.allclose(time_grid(4, schedule="shift:3"), 3 * u / (1 + 2 * u))
    assert np.allclose(time_grid(4, schedule="sway:-1"), 1 - np.cos(np.pi / 2 * u))
    assert np.allclose(time_grid(4, schedule="cosine"), (1 - np.cos(np.pi * u)) / 2)
    assert time_grid(4, schedule="uniform") == time_grid(4) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert time_grid(4, schedule=EXPLICIT) == EXPLICIT
    # shift:S and shift:1/S mirror each other: t_S(u) = 1 - t_{1/S}(1 - u)
    assert np.allclose(time_grid(6, schedule="shift:4"), 1 - np.array(time_grid(6, schedule="shift:0.25"))[::-1])


def test_bad_schedules_are_named():
    for bad, msg in [("shift:0", "1/1000000 <= S"), ("shift:x", "needs a number"), ("sway:-1.5", "-1 <= S"),
                     (f"sway:{SWAY_MAX + 0.01}", "not increasing"), ("cosine:2", "takes no parameter"),
                     ("linear", "unknown schedule"), ("times:0,0.5", "from 0 to 1"),
                     ("times:0,0.6,0.4,1", "strictly increasing"), ("times:0,a,1", "comma-separated"),
                     ([0.0], "2 to")]:
        with pytest.raises(ValueError, match=msg):
            parse_schedule(bad)
    with pytest.raises(ValueError, match="has 4 steps, not 3"):
        time_grid(3, schedule=EXPLICIT)
    assert str(parse_schedule("shift:3.0")) == "shift:3" and parse_schedule(str(parse_schedule(ALL[-1]))).times == tuple(EXPLICIT)


def test_schedule_helps_where_the_field_is_stiff():
    # dx/dt = -20 (x - t): a fast transient at the start; 4 Euler steps on a grid crowded near t = 0
    # (shift:0.2) land closer to the exact solution than the uniform grid's
    def f(x, t):
        return -20.0 * (x - t)
    exact = 1.0 - 1 / 20 + (1.0 + 1 / 20) * math.exp(-20.0)     # x(1) from x(0) = 1
    err = {s: abs(integrate(f, np.array([1.0]), 6, "heun", schedule=s).x[0] - exact) for s in ("uniform", "shift:0.2")}
    assert err["shift:0.2"] < err["uniform"] / 3, err


def test_cli_refuses_a_bad_schedule_by_its_option():
    p = run_cli("fm-run", "sample", str(TINY), "-n", "10", "--schedule", "shift:0", check=False)
    assert p.returncode == 2 and "--schedule" in p.stderr and "1/1000000 <= S" in p.stderr
    p = run_cli("fm-run", "sample", str(TINY), "-n", "10", "--times", "0,0.5,1", "--steps", "3", check=False)
    assert p.returncode == 2 and "2 steps, not 3" in p.stderr
