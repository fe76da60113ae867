"""Errors the runtime raises on purpose, each with the process exit code the CLI uses for it."""
from __future__ import annotations

# Exit codes of every fm-* command (documented in docs/cli.md, "Exit codes").
EXIT_OK = 0
EXIT_INTERNAL = 1       # a bug: something we did not foresee
EXIT_USAGE = 2          # bad command-line option (click's own code)
EXIT_MODEL = 3          # model file missing, unreadable, or not a usable model
EXIT_INPUT = 4          # a data or noise file that cannot be used
EXIT_NUMERICAL = 5      # the solve produced NaN or Inf
EXIT_PROVIDER = 6       # requested execution provider not available
EXIT_OUTPUT = 7         # output cannot be written
EXIT_EXPORT = 8         # export refused: the exported graph does not match torch
EXIT_MEMORY = 9         # the run needs more memory than its budget (--max-memory)
EXIT_TIMEOUT = 124      # --timeout passed (the code of coreutils' timeout)
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGTERM


class FmError(Exception):
    """An error with a one-line message meant for the user, and the exit code that goes with it.
    key and field, where known, say what was refused in a form programs compare (the conformance
    vectors do, in both languages): key an fm.* metadata key or a request argument, field the
    path inside its value (the baked solve's steps: key fm.baked, field steps)."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, exit_code: int | None = None, *, key: str | None = None,
                 field: str | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
        self.key, self.field = key, field


class UsageError(FmError, ValueError):
    """A bad argument to the library or an option value the model cannot take (exit code 2, like
    click's own usage errors); also a ValueError, as argument errors are in Python."""

    exit_code = EXIT_USAGE


class ModelError(FmError):
    exit_code = EXIT_MODEL


class InputError(FmError):
    exit_code = EXIT_INPUT


class NumericalError(FmError):
    exit_code = EXIT_NUMERICAL


class ProviderError(FmError):
    exit_code = EXIT_PROVIDER


class OutputError(FmError):
    exit_code = EXIT_OUTPUT


class ResourceError(FmError):
    """The run needs more memory than it may use (--max-memory)."""
    exit_code = EXIT_MEMORY


class TimedOut(FmError):
    exit_code = EXIT_TIMEOUT


class Interrupted(FmError):
    """Ctrl-C or SIGTERM, raised where a run unwinds (control.request_stop)."""
    exit_code = EXIT_INTERRUPTED


def show(value) -> str:
    """A value from a file, for a message: its repr, cut after 80 characters (as js/src/errors.mjs)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "..."


def printable(text: str) -> str:
    """Text safe for a terminal: control characters and escape sequences (which a model file's
    metadata or names may carry) shown escaped, and everything on one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
