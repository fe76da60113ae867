"""What the fm-run commands share: the model argument and options used by several commands,
loading, and the checks and descriptions that more than one command prints."""
from __future__ import annotations

import click
import numpy as np

from ..engine.request import METHODS
from ..engine.sampler import Sampler, load
from ..model.contract import divergence_problem
from ..solve.solvers import MAX_STEPS, SOLVERS
from ..tools import limits
from ..tools.options import budget_callback, timeout_option

ADAPTIVE = sorted(m for m, d in METHODS.items() if d["kind"] == "adaptive")   # dopri5

model_arg = click.argument("model", required=False, type=click.Path(dir_okay=True))


def _dims(ctx, param, values) -> tuple[int | None, dict[str, int]]:
    """--dim N (a plain file's data dimension) and --dim NAME=N (a symbol's size), repeatable."""
    plain, symbols = None, {}
    for value in values:
        name, _, size = value.rpartition("=")
        if not size.isascii() or not size.isdigit() or int(size) < 1 or len(size) > 9 or (name and not name.isidentifier()):
            raise click.BadParameter(f"{value!r} is not N or NAME=N (a positive size, e.g. 2 or T=50)")
        if not name:
            if plain is not None:
                raise click.BadParameter("give the data dimension once")
            plain = int(size)
        elif name in symbols:
            raise click.BadParameter(f"{name} is given twice")
        else:
            symbols[name] = int(size)
    return plain, symbols


def dims_option(f):
    return click.option("--dim", multiple=True, callback=_dims, metavar="N|NAME=N",
                        help="NAME=N: the size of a symbol of the file's shapes that no --cond binds (e.g. T=50; "
                             "fm-run info lists them); N: the data dimension of a plain ONNX whose graph does "
                             "not fix it. Repeatable.")(f)


def plain_model_options(f):
    f = click.option("--t-name", help="Name of the time input, for a plain ONNX without metadata.")(f)
    f = click.option("--x-name", help="Name of the state input, for a plain ONNX without metadata.")(f)
    return dims_option(f)


def _conds(ctx, param, values) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise click.BadParameter(f"{value!r} is not NAME=FILE.npy")
        if name in out:
            raise click.BadParameter(f"{name} is given twice")
        out[name] = path
    return out


def cond_option(f):
    return click.option("--cond", multiple=True, callback=_conds, metavar="NAME=FILE.npy",
                        help="A condition input of the file (fm-run info lists them) from a .npy: [n, *shape] "
                             "per row or [*shape] for every row. Repeatable.")(f)


def load_conditions(paths: dict[str, str]) -> dict:
    """The --cond files as arrays, their dtype kept (the request checks each against the file)."""
    from ..tools.io import load_array
    return {name: load_array(path, f"condition {name}", kinds="fiu", dtype=None) for name, path in paths.items()}


_TRUST = {"loops": False}       # --allow-loops, for every model this process opens


def open_sampler(model, provider="cpu", dim=None, x_name=None, t_name=None, threads=None, tile=None,
          cuda_graph=False, intra_op_threads=1) -> Sampler:
    plain = dim[0] if isinstance(dim, tuple) else dim
    return load(model, provider, data_shape=plain, x_name=x_name, t_name=t_name, threads=threads,
                tile=tile, cuda_graph=cuda_graph, intra_op_threads=intra_op_threads,
                allow_loops=_TRUST["loops"])



def run_limits(f):
    """--timeout and --max-memory, applied as soon as they are parsed (every fm-run command)."""
    f = click.option("--max-memory", metavar="SIZE", default=limits.DEFAULT_BUDGET, show_default=True,
                     expose_value=False, callback=budget_callback(limits.apply_budget),
                     help="Memory this run may use (e.g. 2G, 512M, 25% of RAM); beyond it the run "
                          "stops with exit code 9 instead of swapping.")(f)
    f = click.option("--allow-loops", is_flag=True, expose_value=False,
                     callback=lambda ctx, param, value: _TRUST.update(loops=value),
                     help="Run model files whose graphs hold a Loop with no fixed trip count (refused "
                          "by default: it may never end); only for files you trust.")(f)
    return timeout_option(f)


def threads_option(f):
    return click.option("--threads", type=click.IntRange(1, limits.MAX_THREADS),
                        help="Worker threads solving tiles of the batch in parallel [default: all cores].")(f)


def solve_options(what: str = "Solver steps on the uniform grid 0 -> 1", adaptive: bool = False):
    """--steps and --solver, defaulting to the model's (adaptive: dopri5 too, with --rtol/--atol)."""
    def add(f):
        if adaptive:
            f = click.option("--atol", type=float, help="dopri5: absolute tolerance [default: 1e-5].")(f)
            f = click.option("--rtol", type=float, help="dopri5: relative tolerance [default: 1e-5].")(f)
        f = click.option("--solver", type=click.Choice(sorted(SOLVERS) + (ADAPTIVE if adaptive else [])),
                         help="Fixed-step solver [default: the model's, else midpoint]"
                              + ("; dopri5: adaptive, to --rtol/--atol, its NFE reported." if adaptive else "."))(f)
        return click.option("--steps", type=click.IntRange(1, MAX_STEPS),
                            help=f"{what} [default: the model's, else 8].")(f)
    return add


def schedule_options(f):
    """--schedule and --times, read together by schedule_of."""
    f = click.option("--times", metavar="T0,...,1",
                     help="Explicit time grid 0,...,1 (strictly increasing; K+1 times make K steps).")(f)
    return click.option("--schedule", metavar="NAME[:S]",
                        help="Where the steps fall in time: uniform, shift:S (t' = S t / (1 + (S-1) t); S > 1: "
                             "smaller steps near the data), sway:S (F5-TTS, -1 <= S <= 1.75; -1: smaller steps "
                             "near the noise), cosine (smaller at both ends) [default: the model's, else uniform].")(f)


def class_options(f):
    """--class, --labels and --guidance for class-conditional models."""
    f = click.option("--guidance", type=float, default=1.0, show_default=True,
                     help="Classifier-free guidance weight w: v = v_uncond + w (v_cond - v_uncond); 1 is the "
                          "plain conditional model, 0 the unconditional one, > 1 sharper classes.")(f)
    f = click.option("--labels", type=click.Path(dir_okay=False),
                     help="Class-conditional models: a .npy of n integer labels, one per row.")(f)
    return click.option("--class", "label", type=int,
                        help="Class-conditional models: the class of every row (see fm-run info for the classes).")(f)


def guidance_options(f):
    """--guidance-interval and --guidance-calls: where in t guidance applies and how it is called."""
    f = click.option("--guidance-calls", type=click.Choice(["batched", "two"]), default="batched", show_default=True,
                     help="How the two halves of guidance run: one call on 2n rows, or two calls of n rows (for "
                          "graphs that cannot take 2n rows).")(f)
    return click.option("--guidance-interval", metavar="A,B", callback=_interval,
                        help="Guide only for A <= t <= B (t = 0 noise, 1 data), the conditional velocity elsewhere; "
                             "default: all of [0, 1].")(f)


def _interval(ctx, param, value):
    if value is None:
        return None
    try:
        a, b = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not two times A,B (e.g. 0.2,0.8)") from None
    return a, b


def divergence_options(f):
    f = click.option("--probes", type=click.IntRange(1, 1024), default=None,
                     help="Hutchinson probes per row [default: one per 16 dimensions, 2 to 16]; with 2 or more the "
                     "summary gives each estimate's standard error (the probes' spread).")(f)
    return click.option("--divergence", type=click.Choice(["auto", "exact", "hutchinson"]), default="auto",
                        show_default=True, help="exact: trace over all D directions; hutchinson: --probes random "
                        "probes per row (unbiased, cheaper for high D); auto: exact up to 16 dimensions.")(f)


def check_conditioning(sampler, label, labels, guidance, logprob, grid) -> None:
    """Refuse, before any work, class options a model cannot take and outputs it cannot make."""
    if (label is not None or labels is not None) and not sampler.num_classes:
        raise click.UsageError(f"{sampler.path} is not class-conditional; --class/--labels do not apply")
    if guidance != 1.0 and label is None and labels is None and not (grid and sampler.num_classes) \
            and not sampler.spec.guidable:
        raise click.UsageError("--guidance needs --class or --labels (or --grid with a conditional model, "
                               "which draws every class)")
    problem = logprob and divergence_problem(sampler.spec, sampler.path)
    if problem:
        raise click.UsageError(problem)
    if grid:
        from ..tools.png import is_image_shape
        if not is_image_shape(sampler.data_shape):
            raise click.UsageError(f"--grid needs image data ([H, W] or [C, H, W]); this model's data "
                                   f"shape is {list(sampler.data_shape)}")


def describe_logp(sampler, logp, nfe: int, divergence: str, probes: int | None, dim: int) -> str:
    """The mean log density in words; dim: values per sample (the request's, symbols bound)."""
    from ..solve.likelihood import default_probes, resolve_method
    d, m = dim, float(logp.mean())
    probes = default_probes(d) if probes is None else probes
    method = resolve_method(divergence, d)
    how = "exact divergence" if method == "exact" else f"Hutchinson divergence, {probes} probe{'s' * (probes > 1)}"
    se = sampler.last_std_error
    if method != "exact":
        how += (f" (standard error per sample: median {float(np.median(se)):.3g} nats)" if probes > 1 and se is not None
                else " (one probe gives no standard error: --probes 2 or more)")
    return (f"mean log p {m:.4f} nats ({m / d:.4f} nats/dim; negative log-likelihood "
            f"{-m / d / np.log(2):.4f} bits/dim), {how}, {nfe} evaluations")
