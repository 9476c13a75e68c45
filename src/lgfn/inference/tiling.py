"""Spatial tiling of one frame window: exact or bounded context per tile, global pools kept exact.

Spatial tiling (``upscale_window``): the LR frame is cut into cores of ``tile`` x ``tile`` LR pixels;
each core is run with ``overlap`` extra LR pixels of real context on every side (clamped at the frame
border), and only the core's part of the output is kept. A pixel's output equals the untiled one when
``overlap`` is at least the network's receptive radius, so tiled == untiled up to float rounding.

Two things make that radius large for LGFN, and ``receptive_radius`` bounds it from the config:
- the Local Fusion Module is a recurrence over the N frames, each step 5 convolutions deep, so every
  LFM block adds about 5 N pixels (70 of the 108 for ``LGFN_SMALL``; 350 of 448 for the paper's size);
- deformable alignment samples at learned offsets: the bound adds a small slack, so a trained model
  whose offsets exceed it is only approximately tile-invariant (seams of small amplitude).
The RCAN channel attention pools over the *whole* frame (``AdaptiveAvgPool2d(1)``), which no margin
fixes. With ``exact_pooling`` (default) those pools are made global: per-tile sums over the cores are
collected pool by pool (one extra pass per pool, run on cached inputs of ``net.reconstruction.body``
when the pools all live there, so the heavy alignment/fusion part runs only twice per tile) and then
fed back as the whole-frame means. Without it each tile uses its own means (faster, approximate).

Bounded tiling: the exact radius makes small tiles expensive (``tile_work``: the paper model's 448 px
make ``--tile 64`` on 854 x 480 compute 89x the frame, ``--tile 256`` on 1080p 14.5x), so
``lgfn-upscale --tile`` gives each tile ``bounded_overlap`` = the radius capped at ``BOUNDED_OVERLAP``
(48 px: 1.8x at 1080p) and keeps the exact global pools; ``--overlap exact`` restores tiled == untiled.
Trained networks use far less context than the bound says: for the trained ``lgfn_small`` even 16 px
changed no measurable PSNR (benchmarks/bench_tiling.py, BENCHMARKS.md). LR frames over
``AUTO_TILE_PIXELS`` (1280 x 720) are tiled by ``AUTO_TILE`` (256) unless ``--tile 0``.

BasicVSR (``lgfn-upscale --model basicvsr``): the radius counts its recurrent trunks (250 LR px for 7 frames of the released size), but
SPyNet's flow depends on the whole tile, so tiling it is approximate even with ``--overlap exact``; whole frames
(the default up to ``AUTO_TILE_PIXELS``) are exact.

The temporal side (which frames feed output t, read lazily): ``lgfn.inference.streaming``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class _Stop(Exception):
    """Raised inside a hook to end a forward pass early (its result is not needed)."""


# --------------------------------------------------------------------------- receptive field
def receptive_radius(net: Any) -> int | None:
    """Upper bound (LR pixels) on how far an output pixel's inputs reach, from ``net.config``; None if unknown.

    ``net`` is a network, or any object with ``net_class`` (the network's class name) and ``config``
    (its constructor arguments), such as an exported model described by its sidecar.
    """
    return radius_from_config(getattr(net, "net_class", None) or type(net).__name__, getattr(net, "config", None))


def radius_from_config(name: str, cfg: dict | None) -> int | None:
    """``receptive_radius`` for the network class ``name`` built with ``cfg``; None if unknown."""
    if name == "Bicubic":
        return 4
    if name == "BasicVSR" and isinstance(cfg, dict):
        # The centre's state comes from frames up to N // 2 away through N // 2 + 1 trunk steps (each a conv3x3
        # and num_block residual blocks: 1 + 2 num_block px), moved by the flow at each warp; then the upsampler
        # (conv1x1, three conv3x3 at 2x and 4x: about 2 LR px) and the slack of the warps' bilinear taps.
        # SPyNet's flow is not bounded: its 6-level pyramid sees the whole tile (resized to a multiple of 32),
        # so tiled BasicVSR is approximate whatever the overlap (README: lgfn-upscale --model basicvsr).
        steps = int(cfg.get("num_frames", 7)) // 2 + 1
        return steps * (1 + 2 * int(cfg.get("num_block", 30))) + 2 + 4
    if name != "LGFN" or not isinstance(cfg, dict):
        return None
    n = int(cfg.get("num_frames", 7))
    extract = 2 + 2 * int(cfg.get("num_extract_blocks", 5))
    stages = int(cfg.get("num_align_stages", 4))
    dmdcu = bool(cfg.get("use_dmdcu", True))
    # Per stage: conv_cat, [DMDCU conv3x3 + widest dilation 2(S-k)], offset conv, DCN.
    align = sum(3 + ((1 + 2 * (stages - k)) if dmdcu else 0) for k in range(stages)) if n > 1 else 0
    lfm = 5 * n * int(cfg.get("num_lfm", 10)) if cfg.get("use_lfm", True) else 0
    gfm = 5 * int(cfg.get("num_gfm", 10)) if cfg.get("use_gfm", True) else 0
    recon = 1 + 2 * int(cfg.get("num_rcab", 20)) + 1 + 2
    slack = 4  # deformable offsets and the bilinear skip
    return extract + align + max(lfm, gfm) + recon + slack


def default_overlap(net: Any) -> int:
    """Overlap (LR pixels) that makes tiled output equal untiled output: the radius rounded up to 4."""
    radius = receptive_radius(net)
    if radius is None:
        return 64
    return int(math.ceil(radius / 4) * 4)


BOUNDED_OVERLAP = 48  # LR px: lgfn-upscale's default tile context (benchmarks/bench_tiling.py: PSNR cost, work)
AUTO_TILE, AUTO_TILE_PIXELS = 256, 1280 * 720  # lgfn-upscale tiles LR frames larger than 1280x720 by default


def bounded_overlap(net: Any) -> int:
    """``lgfn-upscale --tile``'s default context: the exact ``default_overlap`` capped at ``BOUNDED_OVERLAP``."""
    return min(default_overlap(net), BOUNDED_OVERLAP)


def tile_work(h: int, w: int, tile: int, overlap: int) -> float:
    """Pixels the network computes per frame pixel when tiling h x w with ``tile`` cores and ``overlap`` context."""
    ys, xs = _spans(h, tile, overlap), _spans(w, tile, overlap)
    return sum(i1 - i0 for i0, i1, _, _ in ys) * sum(i1 - i0 for i0, i1, _, _ in xs) / (h * w)


def tiling_pays(h: int, w: int, tile: int, overlap: int) -> bool:
    """Whether tiles of ``tile`` LR pixels with ``overlap`` of context are smaller than the h x w frame.

    A tile's input is its core plus ``overlap`` on each side, clamped to the frame. When the largest such
    input is the whole frame (in both axes), every tile costs a whole-frame pass and saves no memory.
    """
    def largest(length: int) -> int:
        return max(i1 - i0 for i0, i1, _, _ in _spans(length, tile, overlap))

    return largest(h) * largest(w) < h * w


# --------------------------------------------------------------------------- global pools
def _global_pools(module: nn.Module) -> list[nn.Module]:
    pools = []
    for m in module.modules():
        if isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1)):
            pools.append(m)
    return pools


class _PoolControl:
    """Forward hooks on global pools: collect per-tile core sums for one pool, or serve frozen means."""

    def __init__(self, pools: list[nn.Module]) -> None:
        self.pools = pools
        self.frozen: dict[int, torch.Tensor] = {}
        self.collect: int | None = None
        self.sum: torch.Tensor | None = None
        self.count = 0
        self.core: tuple[int, int, int, int] = (0, 0, 0, 0)  # y0, y1, x0, x1 in the tile's input pixels
        self.tile_hw: tuple[int, int] = (1, 1)
        self.handles = [p.register_forward_hook(self._hook(i)) for i, p in enumerate(pools)]

    def _hook(self, idx: int) -> Callable:
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> Any:
            if idx in self.frozen:
                return self.frozen[idx].to(output.dtype).expand_as(output)
            if idx == self.collect:
                x = inputs[0]
                # A pool may run at another resolution than the LR input: scale the core to it.
                sy, sx = x.shape[-2] / self.tile_hw[0], x.shape[-1] / self.tile_hw[1]
                y0, y1, x0, x1 = self.core
                part = x[..., round(y0 * sy) : round(y1 * sy), round(x0 * sx) : round(x1 * sx)]
                s = part.double().sum(dim=(-2, -1), keepdim=True)
                self.sum = s if self.sum is None else self.sum + s
                self.count += part.shape[-2] * part.shape[-1]
                raise _Stop
            return None

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


# --------------------------------------------------------------------------- spatial tiling
def _run(net: Callable, lr: torch.Tensor, multiple: int) -> torch.Tensor:
    """net on 1 x N x 3 x h x w, replicate-padding h, w up to ``multiple`` first and cropping after."""
    h, w = lr.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        b, n = lr.shape[:2]
        lr = F.pad(lr.flatten(0, 1), (0, pw, 0, ph), mode="replicate").unflatten(0, (b, n))
    out = net(lr)
    s = out.shape[-1] // lr.shape[-1]
    return out[..., : s * h, : s * w]


def _spans(length: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(in_start, in_stop, core_start, core_stop) per tile along one axis."""
    spans = []
    for c0 in range(0, length, tile):
        c1 = min(c0 + tile, length)
        spans.append((max(0, c0 - overlap), min(length, c1 + overlap), c0, c1))
    return spans


def upscale_window(
    net: Callable,
    frames: torch.Tensor,
    tile: int | None = None,
    overlap: int | None = None,
    exact_pooling: bool = True,
) -> torch.Tensor:
    """N x 3 x h x w frames in [0,1] -> 3 x sh x sw, optionally tiled over space (tile/overlap in LR px).

    ``overlap=None`` uses ``default_overlap(net)``. Sizes need not divide by the tile or by the
    network's ``size_multiple`` (replicate padding, then crop). Output is not clamped.
    """
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"upscale_window expects N x 3 x h x w frames, got shape {tuple(frames.shape)}")
    if tile is not None and tile < 1:
        raise ValueError(f"tile must be a positive number of LR pixels, got {tile}")
    if overlap is None:
        overlap = default_overlap(net)
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    multiple = int(getattr(net, "size_multiple", 1))
    lr = frames.unsqueeze(0)
    h, w = frames.shape[-2:]
    with torch.inference_mode():
        if tile is None or (tile >= h and tile >= w):
            return _run(net, lr, multiple)[0]
        ys, xs = _spans(h, tile, overlap), _spans(w, tile, overlap)
        tiles = [(y, x) for y in ys for x in xs]
        pools = _global_pools(net) if (exact_pooling and isinstance(net, nn.Module)) else []
        control = _PoolControl(pools) if pools else None
        try:
            if control is not None:
                _freeze_pools(net, lr, tiles, control, multiple)
            out = None
            for (iy0, iy1, cy0, cy1), (ix0, ix1, cx0, cx1) in tiles:
                sr = _run(net, lr[..., iy0:iy1, ix0:ix1], multiple)[0]
                s = sr.shape[-1] // (ix1 - ix0)
                if out is None:
                    out = sr.new_empty(sr.shape[0], s * h, s * w)
                out[:, s * cy0 : s * cy1, s * cx0 : s * cx1] = sr[
                    :, s * (cy0 - iy0) : s * (cy1 - iy0), s * (cx0 - ix0) : s * (cx1 - ix0)
                ]
        finally:
            if control is not None:
                control.remove()
        return out


def _freeze_pools(net: nn.Module, lr: torch.Tensor, tiles: list, control: _PoolControl, multiple: int) -> None:
    """Whole-frame means of every global pool, one pool at a time (pool k's input depends on pools < k)."""
    body = getattr(getattr(net, "reconstruction", None), "body", None)
    cached: list[torch.Tensor] | None = None
    if isinstance(body, nn.Module) and len(_global_pools(body)) == len(control.pools) and multiple == 1:
        # Run the expensive front of the network once per tile; the pools all sit in `body`.
        cached = []

        def grab(module: nn.Module, args: tuple) -> None:
            cached.append(args[0])
            raise _Stop

        handle = body.register_forward_pre_hook(grab)
        try:
            for (iy0, iy1, _, _), (ix0, ix1, _, _) in tiles:
                try:
                    net(lr[..., iy0:iy1, ix0:ix1])
                except _Stop:
                    pass
        finally:
            handle.remove()
    for k in range(len(control.pools)):
        control.collect, control.sum, control.count = k, None, 0
        for i, ((iy0, iy1, cy0, cy1), (ix0, ix1, cx0, cx1)) in enumerate(tiles):
            control.core = (cy0 - iy0, cy1 - iy0, cx0 - ix0, cx1 - ix0)
            control.tile_hw = (iy1 - iy0, ix1 - ix0)
            try:
                if cached is not None:
                    body(cached[i])
                else:
                    _run(net, lr[..., iy0:iy1, ix0:ix1], multiple)
            except _Stop:
                pass
        if control.sum is None:  # the pool never ran (e.g. a branch switched off)
            break
        control.frozen[k] = (control.sum / control.count).float()
    control.collect = None


__all__ = ["AUTO_TILE", "AUTO_TILE_PIXELS", "BOUNDED_OVERLAP", "bounded_overlap", "default_overlap",
           "radius_from_config", "receptive_radius", "tile_work", "tiling_pays", "upscale_window"]
