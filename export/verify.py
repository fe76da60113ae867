"""How an export is proved: example feeds for every graph the export writes (velocity, baked,
divergence; with a conditioned network's extra inputs at several bindings of its symbols) and
the comparison of onnxruntime against torch (the divergence graph against torch's own
autodiff) at several batch sizes, before anything is written."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch

from fm_runtime.model.session import one_line
from fm_runtime.model.spec import NAMES

from .checks import example_inputs
from .errors import ExportError
from .signature import Signature

VERIFY_BATCHES = (1, 7, 256)    # batch sizes the export is checked at
VERIFY_ATOL = 1e-4              # max |onnxruntime - torch| allowed, scaled by max(1, |v|)
OUTPUT_NAMES = {"velocity": [NAMES.v], "map": [NAMES.v], "baked": [NAMES.samples], "jvp": [NAMES.v, NAMES.jv]}


def example_feed(data_shape, kind: str, b: int, rng, num_classes: int, sig: Signature | None, which: int = 0,
                 one_time: bool = False):
    """(example feed for b rows, torch.export's dynamic shapes for it): x, t[, y], then the extra
    inputs of `sig` at its `which`-th binding of the symbols."""
    sizes = sig.sizes(which) if sig else {}
    concrete = sig.concrete(data_shape, sizes) if sig else data_shape
    feed = example_inputs(concrete, kind, b, rng, num_classes, one_time=one_time)
    if sig:
        feed.update(sig.examples(b, rng, sizes))
    batch = torch.export.Dim("batch")
    dims = {name: torch.export.Dim(name) for name in (sig.symbols if sig else {})}
    shapes = {NAMES.x: data_shape, **({i["name"]: i["shape"] for i in sig.inputs} if sig else {})}
    dynamic = {k: {0: batch, **{a + 1: dims[d] for a, d in enumerate(shapes.get(k, ())) if isinstance(d, str)}}
               for k in feed}
    return feed, dynamic


def structured_shapes(dynamic: dict, kind: str) -> tuple:
    """The dynamic shapes in the structure of the module's arguments: (z,) for a baked sampler,
    (x, t, (y and the extra inputs...)) for the adapter's forward(x, t, *rest)."""
    shapes = list(dynamic.values())
    if kind == "baked" or len(shapes) == 2:
        return tuple(shapes)
    return shapes[0], shapes[1], tuple(shapes[2:])


def jvp_reference(velocity: torch.nn.Module, labelled: bool = False):
    """(x, t, [y,] e[, extras...]) -> (v, J e) by torch's own forward-mode autodiff (reverse-over-
    reverse where a module does not support forward mode): what the divergence graph is checked
    against (the feed order of example_feed: labels before the tangents, extra inputs after them)."""
    def run(x, t, *rest):
        y, e, extras = (rest[0], rest[1], rest[2:]) if labelled else (None, rest[0], rest[1:])
        before = ((y,) if y is not None else ()) + tuple(extras)
        f = lambda xx: velocity(xx, t, *before)   # noqa: E731
        # attention under the math kernel: CPU flash attention has no forward- or double-backward
        # derivative (nn.MultiheadAttention, nn.TransformerEncoder); the values are the same
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
            try:
                jvs = [torch.func.jvp(f, (x,), (e[:, k],))[1] for k in range(e.shape[1])]
            except Exception:
                try:
                    with torch.enable_grad():
                        jvs = [torch.autograd.functional.jvp(f, x, e[:, k])[1] for k in range(e.shape[1])]
                except Exception as err:
                    raise ExportError(f"the divergence graph cannot be checked: torch cannot differentiate the "
                                      f"network ({type(err).__name__}: {one_line(err)})") from None
        return f(x), torch.stack(jvs, 1)
    return run


def verify_against_torch(module, onnx_bytes: bytes, data_shape: tuple[int, ...],
                         batches=VERIFY_BATCHES, atol: float = VERIFY_ATOL, seed: int = 0,
                         kind: str = "velocity", num_classes: int = 0, one_time: bool = False,
                         sig: Signature | None = None) -> float:
    """Run the ONNX bytes in onnxruntime and the torch module (or function) on the same random
    inputs (with `sig`: a different binding of its symbols at each batch size); return the
    largest abs difference over all outputs, or raise ExportError if any exceeds
    atol * max(1, |torch|)."""
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    worst = 0.0
    for which, b in enumerate(batches):
        feed = example_feed(data_shape, kind, b, rng, num_classes, sig, which, one_time)[0]
        with torch.no_grad():
            refs = module(*(torch.from_numpy(v) for v in feed.values()))
        refs = [r.detach().numpy() for r in (refs if isinstance(refs, tuple) else (refs,))]
        try:
            outputs = sess.run(None, feed)
        except Exception as e:      # onnxruntime: a size fixed inside the graph that torch ran at this one
            sizes = ", ".join(f"{k} = {v}" for k, v in (sig.sizes(which) if sig else {}).items())
            raise ExportError(f"export check failed: the graph fails at batch {b}{' with ' + sizes if sizes else ''} "
                              f"where torch runs ({one_line(e)[:200]}): the network fixes a size the file declares "
                              "variable (a shape turned into a Python number while tracing); export one file per "
                              "size, or keep sizes as tensors; no file written") from None
        for name, got, ref in zip(OUTPUT_NAMES[kind], outputs, refs):
            if got.shape != ref.shape:
                raise ExportError(f"export check failed: onnxruntime output {name} has shape {list(got.shape)}, "
                                  f"torch {list(ref.shape)} at batch {b}")
            diff = np.abs(got - ref)
            worst = max(worst, float(diff.max()))
            if not np.all(diff <= atol * np.maximum(1.0, np.abs(ref))):
                raise ExportError(f"export check failed: onnxruntime and torch differ by {float(diff.max()):.3g} "
                                  f"(allowed {atol:g}) in output {name} at batch {b}; no file written")
    return worst


CONVENTION_STEPS = 4            # Euler steps of the convention check


def check_convention(adapter, onnx_bytes: bytes, data_shape, num_classes: int = 0, sig: Signature | None = None,
                     atol: float = VERIFY_ATOL) -> float:
    """The file's velocity integrated by this project's loop (t = 0 noise to 1) against the user's
    network integrated in its own convention, the same Euler steps on the same noise: with noise
    at 1, x <- x - h net(x, σ) from σ = 1 to 0 (time_scale applied), the output taken as the
    network returns it. Unlike verify_against_torch, which checks the graph against the adapter
    it was traced from, this checks the adapter's time flip and sign against the network itself:
    a file that would integrate the wrong way cannot pass. Returns the largest difference."""
    feed = example_feed(data_shape, "velocity", 8, np.random.default_rng(7), num_classes, sig)[0]
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    y = torch.from_numpy(feed[NAMES.y]) if num_classes else None
    extras = tuple(torch.from_numpy(v) for k, v in feed.items() if k not in (NAMES.x, NAMES.t, NAMES.y))
    ours = theirs = feed[NAMES.x]
    h = 1.0 / CONVENTION_STEPS
    with torch.no_grad():
        for i in range(CONVENTION_STEPS):
            t = np.full(len(ours), i * h, np.float32)
            ours = ours + h * sess.run([NAMES.v], {**feed, NAMES.x: ours, NAMES.t: t})[0]
            own = torch.from_numpy(1.0 - t if adapter.flip else t)      # the network's own time at this step
            v = adapter.native(torch.from_numpy(theirs), own, y, extras).numpy()
            theirs = theirs - h * v if adapter.flip else theirs + h * v
    diff = float(np.abs(ours - theirs).max())
    if diff > atol * max(1.0, float(np.abs(theirs).max())):
        raise ExportError(f"export check failed: the file's velocity, integrated from noise at t = 0, ends {diff:.3g} "
                          "away from the network integrated in its own time convention "
                          f"({'noise at 1: x <- x - h net(x, sigma)' if adapter.flip else 'noise at 0'}); no file written")
    return diff
