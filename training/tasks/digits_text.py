"""Prompt to digit: an 8x8 digit [1, 8, 8] (scikit-learn's digits, pixels 0..16 scaled to [-1, 1]
as --data digits makes them) from a text prompt, `text` int64 [L]: the prompt's UTF-8 bytes, 0 as
padding, L <= 32 and variable. Prompts name the digit as a word, a capitalised word or a numeral
("seven", "Seven", "7").

The condition stage is a tiny text encoder: byte embeddings, a convolution over neighbouring
bytes, a mean over the prompt's bytes and an MLP, to a vector `prompt` [64]. The velocity network
is an MLP on the image, the time and that vector. Guidance's null is the encoded empty prompt
(null "stage": the stage run on a prompt of padding only), trained on 20% of the rows."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..data import digit_images, pixels_to_unit
from ..nets import GAP_FEATURES, gap_features, time_embedding, zero_linear
from .base import Task, TaskModel, mlp, model_class

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
EMBED, MAX_BYTES = 64, 32


def prompts(digit: int) -> list[str]:
    """The prompts that ask for `digit`: its word, capitalised word and numeral."""
    return [WORDS[digit], WORDS[digit].capitalize(), str(digit)]


def encode(texts: list[str], length: int | None = None) -> np.ndarray:
    """Prompts as UTF-8 bytes [n, L] padded with 0 (L: the longest, or `length`)."""
    raw = [t.encode("utf-8")[:MAX_BYTES] for t in texts]
    out = np.zeros((len(raw), length or max(1, max(map(len, raw)))), np.int64)
    for r, b in enumerate(raw):
        out[r, :len(b)] = np.frombuffer(b, np.uint8)
    return out


def draw(n: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    images, labels = digit_images("train")
    pick = rng.integers(len(labels), size=n)
    forms = rng.integers(0, 3, n)
    texts = [prompts(int(d))[f] for d, f in zip(labels[pick], forms)]
    return pixels_to_unit(images[pick], rng)[:, None].astype(np.float32), {"text": encode(texts)}


class TextEncoder(nn.Module):
    """text [B, L] (bytes, 0 = padding) -> prompt [B, 64]; the empty prompt gives a learned vector."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.embed = nn.Embedding(256, width)
        self.conv = nn.Conv1d(width, width, 3, padding=1)
        self.out = mlp([width, width, EMBED])

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        present = (text > 0).to(torch.float32)[:, None]                       # [B, 1, L]
        h = self.embed(text).transpose(1, 2) * present
        h = nn.functional.silu(self.conv(h)) * present
        pooled = h.sum(-1) / present.sum(-1).clamp(min=1.0)
        return self.out(pooled)


class PromptMLP(nn.Module):
    """v(x [B, 1, 8, 8], t [B], prompt [B, 64]): an MLP on the pixels with the time embedding and
    the prompt vector added to its first layer."""

    def __init__(self, width: int, depth: int):
        super().__init__()
        self.inp = nn.Linear(64, width)
        self.cond = mlp([64 + EMBED, width, width])
        self.body = mlp([width] * depth + [64])

    def forward(self, x: torch.Tensor, t: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        h = nn.functional.silu(self.inp(x.flatten(1)) + self.cond(torch.cat([time_embedding(t, 64), prompt], 1)))
        return self.body(h).reshape(x.shape)


class PromptMLPMap(PromptMLP):
    """The flow map u(x, s, t, prompt): PromptMLP at (x, s) plus a zero-initialised path from the
    gap t - s into its first layer (it starts as the velocity net it copies)."""

    def __init__(self, width: int, depth: int):
        super().__init__(width, depth)
        self.gap = zero_linear(GAP_FEATURES, width)

    def forward(self, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        h = nn.functional.silu(self.inp(x.flatten(1)) + self.cond(torch.cat([time_embedding(s, 64), prompt], 1))
                               + self.gap(gap_features(s, t)))
        return self.body(h).reshape(x.shape)


class PromptModel(TaskModel):
    def conditions(self, request, drop):
        text = request["text"] * (~drop)[:, None].to(request["text"].dtype)      # dropped rows: the empty prompt
        return {"prompt": self.stage(text)}


def build(architecture: dict) -> TaskModel:
    net = PromptMLPMap if architecture.get("flow_map") else PromptMLP
    return model_class(PromptModel, architecture)(net(architecture["width"], architecture["depth"]), TextEncoder(),
                                                  architecture)


def classifier():
    """Logistic regression on the real training digits' pixels (as benchmarks/bench_digits.py)."""
    from sklearn.linear_model import LogisticRegression
    images, labels = digit_images("train")
    return LogisticRegression(max_iter=5000, C=0.1).fit(images.reshape(len(images), -1), labels)


def unit_to_pixels(x: np.ndarray) -> np.ndarray:
    """[-1, 1) back to pixel values 0..16 (pixels_to_unit at u = 0.5, inverted)."""
    return np.clip((x + 1.0) / 2.0 * 17.0 - 0.5, 0, 16)


TASK = Task(
    name="digits-text", data_shape=[1, 8, 8], inputs={"prompt": f"float32[{EMBED}]"}, call="x,t,prompt",
    nulls={"prompt": "stage"}, symbols={"L": {"min": 1, "max": MAX_BYTES}},
    stage_inputs={"text": "int64[L]"}, stage_outputs=("prompt",), draw=draw, build=build, dropout=0.2,
    value_range=[-1.0, 1.0], default_steps=16, default_solver="midpoint",
    defaults={"steps": 1500, "batch_size": 256, "lr": 2e-3, "width": 256, "depth": 3},
    about="an 8x8 digit from a text prompt (its UTF-8 bytes), through a text-encoder condition stage")
