"""The documentation: the pages made from code are current (scripts/docs_pages.py), and the site
builds with mkdocs --strict (every link and every API reference resolves)."""
import os
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
