"""Options every fm-* command declares alike: --timeout and --max-memory, applied as soon as they
are parsed, and the schedule a --schedule / --times pair names."""
from __future__ import annotations

import math

import click

from ..errors import UsageError
from ..model import control
from . import limits


class FiniteRange(click.FloatRange):
    """A float range that also refuses NaN and infinities (click's range lets NaN through)."""

    def convert(self, value, param, ctx):
        value = super().convert(value, param, ctx)
        if not math.isfinite(value):
            self.fail(f"{value} is not a finite number", param, ctx)
        return value


def _set_timeout(ctx, param, seconds):
    if seconds is not None and not math.isfinite(seconds):
        raise click.BadParameter(f"{seconds} is not a number of seconds (a finite number > 0)")
    control.set_deadline(seconds)


def budget_callback(apply):
    """The --max-memory callback that hands the parsed size to `apply` (limits.apply_budget sets
    a data limit, limits.watch_budget has the supervisor watch resident memory)."""
    def callback(ctx, param, value):
        try:
            apply(limits.parse_size(value))
        except UsageError as e:
            raise click.BadParameter(str(e).split(": ", 1)[-1]) from None
    return callback


def timeout_option(f):
    """--timeout, applied as soon as it is parsed (a supervised run_cli watches it)."""
    return click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
                        expose_value=False, callback=_set_timeout,
                        help="Stop the run after this many seconds (exit code 124, nothing written).")(f)


def watched_limits(f):
    """--timeout and --max-memory for the torch tools (fm-train, fm-export): the budget is watched
    (resident memory, every 20 ms) rather than set as a data limit, under which torch fails."""
    f = click.option("--max-memory", metavar="SIZE", default=limits.DEFAULT_BUDGET, show_default=True,
                     expose_value=False, callback=budget_callback(limits.watch_budget),
                     help="Memory this run may use (e.g. 8G, 25% of RAM), checked every 20 ms; past it the "
                          "run stops with exit code 9 and writes nothing.")(f)
    return timeout_option(f)


def schedule_of(schedule: str | None, times: str | None):
    """The request's schedule from --schedule / --times (None: the model's default)."""
    from ..solve.schedules import parse_schedule, parse_times
    if schedule and times is not None:
        raise click.UsageError("give --schedule or --times, not both")
    try:
        return parse_times(times) if times is not None else (parse_schedule(schedule) if schedule else None)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--times" if times is not None else "--schedule") from None
