"""Figures. matplotlib is optional (the `plot` extra) and imported only when a figure is drawn."""
from __future__ import annotations

import numpy as np

from ..errors import FmError
from .io import atomic_write

INSTALL_HINT = "plotting needs matplotlib: in the fm-runtime checkout, pip install '.[plot]'"


def require_matplotlib():
    """Fail early, before any sampling, when the plot extra is missing."""
    pyplot()


def pyplot():
    """matplotlib.pyplot on the Agg backend, or a one-line error saying how to install it."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise FmError(INSTALL_HINT, exit_code=2) from None
    return plt


def panel_indices(n_states: int, panels: int = 9) -> list[int]:
    """Which trajectory states to show: `panels` evenly spaced, ends included."""
    if n_states <= panels:
        return list(range(n_states))
    return sorted({round(i * (n_states - 1) / (panels - 1)) for i in range(panels)})


def trajectory_figure(path: str, trajectory: np.ndarray, times: list[float], panels: int = 9,
                      limit: float = 3.0) -> None:
    """The tutorial's figure, compact: up to 9 scatter panels from noise to data on a near-square
    grid (3 x 3 for 9), shared axes with limits [-limit, limit], each titled with its t; 2.4-inch
    panels and dots sized to the count, so the whole is about 720 px square. Needs 2-D data."""
    if trajectory.ndim != 3 or trajectory.shape[2] != 2:
        raise FmError(f"--plot draws 2-D data only; this model's samples have shape "
                      f"{list(trajectory.shape[2:])}", exit_code=2)
    plt = pyplot()
    idx = panel_indices(len(trajectory), panels)
    cols = int(np.ceil(np.sqrt(len(idx))))
    rows = int(np.ceil(len(idx) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.5 * rows), sharex=True, sharey=True,
                             squeeze=False)
    dot = float(np.clip(2000 / trajectory.shape[1], 0.5, 8))     # fewer points, bigger dots
    for k, ax in enumerate(axes.flat):
        if k >= len(idx):
            ax.set_axis_off()
            continue
        pts = trajectory[idx[k]]
        ax.scatter(pts[:, 0], pts[:, 1], s=dot, linewidths=0, color="C0" if k < len(idx) - 1 else "C1")
        ax.set_title(f"t = {times[idx[k]]:.2f}", fontsize=9)
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-limit, limit)
        ax.set_aspect("equal")
        ax.set_xticks([-2, 0, 2] if limit >= 2.5 else [])
        ax.set_yticks([-2, 0, 2] if limit >= 2.5 else [])
        ax.tick_params(labelsize=7)
    fig.tight_layout(pad=0.4)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def ascii_scatter(points: np.ndarray, width: int = 60, height: int = 20) -> str:
    """A terminal density sketch of 2-D points, so a sample is visible without matplotlib."""
    lo = points.min(0)
    span = np.maximum(points.max(0) - lo, 1e-9)
    cols = np.clip(((points[:, 0] - lo[0]) / span[0] * (width - 1)).round().astype(int), 0, width - 1)
    rows = np.clip(((points[:, 1] - lo[1]) / span[1] * (height - 1)).round().astype(int), 0, height - 1)
    grid = np.zeros((height, width), int)
    np.add.at(grid, (height - 1 - rows, cols), 1)
    shades = " .:*#"
    q = np.minimum((grid * (len(shades) - 1) + grid.max() - 1) // max(grid.max(), 1), len(shades) - 1)
    return "\n".join("".join(shades[v] for v in row) for row in q)
