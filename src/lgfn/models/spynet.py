"""SPyNet optical flow (Ranjan & Black, CVPR 2017) in the layout of BasicVSR's released weights.

Conventions (those of BasicSR's SpyNet, whose weights BasicVSR ships under ``spynet.``):
- frames are RGB in [0, 1], normalised with the ImageNet mean / std inside the module;
- a 6-level pyramid (2x2 average pooling), coarse to fine; each level upsamples the flow 2x (bilinear,
  align_corners=True, values doubled), warps ``supp`` with it and adds a predicted residual;
- flow is in pixels, channel 0 = x, channel 1 = y, and maps ``ref`` onto ``supp``: sampling ``supp`` at
  ``p + flow(p)`` (``flow_warp(supp, flow)``) aligns it to ``ref``. If ``supp`` is ``ref`` moved by
  (dx, dy) pixels, the flow is (dx, dy).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SPYNET_LEVELS = 6
# Inputs are resized to a multiple of 2**(levels - 1) so every pyramid level has an integer size.
SPYNET_SIZE_MULTIPLE = 2 ** (SPYNET_LEVELS - 1)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def flow_warp(
    x: torch.Tensor,
    flow: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    align_corners: bool = True,
) -> torch.Tensor:
    """Sample x at p + flow(p). x: M x C x H x W, flow: M x 2 x H x W (pixels, x then y) -> M x C x H x W."""
    if flow.dim() != 4 or flow.shape[1] != 2 or flow.shape[-2:] != x.shape[-2:] or len(flow) != len(x):
        raise ValueError(
            f"flow_warp: flow must be M x 2 x H x W matching x {tuple(x.shape)}, got {tuple(flow.shape)}"
        )
    h, w = x.shape[-2:]
    dtype = torch.promote_types(flow.dtype, torch.float32)
    ys = torch.arange(h, device=x.device, dtype=dtype)
    xs = torch.arange(w, device=x.device, dtype=dtype)
    # Pixel coordinates -> [-1, 1], with -1 / 1 at the centres of the corner pixels (align_corners=True).
    gx = (xs.view(1, 1, w) + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys.view(1, h, 1) + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack((gx, gy), dim=-1).to(x.dtype)
    return F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)


class SpyNetLevel(nn.Module):
    """One pyramid level: five 7x7 convs. M x 8 x H x W (ref, warped supp, flow) -> M x 2 x H x W flow residual."""

    def __init__(self) -> None:
        super().__init__()
        widths = (8, 32, 64, 32, 16, 2)
        layers: list[nn.Module] = []
        for k, (cin, cout) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(nn.Conv2d(cin, cout, 7, padding=3))
            if k < len(widths) - 2:
                layers.append(nn.ReLU(inplace=True))
        self.basic_module = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.basic_module(x)


class SpyNet(nn.Module):
    """SPyNet. ref, supp: B x 3 x H x W in [0, 1] -> flow B x 2 x H x W (pixels; warping supp by it aligns it to ref)."""

    def __init__(self) -> None:
        super().__init__()
        self.basic_module = nn.ModuleList(SpyNetLevel() for _ in range(SPYNET_LEVELS))
        # Persistent buffers: the released state dict stores them (spynet.mean / spynet.std).
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def pyramid_flow(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        """Coarse-to-fine flow. ref, supp: B x 3 x H x W with H, W multiples of 32 -> B x 2 x H x W."""
        refs = [(ref - self.mean) / self.std]
        supps = [(supp - self.mean) / self.std]
        for _ in range(SPYNET_LEVELS - 1):
            refs.append(F.avg_pool2d(refs[-1], 2))
            supps.append(F.avg_pool2d(supps[-1], 2))
        flow = refs[-1].new_zeros(ref.shape[0], 2, *refs[-1].shape[-2:])
        for level, (r, s) in enumerate(zip(reversed(refs), reversed(supps), strict=True)):
            if level:
                flow = 2.0 * F.interpolate(flow, size=r.shape[-2:], mode="bilinear", align_corners=True)
            warped = flow_warp(s, flow, padding_mode="border")
            flow = flow + self.basic_module[level](torch.cat((r, warped, flow), dim=1))
        return flow

    def forward(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        if ref.shape != supp.shape or ref.dim() != 4 or ref.shape[1] != 3:
            raise ValueError(
                f"SpyNet: ref and supp must both be B x 3 x H x W, got {tuple(ref.shape)} and {tuple(supp.shape)}"
            )
        h, w = ref.shape[-2:]
        m = SPYNET_SIZE_MULTIPLE
        hp, wp = -(-h // m) * m, -(-w // m) * m
        if (hp, wp) != (h, w):
            ref = F.interpolate(ref, size=(hp, wp), mode="bilinear", align_corners=False)
            supp = F.interpolate(supp, size=(hp, wp), mode="bilinear", align_corners=False)
        flow = self.pyramid_flow(ref, supp)
        if (hp, wp) != (h, w):
            flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
            flow = flow * flow.new_tensor([w / wp, h / hp]).view(1, 2, 1, 1)
        return flow
