"""What one process of the fm-* commands may use: a memory budget the operating system enforces
(fm-run --max-memory; fm-train and fm-export watch it instead),
and the sizes of work derived from it and from the model's data shape.

The budget is the process's data limit (RLIMIT_DATA: heap and private mappings, which is where
numpy and onnxruntime allocate), so a graph built to allocate gigabytes from a tiny input fails
its allocation inside onnxruntime and the run ends with exit code 9, instead of the machine
swapping or the kernel killing the process.
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager

from ..errors import UsageError

DEFAULT_BUDGET = "50%"          # of physical memory
MIN_BUDGET = 256 << 20          # below this, Python with onnxruntime cannot even start a run
MAX_BUDGET = 1 << 60            # 1 EiB: above any machine; larger numbers are typos or attacks
MAX_THREADS = 256
WORK_BYTES = 256 << 20          # default largest batch of `bench`, largest --grid: this much data
BASE_BYTES = 100 << 20          # Python, numpy and onnxruntime (measured: 66 MiB)

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_applied: int | None = None
_watched: int | None = None
_hosted = False                 # commands run inside a host process (hosted()): its memory is not theirs


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def parse_size(text: str, what: str = "--max-memory", minimum: int = MIN_BUDGET) -> int:
    """Bytes from '2G', '512M', '1.5GiB', '4096' or '50%' (of physical memory), at least `minimum`."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(%|[kKmMgGtT]?)(?:i?[bB])?\s*", str(text), re.ASCII)
    if not m:
        raise UsageError(f"{what}: expected a size such as 2G, 512M or 50%, got {text!r}")
    value, unit = float(m.group(1)), m.group(2)
    size = physical_memory() * value / 100 if unit == "%" else value * _UNITS[unit.lower()]
    if not size <= MAX_BUDGET:          # also inf, from a number of thousands of digits
        raise UsageError(f"{what}: {text[:40]}{'...' if len(text) > 40 else ''} is more than any machine "
                         f"has (at most {MAX_BUDGET >> 50} PiB)")
    size = int(size)
    if size < minimum:
        raise UsageError(f"{what}: {text} is below the {MIN_BUDGET >> 20} MiB a run needs" if minimum == MIN_BUDGET
                         else f"{what}: {text} is below {minimum} bytes")
    return size


@contextmanager
def hosted():
    """Run fm-* commands inside this process, as a test harness does: each command's --max-memory
    still sizes its work and refuses requests past it (budget()), but sets no data limit and
    watches no resident memory, since both would measure and limit the host (a data limit cannot
    even be raised again). A real fm-* process never enters this: its budget is enforced. The
    budget a command applied is forgotten at the end."""
    global _hosted, _applied, _watched
    before = _hosted, _applied, _watched
    _hosted = True
    try:
        yield
    finally:
        _hosted, _applied, _watched = before


def apply_budget(nbytes: int) -> int:
    """Limit this process's memory to `nbytes` (never above a limit already set); returns it.
    Inside hosted(), the budget is recorded but no limit is set."""
    global _applied
    if _hosted:
        _applied = nbytes
        return nbytes
    try:
        import resource
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        if hard != resource.RLIM_INFINITY:
            nbytes = min(nbytes, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (nbytes, hard))
    except (ImportError, ValueError, OSError):      # not on this platform: the budget still sizes work
        pass
    _applied = nbytes
    return nbytes


def watch_budget(nbytes: int) -> int:
    """The budget of a process that cannot run under a data limit (torch fails its own
    allocations there: fm-train, fm-export): the supervisor compares the process's resident
    memory with it every 20 ms and stops the run past it (exit code 9). Inside hosted(), the
    budget is recorded but not watched."""
    global _applied, _watched
    _applied, _watched = nbytes, None if _hosted else nbytes
    return nbytes


def over_watched_budget() -> str | None:
    """What the process took, in words, when it is past a watched budget; else None."""
    if _watched is None:
        return None
    try:
        with open("/proc/self/statm") as f:
            resident = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
    if resident <= _watched:
        return None
    took = describe(resident) if resident >= 2**30 else f"{-(-resident // 2**20)} MiB"    # rounded up
    return f"the run took {took}, more than its {describe(_watched)} budget (--max-memory)"


def budget() -> int:
    """The memory this process may use: the applied --max-memory, else the default share."""
    return _applied or parse_size(DEFAULT_BUDGET)


def describe(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"


def in_memory_bytes(rows: int, row_bytes: int, *, tile_rows: int = 2048, workers: int = 1, stages: int = 4,
                    trajectory_steps: int = 0, logprob: bool = False) -> int:
    """The peak of an in-memory request: BASE_BYTES for Python and onnxruntime; per worker, one
    tile's solver stages and network buffers (stages + 4 tile-sized arrays); and per row the
    noise, the samples and one more copy (plus every step of a trajectory, or the log-likelihood's
    float64 accumulators). Checked against measured peaks in tests/test_hostile.py."""
    tile = min(rows, tile_rows) if tile_rows > 0 else rows
    per_row = row_bytes * (3 + trajectory_steps + (2 if logprob else 0)) + (32 if logprob else 0)
    return BASE_BYTES + workers * tile * row_bytes * (stages + 4) + rows * per_row


def work_rows(row_bytes: int, cap: int) -> int:
    """The most rows (at most `cap`) whose data fits in WORK_BYTES."""
    return max(1, min(cap, WORK_BYTES // max(1, row_bytes)))
