"""fm-run serve where its extra is not installed (as in a runtime-only install) names the extra to
install (the server itself, with uvicorn and starlette: tests/test_serve.py)."""
import os

from .conftest import run_process


def test_serve_without_the_extra_names_it(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    (tmp_path / "uvicorn.py").write_text("raise ImportError('no', name='uvicorn')\n")
    p = run_process("fm-run", "serve", env=env, check=False)
    assert p.returncode == 2 and 'pip install ".[serve]"' in p.stderr, p.stderr
