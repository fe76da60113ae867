"""The model files committed for the torch-free runtime suite (tests/runtime/fixtures/) are what
scripts/runtime_fixtures.py builds from this checkout's training and export code, byte for byte:
a change to the exporter or the contract that changes them must rebuild and commit them."""
import sys

from .conftest import REPO


def test_committed_runtime_fixtures_are_what_the_script_builds(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from runtime_fixtures import OUT, build
    finally:
        sys.path.pop(0)
    built = {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in build(tmp_path)}
    committed = {p.relative_to(OUT).as_posix(): p.read_bytes() for p in OUT.rglob("*") if p.is_file()}
    assert sorted(built) == sorted(committed), "rerun python scripts/runtime_fixtures.py and commit"
    changed = [name for name in built if built[name] != committed[name]]
    assert not changed, f"{changed} differ from what scripts/runtime_fixtures.py builds: rerun it and commit"
    assert sum(map(len, committed.values())) < 512 * 1024
