"""Execution choices measured per file and machine: which of the runtime's modes (tiles over
worker threads, one call, onnxruntime's threads inside a call) `fm-run bench --save` found
fastest for a file on this CPU, kept in a small JSON cache and applied by load() when the caller
chooses none of tile, threads and intra_op_threads.

The fastest mode depends on the network, not only on the CPU: at batch 1 on a 2-core EPYC,
two intra-op threads made a baked U-Net's solve 1.41x faster and a baked DiT's 0.83x as fast
(docs/performance.md). An entry is keyed by the file's resolved path, size and modification time,
the CPU model, the core count and the onnxruntime version, so a changed file or machine finds
none. The cache is $FM_RUNTIME_CACHE, else $XDG_CACHE_HOME/fm-runtime/execution.json (default
~/.cache); an unreadable or malformed cache, or entry, counts as none.
"""
from __future__ import annotations

import functools
import json
import os
import platform
from pathlib import Path

import onnxruntime as ort

from ..errors import OutputError

CACHE_ENV = "FM_RUNTIME_CACHE"
OPTIONS = ("tile", "threads", "intra_op_threads")       # the load() arguments an entry may set
MAX_ENTRIES = 256


@functools.cache
def cpu() -> tuple[str, frozenset[str]]:
    """This CPU's model name and its flags (Linux's /proc/cpuinfo; elsewhere the platform's name
    and no flags)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 platform.processor() or "?")
    return model, frozenset(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))


def cache_path() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fm-runtime" / "execution.json"


def _key(path: str | os.PathLike) -> str:
    p = Path(path).resolve()
    st = p.stat()
    return f"{p}|{st.st_size}|{st.st_mtime_ns}|{cpu()[0]}|{os.cpu_count()} cores|onnxruntime {ort.__version__}"


def _entries() -> dict:
    try:
        data = json.loads(cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def saved(path: str | os.PathLike) -> dict | None:
    """{"options": load() arguments, "why": what was measured} saved for this file on this
    machine, or None."""
    entries = _entries()        # most machines have none: then no stat and no /proc/cpuinfo at load
    try:
        entry = entries.get(_key(path)) if entries else None
    except OSError:
        return None
    options = entry.get("options") if isinstance(entry, dict) else None
    if not isinstance(options, dict) or set(options) - set(OPTIONS) or not all(
            type(v) is int and 0 <= v <= 4096 for v in options.values()):
        return None
    return {"options": options, "why": str(entry.get("why", ""))[:300]}


def save(path: str | os.PathLike, options: dict, why: str) -> Path:
    """Keep `options` (load() arguments; {} for the defaults) as this file's choice on this
    machine; returns the cache's path. Raises OutputError when the cache cannot be written."""
    target = cache_path()
    entries = _entries()
    key = _key(path)
    entries.pop(key, None)
    entries[key] = {"options": options, "why": why}
    temp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        temp.write_text(json.dumps(dict(list(entries.items())[-MAX_ENTRIES:]), indent=1), encoding="utf-8")
        os.replace(temp, target)
    except OSError as e:
        temp.unlink(missing_ok=True)
        raise OutputError(f"{target}: cannot save the execution choice ({e.strerror or e}); set {CACHE_ENV} "
                          "to a writable file") from None
    return target
