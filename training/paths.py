"""Probability paths and the conditional flow-matching loss.

Optimal-transport Gaussian path with sigma_min (sigma_min = 0 is the tutorial exactly):
    x_t = (1 - (1 - sigma_min) t) x0 + t x1,   target u_t = x1 - (1 - sigma_min) x0,
with x0 ~ N(0, I) the noise at t = 0 and x1 the data at t = 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class OTPath:
    sigma_min: float = 0.0

    name = "ot"

    def sample_xt(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1, *([1] * (x1.dim() - 1)))
        return (1 - (1 - self.sigma_min) * t) * x0 + t * x1

    def target(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x1 - (1 - self.sigma_min) * x0

    def config(self) -> dict:
        return {"name": self.name, "sigma_min": self.sigma_min}


def build_path(config: dict) -> OTPath:
    if config.get("name") == "ot":
        return OTPath(float(config.get("sigma_min", 0.0)))
    raise ValueError(f"unknown path {config.get('name')!r}")


def cfm_loss(model: torch.nn.Module, path: OTPath, x1: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Conditional flow-matching loss: E_t,x0,x1 |v(x_t, t) - u_t(x_t | x0, x1)|^2, t ~ U[0, 1)."""
    x0 = torch.randn(x1.shape, generator=generator, dtype=x1.dtype)
    t = torch.rand(x1.shape[0], generator=generator, dtype=x1.dtype)
    xt = path.sample_xt(x0, x1, t)
    return ((model(xt, t) - path.target(x0, x1, t)) ** 2).mean()
