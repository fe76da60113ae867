"""The seeded noise stream: any range of rows is computable on its own.

Row r of the noise for seed S lies in block r // BLOCK; block b holds
    numpy.random.default_rng([S, b]).standard_normal((BLOCK, *shape), dtype=float32).
So a run can be cut into chunks, or shared between machines (--shard i/k), and every part still
holds exactly the rows of one seeded run of the full n. Part of the contract (docs/contract.md).
"""
from __future__ import annotations

import numpy as np

BLOCK = 65536


def new_seed() -> int:
    """A fresh random seed, to report so that an unseeded run can be repeated."""
    return int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> np.uint64(1))


def noise_rows(seed: int, start: int, stop: int, shape: tuple[int, ...]) -> np.ndarray:
    """Rows [start, stop) of the noise for `seed`, float32 [stop - start, *shape]."""
    if not 0 <= start <= stop:
        raise ValueError(f"bad row range [{start}, {stop})")
    out = np.empty((stop - start, *shape), np.float32)
    row = start
    while row < stop:
        block, offset = divmod(row, BLOCK)
        take = min(stop - row, BLOCK - offset)
        rng = np.random.default_rng([seed, block])
        out[row - start:row - start + take] = rng.standard_normal((offset + take, *shape), dtype=np.float32)[offset:]
        row += take
    return out
