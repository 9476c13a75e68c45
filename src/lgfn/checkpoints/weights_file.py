"""The shipped weights-only file: plain types + tensors, loadable with ``torch.load(weights_only=True)``.

Layout (version 1)::

    {"format": "lgfn-weights", "version": 1,
     "net_class": "LGFN",                      # a key of NET_CLASSES, never an import path
     "net_config": {...},                      # the constructor kwargs
     "state_dict": {...},
     "meta": {"scale": 4, "num_frames": N, "padding": "reflection_circle", "degradation": "bi", ...}}

Every file that holds network weights (this one, a Lightning checkpoint, the authors' release) is read by
``lgfn.checkpoints.reader``. Only classes from the fixed allow-list ``NET_CLASSES`` can be built, so a file cannot name code to run,
and unpickling itself is restricted by ``weights_only=True`` (a pickle that would call e.g.
``os.system`` is refused before anything runs).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from lgfn.checkpoints.lightning_io import atomic_torch_save
from lgfn.models import LGFN
from lgfn.models.basicvsr import BasicVSR
from lgfn.models.bicubic import Bicubic

FORMAT = "lgfn-weights"
VERSION = 1
NET_CLASSES: dict[str, type[nn.Module]] = {"LGFN": LGFN, "Bicubic": Bicubic, "BasicVSR": BasicVSR}
DEFAULT_META = {"scale": 4, "padding": "reflection_circle", "degradation": "bi"}
_PLAIN = (str, int, float, bool, type(None))


def plain(value: Any, where: str) -> Any:
    """Deep-copy ``value`` as plain python types (OmegaConf containers, tuples -> dict/list)."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if hasattr(value, "items"):
        return {str(k): plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, where) for v in value]
    raise TypeError(f"{where}: {type(value).__name__} is not a plain type (str/int/float/bool/None/list/dict)")


def net_class_name(net: nn.Module) -> str:
    """The allow-list key of ``net``'s class; anything else cannot be saved (it could not be rebuilt)."""
    for name, cls in NET_CLASSES.items():
        if type(net) is cls:
            return name
    raise ValueError(f"cannot save a {type(net).__name__}: only {sorted(NET_CLASSES)} networks can be rebuilt")


def save_weights(net: nn.Module, path: str | os.PathLike, meta: dict | None = None,
                 net_config: dict | None = None) -> None:
    """Write ``net`` as a weights-only file (atomic). ``net_config`` defaults to ``net.config``."""
    name = net_class_name(net)
    config = net_config if net_config is not None else getattr(net, "config", None)
    if config is None:
        raise ValueError(f"{name} has no .config attribute: pass net_config= (its constructor kwargs)")
    full_meta = dict(DEFAULT_META)
    full_meta["num_frames"] = int(getattr(net, "num_frames", dict(config).get("num_frames", 7)))
    full_meta["scale"] = int(getattr(net, "scale", dict(config).get("scale", 4)))
    full_meta.update(meta or {})
    obj = {
        "format": FORMAT,
        "version": VERSION,
        "net_class": name,
        "net_config": plain(dict(config), "net_config"),
        "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        "meta": plain(full_meta, "meta"),
    }
    atomic_torch_save(obj, path)


__all__ = ["DEFAULT_META", "FORMAT", "NET_CLASSES", "VERSION", "net_class_name", "save_weights"]
