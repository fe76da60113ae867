"""What the fm-run commands share: the model argument and options used by several commands,
loading, and the checks and descriptions that more than one command prints."""
from __future__ import annotations

import click
import numpy as np

from ..engine import options
from ..engine.sampler import Sampler, load
from ..errors import UsageError
from ..model.contract import divergence_problem
from ..tools import limits
from ..tools.options import FiniteRange, budget_callback, timeout_option

ADAPTIVE = [m for m, d in options.CONTRACT["solvers"]["methods"].items() if d["kind"] == "adaptive"]   # dopri5

model_arg = click.argument("model", required=False, type=click.Path(dir_okay=True))


def _dims(ctx, param, values) -> tuple[int | None, dict[str, int]]:
    """--dim N (a plain file's data dimension) and --dim NAME=N (a symbol's size), repeatable."""
    plain, symbols = None, {}
    for value in values:
        name, eq, size = value.rpartition("=")
        if not size.isascii() or not size.isdigit() or len(size) > 9 or int(size) < 1 or (eq and not name.isidentifier()):
            shown = value if len(value) <= 40 else value[:40] + f"... ({len(value):,} characters)"
            raise click.BadParameter(f"{shown!r} is not N or NAME=N (a positive size, e.g. 2 or T=50)")
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
    f = click.option("--null-cond", "null_cond", multiple=True, callback=_conds, metavar="NAME=FILE.npy",
                     help="Guidance against a negative prompt: what the unconditional half takes for this condition "
                          "instead of the file's null (the condition stage's inputs go through it, e.g. "
                          "--null-cond text=negative.npy). Needs --guidance other than 1. Repeatable.")(f)
    return click.option("--cond", multiple=True, callback=_conds, metavar="NAME=FILE.npy",
                        help="A condition input of the file (fm-run info lists them) from a .npy: [n, *shape] "
                             "per row or [*shape] for every row. Repeatable.")(f)


def load_conditions(paths: dict[str, str]) -> dict:
    """The --cond files as arrays, their dtype kept (the request checks each against the file)."""
    from ..tools.io import load_array
    return {name: load_array(path, f"condition {name}", kinds="fiu", dtype=None) for name, path in paths.items()}


_TRUST = {"loops": False}       # --allow-loops, for every model this process opens


def open_sampler(model, provider="cpu", dim=None, x_name=None, t_name=None, threads=None, tile=None,
          cuda_graph=False, intra_op_threads=None) -> Sampler:
    plain = dim[0] if isinstance(dim, tuple) else dim
    return load(model, provider, data_shape=plain, x_name=x_name, t_name=t_name, threads=threads,
                tile=tile, cuda_graph=cuda_graph, intra_op_threads=intra_op_threads,
                allow_loops=_TRUST["loops"])



def memory_option(help_text: str):
    """--max-memory SIZE, applied as soon as it is parsed (fm_runtime.tools.limits.budget())."""
    return click.option("--max-memory", metavar="SIZE", default=limits.DEFAULT_BUDGET, show_default=True,
                        expose_value=False, callback=budget_callback(limits.apply_budget), help=help_text)


def run_limits(f):
    """--timeout and --max-memory, applied as soon as they are parsed (every fm-run command)."""
    f = memory_option("Memory this run may use (e.g. 2G, 512M, 25% of RAM); beyond it the run "
                      "stops with exit code 9 instead of swapping.")(f)
    f = click.option("--allow-loops", is_flag=True, expose_value=False,
                     callback=lambda ctx, param, value: _TRUST.update(loops=value),
                     help="Run model files whose graphs hold a Loop with no fixed trip count (refused "
                          "by default: it may never end); only for files you trust.")(f)
    return timeout_option(f)


def threads_option(f):
    f = click.option("--intra-op-threads", type=click.IntRange(1, limits.MAX_THREADS),
                     help="onnxruntime threads inside each call. One, with tiles over the cores, is fastest for "
                          "most of these nets; fm-run bench measures it for a file [default: 1, or with none of "
                          "--tile/--threads/--intra-op-threads, what fm-run bench --save chose for the file here].")(f)
    return click.option("--threads", type=click.IntRange(1, limits.MAX_THREADS),
                        help="Worker threads solving tiles of the batch in parallel [default: all cores].")(f)


def request_options(op: str, only: tuple[str, ...] = ()):
    """fm-run's options for operation `op` ("sample", "logprob"): one per option the declaration
    (contract.json "options") offers on the command line, with its type, range, choices, default
    and help; `only` keeps those named. The command receives each under its own name."""
    def add(f):
        for name, entry in reversed(list(options.offered("cli", op).items())):
            if not only or name in only:
                f = click.option("--" + name.replace("_", "-"), name, **_click_kwargs(name, entry))(f)
        return f
    return add


def _click_kwargs(name: str, entry: dict) -> dict:
    kind, default = entry["type"], entry.get("default")
    lo, hi = options.bounds(name)
    kw: dict = {"help": entry["help"], "default": default, "show_default": default is not None and kind != "boolean"}
    if kind == "integer":
        kw["type"] = click.IntRange(lo, hi)
    elif kind == "number":
        kw["type"] = FiniteRange(lo, hi, min_open=bool(entry.get("exclusive_minimum")))
    elif kind == "boolean":
        kw.update(is_flag=True, default=bool(default))
    elif options.choices(name) is not None:
        kw["type"] = click.Choice(options.choices(name))
    else:
        kw.update(metavar={"interval": "A,B", "schedule": "NAME[:S]"}.get(kind, "TEXT"), callback=_checked)
    return kw


def _checked(ctx, param, value):
    """A value whose form the declaration checks (an interval A,B), refused as click refuses."""
    try:
        return options.check(param.name, value)
    except UsageError as e:
        raise click.BadParameter(str(e)) from None


def times_option(f):
    """--times, an explicit grid read with --schedule by schedule_of."""
    return click.option("--times", metavar="T0,...,1",
                        help="Explicit time grid 0,...,1 (strictly increasing; K+1 times make K steps).")(f)


def class_options(f):
    """--class and --labels for class-conditional models."""
    f = click.option("--labels", type=click.Path(dir_okay=False),
                     help="Class-conditional models: a .npy of n integer labels, one per row.")(f)
    return click.option("--class", "label", type=int,
                        help="Class-conditional models: the class of every row (see fm-run info for the classes).")(f)


def check_conditioning(sampler, label, labels, guidance, logprob, grid, null_cond=None) -> None:
    """Refuse, before any work, class options a model cannot take and outputs it cannot make."""
    if (label is not None or labels is not None) and not sampler.num_classes:
        raise click.UsageError(f"{sampler.path} is not class-conditional; --class/--labels do not apply")
    if guidance != 1.0 and label is None and labels is None and not (grid and sampler.num_classes) \
            and not sampler.spec.guidable and not null_cond:
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
