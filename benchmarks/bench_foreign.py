"""Networks in other people's call shapes through export_velocity: export time, file size, and the
largest runtime-vs-torch differences (samples over four solvers, exact log p).

    python benchmarks/bench_foreign.py

Random weights (perturbed so no gate sits at its zero initialisation): the figures are about
export and parity, not quality. torchcfm's classes are used when torchcfm is installed.
"""
from __future__ import annotations

import tempfile
import time

import numpy as np
import torch
from torch import nn

import fm_runtime
from export import export_velocity
from training.nets import VelocityConv, VelocityDiT, VelocityMLP, VelocityUNet
from training.sample import log_prob as torch_log_prob
from training.sample import sample as torch_sample


class TimeFirst(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, t, x):
        return self.net(x, t)


def cases():
    torch.manual_seed(0)
    img = (1, 8, 8)
    out = [("fm-runtime mlp (x,t)", VelocityMLP(2, 64, 3, "silu"), "x,t", (2,), lambda n: lambda x, t: n(x, t)),
           ("fm-runtime conv (x,t)", VelocityConv(img, 32, 2), "x,t", img, lambda n: lambda x, t: n(x, t)),
           ("unet (t,x)", TimeFirst(VelocityUNet(img, 32)), "t,x", img, lambda n: lambda x, t: n(t, x)),
           ("dit (x,t)", VelocityDiT(img, 64, 4), "x,t", img, lambda n: lambda x, t: n(x, t))]
    try:
        from torchcfm.models.models import MLP
        from torchcfm.models.unet import UNetModel
        out.insert(0, ("torchcfm MLP cat(x,t)", MLP(2, time_varying=True), "cat(x,t)", (2,),
                       lambda n: lambda x, t: n(torch.cat([x, t[:, None]], -1))))
        out.insert(3, ("torchcfm UNetModel (t,x)", UNetModel(dim=img, num_channels=32, num_res_blocks=1,
                                                             channel_mult=(1, 2), attention_resolutions="4",
                                                             num_heads=2, dropout=0.0),
                       "t,x", img, lambda n: lambda x, t: n(t, x)))
    except ImportError:
        print("(torchcfm not installed: its classes are left out)")
    for _, net, *_ in out:
        for p in net.parameters():
            p.data += 0.05 * torch.randn_like(p)
        net.eval()
    return out


def main() -> None:
    print(f"{'network':<26} {'export s':>8} {'KiB':>7} {'max |x - torch|':>16} {'max |log p - torch|':>20}")
    with tempfile.TemporaryDirectory() as d:
        for name, net, call, shape, ref in cases():
            clock = time.perf_counter()
            r = export_velocity(net, f"{d}/m.onnx", data_shape=shape, call=call)
            took = time.perf_counter() - clock
            s = fm_runtime.load(f"{d}/m.onnx")
            z = s.noise(256 if shape == (2,) else 32, seed=0)
            worst = max(float(np.abs(s.sample(noise=z, steps=4, solver=solver)
                                     - torch_sample(ref(net), z, 4, solver)).max())
                        for solver in ("euler", "midpoint", "heun", "rk4"))
            rows = z[:64] if shape == (2,) else z[:4]
            lp = float(np.abs(s.log_prob(rows, steps=4, divergence="exact")
                              - torch_log_prob(ref(net), rows, steps=4)).max())
            print(f"{name:<26} {took:>8.1f} {r.size_bytes / 1024:>7.0f} {worst:>16.1e} {lp:>20.1e}")


if __name__ == "__main__":
    main()
