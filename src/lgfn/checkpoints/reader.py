"""One reader for every file with network weights, and one strict key check.

``read_net_file(path)`` loads a file once (``weights_only=True``) and says what it is:

- ``weights``: this project's weights-only file (``lgfn.checkpoints.weights_file``);
- ``lightning``: a Lightning checkpoint written by ``LitLGFN`` (the EMA copy under ``ema.module.*`` preferred,
  else ``net.*``; constructor kwargs under the top-level ``net_config``), resumable by ``train.py ckpt_path=``;
- ``release``: the authors' released state dict (recognised by its keys, mapped strictly onto the paper-size
  LGFN by ``lgfn.checkpoints.authors_release``);
- ``state_dict``: a bare ``state_dict`` of one of this project's networks.

Every entry point (train, eval, lgfn-upscale, lgfn-export, lgfn-convert) goes through it, so a file one
accepts, all accept; ``check_fits`` is the strict key check, and its error is one line naming the file, what
it is (with the sizes it was saved with) and the override that would use it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lgfn.checkpoints.authors_release import PAPER_CONFIG, is_release, release_to_state
from lgfn.checkpoints.lightning_io import atomic_torch_save, load_checkpoint
from lgfn.checkpoints.weights_file import DEFAULT_META, FORMAT, NET_CLASSES, VERSION, plain

KINDS = {
    "weights": "an lgfn weights-only file",
    "lightning": "a Lightning checkpoint",
    "release": "the authors' released LGFN state dict",
    "state_dict": "a bare state_dict",
}


@dataclass
class NetFile:
    """A file's network weights and what the file is (``kind``: a key of ``KINDS``)."""

    path: Path
    kind: str
    state: dict[str, torch.Tensor]
    net_config: dict | None = None
    net_class: str | None = None
    meta: dict = field(default_factory=dict)
    resumable: bool = False  # a whole Lightning checkpoint (optimizer, loops): train.py ckpt_path= continues it

    def describe(self) -> str:
        """``ckpt.pt (a Lightning checkpoint of LGFN(num_feat=32, use_lfm=False, ...))`` as one phrase."""
        sizes = ""
        if self.kind == "release":
            sizes = " (the paper-size LGFN)"
        elif self.net_config:
            shown = ", ".join(f"{k}={v}" for k, v in self.net_config.items())
            sizes = f" of {self.net_class or 'LGFN'}({shown})"
        return f"{self.path} ({KINDS[self.kind]}{sizes})"

    def as_weights(self) -> dict:
        """The weights-only file's layout (``lgfn.checkpoints.weights_file``) of this file."""
        return {"format": FORMAT, "version": VERSION, "net_class": self.net_class or "LGFN",
                "net_config": dict(self.net_config or {}), "state_dict": self.state, "meta": self.meta}


def _strip_prefix(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def net_state(state: dict) -> dict:
    """The network's weights inside a LitLGFN state_dict (the EMA copy when there is one); {} if none."""
    return _strip_prefix(state, "ema.module.") or _strip_prefix(state, "net.")


def note_release(path: str | os.PathLike) -> None:
    """The one-line note printed when a file is recognised (by its keys) as the authors' release."""
    print(f"note: {path} is the authors' released LGFN state dict (BIOINSu/LGFN, no config): mapped onto "
          "lgfn.models.LGFN at the paper's sizes", file=sys.stderr, flush=True)


def _lightning_meta(ckpt: dict, state: dict, config: dict) -> dict:
    meta = {**DEFAULT_META, "num_frames": int(config.get("num_frames", 7)), "scale": int(config.get("scale", 4))}
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
            meta["hyper_parameters"] = plain(dict(ckpt["hyper_parameters"]), "hyper_parameters")
        except TypeError:
            pass  # free-form info only; never fatal
    return meta


def read_net_file(path: str | os.PathLike, map_location: Any = "cpu") -> NetFile:
    """Load ``path`` once and say what it is; a file with no network weights gets a one-line error."""
    path = Path(path)
    obj = load_checkpoint(path, map_location=map_location)
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint {path}: expected a dict, found {type(obj).__name__}")
    if is_release(obj):
        note_release(path)
        meta = {**DEFAULT_META, "num_frames": PAPER_CONFIG["num_frames"], "scale": PAPER_CONFIG["scale"],
                "source": "release", "source_file": path.name}
        return NetFile(path, "release", release_to_state(obj, str(path)), dict(PAPER_CONFIG), "LGFN", meta)
    if obj.get("format") == FORMAT:
        if obj.get("version") != VERSION:
            raise ValueError(f"{path}: lgfn-weights version {obj.get('version')!r} not supported (expected {VERSION})")
        return NetFile(path, "weights", dict(obj.get("state_dict") or {}), dict(obj.get("net_config") or {}),
                       obj.get("net_class"), dict(obj.get("meta") or {}))
    state = obj.get("state_dict", obj)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"checkpoint {path}: neither an lgfn-weights file nor a checkpoint with a 'state_dict' "
                         "of tensors")
    config = dict(obj["net_config"]) if isinstance(obj.get("net_config"), dict) else None
    inner = net_state(state)
    if inner or "pytorch-lightning_version" in obj:
        name = obj.get("net_class") or ("LGFN" if inner else "Bicubic")  # Bicubic has no weights
        return NetFile(path, "lightning", inner, config, name, _lightning_meta(obj, state, config or {}),
                       resumable="pytorch-lightning_version" in obj)
    return NetFile(path, "state_dict", state, config, None, {**DEFAULT_META})


def _show(keys: list[str], limit: int = 3) -> str:
    return ", ".join(keys[:limit]) + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def mismatch(net: nn.Module, state: dict) -> str | None:
    """The strict key check: None when ``state`` fits ``net`` exactly, else what is missing / extra / mis-shaped."""
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    parts = [f"{n} {len(k)}: {_show(k)}" for n, k in (("missing", missing), ("unexpected", unexpected),
                                                     ("shape mismatch", wrong)) if k]
    return "; ".join(parts) or None


def override_hint(nf: NetFile, net: nn.Module | None = None) -> str:
    """The override that would use ``nf``: the sizes it was saved with, as ``model.net.KEY=VALUE``."""
    if nf.kind == "release":
        return "model=lgfn (the paper's sizes)"
    if not nf.net_config:
        return "the model.net sizes it was trained with"
    own = dict(getattr(net, "config", None) or {})
    differ = [f"model.net.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in nf.net_config.items()
              if k in own and own.get(k) != v] if own else []
    return " ".join(differ) if differ else "model.net set to the sizes above"


def check_fits(net: nn.Module, nf: NetFile, what: str = "checkpoint") -> None:
    """Strict: raise one line (``what``, the file and what it is, what differs, the override) unless it fits."""
    problem = mismatch(net, nf.state)
    if problem:
        raise ValueError(f"{what}={nf.describe()} does not fit model.net ({problem}); "
                         f"use {override_hint(nf, net)}")


def load_weights_into(net: nn.Module, path: str | os.PathLike | NetFile, what: str = "checkpoint") -> str:
    """Load a file's network weights into ``net``, strictly; returns what the file was (``NetFile.kind``)."""
    nf = path if isinstance(path, NetFile) else read_net_file(path)
    check_fits(net, nf, what)
    net.load_state_dict(nf.state)
    return nf.kind


def init_from_file(net: nn.Module, path: str | os.PathLike) -> None:
    """``model.init_from=PATH``: start training from the weights of any file ``read_net_file`` reads (strict)."""
    kind = load_weights_into(net, path, "model.init_from")
    print(f"model.init_from: {len(net.state_dict())} tensors loaded from {path} ({kind})", file=sys.stderr, flush=True)


def build_net(nf: NetFile) -> nn.Module:
    """The allow-listed network ``nf`` was saved from, with its weights (strict)."""
    name = nf.net_class or "LGFN"
    if name not in NET_CLASSES:
        raise ValueError(f"{nf.path}: net_class {name!r} is not one of the allowed classes {sorted(NET_CLASSES)}")
    if nf.net_config is None:
        raise ValueError(f"{nf.describe()} holds no net config: load it with model.init_from= or eval.py "
                         "ckpt_path= and the model.net sizes it was trained with")
    try:
        net = NET_CLASSES[name](**nf.net_config)
    except TypeError as e:
        raise ValueError(f"{nf.path}: net_config does not fit {name}: {e}") from None
    problem = mismatch(net, nf.state)
    if problem:
        raise ValueError(f"{nf.describe()}: weights do not fit {name}({nf.net_config}): {problem}")
    net.load_state_dict(nf.state)
    if not hasattr(net, "config"):
        net.config = dict(nf.net_config)
    return net


def load_network(path: str | os.PathLike, map_location: Any = "cpu") -> tuple[nn.Module, dict]:
    """Any weights file -> (network in eval mode, meta dict)."""
    nf = read_net_file(path, map_location=map_location)
    net = build_net(nf).eval()
    meta = {**DEFAULT_META, "num_frames": int(getattr(net, "num_frames", 7)), **nf.meta}
    return net, meta


def export_weights_from_checkpoint(ckpt_path: str | os.PathLike, out_path: str | os.PathLike) -> dict:
    """Any weights file (a Lightning ``.ckpt`` above all) -> the weights-only file (atomic); returns its meta."""
    nf = read_net_file(ckpt_path)
    build_net(nf)  # refuse to export something that cannot be loaded back
    atomic_torch_save(nf.as_weights(), out_path)
    return nf.meta
