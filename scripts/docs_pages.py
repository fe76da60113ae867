"""Write the documentation pages that are made from something else, so they cannot drift from it
(tests/test_docs.py fails when one is out of date: rerun `python scripts/docs_pages.py`):

- docs/cli.md: every command's --help, as the tools print it, and the exit codes (errors.py);
- docs/benchmarks.md: each script in benchmarks/, with the text at its head (what it measures and
  the command that reproduces it);
- docs/index.md: the site's front page, README.md with its links made relative to docs/;
- docs/options.md: every request option as contract.json declares it, and where it is offered.
"""
from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
sys.path.insert(0, str(REPO))

EXIT_CODES = """## Exit codes
| code | meaning |
|---|---|
| 0 | success |
| 1 | internal error (a bug; `FM_DEBUG=1` shows the traceback) |
| 2 | bad command-line usage (one line naming the option), or a missing optional extra |
| 3 | model or checkpoint file missing, unreadable, corrupted (fails its self-test), with external data or unknown operators, not a velocity/baked model, metadata of the wrong shape, or a graph that fails or returns other shapes than it declares while running |
| 4 | data, noise or condition unusable (shape, dtype, NaN/Inf, values a condition stage cannot take) |
| 5 | the solve produced NaN or Inf |
| 6 | execution provider not available |
| 7 | output cannot be written (missing folder, no permission, not enough disk space) |
| 8 | export refused: onnxruntime and torch disagree, onnx.checker rejects the graph, or a variant is over its quality budget |
| 9 | the run needs more memory than its budget (`--max-memory`, default 50% of RAM) |
| 124 | stopped by `--timeout`; nothing written |
| 130 | interrupted (Ctrl-C / SIGTERM); outputs are written atomically, so the previous file or none is left |

Errors are one line on stderr, never a traceback (`FM_DEBUG=1` shows one for exit code 1).
`fm-run serve` answers with HTTP statuses instead (see [Serving over HTTP](serve.md)).
"""


def commands():
    from fm_runtime.cli.main import cli as run_cli
    from training.cli import cli as train_cli
    from training.export_cli import cli as export_cli
    return [("fm-run", run_cli, "numpy + onnxruntime: sample, inspect, measure and serve model files"),
            ("fm-train", train_cli, "torch: train, reflow, evaluate and score models (the train extra)"),
            ("fm-export", export_cli, "torch + onnx: write a verified model file (the train extra)")]


def help_text(cmd: click.Command, path: str, settings: dict) -> str:
    """cmd's --help under its tool's context settings (help_option_names: -h, --help), as the tool
    prints it: click caches each command's help option when the command first runs, so a page
    made without them would also depend on what ran before it in the process."""
    ctx = click.Context(cmd, info_name=path, terminal_width=100, max_content_width=100, **settings)
    return cmd.get_help(ctx)


def cli_page() -> str:
    lines = ["# Command-line reference", "",
             "Every command's `--help`, as the installed tools print it (`scripts/docs_pages.py` writes this page).", ""]
    for name, cli, what in commands():
        lines += [f"## {name}", "", what + ".", "", "```text", help_text(cli, name, cli.context_settings), "```", ""]
        if isinstance(cli, click.Group):
            for sub in sorted(cli.commands):
                lines += [f"### {name} {sub}", "", "```text", help_text(cli.commands[sub], f"{name} {sub}", cli.context_settings),
                          "```", ""]
    return "\n".join(lines) + "\n" + EXIT_CODES


def head_text(path: Path) -> str:
    if path.suffix == ".py":
        return ast.get_docstring(ast.parse(path.read_text())) or ""
    comments = []
    for line in path.read_text().splitlines()[1:]:
        if not line.startswith("//"):
            break
        comments.append(line[2:].strip())
    return "\n".join(comments)


def benchmarks_page() -> str:
    lines = ["# Benchmarks", "",
             "Speed targets and long measurements live in `benchmarks/`, never in the tests. Each script "
             "compares against a reference measured in the same run, and prints what the other pages quote. "
             "The text below is each script's own head (`scripts/docs_pages.py` copies it).", ""]
    for path in sorted((REPO / "benchmarks").glob("*.py")) + sorted((REPO / "benchmarks").glob("*.mjs")):
        lines += [f"## {path.name}", "", "```text", head_text(path).strip(), "```", ""]
    return "\n".join(lines)


def index_page() -> str:
    """README.md with its links to docs/ made relative; a link to anything outside docs/ is refused
    (the site could not resolve it)."""
    text = (REPO / "README.md").read_text().replace("](docs/", "](")
    outside = [t for t in re.findall(r"\]\((?!https?:|#)([^)#]+)", text) if not (DOCS / t).exists()]
    if outside:
        raise SystemExit(f"README.md links to files outside docs/: {outside}")
    return text


def options_page() -> str:
    from fm_runtime.engine import options
    from fm_runtime.engine.options import text
    lines = ["# Request options", "",
             "Every option of a sampling or likelihood request, declared once in `fm_runtime/contract.json`",
             '("options"): the Python API\'s keywords (`Sampler.sample`, `run`, `request`, `sample_chunks`,',
             "`log_prob`), fm-run's options (`--name-with-dashes`), the server's parameters (listed in each",
             "model's metadata as `request_parameters`) and the JavaScript request (`camelCase`) are built from",
             "it, and one `resolve` checks a request against it (`scripts/docs_pages.py` writes this page).",
             "Where an option is offered: **s** sampling, **l** log-likelihoods.", "",
             "| option | type | default | values | Python | fm-run | server | JavaScript | what it does |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, entry in options.DECLARED.items():
        lo, hi = options.bounds(name)
        if options.choices(name) is not None:
            values = ", ".join(options.choices(name))
        elif lo is not None:
            close = ")" if entry.get("exclusive_maximum") else "]"
            values = f"[{text(lo)}, {text(hi)}{close}" if hi is not None else f"> {text(lo)}"
        else:
            values = ""
        where = ["".join(op[0] for op in entry[s]) or "-" for s in ("python", "cli", "serve", "js")]
        default = "" if entry.get("default") is None else f"`{json.dumps(entry['default'])}`"
        shown = f"`{name}`" + (f" (`{entry['alias']}` in sample())" if "alias" in entry else "")
        lines.append(f"| {shown} | {entry['type']} | {default} | {values} | {' | '.join(where)} | {entry['help']} |")
    rules = [f"`{n}` and `{o}` cannot be combined" for n, e in options.DECLARED.items() for o in e.get("conflicts", ())]
    rules += [f"`{n}` applies to {', '.join(e['solver_kinds'])} solvers only" for n, e in options.DECLARED.items()
              if "solver_kinds" in e]
    return "\n".join(lines + ["", "Rules between options: " + "; ".join(rules) + "."]) + "\n"


PAGES = {"cli.md": cli_page, "benchmarks.md": benchmarks_page, "index.md": index_page, "options.md": options_page}

if __name__ == "__main__":
    for name, make in PAGES.items():
        (DOCS / name).write_text(make())
        print(f"docs/{name}: {len((DOCS / name).read_text().splitlines())} lines")
