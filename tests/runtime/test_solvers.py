"""Solvers: correct order of accuracy, NFE counted, the tableau stepper equal to the hand-written rules
(tests/test_parity.py checks numpy and torch give the same)."""
import numpy as np
import pytest

from fm_runtime.solve.solvers import SOLVERS, VELOCITY_SOLVERS, integrate, integrate_inplace, nfe, tableau_step, time_grid


# The four rules written by hand: oracles for the tableau stepper.
def euler_step(f, x, t: float, h: float):
    return x + h * f(x, t)


def midpoint_step(f, x, t: float, h: float):
    """The tutorial's rule: k1 = f(x, t); x + h * f(x + h/2 k1, t + h/2)."""
    k1 = f(x, t)
    return x + h * f(x + (0.5 * h) * k1, t + 0.5 * h)


def heun_step(f, x, t: float, h: float):
    k1 = f(x, t)
    k2 = f(x + h * k1, t + h)
    return x + (0.5 * h) * (k1 + k2)


def rk4_step(f, x, t: float, h: float):
    k1 = f(x, t)
    k2 = f(x + (0.5 * h) * k1, t + 0.5 * h)
    k3 = f(x + (0.5 * h) * k2, t + 0.5 * h)
    k4 = f(x + h * k3, t + h)
    return x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)



ORACLES = {"euler": euler_step, "midpoint": midpoint_step, "heun": heun_step, "rk4": rk4_step}


def f(x, t):
    # dx/dt = -x + t ; exact solution from x(0) = x0: x(t) = t - 1 + (x0 + 1) e^{-t}
    return -1.0 * x + t


def exact(x0, t=1.0):
    return t - 1 + (x0 + 1) * np.exp(-t)




def exact_map(x, st):
    """The exact flow map of f: the average velocity (x(t) - x(s)) / (t - s), f itself at s = t."""
    s, t = st
    if s == t:
        return f(x, s)
    end = t - 1 + (x - s + 1) * np.exp(-(t - s))
    return (end - x) / (t - s)


@pytest.mark.parametrize("steps", [1, 3, 8])
def test_jump_with_an_exact_map_is_exact_at_any_steps(steps):
    x0 = np.array([0.5, -2.0, 3.0])
    sol = integrate(exact_map, x0, steps, "jump", trajectory=True)
    np.testing.assert_allclose(sol.x, exact(x0), rtol=1e-13, atol=1e-13)
    assert sol.nfe == nfe("jump", steps) == steps and len(sol.trajectory) == steps + 1
    inplace, calls = integrate_inplace(lambda x, st: exact_map(x, st).astype(np.float32), x0.astype(np.float32),
                                       steps, "jump", schedule="shift:3")
    np.testing.assert_allclose(inplace, exact(x0), rtol=1e-5, atol=1e-5)
    assert calls == steps


def test_jump_asks_for_each_step_from_its_start_to_its_end():
    seen = []
    integrate(lambda x, st: seen.append(st) or x, np.zeros(2), 4, "jump", schedule="shift:3")
    grid = time_grid(4, schedule="shift:3")
    assert seen == list(zip(grid[:-1], grid[1:]))


def test_jump_on_the_map_of_a_velocity_is_euler():
    """u(x, s, t) = v(x, s) (a map that learnt nothing but the velocity) jumps as Euler steps do."""
    x0 = np.array([0.5, -2.0, 3.0])
    jumped = integrate(lambda x, st: f(x, st[0]), x0, 5, "jump").x
    assert np.array_equal(jumped, integrate(f, x0, 5, "euler").x)


@pytest.mark.parametrize("name", sorted(VELOCITY_SOLVERS))
def test_order_of_accuracy(name):
    x0 = np.array([0.5, -2.0, 3.0])
    errs = [np.abs(integrate(f, x0, s, name).x - exact(x0)).max() for s in (8, 16, 32)]
    orders = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.allclose(orders, SOLVERS[name].order, atol=0.15), (name, orders)


@pytest.mark.parametrize("name", sorted(VELOCITY_SOLVERS))
@pytest.mark.parametrize("steps", [1, 4, 8])
def test_nfe_counted_and_trajectory(name, steps):
    x0 = np.zeros(3)
    sol = integrate(f, x0, steps, name, trajectory=True)
    assert sol.nfe == nfe(name, steps) == steps * SOLVERS[name].evals_per_step
    assert len(sol.trajectory) == steps + 1 and sol.trajectory[0] is x0
    assert np.array_equal(sol.trajectory[-1], sol.x)
    assert sol.times[0] == 0.0 and sol.times[-1] == 1.0 and len(sol.times) == steps + 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="steps must be between 1 and 100000"):
        integrate(f, np.zeros(1), 0)
    with pytest.raises(ValueError, match="unknown solver 'dopri'.*euler"):
        integrate(f, np.zeros(1), 2, "dopri")


def test_time_grid_is_uniform_with_exact_ends():
    g = time_grid(8)
    assert g[0] == 0.0 and g[-1] == 1.0
    assert np.allclose(np.diff(g), 0.125)


@pytest.mark.parametrize("name", sorted(VELOCITY_SOLVERS))
@pytest.mark.parametrize("steps", [1, 3, 8])
def test_inplace_tableau_loop_matches_step_functions(name, steps):
    from fm_runtime.solve.solvers import integrate_inplace
    x0 = np.random.default_rng(steps).standard_normal((7, 2)).astype(np.float32)
    g = lambda x, t: np.tanh(x) * np.float32(t) - x   # noqa: E731
    ref = integrate(g, x0, steps, name)
    got, calls = integrate_inplace(g, x0, steps, name)
    assert calls == ref.nfe and got.dtype == np.float32
    assert np.abs(got - ref.x).max() < 1e-6
    assert not np.shares_memory(got, x0)


def test_noise_stream_ranges_are_consistent():
    from fm_runtime.solve.noise import BLOCK, noise_rows
    full = noise_rows(5, 0, 2 * BLOCK + 100, (2,))
    assert full.dtype == np.float32 and full.shape == (2 * BLOCK + 100, 2)
    for a, b in [(0, 10), (BLOCK - 3, BLOCK + 4), (BLOCK + 7, 2 * BLOCK + 100), (123, 123)]:
        assert np.array_equal(noise_rows(5, a, b, (2,)), full[a:b])
    assert not np.array_equal(noise_rows(6, 0, 10, (2,)), full[:10])
    assert abs(full.mean()) < 0.01 and abs(full.std() - 1) < 0.01


@pytest.mark.parametrize("name", sorted(VELOCITY_SOLVERS))
def test_tableau_stepper_equals_the_hand_written_rule(name):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 3))
    field = lambda x, t: np.tanh(x @ w) + t * x          # noqa: E731
    for _ in range(5):
        x, t, h = rng.standard_normal((4, 3)), float(rng.random()), float(rng.random())
        np.testing.assert_allclose(tableau_step(SOLVERS[name], field, x, t, h), ORACLES[name](field, x, t, h),
                                   rtol=1e-13, atol=1e-13)
    x0 = rng.standard_normal((4, 3)).astype(np.float32)
    inplace, _ = integrate_inplace(lambda x, t: (np.tanh(x @ w) + t * x).astype(np.float32), x0, 6, name)
    loop = integrate(lambda x, t: (np.tanh(x @ w) + t * x).astype(np.float32), x0, 6, name).x
    np.testing.assert_array_equal(inplace, loop)     # the same operations in the same order
