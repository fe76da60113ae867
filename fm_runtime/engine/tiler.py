"""Rows of a batch split into tiles and solved on worker threads (onnxruntime releases the GIL
while it runs, so tiles run in parallel). Shared by sampling and likelihoods."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

# Rows per tile on CPU: a 2048 x 64 float32 activation (512 KiB) stays in L2; 1024-8192 measured
# within 3% of each other for the 64-wide MLP, one call on 100 000 rows 2.4x slower.
DEFAULT_TILE = 2048
# ... and at most this many bytes of state per tile, so image models get smaller tiles (a tile's
# solver stages and network activations scale with it).
TILE_BYTES = 16 << 20
# A batch is split so that every worker gets a share when each share holds at least this many
# state values (rows x dim): for 2-D moons 128 rows (256 rows as 2 x 128 on 2 cores: 0.86 ms
# against 1.30 ms in one call; below it, per-call overhead outweighs the second core); for an
# image model one row is work enough (a [3, 16, 16] U-Net at batch 64 as 2 x 32 rows: 27 ms
# per evaluation against 50 ms in one call).
MIN_SPLIT_VALUES = 256


def min_split_rows(dim: int) -> int:
    """Fewest rows per worker worth a call of their own, for samples of `dim` values."""
    return max(1, -(-MIN_SPLIT_VALUES // max(1, int(dim))))


def default_tile(dim: int) -> int:
    """Rows per tile for samples of `dim` float32 values."""
    return max(1, min(DEFAULT_TILE, TILE_BYTES // (4 * dim)))


class Tiler:
    def __init__(self, tile: int = DEFAULT_TILE, workers: int = 1):
        self.tile, self.workers = int(tile), max(1, int(workers))
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def bounds(self, n: int, tile: int | None, dim: int) -> list[tuple[int, int]]:
        """[(start, stop), ...] covering n rows of `dim` values each; tile None: this tiler's own,
        0: one call on the whole batch."""
        tile = self.tile if tile is None else tile
        rows = min(tile, max(min_split_rows(dim), -(-n // self.workers))) if tile > 0 else n
        return [(a, min(a + rows, n)) for a in range(0, n, rows)]

    def map(self, run, bounds: list) -> list:
        """run(bounds[i]) for every tile, over the worker threads."""
        if self.workers == 1 or len(bounds) == 1:
            return [run(ab) for ab in bounds]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="fm-run")
        return list(self._pool.map(run, bounds))
