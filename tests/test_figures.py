"""The figures people look at: the trajectory figure is compact, and the NFE plot keeps every
entry on its log axis with the legend off the data."""
import struct

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from fm_runtime.tools.plot import trajectory_figure  # noqa: E402
from training.evaluate import nfe_figure  # noqa: E402


def png_size(path) -> tuple[int, int]:
    head = open(path, "rb").read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.mark.parametrize("states", [9, 5, 3])
def test_trajectory_figure_is_compact(tmp_path, states):
    rng = np.random.default_rng(0)
    traj = rng.standard_normal((states, 500, 2)).astype(np.float32)
    trajectory_figure(str(tmp_path / "t.png"), traj, list(np.linspace(0, 1, states)))
    w, h = png_size(tmp_path / "t.png")
    assert w <= 800 and h <= 800 and 0.6 <= w / h <= 2.5, (w, h)    # not a 2700 x 330 strip


def test_nfe_plot_keeps_every_entry_on_its_axis_and_the_legend_off_the_data():
    rows = [{"solver": s, "nfe": n, "energy_distance": v}
            for s, vals in {"euler": [0.3, 0.05, 0.004, -2e-4], "midpoint": [0.1, 0.002, 5e-4, 1e-4]}.items()
            for n, v in zip([2, 4, 8, 16], vals)]
    result = {"rows": rows, "floor_energy_distance": 3e-4, "floor_spread": 2e-4}
    fig = nfe_figure(result)
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    drawn = np.concatenate([line.get_ydata() for line in ax.get_lines() if len(line.get_ydata())])
    assert lo > 0 and (drawn >= lo * (1 - 1e-9)).all() and (drawn <= hi).all()
    # the negative euler entry is drawn at the floor of the axis as a hollow marker
    hollow = [line for line in ax.get_lines() if line.get_marker() == "v" and len(line.get_xdata())]
    assert [list(line.get_xdata()) for line in hollow] == [[16]]
    # the band is what cannot be told from data: up to two spreads of the floor estimate
    band = [p for p in ax.patches if p.get_label().startswith("cannot be told")]
    assert len(band) == 1 and band[0].get_bbox().y1 == pytest.approx(4e-4)
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1        # beside the axes, never over a line
    assert {t.get_text() for t in ax.get_legend().get_texts()} >= {"euler", "midpoint"}
