"""What one request produced (Sampler.run's result)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SampleResult:
    """What one request produced: samples [n, *shape], network evaluations per row, and on request
    the trajectory [steps + 1, n, *shape] and log densities [n] (nats); `nonfinite` lists
    (step, t, where) for solves that went NaN/Inf under keep_partial."""

    samples: np.ndarray
    nfe: int
    trajectory: np.ndarray | None = None
    logprob: np.ndarray | None = None
    nonfinite: list = field(default_factory=list)

    def __repr__(self) -> str:
        """Shapes and counts, not every value (print r.samples for those)."""
        def shape(a):
            return None if a is None else f"{a.dtype}{list(a.shape)}"
        return (f"SampleResult(samples={shape(self.samples)}, nfe={self.nfe}, trajectory={shape(self.trajectory)}, "
                f"logprob={shape(self.logprob)}, nonfinite={len(self.nonfinite)} rows)")
