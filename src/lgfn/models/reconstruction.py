"""Reconstruction: fuse the merged frames, one RCAN residual group, upsample, bilinear skip."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import conv1x1, conv3x3, lrelu, make_layer


class ChannelAttention(nn.Module):
    """RCAN channel attention: x * sigmoid(conv1x1(ReLU(conv1x1(avgpool(x))))). M x C x h x w -> same."""

    def __init__(self, num_feat: int = 64, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(1, num_feat // reduction)
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            conv1x1(num_feat, hidden),
            nn.ReLU(inplace=True),
            conv1x1(hidden, num_feat),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class RCAB(nn.Module):
    """Residual channel attention block: conv3x3, ReLU, conv3x3, CA, + identity. M x C x h x w -> same."""

    def __init__(self, num_feat: int = 64, reduction: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(num_feat, num_feat),
            nn.ReLU(inplace=True),
            conv3x3(num_feat, num_feat),
            ChannelAttention(num_feat, reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResidualGroup(nn.Module):
    """RCAN residual group: `num_blocks` RCABs, conv3x3, + group skip. M x C x h x w -> same."""

    def __init__(self, num_feat: int = 64, num_blocks: int = 20, reduction: int = 8) -> None:
        super().__init__()
        self.blocks = make_layer(lambda: RCAB(num_feat, reduction), num_blocks)
        self.conv = conv3x3(num_feat, num_feat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(self.blocks(x))


class Upsample(nn.Sequential):
    """[conv3x3 C -> r^2 C, PixelShuffle(r)] stages: r = 2 per stage for powers of two, or one r = 3 stage."""

    def __init__(self, num_feat: int, scale: int) -> None:
        if scale >= 2 and scale & (scale - 1) == 0:
            factors = [2] * (scale.bit_length() - 1)
        elif scale == 3:
            factors = [3]
        else:
            raise ValueError(f"model.net.scale must be 2, 3, 4 or 8 (a power of two or 3), got {scale}")
        layers: list[nn.Module] = []
        for r in factors:
            layers += [conv3x3(num_feat, r * r * num_feat), nn.PixelShuffle(r)]
        super().__init__(*layers)


class Reconstruction(nn.Module):
    """merged B x N x C x h x w, centre feature B x C x h x w, LR centre B x 3 x h x w -> B x 3 x sh x sw."""

    def __init__(
        self, num_frames: int = 7, num_feat: int = 64, num_rcab: int = 20, reduction: int = 8, scale: int = 4
    ) -> None:
        super().__init__()
        self.scale = scale
        self.conv_fuse = conv3x3(num_frames * num_feat, num_feat)
        self.act = lrelu()
        self.body = ResidualGroup(num_feat, num_rcab, reduction)
        self.upsample = Upsample(num_feat, scale)
        self.conv_last = conv3x3(num_feat, 3)

    def forward(
        self, merged: torch.Tensor, centre_feat: torch.Tensor, lr_centre: torch.Tensor
    ) -> torch.Tensor:
        # B x N x C x h x w -> B x (N*C) x h x w: frame-major channel concat.
        x = self.act(self.conv_fuse(merged.flatten(1, 2)))
        x = self.body(x) + centre_feat
        out = self.conv_last(self.upsample(x))
        base = F.interpolate(lr_centre, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return out + base


__all__ = ["ChannelAttention", "RCAB", "ResidualGroup", "Upsample", "Reconstruction"]
