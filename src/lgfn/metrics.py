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


# ---------------------------------------------------------------------------- temporal consistency (tOF)
# tOF, as TecoGAN (Chu et al., "Learning temporal coherence via self-supervision for GAN-based video
# generation", 2020) defines and computes it: for consecutive frames t-1, t of a clip, the mean over pixels of
# |flow(output_t-1 -> output_t) - flow(GT_t-1 -> GT_t)| (the Euclidean norm of the difference of the two flow
# vectors, in pixels), flow = OpenCV's Farneback on the 8-bit grey frames with TecoGAN's parameters, the flow
# fields centre-cropped as TecoGAN's ``crop_8x8`` does (to a multiple of 32, at least 16 px less per axis;
# no crop where that leaves nothing). Lower is better; 0 = the output moves exactly as the ground truth.
FARNEBACK_ARGS = (0.5, 3, 15, 3, 5, 1.2, 0)  # pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, flags
TOF_DEFINITION = ("px, lower is better: mean over pixels of |flow(SR_t-1 -> SR_t) - flow(GT_t-1 -> GT_t)| for "
                  "consecutive scored frames (TecoGAN's tOF: OpenCV Farneback on 8-bit grey, centre crop), "
                  "per clip the mean over its frame pairs")


def grey_u8(img: torch.Tensor):
    """``3 x H x W`` RGB in [0, 1] -> ``H x W`` uint8 grey (OpenCV's RGB2GRAY of the 8-bit rounded image)."""
    import cv2
    import numpy as np

    rgb = img.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def _tof_crop(size: int) -> slice:
    kept = size // 32 * 32
    while kept > size - 16:
        kept -= 32
    if kept <= 0:  # frames under 48 px: the whole field
        return slice(0, size)
    start = (size - kept) // 2
    return slice(start, start + kept)


def farneback_flow(prev, nxt):
    """Dense flow ``H x W x 2`` (px) from grey uint8 ``prev`` to ``nxt``, with TecoGAN's parameters."""
    import cv2

    return cv2.calcOpticalFlowFarneback(prev, nxt, None, *FARNEBACK_ARGS)


def _tof_of_flows(out_flow, gt_flow) -> float:
    import numpy as np

    diff = out_flow.astype(np.float64) - gt_flow
    diff = diff[_tof_crop(diff.shape[0]), _tof_crop(diff.shape[1])]
    return float(np.sqrt((diff * diff).sum(-1)).mean())


def tof(prev_out, out, prev_gt, gt) -> float:
    """tOF of one frame pair: grey uint8 ``H x W`` frames of the output and the ground truth (see above)."""
    if not prev_out.shape == out.shape == prev_gt.shape == gt.shape:
        raise ValueError(f"tof: frames differ in size: {prev_out.shape}, {out.shape}, {prev_gt.shape}, {gt.shape}")
    return _tof_of_flows(farneback_flow(prev_out, out), farneback_flow(prev_gt, gt))


class TofPairs:
    """tOF of every pair of consecutive frames (t-1, t) of a clip, from frames handed over in any order.

    ``add(clip, frame, outputs, gt)`` takes grey frames (``outputs``: one per method, e.g. model and bicubic)
    and returns the pairs it completes as ``(clip, t, [tof per method])``. With ``expected`` (``{clip: set of
    frames}``, the frames that will be scored) a frame is kept only while a neighbour is still to come, and
    frames without a scored neighbour are not kept at all; without it only the previous frame is kept (a
    sequential pass). ``leftovers()`` are the frames still kept (their neighbours went to another process).
    """

    def __init__(self, expected: Mapping[str, set[int]] | None = None) -> None:
        self.expected = expected
        self.frames: dict[tuple[str, int], tuple] = {}
        self.done: set[tuple[str, int]] = set()  # pairs (clip, t) for t-1 -> t
        self.seen: set[tuple[str, int]] = set()

    def _expects(self, clip: str, frame: int) -> bool:
        return self.expected is None or frame in self.expected.get(clip, ())

    def add(self, clip: str, frame: int, outputs: list, gt) -> list[tuple[str, int, list[float]]]:
        key = (clip, frame)
        if key in self.seen:
            return []  # a repeat (distributed samplers pad with repeats)
        self.seen.add(key)
        self.frames[key] = (list(outputs), gt)
        pairs = []
        for t in (frame, frame + 1):
            a, b = self.frames.get((clip, t - 1)), self.frames.get((clip, t))
            if a is not None and b is not None and (clip, t) not in self.done:
                self.done.add((clip, t))
                pairs.append((clip, t, self._pair(a, b)))
        self._evict(clip)
        return pairs

    @staticmethod
    def _pair(a: tuple, b: tuple) -> list[float]:
        """tOF per method of frames ``a`` -> ``b``; the GT flow once, a method given the same arrays as an
        earlier one (bicubic as the model) reuses its value."""
        if not a[1].shape == b[1].shape == a[0][0].shape == b[0][0].shape:
            raise ValueError(f"tof: frames differ in size: {a[1].shape}, {b[1].shape}, {a[0][0].shape}")
        gt_flow = farneback_flow(a[1], b[1])
        values: list[float] = []
        for j, (pa, pb) in enumerate(zip(a[0], b[0], strict=True)):
            same = next((m for m in range(j) if a[0][m] is pa and b[0][m] is pb), None)
            values.append(values[same] if same is not None else _tof_of_flows(farneback_flow(pa, pb), gt_flow))
        return values

    def _needed(self, clip: str, frame: int) -> bool:
        if self.expected is None:
            return False
        before = self._expects(clip, frame - 1) and (clip, frame) not in self.done
        after = self._expects(clip, frame + 1) and (clip, frame + 1) not in self.done
        return before or after

    def _evict(self, clip: str) -> None:
        if self.expected is None:  # sequential: keep the frame just added only
            last = next(reversed(self.frames))
            self.frames = {last: self.frames[last]}
            return
        for key in [k for k in self.frames if k[0] == clip and not self._needed(*k)]:
            del self.frames[key]

    def leftovers(self) -> list[tuple[str, int, list, object]]:
        return [(clip, frame, outs, gt) for (clip, frame), (outs, gt) in self.frames.items()]
