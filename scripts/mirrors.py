"""JavaScript ports of Python functions, and the record that keeps each pair in step.

A JS function in js/src that ports Python logic carries a marker right above it (above its doc
comment, or as a line of that comment):

    // mirrors: fm_runtime/engine/request.py (check_labels)
    function checkLabels(spec, where, labels, n) {

naming the Python file and function(s) it mirrors (a method as Class.method). js/src/mirrors.json
records, for each (JS function, Python function) pair, a sha256 of both sources (the Python one
from ast.get_source_segment, the JS one from its declaration to its closing brace). When one side
changes and the record does not, the pair may have drifted: review both, port the change, then

    python scripts/mirrors.py --update     # record the current sources of every marked pair
    python scripts/mirrors.py              # check: list the pairs whose sources changed, exit 1

(the check_copies idea of diffusers, cheapened to hashes). --update rebuilds the record from the
markers alone, whatever it held before, so it is safe to run after any merge; a marker whose Python
function cannot be found is reported (exit 1) and left out of the record, so the check still fails
on it. Standard library only: tests/runtime/test_js_ports.py loads this file by path.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORD = "js/src/mirrors.json"
MARKER = re.compile(r"^\s*(?://+|/?\*+)\s*mirrors:\s*(?P<path>fm_runtime/\S+?\.py)\s*\((?P<names>[^)]*)\)\s*(?:\*/)?\s*$")
IDENT = r"[A-Za-z_$][\w$]*"
DECLARATION = re.compile(
    rf"^(?P<indent>\s*)(?:export\s+)?(?:default\s+)?(?:"
    rf"(?:async\s+)?function\s*\*?\s*(?P<function>{IDENT})"
    rf"|class\s+(?P<klass>{IDENT})"
    rf"|(?:const|let|var)\s+(?P<const>{IDENT})\s*="
    rf"|(?:static\s+)?(?:async\s+)?(?:get\s+|set\s+)?(?P<method>{IDENT})\s*\([^;]*\)\s*\{{\s*$)")
NOT_METHODS = {"if", "for", "while", "switch", "catch", "return", "function", "with"}


@dataclass(frozen=True)
class Marker:
    js: str                     # js/src/x.mjs
    line: int                   # the marker's line (1-based)
    function: str | None        # the JS function it stands above (Class.method); None: a file-level note
    start: int                  # that function's first line (0-based index), -1 for a note
    python: str                 # fm_runtime/....py
    names: tuple[str, ...]      # Python functions (Class.method) it mirrors


def _is_comment(line: str) -> bool:
    s = line.strip()
    return s.startswith(("//", "/*", "*"))


def _declared(line: str) -> tuple[str, str] | None:
    """(name, indent) when the line declares a function, class, method or const."""
    m = DECLARATION.match(line)
    if not m:
        return None
    name = m["function"] or m["klass"] or m["const"] or m["method"]
    if m["method"] and (name in NOT_METHODS or not m["indent"]):
        return None
    return name, m["indent"]


def _classes(lines: list[str]) -> list[str | None]:
    """For each line, the top-level class it lies in (None outside classes)."""
    out, current = [], None
    for line in lines:
        m = re.match(rf"^(?:export\s+)?(?:default\s+)?class\s+({IDENT})", line)
        if m:
            current = m.group(1)
        out.append(current)
        if current and line.rstrip() == "}":
            current = None
    return out


def js_markers(root: Path = ROOT) -> list[Marker]:
    found = []
    for path in sorted((root / "js" / "src").glob("*.mjs")):
        lines = path.read_text(encoding="utf-8").splitlines()
        classes = _classes(lines)
        rel = path.relative_to(root).as_posix()
        for i, line in enumerate(lines):
            m = MARKER.match(line)
            if not m:
                continue
            names = tuple(n.strip() for n in m["names"].split(",") if n.strip())
            j = i + 1
            while j < len(lines) and _is_comment(lines[j]):
                j += 1          # the rest of a doc comment, or more // lines (other markers)
            declared = _declared(lines[j]) if j < len(lines) and lines[j].strip() else None
            if declared is None:
                found.append(Marker(rel, i + 1, None, -1, m["path"], names))
                continue
            name, indent = declared
            if indent and classes[j]:
                name = f"{classes[j]}.{name}"
            found.append(Marker(rel, i + 1, name, j, m["path"], names))
    return found


def js_source(root: Path, marker: Marker) -> str:
    """The JS function's text, from its declaration to its closing brace (or its ';')."""
    lines = (root / marker.js).read_text(encoding="utf-8").splitlines()
    first = lines[marker.start]
    indent = first[: len(first) - len(first.lstrip())]
    end = marker.start
    while end < len(lines):            # the declaration may span lines: to its '{' or its ';'
        text = lines[end].rstrip()
        if text.endswith("{") or text.endswith(";"):
            break
        end += 1
    if end < len(lines) and lines[end].rstrip().endswith("{"):
        close = re.compile(rf"^{re.escape(indent)}\}}[;),]*\s*$")
        end += 1
        while end < len(lines) and not close.match(lines[end]):
            end += 1
    return "\n".join(line.rstrip() for line in lines[marker.start: end + 1])


def _definition(tree: ast.AST, dotted: str):
    node = tree
    for part in dotted.split("."):
        body = getattr(node, "body", [])
        node = next((n for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                     and n.name == part), None)
        if node is None:
            return None
    return node


def python_source(root: Path, path: str, dotted: str) -> str | None:
    """The source of function (or class, or Class.method) `dotted` in `path`; None if absent."""
    file = root / path
    if not file.is_file():
        return None
    text = file.read_text(encoding="utf-8")
    node = _definition(ast.parse(text), dotted)
    if node is None:
        return None
    return "\n".join(line.rstrip() for line in ast.get_source_segment(text, node).splitlines())


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def pair_key(js: str, js_function: str, python: str, function: str) -> str:
    return f"{js}#{js_function} -> {python}#{function}"


def current(root: Path = ROOT) -> tuple[dict[str, dict], list[str]]:
    """({pair key: {js, js_function, python, function, js_sha256, python_sha256}}, unresolved
    markers as messages)."""
    pairs, broken = {}, []
    for m in js_markers(root):
        if m.function is None:
            continue
        js_hash = digest(js_source(root, m))
        for name in m.names:
            source = python_source(root, m.python, name)
            if source is None:
                broken.append(f"{m.js}:{m.line}: {m.function} mirrors {m.python} ({name}), which does not exist")
                continue
            pairs[pair_key(m.js, m.function, m.python, name)] = {
                "js": m.js, "js_function": m.function, "python": m.python, "function": name,
                "js_sha256": js_hash, "python_sha256": digest(source)}
    return pairs, broken


def recorded(root: Path = ROOT) -> dict[str, dict]:
    path = root / RECORD
    return json.loads(path.read_text(encoding="utf-8"))["pairs"] if path.is_file() else {}


HOW = "review both sides, port what changed, then run `python scripts/mirrors.py --update`"


def problems(now: dict[str, dict], then: dict[str, dict]) -> list[str]:
    """Why the record does not match the sources: one line per pair, saying which side changed."""
    out = []
    for key, p in sorted(now.items()):
        old = then.get(key)
        if old is None:
            out.append(f"{key}: a new pair, not recorded yet; {HOW}")
            continue
        py, js = old["python_sha256"] != p["python_sha256"], old["js_sha256"] != p["js_sha256"]
        if py and not js:
            out.append(f"{key}: the Python side changed but not its JavaScript port; {HOW}")
        elif js and not py:
            out.append(f"{key}: the JavaScript port changed but not the Python it mirrors; {HOW}")
        elif py and js:
            out.append(f"{key}: both sides changed since they were recorded; if they still agree, {HOW}")
    for key in sorted(set(then) - set(now)):
        out.append(f"{key}: recorded, but no marker names this pair any more; run `python scripts/mirrors.py --update`")
    return out


def write(root: Path, pairs: dict[str, dict]) -> Path:
    path = root / RECORD
    body = {"about": "sha256 of each marked JavaScript port and the Python function it mirrors; "
                     "written by `python scripts/mirrors.py --update`, checked by tests/runtime/test_js_ports.py",
            "pairs": dict(sorted(pairs.items()))}
    path.write_text(json.dumps(body, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--update", action="store_true", help="record the current sources of every marked pair")
    ap.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this script's)")
    args = ap.parse_args(argv)
    now, broken = current(args.root)
    for line in broken:
        print(f"unresolved marker: {line}", file=sys.stderr)
    if args.update:
        path = write(args.root, now)
        print(f"recorded {len(now)} pairs in {path}")
        return 1 if broken else 0
    found = problems(now, recorded(args.root))
    for line in found:
        print(line)
    if not found and not broken:
        print(f"{len(now)} marked pairs, all as recorded")
    return 1 if found or broken else 0


if __name__ == "__main__":
    sys.exit(main())
