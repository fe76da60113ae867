"""The package layout as the design names it: fm_runtime in tiers that import only downward, no
import cycle anywhere in fm_runtime, training and export, docs/contract.md's tables in step with
contract.json, and docs/layout.md naming every module that exists (and none that does not)."""
import ast
import json
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# tier -> the fm_runtime subpackages it may import ("" is the top: errors, definitions)
# (tools: what fm-run, fm-train and fm-export share, on solve and model only; the CLIs above it, and
# the server, which sizes its requests against the process's memory budget, tools/limits.py)
TIERS = {"solve": {"", "solve"}, "model": {"", "solve", "model"}, "engine": {"", "solve", "model", "engine"},
         "serve": {"", "solve", "model", "engine", "tools", "serve"}, "tools": {"", "solve", "model", "tools"},
         "cli": {"", "solve", "model", "engine", "serve", "tools", "cli"}, "assets": set()}


def modules() -> dict[str, Path]:
    found = {}
    for pkg in ("fm_runtime", "training", "export"):
        for path in (REPO / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def from_base(node: ast.ImportFrom, name: str, path: Path) -> str:
    """The absolute module a `from ... import` statement of module `name` names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    base = node.module or ""
    if node.level:
        parts = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
    return base


def imports(name: str, path: Path, known: dict) -> set[str]:
    """Modules of this project that `name` imports anywhere in its file (functions included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = from_base(node, name, path)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def test_fm_runtime_tiers_import_only_downward():
    known = modules()
    wrong = []
    for name, path in known.items():
        if not name.startswith("fm_runtime."):
            continue
        tier = name.split(".")[1] if name.count(".") >= 2 or path.name == "__init__.py" else ""
        text = path.read_text()
        if tier == "solve" and re.search(r"^\s*(import|from)\s+onnxruntime", text, re.M):
            wrong.append(f"{name} imports onnxruntime (solve/ is numpy only)")
        for target in imports(name, path, known):
            if target.startswith(("training", "export")):
                wrong.append(f"{name} imports {target}")
            elif target.startswith("fm_runtime.") and tier in TIERS:
                to = target.split(".")[1] if target.count(".") >= 2 or known[target].name == "__init__.py" else ""
                if to not in TIERS[tier]:
                    wrong.append(f"{name} ({tier}/) imports {target} ({to}/)")
    assert not wrong, "\n".join(wrong)


def test_torch_tools_import_no_cli_and_export_no_training():
    """training/ and export/ take what the commands share from fm_runtime.tools, never from fm-run's
    own package (fm_runtime.cli); export/ is the library training/ calls, so it never imports
    training/ (checkpoint export and the fm-export command live in training/)."""
    known = modules()
    wrong = []
    for name, path in known.items():
        if not name.startswith(("training", "export")):
            continue
        for target in imports(name, path, known):
            if target == "fm_runtime.cli" or target.startswith("fm_runtime.cli."):
                wrong.append(f"{name} imports {target} (what the commands share is in fm_runtime.tools)")
            elif name.split(".")[0] == "export" and target.split(".")[0] == "training":
                wrong.append(f"{name} imports {target} (export/ never imports training/)")
    assert not wrong, "\n".join(wrong)


def test_no_private_name_crosses_a_module():
    """`from X import _name` between two modules of this project: a name shared on purpose is
    public, or it moves to the module that uses it."""
    known = modules()
    wrong = []
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = from_base(node, name, path)
            if base.split(".")[0] not in ("fm_runtime", "training", "export") or base == name:
                continue
            wrong += [f"{name} imports {a.name} from {base}" for a in node.names
                      if a.name.startswith("_") and not a.name.endswith("__")]
    assert not wrong, "\n".join(wrong)


def test_the_checkers_see_a_wrong_import(tmp_path, monkeypatch):
    """The two tests above can fail: a torch tool reaching into fm_runtime.cli, export importing
    training, and a private name taken from another module are each found."""
    for pkg in ("fm_runtime", "fm_runtime/cli", "training", "export"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "fm_runtime" / "cli" / "io.py").write_text("def _write():\n    pass\n")
    (tmp_path / "training" / "a.py").write_text("from fm_runtime.cli.io import _write\n")
    (tmp_path / "export" / "b.py").write_text("def f():\n    from training import a\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    with pytest.raises(AssertionError) as seen:
        test_torch_tools_import_no_cli_and_export_no_training()
    assert "training.a imports fm_runtime.cli.io" in str(seen.value) and "export.b imports training" in str(seen.value)
    with pytest.raises(AssertionError, match="training.a imports _write from fm_runtime.cli.io"):
        test_no_private_name_crosses_a_module()


def test_no_import_cycles():
    known = modules()
    edges = {m: imports(m, p, known) for m, p in known.items()}
    # a package's __init__ re-exporting its members is not a cycle of the members
    edges = {m: {t for t in ts if not (known[t].name == "__init__.py" and m.startswith(t + "."))}
             for m, ts in edges.items()}
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = 1
        stack.append(m)
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif not state.get(t):
                visit(t, stack)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if not state.get(m):
            visit(m, [])
    assert not cycles, "\n".join(cycles)


def test_the_checker_sees_a_cycle(tmp_path, monkeypatch):
    """The cycle test above can fail: two modules importing each other are found."""
    (tmp_path / "fm_runtime").mkdir()
    (tmp_path / "fm_runtime" / "__init__.py").write_text("")
    (tmp_path / "fm_runtime" / "a.py").write_text("from . import b\n")
    (tmp_path / "fm_runtime" / "b.py").write_text("def f():\n    from .a import g\n")
    for pkg in ("training", "export"):
        (tmp_path / pkg).mkdir()
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    with pytest.raises(AssertionError, match="fm_runtime.a -> fm_runtime.b -> fm_runtime.a"):
        test_no_import_cycles()


def test_contract_doc_tables_match_contract_json():
    contract = json.loads((REPO / "fm_runtime" / "contract.json").read_text())
    doc = (REPO / "docs" / "contract.md").read_text()
    assert doc.splitlines()[0].endswith(f"version {contract['format_version']}")
    table = doc[doc.index("## Metadata keys"):doc.index("\n\n", doc.index("| key |"))]
    documented = {}
    for row in table.splitlines()[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        for key in re.findall(r"`fm\.([a-z_]+)`", cells[0]):
            documented[key] = cells[2]
    assert set(documented) == set(contract["keys"]), set(documented) ^ set(contract["keys"])
    kinds = set(contract["kinds"])
    for key, entry in contract["keys"].items():
        required, said = set(entry["required_for"]), documented[key]
        want = "yes" if required == kinds else " ".join(sorted(required)) if required else None
        assert (said == want) if want else said.startswith(("no", "with")), f"fm.{key}: doc says {said!r}"
    for name in contract["solvers"]["methods"]:
        assert f"`{name}`" in doc, f"solver {name} is not in docs/contract.md"
    rules = doc[doc.index("| rule |"):doc.index("\n\n", doc.index("| rule |"))]
    documented_rules = [json.loads(row.split("`")[1]) for row in rules.splitlines()[2:]]
    assert documented_rules == contract["rules"], "docs/contract.md's rules table is not contract.json's rules"


def test_layout_page_names_every_module():
    """Every file of fm_runtime is named under its folder's heading in docs/layout.md, and every
    .py or .json name there exists."""
    readme = (REPO / "docs" / "layout.md").read_text()
    layout = readme[readme.index("# Layout"):]
    layout = layout[layout.index("```") + 3:]
    layout = layout[:layout.index("```")]
    block = layout[layout.index("fm_runtime/"):]
    first = block.index("\n") + 1
    block = block[:first + re.search(r"^\S", block[first:], re.M).start()]
    named, folder = set(), ""
    for line in block.splitlines()[1:]:
        heading = re.match(r"^  (\w+)/", line)
        if heading:
            folder = heading.group(1) + "/"
        elif re.match(r"^  \S", line):
            folder = ""
        named |= {folder + n for n in re.findall(r"\b(\w+\.(?:py|json))\b", line)}
    present = {str(p.relative_to(REPO / "fm_runtime")) for p in (REPO / "fm_runtime").rglob("*.py")
               if p.name != "__init__.py" or p.parent.name == "fm_runtime"} | {"contract.json"}
    assert not present - named, f"docs/layout.md does not name {sorted(present - named)}"
    assert not named - present, f"docs/layout.md names files that do not exist: {sorted(named - present)}"
