"""A task checkpoint sampled in torch with the same calls fm_runtime's sampler takes
(`sample(n, cond=..., steps=..., solver=..., guidance=..., seed=...)` and `.spec`), so fm-train
score measures a checkpoint, velocity or flow map, before it is exported."""
from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import torch

from fm_runtime.solve.noise import noise_rows
from fm_runtime.solve.solvers import integrate

from ..checkpoint import load_checkpoint
from ..sample import jump_sample
from . import TASKS


class CheckpointSampler:
    """A task checkpoint (training.tasks) as a sampler: requests (the stage's inputs, or the
    conditions) batch by their first axis, or repeat to n rows when given for one row."""

    def __init__(self, path: str):
        self.model, self.config = load_checkpoint(path)
        self.task = TASKS[self.config["dataset"]]
        self.flow_map = bool(getattr(self.model, "flow_map", False))
        self.spec = SimpleNamespace(training=self.config, architecture=self.config["architecture"],
                                    value_range=self.config.get("value_range"))

    def _rows(self, cond: dict, n: int | None) -> dict:
        declared = {**self.task.inputs, **self.task.stage_inputs}
        out = {}
        for name, value in cond.items():
            value = np.asarray(value)
            rank = len([d for d in re.sub(r".*\[|\].*", "", declared[name]).split(",") if d])
            out[name] = np.repeat(value[None], n or 1, 0) if value.ndim == rank else value
        return out

    @torch.no_grad()
    def sample(self, n: int | None = None, *, cond: dict, steps: int | None = None, solver: str | None = None,
               guidance: float = 1.0, seed: int = 0) -> np.ndarray:
        request = {k: torch.from_numpy(v) for k, v in self._rows(cond, n).items()}
        rows = len(next(iter(request.values())))
        conds = self.model.conditions(request, torch.zeros(rows, dtype=torch.bool))
        null = self.model.conditions(request, torch.ones(rows, dtype=torch.bool)) if guidance != 1.0 else None
        mask = conds.get(self.model.mask_name) if self.model.mask_name else None
        shape = [mask.shape[-1] if isinstance(d, str) else d for d in self.task.data_shape]
        z = torch.from_numpy(noise_rows(seed, 0, rows, tuple(shape)))
        if mask is not None:
            z = z * mask
        if self.flow_map:
            return jump_sample(self.model, z, steps or 1, guidance=guidance, conds=conds, null_conds=null)

        def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
            tt = torch.full((rows,), t)
            v = self.model(x, tt, conds)
            return v if null is None else (lambda vu: vu + guidance * (v - vu))(self.model(x, tt, null))

        return integrate(velocity, z, steps or self.task.default_steps, solver or self.task.default_solver).x.numpy()


def open_sampler(path: str):
    """A checkpoint's CheckpointSampler (.ckpt, .pt, .pth) or fm_runtime's sampler of a model file."""
    if str(path).endswith((".ckpt", ".pt", ".pth")):
        return CheckpointSampler(path)
    import fm_runtime
    return fm_runtime.load(path)
