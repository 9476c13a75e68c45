"""Checkpoint I/O that never leaves a half-written file, and safe loading of checkpoints."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lgfn.common.atomic import atomic_path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to a temp file beside ``path``, fsync, then rename over ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O: atomic writes; reads with weights_only=True (no code runs on load)."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return load_checkpoint(path, map_location=map_location or "cpu")


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load a checkpoint with weights_only=True; a missing, truncated or unsafe file gives a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated / unsafe pickles
        raise ValueError(f"cannot load checkpoint {path}: {describe_load_error(e)}") from None


def describe_load_error(e: BaseException) -> str:
    """One line for a failed ``torch.load(weights_only=True)``; never the advice to load it unrestricted."""
    text = str(e)
    found = re.search(r"Unsupported global: GLOBAL (\S+)|unsupported GLOBAL (\S+)", text)
    if found:
        return (f"the file holds code or objects that are not weights ({found[1] or found[2]}) and was not "
                "loaded (weights_only=True reads tensors and plain containers only)")
    if isinstance(e, pickle.UnpicklingError):
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
        return (f"not a PyTorch weights file ({(detail[1] if detail else type(e).__name__).strip()}); it was not "
                "loaded (loading uses weights_only=True)")
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(e).__name__)
    first = re.sub(r"\x1b\[[0-9;]*m", "", first).split(". ")[0].rstrip(".")
    return f"{first} (a truncated or corrupted file? loading uses weights_only=True)"
