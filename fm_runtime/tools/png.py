"""Image grids as PNG files, with the standard library only (zlib + struct)."""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

from .io import atomic_write


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 [H, W] (grey) or [H, W, 3] (RGB) -> PNG bytes (8-bit, no interlace, filter 0)."""
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] != 3):
        raise ValueError(f"expected uint8 [H, W] or [H, W, 3], got {pixels.dtype} {list(pixels.shape)}")
    h, w = pixels.shape[:2]
    colour = 0 if pixels.ndim == 2 else 2
    rows = np.ascontiguousarray(pixels).reshape(h, -1)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], 1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


# 5 x 7 digits for row labels (a class id per row), one string of 35 bits per digit
DIGITS = ["01110100011001110101110011000101110", "00100011000010000100001000010001110", "01110100010000100110010001000011111",
          "11111000100010000010000011000101110", "00010001100101010010111110001000010", "11111100001111000001000011000101110",
          "00110010001000011110100011000101110", "11111000010001000100010000100001000", "01110100011000101110100011000101110",
          "01110100011000101111000010001001100"]
GRID_WIDTH = 640        # pixels a grid aims at when no scale is given


def auto_scale(cols: int, width: int) -> int:
    """Pixels per image pixel so that `cols` images of `width` fill about GRID_WIDTH (1..16)."""
    return int(np.clip(round(GRID_WIDTH / max(1, cols * width)), 1, 16))


def _label(text: str, size: int) -> np.ndarray:
    """Digits as a white-on-black uint8 block, each font pixel `size` pixels."""
    glyphs = [np.array([int(b) for b in DIGITS[int(c)]], np.uint8).reshape(7, 5) for c in text if c.isdigit()]
    if not glyphs:
        return np.zeros((7 * size, 0), np.uint8)
    row = np.concatenate([np.pad(g, ((0, 0), (0, 1))) for g in glyphs], 1)[:, :-1] * 255
    return row.repeat(size, 0).repeat(size, 1)


def image_grid(images: np.ndarray, cols: int, value_range: tuple[float, float] | None = None,
               scale: int | None = None, pad: int = 1, row_labels: list | None = None) -> np.ndarray:
    """Tile images [n, H, W], [n, 1, H, W] or [n, 3, H, W] into one uint8 picture, `cols` per
    row, each pixel enlarged `scale` times (None: auto_scale), `pad` pixels of black between
    them. Values map linearly from value_range (default: the images' own min..max) to 0..255,
    clipped. row_labels: a number per row (the class), drawn in a margin on the left."""
    x = np.asarray(images, np.float64)
    if x.ndim == 4 and x.shape[1] in (1, 3):
        x = x[:, 0] if x.shape[1] == 1 else x.transpose(0, 2, 3, 1)
    if x.ndim not in (3, 4):
        raise ValueError(f"images must be [n, H, W] or [n, C, H, W] with C = 1 or 3, got {list(np.shape(images))}")
    cols = max(1, min(cols, len(x)))
    scale = auto_scale(cols, x.shape[2]) if scale is None else scale
    lo, hi = value_range if value_range else (float(np.nanmin(x)), float(np.nanmax(x)))
    x = np.clip(np.nan_to_num((x - lo) / max(hi - lo, 1e-12)), 0, 1) * 255
    x = x.round().astype(np.uint8).repeat(scale, 1).repeat(scale, 2)
    n, h, w = x.shape[:3]
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    out = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad, *x.shape[3:]), np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = x[i]
    if row_labels is None:
        return out
    size = max(1, h // 14)          # the digits about half a cell high
    marks = [_label(str(label), size) for label in row_labels[:rows]]
    margin = max(m.shape[1] for m in marks) + 4 * size
    left = np.zeros((out.shape[0], margin, *out.shape[2:]), np.uint8)
    for r, m in enumerate(marks):
        top = pad + r * (h + pad) + (h - m.shape[0]) // 2
        left[top:top + m.shape[0], 2 * size:2 * size + m.shape[1]] = m if out.ndim == 2 else m[..., None]
    return np.concatenate([left, out], 1)


def write_png(path: str | os.PathLike, pixels: np.ndarray) -> None:
    data = encode_png(pixels)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def is_image_shape(shape: tuple[int, ...]) -> bool:
    return len(shape) == 2 or (len(shape) == 3 and shape[0] in (1, 3))
