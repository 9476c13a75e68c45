"""The shipped weights-only file: plain types + tensors, loadable with ``torch.load(weights_only=True)``.

Layout (version 1)::

    {"format": "lgfn-weights", "version": 1,
     "net_class": "LGFN",                      # a key of NET_CLASSES, never an import path
     "net_config": {...},                      # the constructor kwargs
     "state_dict": {...},
     "meta": {"scale": 4, "num_frames": N, "padding": "reflection_circle", "degradation": "bi", ...}}

``load_network`` also accepts a Lightning ``.ckpt`` written by ``LitLGFN`` (weights under ``net.*`` or,
preferred, the EMA copy under ``ema.module.*``; constructor kwargs under the top-level ``net_config``) and
the authors' released state dict (recognised by its keys, mapped by ``lgfn.release``).
Only classes from the fixed allow-list ``NET_CLASSES`` can be built, so a file cannot name code to run,
and unpickling itself is restricted by ``weights_only=True`` (a pickle that would call e.g.
``os.system`` is refused before anything runs).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lgfn.checkpoint import atomic_torch_save, load_checkpoint
from lgfn.models import LGFN
from lgfn.models.bicubic import Bicubic

FORMAT = "lgfn-weights"
VERSION = 1
NET_CLASSES: dict[str, type[nn.Module]] = {"LGFN": LGFN, "Bicubic": Bicubic}
DEFAULT_META = {"scale": 4, "padding": "reflection_circle", "degradation": "bi"}
_PLAIN = (str, int, float, bool, type(None))


def _plain(value: Any, where: str) -> Any:
    """Deep-copy ``value`` as plain python types (OmegaConf containers, tuples -> dict/list)."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if hasattr(value, "items"):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
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
        "net_config": _plain(dict(config), "net_config"),
        "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        "meta": _plain(full_meta, "meta"),
    }
    atomic_torch_save(obj, path)


def _strip_prefix(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def net_state(state: dict) -> dict:
    """The network's weights inside a LitLGFN state_dict (the EMA copy when there is one); {} if none."""
    return _strip_prefix(state, "ema.module.") or _strip_prefix(state, "net.")


def _from_lightning(ckpt: dict, path: Path) -> dict:
    """Turn a LitLGFN checkpoint dict into the weights-file layout (EMA weights preferred)."""
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise ValueError(f"{path}: neither an lgfn-weights file nor a Lightning checkpoint with a state_dict")
    weights_state = net_state(state)
    config = ckpt.get("net_config")
    if not isinstance(config, dict) or not config:
        raise ValueError(f"{path}: Lightning checkpoint has no top-level 'net_config' (constructor kwargs)")
    # Bicubic has no weights; anything with weights is an LGFN.
    name = "LGFN" if weights_state else "Bicubic"
    meta = dict(DEFAULT_META)
    meta["num_frames"] = int(config.get("num_frames", 7))
    meta["scale"] = int(config.get("scale", 4))
    data_hp = ckpt.get("datamodule_hyper_parameters") or {}
    for key in ("padding", "degradation"):
        if key in data_hp:
            meta[key] = data_hp[key]
    meta["source"] = "lightning-ckpt"
    meta["ema"] = any(k.startswith("ema.module.") for k in state)
    for key in ("epoch", "global_step"):
        if key in ckpt:
            meta[key] = ckpt[key]
    if "hyper_parameters" in ckpt:
        try:
            meta["hyper_parameters"] = _plain(dict(ckpt["hyper_parameters"]), "hyper_parameters")
        except TypeError:
            pass  # free-form info only; never fatal
    return {"format": FORMAT, "version": VERSION, "net_class": name, "net_config": dict(config),
            "state_dict": weights_state, "meta": meta}


def note_release(path: str | os.PathLike) -> None:
    """The one-line note printed when a file is recognised (by its keys) as the authors' release."""
    print(f"note: {path} is the authors' released LGFN state dict (BIOINSu/LGFN, no config): mapped onto "
          "lgfn.models.LGFN at the paper's sizes", file=sys.stderr, flush=True)


def _from_release(obj: dict, path: Path) -> dict:
    """The authors' released state dict -> the weights-file layout (strict mapping, paper sizes)."""
    from lgfn.release import PAPER_CONFIG, release_to_state

    state = release_to_state(obj, str(path))
    meta = {**DEFAULT_META, "num_frames": PAPER_CONFIG["num_frames"], "scale": PAPER_CONFIG["scale"],
            "source": "release", "source_file": path.name}
    return {"format": FORMAT, "version": VERSION, "net_class": "LGFN", "net_config": dict(PAPER_CONFIG),
            "state_dict": state, "meta": meta}


def _as_weights(obj: Any, path: Path) -> dict:
    from lgfn.release import is_release

    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict, found {type(obj).__name__}")
    if is_release(obj):
        note_release(path)
        return _from_release(obj, path)
    if obj.get("format") == FORMAT:
        if obj.get("version") != VERSION:
            raise ValueError(f"{path}: lgfn-weights version {obj.get('version')!r} not supported (expected {VERSION})")
        return obj
    return _from_lightning(obj, path)


def export_weights_from_checkpoint(ckpt_path: str | os.PathLike, out_path: str | os.PathLike) -> dict:
    """Lightning ``.ckpt`` -> weights-only file (atomic); returns the written meta."""
    ckpt_path = Path(ckpt_path)
    weights = _as_weights(load_checkpoint(ckpt_path), ckpt_path)
    _build(weights, ckpt_path)  # refuse to export something that cannot be loaded back
    atomic_torch_save(weights, out_path)
    return weights["meta"]


def _build(weights: dict, path: Path) -> nn.Module:
    name = weights.get("net_class")
    if name not in NET_CLASSES:
        raise ValueError(f"{path}: net_class {name!r} is not one of the allowed classes {sorted(NET_CLASSES)}")
    config = weights.get("net_config") or {}
    try:
        net = NET_CLASSES[name](**config)
    except TypeError as e:
        raise ValueError(f"{path}: net_config does not fit {name}: {e}") from None
    state = weights.get("state_dict") or {}
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if keys:
                more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
                parts.append(f"{len(keys)} {label}: {', '.join(keys[:3])}{more}")
        raise ValueError(f"{path}: weights do not fit {name}({config}): " + "; ".join(parts))
    net.load_state_dict(state)
    if not hasattr(net, "config"):
        net.config = dict(config)
    return net


def read_net_state(path: str | os.PathLike) -> tuple[dict, dict | None, str]:
    """Any file with network weights -> (the network's state dict, its net config or None, what it was).

    Reads a weights file ("weights"), a LitLGFN Lightning checkpoint ("lightning", EMA weights preferred),
    the authors' released state dict ("release", mapped strictly onto the paper-size LGFN, with a note) or
    a bare ``state_dict`` of this project's network ("state_dict").
    """
    from lgfn.release import PAPER_CONFIG, is_release, release_to_state

    path = Path(path)
    obj = load_checkpoint(path)
    if is_release(obj):
        note_release(path)
        return release_to_state(obj, str(path)), dict(PAPER_CONFIG), "release"
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint {path}: expected a dict, found {type(obj).__name__}")
    if obj.get("format") == FORMAT:
        weights = _as_weights(obj, path)
        return dict(weights.get("state_dict") or {}), dict(weights.get("net_config") or {}), "weights"
    state = obj.get("state_dict", obj)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"checkpoint {path}: expected a 'state_dict' of tensors")
    config = obj.get("net_config") if isinstance(obj.get("net_config"), dict) else None
    inner = net_state(state)  # a Lightning checkpoint, else the network's own state_dict
    return (inner, config, "lightning") if inner else (state, config, "state_dict")


def load_weights_into(net: nn.Module, path: str | os.PathLike, what: str = "checkpoint") -> str:
    """Load the weights of ``path`` (see ``read_net_state``) into ``net``, strictly; returns what the file was.

    A file that does not fit names its missing, unexpected and mis-shaped keys in one line (``what`` first)
    and the net config it was saved with.
    """
    state, config, kind = read_net_state(path)
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        parts = [f"{n} {len(k)}: {show(k)}" for n, k in (("missing", missing), ("unexpected", unexpected),
                                                         ("shape mismatch", wrong)) if k]
        if kind == "release":
            hint = "; the file is the authors' release, the paper-size LGFN (model=lgfn)"
        else:
            hint = f"; the checkpoint was saved with net config {dict(config)}" if config else ""
        raise ValueError(f"{what} {path} does not fit model.net ({'; '.join(parts)}){hint}")
    net.load_state_dict(state)
    return kind


def init_from_file(net: nn.Module, path: str | os.PathLike) -> None:
    """``model.init_from=PATH``: start training from the weights of any file ``read_net_state`` reads (strict)."""
    kind = load_weights_into(net, path, "model.init_from")
    print(f"model.init_from: {len(net.state_dict())} tensors loaded from {path} ({kind})", file=sys.stderr, flush=True)


def load_network(path: str | os.PathLike, map_location: Any = "cpu") -> tuple[nn.Module, dict]:
    """Weights file, Lightning ``.ckpt`` or the authors' release -> (network in eval mode, meta dict)."""
    path = Path(path)
    weights = _as_weights(load_checkpoint(path, map_location=map_location), path)
    net = _build(weights, path).eval()
    meta = dict(DEFAULT_META)
    meta["num_frames"] = int(getattr(net, "num_frames", 7))
    meta.update(weights.get("meta") or {})
    return net, meta


__all__ = ["FORMAT", "NET_CLASSES", "VERSION", "export_weights_from_checkpoint", "load_network",
           "init_from_file", "load_weights_into", "net_class_name", "read_net_state", "save_weights"]
