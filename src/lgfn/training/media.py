"""Test-time pictures for W&B and TensorBoard: per clip the strip LR | bicubic | model | GT of one frame, and
(W&B) the per-frame PSNR of each clip as a line plot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# Sample kinds, in strip order, with their labels (the model's label replaces "sr"'s).
KINDS = ("lr", "bicubic", "sr", "gt")
LABELS = {"lr": "LR (nearest)", "bicubic": "Bicubic", "sr": "LGFN", "gt": "GT"}


def strip(sample: Mapping[str, Any]) -> np.ndarray:
    """LR (nearest-upscaled) | bicubic | model | GT side by side: ``H x 4W x 3`` uint8."""
    return np.concatenate([np.asarray(sample[k], dtype=np.uint8) for k in KINDS if k in sample], axis=1)


def log_test_media(loggers: Sequence[Any], name: str, result: Mapping[str, Any], samples: Mapping[str, Mapping],
                   step: int) -> None:
    """Per clip: the strip of its sample frame (W&B image, TensorBoard image) and its per-frame PSNR (W&B plot)."""
    for logger in loggers:
        kind = type(logger).__name__
        if kind == "WandbLogger":
            for clip, sample in samples.items():
                logger.log_image(key=f"{name}/strip/{clip}", images=[strip(sample)], step=step,
                                 caption=[f"{clip}, frame {sample['frame']}: LR (nearest) | bicubic | LGFN | GT"])
            _log_wandb_psnr_plots(logger, name, result)
        elif kind == "TensorBoardLogger":
            for clip, sample in samples.items():
                logger.experiment.add_image(f"{name}/strip/{clip}", strip(sample), step, dataformats="HWC")


def _log_wandb_psnr_plots(logger: Any, name: str, result: Mapping[str, Any]) -> None:
    import wandb

    charts = {}
    for clip, per in (result.get("per_frame") or {}).items():
        if len(per["frame"]) < 2:
            continue  # a single scored frame (Vimeo-90K-T) has no curve
        charts[f"{name}/psnr_per_frame/{clip}"] = wandb.plot.line_series(
            xs=list(per["frame"]), ys=[list(per["psnr"]), list(per["psnr_bicubic"])], keys=["LGFN", "bicubic"],
            title=f"{name} / {clip}: PSNR-Y per frame (dB)", xname="frame")
    if charts:
        logger.experiment.log(charts)
