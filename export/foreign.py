"""Networks trained elsewhere: a factory named as PKG.MOD:NAME, weights from a torch.save file,
or a program saved with torch.export (.pt2). Each failure is one ExportError line."""
from __future__ import annotations

import importlib
import os
import sys

import torch

from fm_runtime.model.session import one_line

from .errors import ExportError

# keys under which training loops commonly store a state dict (torchcfm saves net_model and ema_model)
WEIGHT_KEYS = ("state_dict", "model_state_dict", "model", "ema_model", "net_model", "ema", "net")


def _one_line(e: Exception) -> str:
    return f"{type(e).__name__}: {one_line(e)}"


def load_factory(spec: str) -> torch.nn.Module:
    """'pkg.mod:make_net' -> make_net() (or the nn.Module named so), imported from the current
    directory or PYTHONPATH."""
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise ExportError(f"--module wants PKG.MODULE:FACTORY (e.g. mynets:make_unet), got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(mod_name)
    except SystemExit as e:
        raise ExportError(f"--module {spec}: importing {mod_name} called sys.exit({e.code!r}); nothing written") from None
    except Exception as e:
        raise ExportError(f"--module {spec}: cannot import {mod_name} ({_one_line(e)}); run from the folder "
                          "that holds it or add that folder to PYTHONPATH") from None
    target = getattr(module, attr, None)
    if target is None:
        raise ExportError(f"--module {spec}: {mod_name} has no {attr!r}")
    if isinstance(target, torch.nn.Module):
        return target
    try:
        net = target()
    except SystemExit as e:
        raise ExportError(f"--module {spec}: {attr}() called sys.exit({e.code!r}); nothing written") from None
    except Exception as e:
        raise ExportError(f"--module {spec}: calling {attr}() failed ({_one_line(e)}); the factory must "
                          "build the network with no arguments") from None
    if not isinstance(net, torch.nn.Module):
        raise ExportError(f"--module {spec}: {attr}() returned {type(net).__name__}, not a torch.nn.Module")
    return net


def load_weights(net: torch.nn.Module, path: str, key: str | None = None) -> str | None:
    """Load a state dict saved with torch.save (weights_only: no code runs) into net, strictly.
    Returns the checkpoint entry it took (key, or the one found among WEIGHT_KEYS; None: the
    file is the state dict itself)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ExportError(f"--weights {path}: file not found") from None
    except Exception as e:
        raise ExportError(f"--weights {path}: not a torch.save file of tensors ({_one_line(e)})") from None
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            raise ExportError(f"--weights {path}: no entry {key!r} (it has: {', '.join(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__})")
        obj = obj[key]
    elif isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        found = [k for k in WEIGHT_KEYS if isinstance(obj.get(k), dict)]
        if len(found) != 1:
            raise ExportError(f"--weights {path}: holds {', '.join(map(str, obj))}; choose the state dict "
                              "with --weights-key")
        key = found[0]
        obj = obj[key]
    if not isinstance(obj, dict):
        raise ExportError(f"--weights {path}: expected a state dict, found {type(obj).__name__}")
    if obj and all(str(k).startswith("module.") for k in obj):   # saved from DistributedDataParallel
        obj = {k[len("module."):]: v for k, v in obj.items()}
    try:
        net.load_state_dict(obj, strict=True)
    except RuntimeError as e:
        msg = " ".join(str(e).split())
        raise ExportError(f"--weights {path} do not fit the network: {msg[:300]}") from None
    return key


class _Program(torch.nn.Module):
    """A loaded program's module, held out of sight of .eval()/.train(), which it refuses."""

    def __init__(self, module):
        super().__init__()
        self.__dict__["program"] = module

    def forward(self, *args, **kwargs):
        return self.program(*args, **kwargs)


def load_program(path: str) -> torch.nn.Module:
    """The module of a torch.export program saved with torch.export.save (.pt2); its batch
    dimension must have been exported as dynamic."""
    try:
        return _Program(torch.export.load(path).module())
    except Exception as e:
        raise ExportError(f"{path}: not a torch.export program ({_one_line(e)})") from None
