"""The degradation fact: how LR frames are made from HR frames (BI and BD, 4x by default).

All functions take float tensors ``... x C x H x W`` (any leading dims, any device/dtype) and return
the same layout; values are not clamped.

BI: ``imresize(x, 1/scale)``, a re-implementation of MATLAB's ``imresize(img, s, 'bicubic')``:
cubic kernel with a = -0.5, antialiasing when downscaling (kernel widened by 1/s, weights scaled by
s), MATLAB's coordinate mapping ``u = x/s + 0.5 (1 - 1/s)`` (1-based) and symmetric border handling
(indices mirrored with the edge pixel repeated), rows normalised to sum 1. It is applied as two
precomputed weight matrices (``out x in`` per axis) with ``einsum``, so it is fast on any device and
exports as plain matmuls. Measured against PIL's ``Image.resize(..., BICUBIC)`` (also antialiased,
a = -0.5, same coordinate mapping, but a different border treatment and uint8 clamping/rounding after
each 1-D pass) on skimage's astronaut photo cropped to 256x448 and downscaled 4x, both rounded to
8 bits, in 0-255 units: max |diff| 16 (on the outermost two LR rows/columns: borders), interior max 3
and mean 0.10 (PIL's clamped intermediate pass); mimicking PIL's per-pass clamp+round brings the
interior to max 1. See tests/protocol/test_degradation.py.

BD (DUF / BasicSR ``duf_downsample``): 13x13 Gaussian blur with sigma 0.4 * scale (1.6 for 4x),
reflect padding (edge not repeated, ``torch.nn.functional.pad(mode="reflect")``), then every
``scale``-th pixel starting at 0 (``x[..., ::4, ::4]``). mmagic's BD data come from a MATLAB script
with a 12x12 ``fspecial('gaussian', 12, 1.6)`` kernel (even size: centred half a pixel off),
``imfilter(..., 'replicate')`` borders and sampling phase ``scale/2 - 1`` (0-based rows/cols 1, 5,
9, ... for 4x); models trained on one BD do not transfer exactly to the other.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

DEGRADATIONS = ("bi", "bd")


def _cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = x.abs()
    ax2, ax3 = ax**2, ax**3
    inner = 1.5 * ax3 - 2.5 * ax2 + 1.0
    outer = -0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0
    return torch.where(ax <= 1, inner, torch.where(ax <= 2, outer, torch.zeros_like(ax)))


@lru_cache(maxsize=64)
def _weight_matrix(in_len: int, scale: float) -> torch.Tensor:
    """MATLAB ``contributions()`` as a dense ``out_len x in_len`` float64 matrix (CPU)."""
    out_len = math.ceil(in_len * scale - 1e-9)  # 30 * (1/3) must give 10, not 11
    antialias = scale < 1
    width = 4.0 / scale if antialias else 4.0
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - width / 2)
    taps = math.ceil(width) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
    dist = u[:, None] - idx
    w = scale * _cubic(scale * dist) if antialias else _cubic(dist)
    w = w / w.sum(dim=1, keepdim=True)
    # MATLAB's symmetric border: 1..n, n..1 repeated (edge pixel duplicated).
    idx0 = (idx - 1).long() % (2 * in_len)
    idx0 = torch.where(idx0 >= in_len, 2 * in_len - 1 - idx0, idx0)
    mat = torch.zeros(out_len, in_len, dtype=torch.float64)
    mat.scatter_add_(1, idx0, w)
    return mat


def resize_matrix(in_len: int, scale: float, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """The 1-D MATLAB-bicubic resampling matrix ``ceil(in_len*scale) x in_len``."""
    if in_len < 1 or scale <= 0:
        raise ValueError(f"resize_matrix: need in_len >= 1 and scale > 0, got {in_len}, {scale}")
    return _weight_matrix(int(in_len), float(scale)).to(dtype=dtype, device=device)


def imresize(x: torch.Tensor, scale: float) -> torch.Tensor:
    """MATLAB-like bicubic resize: ``... x C x H x W -> ... x C x ceil(H*s) x ceil(W*s)``."""
    if x.dim() < 2:
        raise ValueError(f"imresize: expected ... x H x W, got shape {tuple(x.shape)}")
    if scale <= 0:
        raise ValueError(f"imresize: scale must be > 0, got {scale}")
    dtype = x.dtype if x.is_floating_point() else torch.float32
    x = x.to(dtype)
    h, w = x.shape[-2:]
    mh = resize_matrix(h, scale, dtype=dtype, device=x.device)
    mw = resize_matrix(w, scale, dtype=dtype, device=x.device)
    return torch.einsum("ih,...hw,jw->...ij", mh, x, mw)


@lru_cache(maxsize=8)
def _gaussian_1d(size: int, sigma: float) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


@lru_cache(maxsize=64)
def _bd_matrix(in_len: int, scale: int, kernel_size: int, sigma: float) -> torch.Tensor:
    """Blur with reflect padding, then keep every ``scale``-th sample: ``ceil(in/scale) x in`` float64."""
    pad = kernel_size // 2
    g = _gaussian_1d(kernel_size, sigma)
    centres = torch.arange(0, in_len, scale)
    idx = centres[:, None] + torch.arange(-pad, pad + 1)[None, :]
    idx = torch.where(idx < 0, -idx, idx)  # reflect: edge sample not repeated
    idx = torch.where(idx > in_len - 1, 2 * (in_len - 1) - idx, idx)
    mat = torch.zeros(len(centres), in_len, dtype=torch.float64)
    mat.scatter_add_(1, idx, g.expand(len(centres), -1).contiguous())
    return mat


def bd_degrade(
    x: torch.Tensor, scale: int = 4, kernel_size: int = 13, sigma: float | None = None
) -> torch.Tensor:
    """DUF/BasicSR BD: Gaussian blur (reflect) then ``[..., ::scale, ::scale]``; ``... x C x H x W``."""
    sigma = 0.4 * scale if sigma is None else float(sigma)
    h, w = x.shape[-2:]
    if min(h, w) <= kernel_size // 2:
        raise ValueError(f"bd_degrade: frame {h}x{w} too small for a {kernel_size}x{kernel_size} kernel")
    dtype = x.dtype if x.is_floating_point() else torch.float32
    # The blur is separable and the decimation keeps whole rows/columns, so both fold into one
    # matrix per axis: same einsum as imresize (several times faster than conv2d on CPU).
    mh = _bd_matrix(h, scale, kernel_size, sigma).to(dtype=dtype, device=x.device)
    mw = _bd_matrix(w, scale, kernel_size, sigma).to(dtype=dtype, device=x.device)
    return torch.einsum("ih,...hw,jw->...ij", mh, x.to(dtype), mw)


def crop_to_multiple(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop H and W (bottom/right) to multiples of ``scale``, as the field does before degrading."""
    h, w = x.shape[-2:]
    return x[..., : h - h % scale, : w - w % scale]


def degrade(hr: torch.Tensor, kind: str = "bi", scale: int = 4) -> torch.Tensor:
    """HR ``... x C x H x W`` -> LR ``... x C x H//s x W//s``; H, W are first cropped to multiples of s."""
    if kind not in DEGRADATIONS:
        raise ValueError(f"data.degradation must be one of {list(DEGRADATIONS)}, got {kind!r}")
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"data.scale must be a positive integer, got {scale!r}")
    hr = crop_to_multiple(hr, scale)
    if kind == "bi":
        return imresize(hr, 1.0 / scale)
    return bd_degrade(hr, scale=scale)


@lru_cache(maxsize=16)
def crop_margin(kind: str = "bi", scale: int = 4) -> int:
    """LR pixels of context per side that ``degrade_crop`` degrades beyond an LR crop (2 for 4x BI and BD).

    Read off an interior row of the degradation matrix itself: the farthest HR pixel with a non-zero
    weight, measured from the LR pixel's own ``scale`` x ``scale`` HR block, rounded up to whole LR
    pixels (BI 4x: the antialiased cubic reaches 6 HR px past the block; BD: the 13-tap Gaussian 6).
    """
    if kind not in DEGRADATIONS:
        raise ValueError(f"data.degradation must be one of {list(DEGRADATIONS)}, got {kind!r}")
    n = 16 * scale
    mat = _weight_matrix(n, 1.0 / scale) if kind == "bi" else _bd_matrix(n, scale, 13, 0.4 * scale)
    i = mat.shape[0] // 2
    taps = mat[i].nonzero().flatten()
    reach = max(scale * i - int(taps.min()), int(taps.max()) - (scale * i + scale - 1), 0)
    return math.ceil(reach / scale)


def degrade_crop(
    hr: torch.Tensor, kind: str, scale: int, top: int, left: int, height: int, width: int
) -> torch.Tensor:
    """``degrade(hr, kind, scale)[..., top:top+height, left:left+width]`` from the HR crop plus its margin.

    Only the HR pixels of the LR crop widened by ``crop_margin`` LR pixels per side (clamped at the
    frame) are degraded. Every kept LR pixel then has all its non-zero taps inside that region, with
    the same weights (the matrices' interior rows are shifted copies, computed exactly; the frame's own
    border rows are rebuilt identically when the region touches the border), so the result differs
    from the whole-frame one only by float32 summation order inside the matmuls: at most a few ulps
    (tests/protocol/test_degradation.py measures <= 1.2e-7), which changes an 8-bit ``quantize_8bit`` value
    only when a pixel lies within that distance of a rounding boundary (0 of 2.4 M pixels measured).
    """
    hr = crop_to_multiple(hr, scale)
    h, w = hr.shape[-2] // scale, hr.shape[-1] // scale
    if not (0 <= top and top + height <= h and 0 <= left and left + width <= w and height > 0 and width > 0):
        raise ValueError(
            f"degrade_crop: LR crop {height}x{width} at ({top}, {left}) is outside the {h}x{w} LR frame"
        )
    m = crop_margin(kind, scale)
    t0, t1 = max(0, top - m), min(h, top + height + m)
    l0, l1 = max(0, left - m), min(w, left + width + m)
    lr = degrade(hr[..., scale * t0 : scale * t1, scale * l0 : scale * l1], kind, scale)
    return lr[..., top - t0 : top - t0 + height, left - l0 : left - l0 + width]


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to the 8-bit grid, as if saved to and read back from a PNG."""
    return x.clamp(0, 1).mul(255).round().div(255)
