"""The documentation: the pages made from code are current (scripts/docs_pages.py), and the site
builds with mkdocs --strict (every link and every API reference resolves)."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_generated_pages_are_current():
    sys.path.insert(0, str(REPO))
    from scripts.docs_pages import DOCS, PAGES
    stale = [name for name, make in PAGES.items() if (DOCS / name).read_text() != make()]
    assert not stale, f"out of date: {stale}; rerun python scripts/docs_pages.py"


@pytest.mark.skipif(shutil.which("mkdocs") is None, reason="mkdocs is not installed (the docs extra)")
def test_the_site_builds_strictly(tmp_path):
    p = subprocess.run(["mkdocs", "build", "--strict", "-d", str(tmp_path / "site")], cwd=REPO, capture_output=True,
                       text=True, timeout=300, env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))
    assert p.returncode == 0, p.stderr[-3000:]
    page = (tmp_path / "site" / "python-api" / "index.html").read_text()
    assert "log_prob" in page and "CancelToken" in page and "guidance_interval" in page    # from the docstrings
    assert (tmp_path / "site" / "serve" / "index.html").exists()


# a figure with a unit: 0.18 ms, 5354 req/s, 3.5x, 78.8 MB, 12 nats, 56% ...
FIGURE = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?\s*(?:ms|µs|s|seconds|minutes|min|req/s|MB|GB|kB|GFLOP/s|nats|×|x|%)"
                    r"(?![\w/])")
# a command a reader can run: a script of this repository with its arguments, or one of the CLIs
COMMAND = re.compile(r"`((?:python3? )?((?:benchmarks|scripts|training|tests)/[\w/.-]+\.py)[^`]*"
                     r"|fm-(?:run|train|export) [^`]+|(?:node|npm) [^`]+|python -m pytest[^`]*)`")
# sections that quote settings (a default, a limit), not measurements
SETTINGS = {("deploy.md", "## Model files from elsewhere")}


def sections(text: str):
    """(heading, body) of a markdown page, a heading inside a code block not counting."""
    head, body, fence = "", [], False
    for line in text.splitlines():
        fence ^= line.startswith("```")
        if not fence and re.match(r"#{1,4} ", line):
            yield head, "\n".join(body)
            head, body = line, []
        else:
            body.append(line)
    yield head, "\n".join(body)


def test_every_quoted_figure_names_the_command_that_measures_it():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    unsourced, missing = [], []
    for page in pages:
        for head, body in sections(page.read_text()):
            commands = COMMAND.findall(body)
            missing += [f"{page.name}: {path}" for _, path in commands if path and not (REPO / path).exists()]
            prose = re.sub(r"```.*?```", "", body, flags=re.S)
            if FIGURE.search(prose) and not commands and (page.name, head) not in SETTINGS:
                unsourced.append(f"{page.name} {head or '(top)'}: {FIGURE.findall(prose)[:4]}")
    assert not missing, f"commands name scripts that do not exist: {missing}"
    assert not unsourced, f"figures quoted with no command that produces them: {unsourced}"


def test_every_python_block_of_the_docs_runs_as_pasted(tmp_path):
    """Each ```python block of README.md and docs/ runs as a file in an empty folder, as a reader
    would paste it, unless its first line says it is a fragment (needs the reader's own files)."""
    blocks = [(page.name, block) for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
              for block in re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)]
    runnable = [(name, block) for name, block in blocks if not block.startswith("# fragment")]
    assert runnable, "no runnable python block found"
    for i, (name, block) in enumerate(runnable):
        (tmp_path / f"block{i}.py").write_text(block)
        p = subprocess.run([sys.executable, f"block{i}.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, f"{name}: {p.stderr[-2000:]}"
