"""Gaussian probability paths as schedules, and the conditional flow-matching loss.

Every path here is x_t = alpha_t x1 + sigma_t x0 with x0 ~ N(0, I) the noise at t = 0 and x1 the
data at t = 1 (alpha_0 = 0, sigma_0 = 1; alpha_1 = 1, sigma_1 = sigma_min or 0). The tutorial's
conditional velocity u_t(x | x1) = sigma'_t / sigma_t (x - alpha_t x1) + alpha'_t x1 becomes, at
x = x_t, the regression target alpha'_t x1 + sigma'_t x0, which is what the loss uses (it stays
finite where sigma_t reaches 0). A path is therefore four functions of t: alpha, sigma and their
time derivatives.

- ot: alpha = t, sigma = 1 - (1 - sigma_min) t. sigma_min = 0 is the tutorial exactly.
- vp: variance preserving, the DDPM special case the tutorial derives: alpha = exp(-T(1 - t) / 2),
  sigma = sqrt(1 - alpha^2), T(s) = beta_min s + (beta_max - beta_min) s^2 / 2 with the standard
  linear beta schedule beta_min = 0.1, beta_max = 20 (Song et al., 2021). sigma' diverges at
  t = 1, so training draws t from [0, 1 - 1e-3).
- cosine: alpha = sin(pi t / 2), sigma = cos(pi t / 2).
- poly: alpha = t^n, sigma = 1 - t^n (n = 2 by default).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GaussianPath:
    """x_t = alpha(t) x1 + sigma(t) x0; subclasses give the schedule."""

    name = "gaussian"
    t_max = 1.0     # training draws t from [0, t_max)

    def schedule(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(alpha_t, sigma_t, d alpha / dt, d sigma / dt) at t."""
        raise NotImplementedError

    @staticmethod
    def _col(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return t.reshape(-1, *([1] * (like.dim() - 1)))

    def sample_xt(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s, _, _ = self.schedule(self._col(t, x1))
        return a * x1 + s * x0

    def target(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        _, _, da, ds = self.schedule(self._col(t, x1))
        return da * x1 + ds * x0

    def conditional_velocity(self, x: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The tutorial's u_t(x | x1) = sigma'/sigma (x - alpha x1) + alpha' x1 (needs sigma > 0)."""
        a, s, da, ds = self.schedule(self._col(t, x1))
        return ds / s * (x - a * x1) + da * x1

    def config(self) -> dict:
        return {"name": self.name}


@dataclass(frozen=True)
class OTPath(GaussianPath):
    sigma_min: float = 0.0
    name = "ot"

    def schedule(self, t):
        one = torch.ones_like(t)
        return t, 1 - (1 - self.sigma_min) * t, one, -(1 - self.sigma_min) * one

    def config(self) -> dict:
        return {"name": self.name, "sigma_min": self.sigma_min}


@dataclass(frozen=True)
class VPPath(GaussianPath):
    beta_min: float = 0.1
    beta_max: float = 20.0
    name = "vp"
    t_max = 1.0 - 1e-3

    def schedule(self, t):
        s = 1 - t
        big_t = self.beta_min * s + 0.5 * (self.beta_max - self.beta_min) * s**2
        beta = self.beta_min + (self.beta_max - self.beta_min) * s
        a = torch.exp(-0.5 * big_t)
        sig = torch.sqrt(torch.clamp(1 - a**2, min=1e-12))
        da = 0.5 * beta * a
        return a, sig, da, -a * da / sig

    def config(self) -> dict:
        return {"name": self.name, "beta_min": self.beta_min, "beta_max": self.beta_max}


@dataclass(frozen=True)
class CosinePath(GaussianPath):
    name = "cosine"

    def schedule(self, t):
        h = 0.5 * math.pi
        return torch.sin(h * t), torch.cos(h * t), h * torch.cos(h * t), -h * torch.sin(h * t)


@dataclass(frozen=True)
class PolynomialPath(GaussianPath):
    n: float = 2.0
    name = "poly"

    def schedule(self, t):
        tn = t**self.n
        d = self.n * t ** (self.n - 1)
        return tn, 1 - tn, d, -d

    def config(self) -> dict:
        return {"name": self.name, "n": self.n}


PATHS = {"ot": OTPath, "vp": VPPath, "cosine": CosinePath, "poly": PolynomialPath}


def build_path(config: dict) -> GaussianPath:
    """A path from its config (as stored in checkpoints and in the fm.path metadata)."""
    cfg = dict(config)
    name = cfg.pop("name", None)
    if name not in PATHS:
        raise ValueError(f"unknown path {name!r}; choose one of: {', '.join(PATHS)}")
    try:
        return PATHS[name](**cfg)
    except TypeError as e:
        raise ValueError(f"bad parameters for path {name!r}: {e}") from None


TIME_SAMPLING = ("uniform", "logit-normal")
PREDICTIONS = ("velocity", "x1", "noise")


class PredictionToVelocity(torch.nn.Module):
    """Wrap a network that predicts the data x1 or the noise x0 so that it outputs the velocity,
    exactly, from x_t = alpha x1 + sigma x0 and v = alpha' x1 + sigma' x0:
        x1-prediction:    v = alpha' x1^ + sigma' (x - alpha x1^) / sigma
        noise-prediction: v = alpha' (x - sigma x0^) / alpha + sigma' x0^
    The divisor is clamped at `eps` where the path makes it vanish (sigma at t = 1, alpha at
    t = 0); only evaluations within that distance of the end use the clamp. The export traces
    this module, so the conversion lives in the graph and the runtime integrates a velocity."""

    def __init__(self, net: torch.nn.Module, path: GaussianPath, prediction: str, eps: float = 1e-2):
        super().__init__()
        if prediction not in ("x1", "noise"):
            raise ValueError(f"prediction must be x1 or noise, got {prediction!r}")
        self.inner, self.path, self.prediction, self.eps = net, path, prediction, eps

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.combine(x, self.inner(x, t) if y is None else self.inner(x, t, y), t)

    def combine(self, x: torch.Tensor, out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The velocity from the state and the network's prediction; linear in (x, out) at
        fixed t, so it also maps a tangent (dx, d_out) to the velocity's tangent exactly."""
        a, s, da, ds = self.path.schedule(GaussianPath._col(t.to(x.dtype), x))
        if self.prediction == "x1":
            return da * out + ds * (x - a * out) / torch.clamp(s, min=self.eps)
        return da * (x - s * out) / torch.clamp(a, min=self.eps) + ds * out


def draw_times(n: int, generator: torch.Generator | None, time_sampling: str, t_max: float,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Training times [n]: U[0, t_max) or, for "logit-normal", sigmoid(N(0, 1)) * t_max."""
    if time_sampling == "logit-normal":
        return torch.sigmoid(torch.randn(n, generator=generator, dtype=dtype)) * t_max
    return torch.rand(n, generator=generator, dtype=dtype) * t_max


def cfm_loss(model: torch.nn.Module, path: GaussianPath, x1: torch.Tensor,
             generator: torch.Generator | None = None, coupling="independent",
             time_sampling: str = "uniform", prediction: str = "velocity",
             y: torch.Tensor | None = None, x0: torch.Tensor | None = None,
             t: torch.Tensor | None = None) -> torch.Tensor:
    """Conditional flow-matching loss: E |v(x_t, t) - (alpha'_t x1 + sigma'_t x0)|^2 with
    t ~ U[0, t_max) (or logit-normal), x0 ~ N(0, I) paired with x1 independently or by
    minibatch OT. With prediction "x1" or "noise" the network regresses x1 or x0 instead. Labels
    y [B] (class-conditional training) go to the network with their x1. Noise x0 and times t
    drawn beforehand (a rank's rows of a global draw) are used instead of drawing them here;
    coupling may also be a function (x0, x1) -> x0 reordered (the OT pairing over all ranks)."""
    if x0 is None:
        x0 = torch.randn(x1.shape, generator=generator, dtype=x1.dtype)
    if callable(coupling):
        x0 = coupling(x0, x1)
    elif coupling != "independent":
        from .couplings import couple
        x0 = couple(coupling, x0, x1, generator)
    if t is None:
        t = draw_times(x1.shape[0], generator, time_sampling, path.t_max, x1.dtype)
    xt = path.sample_xt(x0, x1, t)
    target = {"velocity": lambda: path.target(x0, x1, t), "x1": lambda: x1, "noise": lambda: x0}[prediction]()
    pred = model(xt, t) if y is None else model(xt, t, y)
    return ((pred - target) ** 2).mean()
