"""Reaching around an obstacle: an action expert that samples a chunk of 16 absolute waypoints
[16, 2] from just after the start to the goal, conditioned on the observation `obs` [7] = start
(2), goal (2), obstacle centre (2), obstacle radius (1).

Observations: start = (-1, U(-0.5, 0.5)), goal = (1, U(-0.5, 0.5)), centre = the midpoint of
start and goal plus N(0, 0.05^2) per coordinate, radius U(0.2, 0.4). Demonstrations bend around
the obstacle to its left or its right with probability 1/2 each (seen from start to goal), by a
sine-shaped sideways offset whose clearance beyond the radius is U(0.06, 0.2): the conditional
distribution has two modes, and a regression onto the mean drives through the obstacle."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..nets import GAP_FEATURES, gap_features, time_embedding, zero_linear
from .base import Task, TaskModel, mlp, model_class

WAYPOINTS = 16
OBS = 7
T_FLOOR = 0.02       # v = (x1 - x) / max(1 - t, T_FLOOR): float32 rounding grows at most 50x


def observations(n: int, rng: np.random.Generator) -> np.ndarray:
    """n observations [n, 7]: start, goal, obstacle centre, radius."""
    start = np.stack([-np.ones(n), rng.uniform(-0.5, 0.5, n)], 1)
    goal = np.stack([np.ones(n), rng.uniform(-0.5, 0.5, n)], 1)
    centre = (start + goal) / 2 + 0.05 * rng.standard_normal((n, 2))
    radius = rng.uniform(0.2, 0.4, (n, 1))
    return np.concatenate([start, goal, centre, radius], 1).astype(np.float32)


def _frame(obs: np.ndarray):
    """(start, goal, centre, radius, left normal of the start->goal direction) of each row."""
    start, goal, centre, radius = obs[:, 0:2], obs[:, 2:4], obs[:, 4:6], obs[:, 6]
    d = (goal - start) / np.linalg.norm(goal - start, axis=1, keepdims=True)
    return start, goal, centre, radius, np.stack([-d[:, 1], d[:, 0]], 1)


def demonstrations(obs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(waypoints [n, 16, 2], side +1 left / -1 right) of one demonstration per observation."""
    start, goal, centre, radius, normal = _frame(obs)
    n = len(obs)
    side = rng.choice([-1.0, 1.0], n)
    u = np.arange(1, WAYPOINTS + 1) / WAYPOINTS                             # the waypoints' progress
    base = start[:, None] + u[None, :, None] * (goal - start)[:, None]       # [n, 16, 2]
    offset_c = np.einsum("nd,nd->n", centre - start, normal)                 # the centre's sideways offset
    amplitude = radius + side * offset_c + rng.uniform(0.06, 0.2, n)
    path = base + (side * amplitude)[:, None, None] * np.sin(np.pi * u)[None, :, None] * normal[:, None]
    return path.astype(np.float32), side


def draw(n: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    obs = observations(n, rng)
    return demonstrations(obs, rng)[0], {"obs": obs}


def clearance(waypoints: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """The closest approach of each polyline (the start, then the waypoints) to the obstacle's
    centre, minus its radius: > 0 means the path stays clear."""
    start, _, centre, radius, _ = _frame(obs)
    pts = np.concatenate([start[:, None], waypoints], 1)                     # [n, 17, 2]
    a, b = pts[:, :-1], pts[:, 1:]
    ab, ac = b - a, centre[:, None] - a
    s = np.clip((ab * ac).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0, 1)
    closest = a + s[..., None] * ab
    return np.linalg.norm(closest - centre[:, None], axis=-1).min(1) - radius


def metrics(waypoints: np.ndarray, obs: np.ndarray) -> dict:
    """success: the last waypoint within 0.1 of the goal and no segment closer than the radius to
    the centre; left: the share passing the centre on its left, seen from start to goal (the
    waypoint nearest the centre's progress decides); also the mean distance of the end to the goal."""
    end = np.linalg.norm(waypoints[:, -1] - obs[:, 2:4], axis=1)
    ok = (end <= 0.1) & (clearance(waypoints, obs) > 0)
    return {"success": float(ok.mean()), "left": float(passes_left(waypoints, obs).mean()), "end_error": float(end.mean())}


def passes_left(waypoints: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """Whether each path passes the centre on its left, seen from start to goal: the side of the
    waypoint nearest the centre's progress along the start-goal line."""
    start, goal, centre, _, normal = _frame(obs)
    progress = np.einsum("nd,nd->n", centre - start, goal - start) / np.einsum("nd,nd->n", goal - start, goal - start)
    k = np.clip(np.rint(progress * WAYPOINTS).astype(int) - 1, 0, WAYPOINTS - 1)
    beside = waypoints[np.arange(len(obs)), k] - centre
    return np.einsum("nd,nd->n", beside, normal) > 0


class ActionExpert(nn.Module):
    """v(x [B, 16, 2], t [B], obs [B, 7]): an MLP that works in the frame of the task, along and
    across the start-goal line: it sees each waypoint's offset from its place on the straight line,
    the obstacle's offset, the radius, the distance and a sinusoidal time embedding, and returns
    where it puts the path (the clean waypoints x1, along and across the line: the same in every
    direction), and the velocity is (x1 - x) / (1 - t), with 1 - t floored at T_FLOOR. Predicting
    the clean chunk instead of the velocity keeps the waypoints smooth and the goal exact after a
    few Euler steps (see Li and He, "Back to Basics: Let Denoising Generative Models Denoise",
    2025, on predicting data for data near a low-dimensional manifold)."""

    def __init__(self, width: int, depth: int):
        super().__init__()
        self.net = mlp([WAYPOINTS * 2 + 4 + 64] + [width] * depth + [WAYPOINTS * 2])
        self.register_buffer("progress", torch.arange(1, WAYPOINTS + 1, dtype=torch.float32) / WAYPOINTS)

    def forward(self, x: torch.Tensor, t: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        h, frame = self.features(x, t, obs)
        return self.to_velocity(x, t, self.net(h), frame)

    def features(self, x: torch.Tensor, t: torch.Tensor, obs: torch.Tensor):
        """(the MLP's input, (base, along, across): the straight line and its directions)."""
        start, goal, centre, radius = obs[:, 0:2], obs[:, 2:4], obs[:, 4:6], obs[:, 6:7]
        span = goal - start
        length = span.norm(dim=1, keepdim=True)
        along_dir = span / length
        across_dir = torch.stack([-along_dir[:, 1], along_dir[:, 0]], 1)
        base = start[:, None] + self.progress[None, :, None] * span[:, None]
        rel = x - base
        c = centre - start
        h = torch.cat([(rel * along_dir[:, None]).sum(-1), (rel * across_dir[:, None]).sum(-1),
                       (c * along_dir).sum(1, keepdim=True) / length, (c * across_dir).sum(1, keepdim=True), radius,
                       length, time_embedding(t, 64)], 1)
        return h, (base, along_dir, across_dir)

    @staticmethod
    def to_velocity(x: torch.Tensor, t: torch.Tensor, out: torch.Tensor, frame) -> torch.Tensor:
        """(x1_hat - x) / max(1 - t, T_FLOOR), x1_hat put back from the line's frame."""
        base, along_dir, across_dir = frame
        along, across = out[:, :WAYPOINTS], out[:, WAYPOINTS:]
        x1 = base + along[..., None] * along_dir[:, None] + across[..., None] * across_dir[:, None]
        return (x1 - x) / (1.0 - t).clamp(min=T_FLOOR)[:, None, None]


class ActionExpertMap(ActionExpert):
    """The action expert as a flow map u(x, s, t, obs): it predicts the clean chunk x1_hat from
    (x, s) as the velocity net does, plus a zero-initialised path from the gap t - s into its
    first layer, and u = (x1_hat - x) / max(1 - s, T_FLOOR); so a jump to t = 1 lands on x1_hat."""

    def __init__(self, width: int, depth: int):
        super().__init__(width, depth)
        self.gap = zero_linear(GAP_FEATURES, width)

    def forward(self, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        h, frame = self.features(x, s, obs)
        out = self.net[1:](self.net[0](h) + self.gap(gap_features(s, t)))
        return self.to_velocity(x, s, out, frame)


class ReachModel(TaskModel):
    predicts_data, t_floor = True, T_FLOOR
    def conditions(self, request, drop):
        return {"obs": request["obs"]}


class Regression(nn.Module):
    """The baseline: the same MLP size mapping obs [B, 7] straight to waypoints, trained with MSE."""

    def __init__(self, width: int, depth: int):
        super().__init__()
        self.net = mlp([OBS] + [width] * depth + [WAYPOINTS * 2])

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).reshape(-1, WAYPOINTS, 2)


def fit_regression(steps: int, batch_size: int, lr: float, width: int, depth: int, seed: int = 0) -> Regression:
    """The MSE baseline on the same demonstrations (Adam, cosine decay)."""
    torch.manual_seed(seed)
    rng, net = np.random.default_rng(seed), Regression(width, depth)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        x1, req = draw(batch_size, rng)
        loss = ((net(torch.from_numpy(req["obs"])) - torch.from_numpy(x1)) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


def build(architecture: dict) -> TaskModel:
    net = ActionExpertMap if architecture.get("flow_map") else ActionExpert
    return model_class(ReachModel, architecture)(net(architecture["width"], architecture["depth"]), None, architecture)


def draw_paths(ax, obs: np.ndarray, paths: np.ndarray) -> None:
    """One observation's sampled paths on matplotlib axes: the obstacle, each path from the start
    (blue passes left, orange right), the start and the goal."""
    import matplotlib.pyplot as plt
    start, goal, centre, radius = obs[0:2], obs[2:4], obs[4:6], obs[6]
    ax.add_patch(plt.Circle(centre, radius, color="0.75", zorder=0))
    left = passes_left(paths, np.repeat(obs[None], len(paths), 0))
    for p, is_left in zip(paths, left):
        line = np.concatenate([start[None], p])
        ax.plot(line[:, 0], line[:, 1], "-", lw=0.8, alpha=0.6, color="tab:blue" if is_left else "tab:orange")
    ax.plot(*start, "ko")
    ax.plot(*goal, "r*", ms=12)
    ax.set_aspect("equal")
    ax.set_xlim(-1.2, 1.2)
    ax.set_ylim(-1.2, 1.2)


def plot(path: str, obs: np.ndarray, paths: np.ndarray, title: str = "") -> None:
    """Sampled paths (one observation's) over the obstacle, drawn as polylines from the start:
    blue passes left, orange right."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    draw_paths(ax, obs, paths)
    ax.set_title(title or f"{len(paths)} sampled paths around the obstacle")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


TASK = Task(
    name="reach", data_shape=[WAYPOINTS, 2], inputs={"obs": f"float32[{OBS}]"}, call="x,t,obs",
    draw=draw, build=build, defaults={"steps": 6000, "batch_size": 256, "lr": 2e-3, "width": 256, "depth": 4},
    default_steps=10, default_solver="euler",
    about="waypoints [16, 2] around an obstacle, conditioned on obs [7] = start, goal, centre, radius")
