"""The metric protocol: PSNR/SSIM on the BT.601 Y channel of 8-bit images, and how they are averaged.

Protocol (LGFN_REFERENCE.md, "Evaluation protocol" and "Conventions"):
- inputs ``B x 3 x H x W`` RGB in [0, 1]; SR *and* GT are clamped and rounded to 8 bits first;
- Y = 16 + 65.481 R + 128.553 G + 24.966 B (R, G, B in [0, 1]; Y in 16..235, not rounded), which is
  the release's ``16 + (65.738 R + 129.057 G + 25.064 B) / 256`` on 0-255 input;
- optional ``crop_border`` pixels removed from each side (0 = the release; 8 = TDAN's papers);
- float64 throughout; PSNR with peak 255; SSIM with an 11x11 Gaussian window (sigma 1.5),
  c1 = (0.01 * 255)^2, c2 = (0.03 * 255)^2, 'valid' filtering (no padding), mean of the SSIM map,
  as MATLAB's ``ssim_index`` and BasicSR's ``calculate_ssim``.
- Identical images: PSNR is capped at ``PSNR_CAP_DB`` (MSE floored at 1e-12, about 168.1 dB)
  instead of ``inf`` so averages and ``metrics.json`` stay finite. The smallest non-zero 8-bit Y
  error (one blue step, 0.098, in one pixel of a 100-megapixel frame) gives about 148 dB, so the
  cap never touches a real, non-identical pair.
- Averages (``average_per_clip``): ``"clip"`` = mean over frames in each clip, then mean over clips
  (BasicSR; Vid4 and Vimeo-90K-T tables); ``"frame"`` = mean over all frames of all clips (mmagic;
  SPMCS "all").
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F

_MSE_FLOOR = 1e-12
PSNR_CAP_DB = 10.0 * math.log10(255.0**2 / _MSE_FLOOR)
AVERAGE_MODES = ("clip", "frame")


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma: ``... x 3 x H x W`` RGB in [0, 1] -> ``... x H x W`` Y in the 0-255 range."""
    if x.dim() < 3 or x.shape[-3] != 3:
        raise ValueError(f"rgb_to_y: expected ... x 3 x H x W, got shape {tuple(x.shape)}")
    r, g, b = x.unbind(dim=-3)
    return 16.0 + 65.481 * r + 128.553 * g + 24.966 * b


def _prepare_y(sr: torch.Tensor, gt: torch.Tensor, crop_border: int) -> tuple[torch.Tensor, torch.Tensor]:
    if sr.shape != gt.shape or sr.dim() != 4 or sr.shape[1] != 3:
        raise ValueError(
            f"metrics: sr and gt must both be B x 3 x H x W, got {tuple(sr.shape)} and {tuple(gt.shape)}"
        )
    if crop_border < 0:
        raise ValueError(f"metrics: crop_border must be >= 0, got {crop_border}")

    def to_y(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().to(torch.float64).clamp(0, 1).mul(255).round().div(255)
        y = rgb_to_y(t)
        if crop_border:
            y = y[..., crop_border:-crop_border, crop_border:-crop_border]
        return y

    ys, yg = to_y(sr), to_y(gt)
    if ys.shape[-1] < 1 or ys.shape[-2] < 1:
        raise ValueError(
            f"metrics: crop_border={crop_border} leaves nothing of a {tuple(sr.shape[-2:])} image"
        )
    return ys, yg


def psnr_y(sr: torch.Tensor, gt: torch.Tensor, crop_border: int = 0) -> torch.Tensor:
    """Y-channel PSNR (dB, float64) per image: ``B x 3 x H x W`` pair in [0, 1] -> ``B``."""
    ys, yg = _prepare_y(sr, gt, crop_border)
    mse = (ys - yg).pow(2).mean(dim=(-2, -1)).clamp_min(_MSE_FLOOR)
    return 10.0 * torch.log10(255.0**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5, *, device=None) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).view(1, 1, size, size)


def ssim_y(sr: torch.Tensor, gt: torch.Tensor, crop_border: int = 0) -> torch.Tensor:
    """Y-channel SSIM (float64) per image: ``B x 3 x H x W`` pair in [0, 1] -> ``B``."""
    ys, yg = _prepare_y(sr, gt, crop_border)
    if min(ys.shape[-2:]) < 11:
        raise ValueError(f"ssim_y: need H, W >= 11 after crop_border, got {tuple(ys.shape[-2:])}")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    win = _gaussian_window(device=ys.device)
    x, y = ys.unsqueeze(1), yg.unsqueeze(1)
    mu_x, mu_y = F.conv2d(x, win), F.conv2d(y, win)
    sxx = F.conv2d(x * x, win) - mu_x**2
    syy = F.conv2d(y * y, win) - mu_y**2
    sxy = F.conv2d(x * y, win) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return (num / den).mean(dim=(-3, -2, -1))


def average_per_clip(
    values: Mapping[str, Mapping[int, float]], mode: str = "clip"
) -> tuple[dict[str, float], float]:
    """``{clip: {frame: value}}`` -> (``{clip: mean over its frames}``, dataset average by ``mode``)."""
    if mode not in AVERAGE_MODES:
        raise ValueError(f"data.average must be one of {list(AVERAGE_MODES)}, got {mode!r}")
    per_clip: dict[str, float] = {}
    all_frames: list[float] = []
    for clip, frames in values.items():
        vals = [float(v) for v in frames.values()]
        if not vals:
            raise ValueError(f"average_per_clip: clip {clip!r} has no frame values")
        per_clip[clip] = math.fsum(vals) / len(vals)
        all_frames.extend(vals)
    if not per_clip:
        return {}, float("nan")
    if mode == "clip":
        return per_clip, math.fsum(per_clip.values()) / len(per_clip)
    return per_clip, math.fsum(all_frames) / len(all_frames)
