"""Sample quality against fresh data, as a table over network evaluations (NFE) and solvers."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from fm_runtime.solve.metrics import energy_distance, sliced_wasserstein
from fm_runtime.solve.solvers import SOLVERS, VELOCITY_SOLVERS

from .data import fresh_data

NFES = (1, 2, 4, 8, 16, 32, 64)


def sampler_for(model_path: str | Path) -> tuple[Callable, dict]:
    """(sample(noise, steps, solver) -> samples, info) for a checkpoint (torch reference
    sampler; a flow map: jump_sample, info["flow_map"] true) or a model file (the runtime)."""
    p = Path(model_path)
    if p.suffix in (".ckpt", ".pt", ".pth"):
        from .checkpoint import load_checkpoint
        from .sample import jump_sample, sample
        model, config = load_checkpoint(p)
        info = {"dataset": config["dataset"], "data_shape": config["data_shape"], "baked": None}
        if config.get("model") == "flow-map":       # jumps; the table's solver is "jump"
            return (lambda z, steps, solver: jump_sample(model, z, steps)), {**info, "flow_map": True}
        return (lambda z, steps, solver: sample(model, z, steps, solver)), info
    import fm_runtime
    s = fm_runtime.load(p)
    dataset = s.spec.training.get("dataset")         # fm.training is free-form: a name only if it is text
    info = {"dataset": dataset if isinstance(dataset, str) else None, "data_shape": list(s.data_shape),
            "baked": s.spec.baked or None}
    if s.baked:
        return (lambda z, steps, solver: s.sample(noise=z)), info
    return (lambda z, steps, solver: s.sample(noise=z, steps=steps, solver=solver)), info


def nfe_table(sample: Callable, dataset: str, n: int = 5000, nfes=NFES, solvers=None,
              seed: int = 0, repeats: int = 2) -> dict:
    """Energy distance (unbiased) and sliced W2 to fresh, independent data for each (solver, NFE)
    a fixed-step solver can spend exactly, averaged over `repeats` noise/data draws; plus the
    noise floor: what a perfect sampler scores, the mean |energy distance| between two
    independent data draws of the same size (sliced W2: its mean), and the spread of that
    (unbiased, signed) estimate over at least 4 pairs of draws: an entry within about two
    spreads of zero is as close to the data as this estimate can tell, and may lie below the
    floor by chance."""
    solvers = solvers or sorted(VELOCITY_SOLVERS)       # a flow map asks for ["jump"]
    draws = []
    for r in range(repeats):
        data = fresh_data(dataset, n, np.random.default_rng([seed, r, 1]))
        z = np.random.default_rng([seed, r, 0]).standard_normal(data.shape, dtype=np.float32)
        draws.append((z, data, fresh_data(dataset, n, np.random.default_rng([seed, r, 2]))))
    pairs = [(d, f) for _, d, f in draws] + [
        (fresh_data(dataset, n, np.random.default_rng([seed, r, 1])), fresh_data(dataset, n, np.random.default_rng([seed, r, 2])))
        for r in range(repeats, 4)]
    signed = [energy_distance(f, d) for d, f in pairs]
    floor_ed, floor_spread = float(np.mean(np.abs(signed))), float(np.std(signed, ddof=1))
    floor_sw = float(np.mean([sliced_wasserstein(f, d) for _, d, f in draws]))
    rows = []
    for solver in solvers:
        per = SOLVERS[solver].evals_per_step
        for nfe in nfes:
            if nfe % per:
                continue
            xs = [sample(z, nfe // per, solver) for z, _, _ in draws]
            rows.append({"solver": solver, "nfe": nfe,
                         "energy_distance": float(np.mean([energy_distance(x, d) for x, (_, d, _) in zip(xs, draws)])),
                         "sliced_w2": float(np.mean([sliced_wasserstein(x, d) for x, (_, d, _) in zip(xs, draws)]))})
    return {"dataset": dataset, "n": n, "repeats": repeats, "floor_energy_distance": floor_ed,
            "floor_spread": floor_spread, "floor_pairs": len(pairs), "floor_sliced_w2": floor_sw, "rows": rows}


def format_table(result: dict) -> str:
    solvers = sorted({r["solver"] for r in result["rows"]})
    nfes = sorted({r["nfe"] for r in result["rows"]})
    cell = {(r["solver"], r["nfe"]): r["energy_distance"] for r in result["rows"]}
    lines = [f"energy distance to fresh {result['dataset']} ({result['n']} points, mean of "
             f"{result['repeats']} draws); noise floor {result['floor_energy_distance']:.2e}, spread "
             f"{result['floor_spread']:.1e} over {result['floor_pairs']} pairs of data draws (entries below "
             f"{2 * result['floor_spread']:.1e} cannot be told from data)",
             f"{'NFE':>5} " + " ".join(f"{s:>10}" for s in solvers)]
    for nfe in nfes:
        lines.append(f"{nfe:>5} " + " ".join(f"{cell[s, nfe]:>10.2e}" if (s, nfe) in cell else f"{'-':>10}"
                                              for s in solvers))
    return "\n".join(lines)


def nfe_figure(result: dict):
    """Energy distance against NFE, one line per solver, on log axes. The band at the bottom is
    what cannot be told from data (below two spreads of the floor's estimate); an entry at or
    below zero (the estimate is unbiased, so it can be) is drawn on the axis's floor as a hollow
    marker instead of vanishing from the log axis. The legend sits beside the axes, off the data."""
    from fm_runtime.tools.plot import pyplot
    plt = pyplot()
    band = 2 * result["floor_spread"]
    values = [r["energy_distance"] for r in result["rows"]]
    positive = [v for v in values + [band] if v > 0] or [1e-6]
    bottom = min(positive) / 3
    fig, ax = plt.subplots(figsize=(6.4, 3.5))
    ax.axhspan(bottom, band, color="grey", alpha=0.2, lw=0, label="cannot be told\nfrom data")
    for k, solver in enumerate(sorted({r["solver"] for r in result["rows"]})):
        rows = [r for r in result["rows"] if r["solver"] == solver]
        nfe = np.array([r["nfe"] for r in rows])
        ed = np.array([r["energy_distance"] for r in rows])
        low = ed <= 0
        ax.plot(nfe, np.maximum(ed, bottom), color=f"C{k}", label=solver)
        ax.plot(nfe[~low], ed[~low], ls="none", marker="o", ms=4, color=f"C{k}")
        ax.plot(nfe[low], np.full(low.sum(), bottom), ls="none", marker="v", ms=7, mfc="white", color=f"C{k}",
                clip_on=False)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({r["nfe"] for r in result["rows"]}), [str(n) for n in sorted({r["nfe"] for r in result["rows"]})])
    ax.set_yscale("log")
    ax.set_ylim(bottom=bottom)
    ax.set_xlabel("network evaluations (NFE)")
    ax.set_ylabel("energy distance to data")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def plot_table(result: dict, path: str) -> None:
    from fm_runtime.tools.io import atomic_write
    from fm_runtime.tools.plot import pyplot
    fig = nfe_figure(result)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    pyplot().close(fig)
