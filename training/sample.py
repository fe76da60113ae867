"""The torch-native reference sampler: the samples the exported runtime must reproduce."""
from __future__ import annotations

import numpy as np
import torch

from fm_runtime.solvers import integrate


@torch.no_grad()
def sample(model: torch.nn.Module, noise, steps: int = 8, solver: str = "midpoint",
           trajectory: bool = False):
    """Integrate model from the given noise [n, *shape] (t = 0) to t = 1 with a fixed-step solver,
    in float32 eager torch. Returns numpy samples, or (samples, trajectory [steps + 1, n, *shape])."""
    x0 = torch.as_tensor(np.asarray(noise, np.float32))

    def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
        return model(x, torch.full((x.shape[0],), t, dtype=x.dtype))

    sol = integrate(velocity, x0, steps, solver, trajectory=trajectory)
    if trajectory:
        return sol.x.numpy(), torch.stack(sol.trajectory).numpy()
    return sol.x.numpy()
