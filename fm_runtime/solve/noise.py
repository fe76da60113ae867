"""The seeded noise stream: any range of rows is computable on its own.

Row r of the noise for seed S lies in block r // BLOCK; block b holds
    numpy.random.default_rng([S, b]).standard_normal((BLOCK, *shape), dtype=float32).
So a run can be cut into chunks, or shared between machines (--shard i/k), and every part still
holds exactly the rows of one seeded run of the full n. Part of the contract (docs/contract.md).

numpy draws the same values whether a block is drawn in one call or in consecutive pieces, so
NoiseStream reads a block piece by piece: memory is the rows asked for, not a whole block
(65 536 rows of a [3, 64, 64] image are 3 GiB).
"""
from __future__ import annotations

import numpy as np

BLOCK = 65536
SKIP_VALUES = 1 << 22      # values drawn and dropped per call when starting in mid-block (16 MiB)


def new_seed() -> int:
    """A fresh random seed, to report so that an unseeded run can be repeated."""
    return int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> np.uint64(1))


class NoiseStream:
    """Consecutive rows of the noise for `seed` from row `start` on: `take(k)` returns the next k."""

    def __init__(self, seed: int, start: int, shape: tuple[int, ...]):
        if start < 0:
            raise ValueError(f"bad start row {start}")
        self.seed, self.row, self.shape = seed, start, tuple(shape)
        self.dim = int(np.prod(self.shape, dtype=np.int64))
        self._rng, self._block = None, -1

    def _position(self) -> np.random.Generator:
        """The generator of the current row's block, advanced to that row."""
        block, offset = divmod(self.row, BLOCK)
        if block != self._block:
            self._rng, self._block = np.random.default_rng([self.seed, block]), block
            skip = offset * self.dim
            while skip:
                k = min(skip, SKIP_VALUES)
                self._rng.standard_normal(k, dtype=np.float32)
                skip -= k
        return self._rng

    def take(self, k: int) -> np.ndarray:
        out = np.empty((k, *self.shape), np.float32)
        flat, done = out.reshape(k, self.dim), 0
        while done < k:
            offset = self.row % BLOCK
            n = min(k - done, BLOCK - offset)
            self._position().standard_normal(dtype=np.float32, out=flat[done:done + n].reshape(-1))
            done += n
            self.row += n
        return out


def noise_rows(seed: int, start: int, stop: int, shape: tuple[int, ...]) -> np.ndarray:
    """Rows [start, stop) of the noise for `seed`, float32 [stop - start, *shape]."""
    if not 0 <= start <= stop:
        raise ValueError(f"bad row range [{start}, {stop})")
    return NoiseStream(seed, start, shape).take(stop - start)
