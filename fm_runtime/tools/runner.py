"""Running a click command the project's way: every failure one line on stderr with its
documented exit code (errors.py), SIGTERM treated like Ctrl-C, and optionally on a supervised
worker thread (supervisor.py). fm-run, fm-train and fm-export all enter through run_cli."""
from __future__ import annotations

from ..errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_TIMEOUT, FmError, printable


def run_cli(command, prog_name: str, argv: list[str] | None = None, supervised: bool = False) -> int:
    """Run a click command so that every failure is one line on stderr and a documented exit
    code, never a traceback (set FM_DEBUG=1 to see one). SIGTERM is treated like Ctrl-C.
    supervised: run it on a worker thread that Ctrl-C, SIGTERM and --timeout stop within
    seconds even inside a long onnxruntime call (supervisor.py)."""
    import os
    import signal
    import sys

    import click
    import onnxruntime

    from .io import end_progress_line

    onnxruntime.set_default_logger_severity(4)      # onnxruntime's own log lines never reach the terminal

    def on_term(signum, frame):
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread
        pass

    def fail(message: str, code: int) -> int:
        """The one line of a failure, on a line of its own even when a progress line is open."""
        end_progress_line()
        click.echo(printable(message), err=True)
        return code

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
    except (click.exceptions.Abort, KeyboardInterrupt):
        return fail(f"{prog_name}: interrupted", EXIT_INTERRUPTED)
    except click.exceptions.NoArgsIsHelpError as e:   # the bare command: its help, as written
        click.echo(e.ctx.get_help() if e.ctx else e.format_message())
        return EXIT_OK
    except click.UsageError as e:
        command = e.ctx.command_path if e.ctx else prog_name
        return fail(f"{prog_name}: error: {' '.join(e.format_message().split())} (see {command} --help)", e.exit_code)
    except click.ClickException as e:
        return fail(f"{prog_name}: error: {' '.join(e.format_message().split())}", e.exit_code)
    except FmError as e:
        stopped = e.exit_code in (EXIT_INTERRUPTED, EXIT_TIMEOUT)
        return fail(f"{prog_name}: {'' if stopped else 'error: '}{e}", e.exit_code)
    except Exception as e:
        if os.environ.get("FM_DEBUG"):
            raise
        msg = " ".join(str(e).split())[:300]
        return fail(f"{prog_name}: internal error: {type(e).__name__}: {msg} (set FM_DEBUG=1 for a traceback)",
                    EXIT_INTERNAL)
    finally:
        sys.stdout.flush()
