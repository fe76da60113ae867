"""File input and output: atomic writes, checked reads of .npy arrays."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import InputError, OutputError


def check_writable(path: str | os.PathLike) -> Path:
    """Fail before any work if `path` cannot be written (missing folder, no permission, a dir)."""
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"{p}: is a directory, not a file to write")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{p}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{p}: folder {parent} is not writable")
    return p


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call write(tmp) on a temporary file beside `path`, then rename it into place, so readers
    see the old file or the whole new one, never a fragment."""
    p = check_writable(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent or ".")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array)
    atomic_write(path, write)


def load_array(path: str | os.PathLike, what: str = "array") -> np.ndarray:
    """Read a .npy file as float32, refusing what is not a finite numeric array."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: {what} file not found" if not p.exists() else f"{p}: is not a file")
    try:
        a = np.load(p, allow_pickle=False)
    except Exception as e:  # numpy raises several types for bad files
        raise InputError(f"{p}: not a readable .npy file ({type(e).__name__}: {e})") from None
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "fiu":
        raise InputError(f"{p}: {what} must be a numeric array, got dtype {getattr(a, 'dtype', type(a))}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise InputError(f"{p}: {what} contains NaN or Inf")
    return np.ascontiguousarray(a, dtype=np.float32)
