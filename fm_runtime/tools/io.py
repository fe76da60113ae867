"""File input and output: atomic writes, checked reads of .npy arrays."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError, OutputError
from ..model.control import poll_stop


def check_writable(path: str | os.PathLike) -> Path:
    """Fail before any work if `path` cannot be written (missing folder, no permission, a dir,
    something that is not a regular file: outputs replace files, never devices or sockets)."""
    p = Path(path)
    if str(path).endswith(("/", os.sep)) or p.is_dir():
        raise OutputError(f"{path}: names a folder, not a file to write")
    if p.exists() and not p.is_file():
        raise OutputError(f"{p}: exists and is not a regular file (a device, socket or pipe); "
                          "name a new file or a regular one to replace")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{p}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{p}: folder {parent} is not writable")
    return p


_temporaries: set[str] = set()      # temporary files not yet renamed into place or removed


def remove_temporaries() -> None:
    """Remove every temporary output file of this process (a forced stop)."""
    for tmp in list(_temporaries):
        _done(tmp)


def _done(tmp: str) -> None:
    """Forget a temporary file, removing it unless it was renamed into place."""
    _temporaries.discard(tmp)
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


class _Temp:
    """A file being written beside its destination, published by rename. Unnamed where the system
    allows (Linux's O_TMPFILE, written through /proc/self/fd), so even SIGKILL leaves nothing
    behind; elsewhere a hidden named file that every other way out removes. Permissions are
    those a plain open() would give."""

    def __init__(self, dest: Path):
        self.dest, self.name = dest, None
        folder = str(dest.parent) if str(dest.parent) else "."
        mask = os.umask(0)
        os.umask(mask)
        self.fd = -1
        if hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd"):
            try:
                self.fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY, 0o666 & ~mask)
            except OSError:           # a file system without unnamed files
                self.fd = -1
        if self.fd >= 0:
            self.path = f"/proc/self/fd/{self.fd}"
        else:
            self.fd, self.name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=folder)
            _temporaries.add(self.name)
            os.chmod(self.name, 0o666 & ~mask)
            self.path = self.name

    def publish(self) -> None:
        """Put the written file at its destination (readers see the old file or the whole new one)."""
        if self.name is None:       # name it beside the destination for a moment, then rename
            self.name = f"{self.dest.parent / ('.' + self.dest.name)}.{os.getpid()}.{id(self):x}.tmp"
            _temporaries.add(self.name)
            # linkat(AT_SYMLINK_FOLLOW) on the /proc link: giving a dir_fd makes Python call linkat
            fds = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.link(str(self.fd), self.name, src_dir_fd=fds, follow_symlinks=True)
            finally:
                os.close(fds)
        os.replace(self.name, self.dest)
        _temporaries.discard(self.name)

    def close(self) -> None:
        """Close the file; a named temporary not published is removed."""
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1
        if self.name is not None:
            _done(self.name)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call write(tmp) on a temporary file beside `path`, then rename it into place, so readers
    see the old file or the whole new one, never a fragment; nothing when the run was stopped."""
    temp = _Temp(check_writable(path))
    try:
        write(temp.path)
        poll_stop()             # a run stopped (--timeout, a signal) while writing writes nothing
        temp.publish()
    finally:
        temp.close()


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array)
    atomic_write(path, write)


def load_array(path: str | os.PathLike, what: str = "array", kinds: str = "fiu",
               dtype: type | None = np.float32) -> np.ndarray:
    """Read a .npy file as `dtype` (None: as stored), refusing what is not a finite array of the
    given dtype kinds (numpy kind letters: f float, i int, u unsigned)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: {what} file not found" if not p.exists() else f"{p}: is not a file")
    try:
        a = np.load(p, allow_pickle=False)
    except Exception as e:  # numpy raises several types for bad files
        if "pickle" in str(e):      # numpy's advice to load it unsafely is not ours to give
            with open(p, "rb") as fh:
                npy = fh.read(6) == b"\x93NUMPY"
            raise InputError(f"{p}: not a readable .npy file: " + ("it holds Python objects, which fm-runtime never "
                             "loads" if npy else "it is not in .npy format") + "; write arrays with numpy.save") from None
        raise InputError(f"{p}: not a readable .npy file ({type(e).__name__}: {e})") from None
    if not isinstance(a, np.ndarray) or a.dtype.kind not in kinds:
        want = {"f": "floating-point", "iu": "integer"}.get(kinds, "numeric")
        raise InputError(f"{p}: {what} must be a {want} array, got dtype {getattr(a, 'dtype', type(a))}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise InputError(f"{p}: {what} contains NaN or Inf")
    return np.asarray(a, dtype=dtype, order="C")      # (ascontiguousarray would make a 0-d array 1-d)


class NpyStream:
    """Write a float32 .npy of known shape chunk by chunk, without holding it in memory:
    header first, then rows in order, to a temporary file renamed into place by `commit()`.
    Leaving the `with` block without commit (an error, Ctrl-C, SIGTERM) removes the temporary
    file, so `path` keeps its previous content or does not appear."""

    def __init__(self, path: str | os.PathLike, shape: tuple[int, ...]):
        self.path = check_writable(path)
        self.shape = shape
        self.rows = 0
        self.temp = _Temp(self.path)
        self.fh = os.fdopen(os.dup(self.temp.fd), "wb")
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False,
                  "shape": tuple(shape)}
        np.lib.format.write_array_header_2_0(self.fh, header)

    def __enter__(self) -> "NpyStream":
        return self

    def write(self, rows: np.ndarray) -> None:
        self.fh.write(np.ascontiguousarray(rows, "<f4").tobytes())
        self.rows += len(rows)

    def commit(self) -> None:
        if self.rows != self.shape[0]:
            raise OutputError(f"{self.path}: wrote {self.rows} rows, expected {self.shape[0]}")
        self.fh.close()
        self.temp.publish()

    def __exit__(self, *exc) -> None:
        if not self.fh.closed:
            self.fh.close()
        self.temp.close()


def check_space(path: str | os.PathLike, nbytes: int) -> None:
    """Refuse before any work when the output's file system cannot hold `nbytes` more."""
    import shutil
    p = Path(path)
    folder = p.parent if str(p.parent) else Path(".")
    free = shutil.disk_usage(folder).free
    if nbytes > free:
        if free == 0 or not os.access(folder, os.W_OK):
            raise OutputError(f"{p}: nothing can be written in {folder} ({'no space is free there' if free == 0 else 'not writable'})")
        raise OutputError(f"{p}: needs {_size(nbytes)} but only {_size(free)} is free there")


def _size(nbytes: int) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.2f} MB" if nbytes >= 1e5 else f"{nbytes:,} bytes"


_progress_line_open = False     # a progress line is on stderr without its newline


def end_progress_line() -> None:
    """End a progress line left open on stderr, so that the next message (an error, a timeout,
    an interruption) starts a line of its own instead of landing after the percentage."""
    global _progress_line_open
    if _progress_line_open:
        import sys
        sys.stderr.write("\n")
        sys.stderr.flush()
        _progress_line_open = False


def progress_note(text: str, terminal: bool) -> None:
    """A stage of long work on stderr: on a terminal it replaces the progress line in place, in
    a log it is a line of its own."""
    import sys
    global _progress_line_open
    if terminal:
        sys.stderr.write(f"\r{text}\x1b[K")
        _progress_line_open = True
    else:
        sys.stderr.write(text + "\n")
    sys.stderr.flush()


class Progress:
    """A one-line progress report on stderr, redrawn at most every half second."""

    def __init__(self, total: int, label: str, enabled: bool):
        import sys
        import time
        self.total, self.label, self.enabled = total, label, enabled
        self.stream, self.clock = sys.stderr, time.monotonic
        self.start = self.last = self.clock()
        self.done = 0

    def update(self, n: int) -> None:
        self.done += n
        now = self.clock()
        if self.enabled and (now - self.last > 0.5 or self.done >= self.total):
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate else 0.0
            self.stream.write(f"\r{self.label} {100 * self.done / self.total:5.1f}%  {self.done:,}/{self.total:,} "
                              f"rows  {rate:,.0f} rows/s  ETA {eta:,.0f} s ")
            self.stream.flush()
            global _progress_line_open
            _progress_line_open = True

    def close(self) -> None:
        end_progress_line()
