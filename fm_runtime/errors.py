"""Errors the runtime raises on purpose, each with the process exit code the CLI uses for it."""
from __future__ import annotations

# Exit codes of every fm-* command (documented in README.md, "Exit codes").
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
    """An error with a one-line message meant for the user, and the exit code that goes with it."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


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


def printable(text: str) -> str:
    """Text safe for a terminal: control characters and escape sequences (which a model file's
    metadata or names may carry) shown escaped, and everything on one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def run_cli(command, prog_name: str, argv: list[str] | None = None, supervised: bool = False) -> int:
    """Run a click command so that every failure is one line on stderr and a documented exit
    code, never a traceback (set FM_DEBUG=1 to see one). SIGTERM is treated like Ctrl-C.
    supervised: run it on a worker thread that Ctrl-C, SIGTERM and --timeout stop within
    seconds even inside a long onnxruntime call (fm_runtime/supervisor.py)."""
    import os
    import signal
    import sys

    import click

    def on_term(signum, frame):
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread
        pass
    def body():
        return command.main(args=argv, prog_name=prog_name, standalone_mode=False)

    if supervised and not os.environ.get("FM_DEBUG"):
        import warnings
        warnings.simplefilter("ignore")         # numpy's warnings: errors are reported as one line
    try:
        if supervised:
            from .supervisor import supervise
            rc = supervise(body, prog_name)
        else:
            rc = body()
        return rc if isinstance(rc, int) else EXIT_OK
    except click.exceptions.Abort:
        click.echo(f"{prog_name}: interrupted", err=True)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        click.echo(f"{prog_name}: interrupted", err=True)
        return EXIT_INTERRUPTED
    except click.exceptions.NoArgsIsHelpError as e:   # the bare command: its help, as written
        click.echo(e.ctx.get_help() if e.ctx else e.format_message())
        return EXIT_OK
    except click.UsageError as e:
        command = e.ctx.command_path if e.ctx else prog_name
        msg = " ".join(e.format_message().split())
        click.echo(printable(f"{prog_name}: error: {msg} (see {command} --help)"), err=True)
        return e.exit_code
    except click.ClickException as e:
        click.echo(printable(f"{prog_name}: error: {' '.join(e.format_message().split())}"), err=True)
        return e.exit_code
    except FmError as e:
        stopped = e.exit_code in (EXIT_INTERRUPTED, EXIT_TIMEOUT)
        click.echo(printable(f"{prog_name}: {'' if stopped else 'error: '}{e}"), err=True)
        return e.exit_code
    except Exception as e:
        if os.environ.get("FM_DEBUG"):
            raise
        msg = " ".join(str(e).split())[:300]
        click.echo(printable(f"{prog_name}: internal error: {type(e).__name__}: {msg} "
                             "(set FM_DEBUG=1 for a traceback)"), err=True)
        return EXIT_INTERNAL
    finally:
        sys.stdout.flush()
