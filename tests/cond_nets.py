"""Conditioned networks in the three call shapes deployed flow-matching models use (the
conditions tests export them; each is importable as a --module factory):
- Estimator1D: a TTS-style channels-first 1-D conv decoder called (x, mask, mu, t, spks), x and
  mu [B, C, T], mask [B, 1, T], a speaker vector [B, S]; it masks its input like Matcha-TTS, so
  a padded row computes what the row alone does.
- TextTransformer: an SD3-style transformer called (hidden_states, encoder_hidden_states,
  pooled, timestep) with the timestep = sigma * 1000 and noise at sigma = 1, cross-attending to
  text embeddings [B, L, E] of any length L.
- ActionExpert: a pi0-style action expert called (x_t, time, prefix, prefix_mask), noise at
  t = 1, attending to a variable-length prefix [B, P, F] with a pad mask [B, P].
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Estimator1D(nn.Module):
    def __init__(self, channels: int = 4, speakers: int = 3, width: int = 16):
        super().__init__()
        self.inp = nn.Conv1d(2 * channels + 1, width, 3, padding=1)
        self.spk = nn.Linear(speakers, width)
        self.mid = nn.Conv1d(width, width, 3, padding=1)
        self.out = nn.Conv1d(width, channels, 1)

    def forward(self, x, mask, mu, t, spks):
        tt = t[:, None, None].expand(-1, 1, x.shape[-1])
        h = torch.cat([x, mu, tt], 1) * mask
        h = F.silu(self.inp(h) + self.spk(spks)[:, :, None]) * mask
        h = F.silu(self.mid(h)) * mask
        return self.out(h) * mask


class TextTransformer(nn.Module):
    def __init__(self, tokens: int = 6, dim: int = 4, text: int = 8, pooled: int = 5, width: int = 16):
        super().__init__()
        self.inp, self.txt = nn.Linear(dim, width), nn.Linear(text, width)
        self.pool, self.time = nn.Linear(pooled, width), nn.Linear(1, width)
        self.attn = nn.MultiheadAttention(width, 2, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, dim))

    def forward(self, hidden_states, encoder_hidden_states, pooled_projections, timestep):
        temb = self.time(timestep[:, None] / 1000.0) + self.pool(pooled_projections)
        h = self.inp(hidden_states) + temb[:, None, :]
        c = self.txt(encoder_hidden_states)
        h = h + self.attn(h, c, c, need_weights=False)[0]
        return self.mlp(h)


class ActionExpert(nn.Module):
    def __init__(self, horizon: int = 6, action: int = 2, features: int = 5, width: int = 16):
        super().__init__()
        self.act, self.pre, self.time = nn.Linear(action, width), nn.Linear(features, width), nn.Linear(1, width)
        self.q, self.k, self.v = nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, width)
        self.out = nn.Sequential(nn.Linear(2 * width, width), nn.SiLU(), nn.Linear(width, action))

    def forward(self, x_t, time, prefix, prefix_mask):
        h = self.act(x_t) + self.time(time[:, None])[:, None, :]
        p = self.pre(prefix)
        scores = self.q(h) @ self.k(p).transpose(1, 2) / 4.0
        scores = torch.where(prefix_mask[:, None, :] > 0.5, scores, -1e4)       # padded prefix positions: no weight
        ctx = torch.softmax(scores, -1) @ self.v(p)
        return self.out(torch.cat([h, ctx], -1))


def make_estimator() -> nn.Module:
    torch.manual_seed(0)
    return Estimator1D().eval()


def make_transformer() -> nn.Module:
    torch.manual_seed(1)
    return TextTransformer().eval()


def make_action_expert() -> nn.Module:
    torch.manual_seed(2)
    return ActionExpert().eval()


class EncoderField(nn.Module):
    """A velocity on [tokens, dim] built on torch's nn.TransformerEncoder (whose CPU attention
    kernel torch cannot differentiate forward: the export's divergence check uses the math one)."""

    def __init__(self, dim: int = 4, width: int = 16):
        super().__init__()
        self.inp, self.time = nn.Linear(dim, width), nn.Linear(1, width)
        layer = nn.TransformerEncoderLayer(width, 2, 32, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.out = nn.Linear(width, dim)

    def forward(self, x, t):
        return self.out(self.enc(self.inp(x) + self.time(t[:, None])[:, None, :]))


def make_encoder_field() -> nn.Module:
    torch.manual_seed(3)
    return EncoderField().eval()


class TokenStage(nn.Module):
    """A TTS-style condition stage: token ids [B, L] -> mu [B, 4, 2L] (each token's embedding held
    for two frames) and a mask [B, 1, 2L] of ones: the frames T = 2L come from the stage."""

    def __init__(self, vocab: int = 8, channels: int = 4):
        super().__init__()
        self.emb = nn.Embedding(vocab, channels)

    def forward(self, tokens):
        e = self.emb(tokens).transpose(1, 2)                                # [B, C, L]
        mu = e[:, :, :, None].expand(-1, -1, -1, 2).reshape(e.shape[0], e.shape[1], -1)
        return mu, torch.ones_like(mu[:, :1])


def make_token_stage() -> nn.Module:
    torch.manual_seed(4)
    return TokenStage().eval()


def export_token_decoder(path, mu_null: str = "zeros", t_max: int = 512, l_max: int = 256):
    """The estimator behind the token stage (tokens [L] -> mu, mask; T = 2 L) written to `path` as
    one file with its condition stage; spks nulls to zeros, mu to `mu_null`. Returns (net, stage)."""
    from export.onnx_export import export_velocity
    net, stage = make_estimator(), make_token_stage()
    export_velocity(net, path, data_shape="4,T", call="x,mask,mu,t,spks",
                    inputs={"mu": "float32[4,T]", "mask": "float32[1,T]:mask", "spks": "float32[3]"},
                    nulls={"mu": mu_null, "spks": "zeros"},
                    symbols={"T": {"min": 2, "max": t_max}, "L": {"min": 1, "max": l_max}},
                    condition={"module": stage, "inputs": {"tokens": "int64[L]"}, "outputs": ["mu", "mask"]})
    return net, stage
