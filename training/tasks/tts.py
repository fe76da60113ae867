"""A toy text-to-speech decoder with variable length: a 16-channel "mel" [16, T] from token ids
`tokens` int64 [L] (0 is padding) and a speaker id `speaker` int64.

The language: tokens 1..11, each with a fixed duration of 2, 3 or 4 frames and a template frame
[16]; four speakers, each adding its own vector [16]. An utterance's frames are its tokens'
templates held for their durations plus its speaker's vector, times a gain U(0.8, 1.2) per
utterance, plus N(0, 1) per value: generation is stochastic. T = 4 L frames: the tokens'
frames first, then padding, which is exactly 0 (a multiple of 4, as U-Nets want).

The condition stage (tokens, speaker) -> mu [16, T] (each token's learned embedding held for its
duration), mask [1, T] (1 on the tokens' frames) and spk [16] (the speaker's learned embedding),
trained with the velocity network. The velocity network is a small 1-D convolutional U-Net
(x, mask, mu, t, spk). Guidance nulls mu and spk to zeros."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..nets import GAP_FEATURES, gap_features, time_embedding, zero_linear
from .base import Task, TaskModel, mlp, model_class

CHANNELS, VOCAB, SPEAKERS, FRAMES_PER_TOKEN = 16, 12, 4, 4
_LANG = np.random.default_rng(2024)
DURATIONS = np.concatenate([[0], _LANG.integers(2, 5, VOCAB - 1)]).astype(np.int64)     # token 0: padding
TEMPLATES = np.concatenate([np.zeros((1, CHANNELS)), _LANG.standard_normal((VOCAB - 1, CHANNELS))]).astype(np.float32)
VOICES = (0.7 * _LANG.standard_normal((SPEAKERS, CHANNELS))).astype(np.float32)
MAX_TOKENS = 16


def frames(tokens: np.ndarray) -> np.ndarray:
    """The token of each frame [n, 4 L] (0 on padding frames)."""
    n, length = tokens.shape
    out = np.zeros((n, FRAMES_PER_TOKEN * length), np.int64)
    for r in range(n):
        seq = np.repeat(tokens[r], DURATIONS[tokens[r]])
        out[r, :len(seq)] = seq
    return out


def clean(tokens: np.ndarray, speaker: np.ndarray) -> np.ndarray:
    """The noiseless mel of each request [n, 16, 4 L]: templates plus the voice on the tokens' frames."""
    f = frames(tokens)
    mel = TEMPLATES[f] + VOICES[speaker][:, None] * (f > 0)[..., None]
    return mel.transpose(0, 2, 1).astype(np.float32)


def requests(n: int, rng: np.random.Generator, length: int | None = None) -> dict:
    """n requests of one length L (random in 2..16 when not given): tokens [n, L] with a random
    number of trailing padding tokens (at least one real one), and speakers [n]."""
    length = length or int(rng.integers(2, MAX_TOKENS + 1))
    tokens = rng.integers(1, VOCAB, (n, length))
    real = rng.integers(1, length + 1, n)
    tokens[np.arange(length)[None] >= real[:, None]] = 0
    return {"tokens": tokens.astype(np.int64), "speaker": rng.integers(0, SPEAKERS, n).astype(np.int64)}


def draw(n: int, rng: np.random.Generator, length: int | None = None) -> tuple[np.ndarray, dict]:
    req = requests(n, rng, length)
    mel = clean(req["tokens"], req["speaker"])
    valid = (frames(req["tokens"]) > 0)[:, None]
    noisy = rng.uniform(0.8, 1.2, (n, 1, 1)) * mel + rng.standard_normal(mel.shape)
    return (noisy * valid).astype(np.float32), req


def scores(mel: np.ndarray, tokens: np.ndarray, speaker: np.ndarray) -> dict:
    """token accuracy: each valid frame's nearest template (with the request's voice) is its
    token; speaker accuracy: each utterance's mean valid frame minus its templates is nearest its
    voice; frame error: the RMS difference from the noiseless mel on valid frames; padding: the
    largest value on padding frames (0 when they are exact zeros)."""
    f = frames(tokens)
    valid = f > 0
    x = mel.transpose(0, 2, 1)                                                # [n, T, 16]
    voiced = TEMPLATES[None, None, 1:] + VOICES[speaker][:, None, None]        # [n, 1, V-1, 16]
    guess = 1 + ((x[:, :, None] - voiced) ** 2).sum(-1).argmin(-1)
    residual = ((x - TEMPLATES[f]) * valid[..., None]).sum(1) / valid.sum(1, keepdims=True)
    who = ((residual[:, None] - VOICES[None]) ** 2).sum(-1).argmin(-1)
    err = (mel - clean(tokens, speaker)).transpose(0, 2, 1)[valid]
    return {"token_accuracy": float((guess == f)[valid].mean()), "speaker_accuracy": float((who == speaker).mean()),
            "frame_rmse": float(np.sqrt((err ** 2).mean())), "padding_max": float(np.abs(x[~valid]).max(initial=0.0))}


class TextStage(nn.Module):
    """(tokens [B, L], speaker [B]) -> mu [B, 16, 4 L], mask [B, 1, 4 L], spk [B, 16]: each token's
    embedding held for its duration (a fixed table), frames past the last token masked."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, CHANNELS)
        self.voice = nn.Embedding(SPEAKERS, CHANNELS)
        self.register_buffer("durations", torch.from_numpy(DURATIONS))

    def forward(self, tokens: torch.Tensor, speaker: torch.Tensor):
        ends = torch.cumsum(self.durations[tokens], 1)                          # [B, L]
        frame = torch.arange(tokens.shape[1] * FRAMES_PER_TOKEN, device=tokens.device)
        which = (ends[:, None, :] <= frame[None, :, None]).sum(-1).clamp(max=tokens.shape[1] - 1)   # [B, T]
        mask = (frame[None, :] < ends[:, -1:]).to(torch.float32)[:, None]        # [B, 1, T]
        mu = torch.gather(self.embed(tokens), 1, which[..., None].expand(-1, -1, CHANNELS)).transpose(1, 2) * mask
        return mu, mask, self.voice(speaker)


class _Block(nn.Module):
    """Two masked 1-D convolutions with a residual, shifted by the conditioning vector."""

    def __init__(self, c_in: int, c_out: int, cond: int):
        super().__init__()
        self.a, self.b = nn.Conv1d(c_in, c_out, 3, padding=1), nn.Conv1d(c_out, c_out, 3, padding=1)
        self.shift = nn.Linear(cond, c_out)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, h, c, mask):
        y = nn.functional.silu(self.a(h) + self.shift(c)[:, :, None]) * mask
        return (self.skip(h) + self.b(y)) * mask


class Decoder(nn.Module):
    """v(x [B, 16, T], mask [B, 1, T], mu [B, 16, T], t [B], spk [B, 16]): a 1-D U-Net with two
    halvings of T (T a multiple of 4), no normalisation across frames, every layer masked, so a
    request's frames do not depend on how much padding follows them."""

    def __init__(self, width: int):
        super().__init__()
        w, cond = width, 4 * width
        self.cond = mlp([64 + CHANNELS, cond, cond])
        self.inp = nn.Conv1d(2 * CHANNELS, w, 3, padding=1)
        self.down1, self.down2 = _Block(w, w, cond), _Block(w, 2 * w, cond)
        self.mid = _Block(2 * w, 2 * w, cond)
        self.up2, self.up1 = _Block(4 * w, w, cond), _Block(2 * w, w, cond)
        self.out = nn.Conv1d(w, CHANNELS, 3, padding=1)

    def forward(self, x, mask, mu, t, spk):
        return self.body(x, mask, mu, self.cond(torch.cat([time_embedding(t, 64), spk], 1)))

    def body(self, x, mask, mu, c):
        """The U-Net under the conditioning vector c [B, 4 width]."""
        m1, m2, m3 = mask, mask[:, :, ::2], mask[:, :, ::4]
        h1 = self.down1(self.inp(torch.cat([x, mu], 1)) * m1, c, m1)
        h2 = self.down2(_halve(h1), c, m2)
        h3 = self.mid(_halve(h2), c, m3)
        u2 = self.up2(torch.cat([h3.repeat_interleave(2, -1), h2], 1), c, m2)
        u1 = self.up1(torch.cat([u2.repeat_interleave(2, -1), h1], 1), c, m1)
        return self.out(u1) * mask


class DecoderMap(Decoder):
    """The flow map u(x, mask, mu, s, t, spk): the decoder at (x, s) with a zero-initialised path
    from the gap t - s added to its conditioning vector (it starts as the velocity net it copies)."""

    def __init__(self, width: int):
        super().__init__(width)
        self.gap = zero_linear(GAP_FEATURES, 4 * width)

    def forward(self, x, mask, mu, s, t, spk):
        c = self.cond(torch.cat([time_embedding(s, 64), spk], 1)) + self.gap(gap_features(s, t))
        return self.body(x, mask, mu, c)


def _halve(h: torch.Tensor) -> torch.Tensor:
    """The mean of each pair of frames (slices and an add: the divergence transform knows them)."""
    return (h[:, :, 0::2] + h[:, :, 1::2]) * 0.5


class TTSModel(TaskModel):
    mask_name = "mask"

    def conditions(self, request, drop):
        mu, mask, spk = self.stage(request["tokens"], request["speaker"])
        keep = (~drop).to(torch.float32)
        return {"mask": mask, "mu": mu * keep[:, None, None], "spk": spk * keep[:, None]}


def build(architecture: dict) -> TaskModel:
    net = DecoderMap if architecture.get("flow_map") else Decoder
    return model_class(TTSModel, architecture)(net(architecture["width"]), TextStage(), architecture)


def plot(path: str, mel: np.ndarray, template: np.ndarray, title: str = "") -> None:
    """Generated mels beside their noiseless templates, one row per request."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = len(mel)
    fig, axes = plt.subplots(rows, 2, figsize=(8, 1.4 * rows + 0.6), dpi=110, squeeze=False)
    lim = float(np.abs(template).max())
    for r in range(rows):
        for ax, img, what in ((axes[r, 0], mel[r], "generated"), (axes[r, 1], template[r], "template")):
            ax.imshow(img, aspect="auto", origin="lower", cmap="magma", vmin=-lim, vmax=lim, interpolation="nearest")
            ax.set_yticks([])
            if r == 0:
                ax.set_title(what)
    fig.suptitle(title or "toy TTS: generated mel and its template")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


TASK = Task(
    name="tts", data_shape=[CHANNELS, "T"], call="x,mask,mu,t,spk",
    inputs={"mu": f"float32[{CHANNELS},T]", "mask": "float32[1,T]:mask", "spk": f"float32[{CHANNELS}]"},
    nulls={"mu": "zeros", "spk": "zeros"},
    symbols={"T": {"min": 4, "max": 4 * 256, "multiple_of": 4}, "L": {"min": 1, "max": 256}},
    stage_inputs={"tokens": "int64[L]", "speaker": "int64[]"}, stage_outputs=("mu", "mask", "spk"),
    draw=draw, build=build, dropout=0.2, default_steps=10, default_solver="euler",
    defaults={"steps": 2000, "batch_size": 64, "lr": 2e-3, "width": 32, "depth": 2},
    about="a 16-channel mel [16, T] from tokens [L] and a speaker id, through a condition stage")
