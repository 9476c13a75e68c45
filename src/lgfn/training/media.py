"""Pictures for W&B and TensorBoard, one layout everywhere: LR (nearest-upscaled) | bicubic | model | GT side by
side, each panel with its label burnt into a banner above it, and the PSNR of the bicubic and model panels in
theirs. At test time one strip per clip (its sample frame) and (W&B) the per-frame PSNR of each clip as a line
plot; during validation (``LitLGFN``) the ``val/sample_*`` crops."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# Sample kinds, in strip order, with their labels (the model's label replaces "sr"'s).
KINDS = ("lr", "bicubic", "sr", "gt")
LABELS = {"lr": "LR (nearest)", "bicubic": "Bicubic", "sr": "LGFN", "gt": "GT"}
# The banner above each panel: two lines (the label; the PSNR), white on dark grey.
BANNER = 28
BANNER_COLOUR = (32, 32, 32)
TEXT_COLOUR = (255, 255, 255)
FONT_SIZES = (11, 10, 9, 8, 7, 6)


@functools.lru_cache(maxsize=16)
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def _text_width(font, text: str) -> int:
    left, _, right, _ = font.getbbox(text) if text else (0, 0, 0, 0)
    return right - left


def panel_texts(kind: str, psnr: float | None = None, model_label: str | None = None) -> tuple[str, str]:
    """The banner's two lines for a panel of ``kind``: its label, and its PSNR-Y (bicubic, model) or ''."""
    label = (model_label or LABELS["sr"]) if kind == "sr" else LABELS.get(kind, kind)
    value = f"PSNR-Y {psnr:.2f} dB" if psnr is not None and math.isfinite(psnr) else ""
    return label, value


def banner(lines: Sequence[str], width: int) -> np.ndarray:
    """A ``BANNER x width x 3`` uint8 banner with ``lines`` (at most two) drawn in the largest size that fits;
    text wider than the panel at the smallest size is cut with an ellipsis."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, BANNER), BANNER_COLOUR)
    draw = ImageDraw.Draw(img)
    room = max(1, width - 4)
    font = _font(FONT_SIZES[-1])
    for size in FONT_SIZES:
        font = _font(size)
        if all(_text_width(font, line) <= room for line in lines):
            break
    line_h = BANNER // 2
    for i, line in enumerate(list(lines)[:2]):
        text = line
        while text and _text_width(font, text) > room:
            text = text[:-2] + "…" if len(text) > 1 else ""
        draw.text((2, 1 + i * line_h), text, fill=TEXT_COLOUR, font=font)
    return np.asarray(img, dtype=np.uint8)


def labelled_strip(panels: Mapping[str, Any], psnr: Mapping[str, float | None] | None = None,
                   model_label: str | None = None) -> np.ndarray:
    """The panels present among ``KINDS`` (H x W x 3 uint8 each, all one size), in that order, side by side, each
    under its banner: ``(BANNER + H) x (n W) x 3`` uint8. Panel i is ``[BANNER:, i W:(i + 1) W]``, unchanged."""
    psnr = psnr or {}
    columns = []
    for kind in KINDS:
        if kind not in panels:
            continue
        image = np.asarray(panels[kind], dtype=np.uint8)
        top = banner(panel_texts(kind, psnr.get(kind), model_label), image.shape[1])
        columns.append(np.concatenate([top, image], axis=0))
    return np.concatenate(columns, axis=1)


def caption(psnr: Mapping[str, float | None] | None = None, model_label: str | None = None) -> str:
    """The strip's order in words, with the PSNRs: ``LR (nearest) | Bicubic 24.01 dB | LGFN 25.30 dB | GT``."""
    parts = []
    for kind in KINDS:
        label, value = panel_texts(kind, (psnr or {}).get(kind), model_label)
        parts.append(f"{label} {value.removeprefix('PSNR-Y ')}".strip())
    return " | ".join(parts)


def frame_psnr(result: Mapping[str, Any], clip: str, frame: int) -> dict[str, float | None]:
    """``{"bicubic": dB, "sr": dB}`` of one scored frame, from a test result's ``per_frame`` (None where absent)."""
    per = (result.get("per_frame") or {}).get(clip) or {}
    frames = list(per.get("frame") or [])
    if frame not in frames:
        return {"bicubic": None, "sr": None}
    i = frames.index(frame)
    return {"bicubic": float(per["psnr_bicubic"][i]), "sr": float(per["psnr"][i])}


def strip(sample: Mapping[str, Any], psnr: Mapping[str, float | None] | None = None,
          model_label: str | None = None) -> np.ndarray:
    """A test sample (``LitLGFN.test_samples``) as its labelled strip (``labelled_strip``)."""
    return labelled_strip({k: sample[k] for k in KINDS if k in sample}, psnr, model_label)


def log_test_media(loggers: Sequence[Any], name: str, result: Mapping[str, Any], samples: Mapping[str, Mapping],
                   step: int) -> None:
    """Per clip: the strip of its sample frame (W&B image, TensorBoard image) and its per-frame PSNR (W&B plot)."""
    for logger in loggers:
        kind = type(logger).__name__
        if kind == "WandbLogger":
            for clip, sample in samples.items():
                psnr = frame_psnr(result, clip, sample["frame"])
                logger.log_image(key=f"{name}/strip/{clip}", images=[strip(sample, psnr)], step=step,
                                 caption=[f"{clip}, frame {sample['frame']}: {caption(psnr)}"])
            _log_wandb_psnr_plots(logger, name, result)
        elif kind == "TensorBoardLogger":
            for clip, sample in samples.items():
                psnr = frame_psnr(result, clip, sample["frame"])
                logger.experiment.add_image(f"{name}/strip/{clip}", strip(sample, psnr), step, dataformats="HWC")


def log_sample(loggers: Sequence[Any], key: str, panels: Mapping[str, Any], psnr: Mapping[str, float | None],
               step: int) -> None:
    """A validation sample (``val/sample_*``): the same labelled strip as at test time."""
    image = labelled_strip(panels, psnr)
    for logger in loggers:
        kind = type(logger).__name__
        if kind == "WandbLogger":
            logger.log_image(key=key, images=[image], caption=[caption(psnr)], step=step)
        elif kind == "TensorBoardLogger":
            logger.experiment.add_image(key, image, step, dataformats="HWC")


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
