"""Where each training step's random numbers come from: data (with labels), label dropout,
noise x0 and times t.

sequential: one process's historical stream, a numpy Generator for the data and a torch
Generator for the rest, both seeded by the seed and consumed in order (what `fit` has always
drawn, so earlier runs and figures reproduce). Resuming restores both generators' states.

per-step: step s's global batch of B rows is drawn from generators keyed by (seed, s), and a
process keeps its rows [rank * B / N, (rank + 1) * B / N). The global batch is the same at every
number of processes N, so N = 2 with batch B trains on exactly the data, noise and times of
N = 1 with batch B, and resuming needs nothing but the step. Each process draws the whole
generated batch and keeps its share: for the generated datasets here that costs microseconds
per step; a loader of stored data would draw the same keyed indices and read only its rows.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fm_runtime.errors import UsageError

from .data import sample_labelled
from .paths import draw_times

STREAMS = ("sequential", "per-step")


@dataclass
class Batch:
    x1: torch.Tensor
    y: torch.Tensor | None
    x0: torch.Tensor
    t: torch.Tensor


class _Draws:
    """The order in which one step's numbers are drawn, shared by both streams."""

    def __init__(self, dataset: str, batch_size: int, num_classes: int, label_dropout: float,
                 time_sampling: str, t_max: float):
        self.dataset, self.batch_size, self.num_classes = dataset, batch_size, num_classes
        self.label_dropout, self.time_sampling, self.t_max = label_dropout, time_sampling, t_max

    def draw(self, data_rng: np.random.Generator, gen: torch.Generator) -> Batch:
        n = self.batch_size
        x1, y = sample_labelled(self.dataset, n, data_rng)
        x1, y = torch.from_numpy(x1), torch.from_numpy(y) if self.num_classes else None
        if y is not None and self.label_dropout:
            y = torch.where(torch.rand(n, generator=gen) < self.label_dropout, self.num_classes, y)
        x0 = torch.randn(x1.shape, generator=gen, dtype=x1.dtype)
        return Batch(x1, y, x0, draw_times(n, gen, self.time_sampling, self.t_max, x1.dtype))


class SequentialStream(_Draws):
    kind = "sequential"

    def __init__(self, seed: int, *args):
        super().__init__(*args)
        self.data_rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(seed)

    def draw(self, step: int) -> Batch:
        return super().draw(self.data_rng, self.gen)

    def state(self) -> dict:
        # PCG64's 128-bit state as decimal strings: plain data for a weights_only checkpoint
        s = self.data_rng.bit_generator.state
        return {"kind": self.kind, "numpy": {**s, "state": {k: str(v) for k, v in s["state"].items()}},
                "torch": self.gen.get_state()}

    def load_state(self, state: dict) -> None:
        s = state["numpy"]
        self.data_rng.bit_generator.state = {**s, "state": {k: int(v) for k, v in s["state"].items()}}
        self.gen.set_state(state["torch"])


class PerStepStream(_Draws):
    kind = "per-step"

    def __init__(self, seed: int, rank: int, world_size: int, *args):
        super().__init__(*args)
        if self.batch_size % world_size:
            raise UsageError(f"the batch size {self.batch_size} must be a multiple of the number of "
                             f"processes ({world_size}): each process trains on an equal share")
        self.seed, self.rank, self.share = seed, rank, self.batch_size // world_size

    def draw(self, step: int) -> Batch:
        keys = np.random.SeedSequence([self.seed, step])
        data_key, torch_key = keys.generate_state(2, np.uint64)
        b = super().draw(np.random.default_rng(int(data_key)), torch.Generator().manual_seed(int(torch_key)))
        rows = slice(self.rank * self.share, (self.rank + 1) * self.share)
        return Batch(b.x1[rows], None if b.y is None else b.y[rows], b.x0[rows], b.t[rows])

    def state(self) -> dict:
        return {"kind": self.kind}

    def load_state(self, state: dict) -> None:
        pass
