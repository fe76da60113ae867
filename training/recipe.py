"""A training recipe: every option of `fit` in one dataclass, stored in the checkpoint (as
nanoGPT stores its model config) so a run can be described and repeated from its file.

The defaults are the recipe that measured best on moons with the tutorial's network size (3
hidden layers of 64) and OT path: SiLU instead of ELU, batches of 2048, Adam at 3e-3 decayed by
a cosine, and an EMA of the weights; its 16-NFE energy distance to data is ~100x lower (mean of 4 seeds) than the
tutorial's recipe (TUTORIAL_RECIPE: lr 1e-2 constant, batch 256, ELU, no EMA).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class Recipe:
    steps: int = 10_000
    batch_size: int = 2048
    lr: float = 3e-3
    seed: int = 0
    width: int = 64             # hidden width (mlp, conv), base channels (unet), token width (dit)
    depth: int = 3              # hidden layers (mlp, conv) or transformer blocks (dit)
    activation: str = "silu"
    net: str = "mlp"            # mlp | conv | unet | dit
    path: str = "ot"            # probability path (training.paths.PATHS)
    sigma_min: float = 0.0      # width of the ot path at t = 1
    coupling: str = "independent"
    lr_schedule: str = "cosine"
    ema: float = 0.999
    grad_clip: float = 0.0
    time_sampling: str = "uniform"
    prediction: str = "velocity"
    conditional: bool = False
    label_dropout: float = 0.2

    @classmethod
    def of(cls, **options) -> "Recipe":
        """A recipe from keyword options, naming any that is not one."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown training option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**options)

    def to_dict(self) -> dict:
        return asdict(self)


TUTORIAL_RECIPE = dict(steps=10_000, batch_size=256, lr=1e-2, activation="elu", lr_schedule="constant", ema=0.0)
