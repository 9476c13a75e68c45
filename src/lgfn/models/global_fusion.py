"""Global Fusion Module ("video shuffle") over all frames at once."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import conv1x1, conv3x3, fold_frames, lrelu, make_layer, unfold_frames


def video_shuffle(x: torch.Tensor) -> torch.Tensor:
    """Group g <- slice g of every frame (N slices per frame). B x N x (N*c) x h x w -> same.

    A transpose of the frame and slice axes, hence its own inverse.
    """
    b, n, ch, h, w = x.shape
    if ch % n:
        raise ValueError(f"video_shuffle: channels ({ch}) must be a multiple of the frame count ({n})")
    return x.view(b, n, n, ch // n, h, w).transpose(1, 2).reshape(b, n, ch, h, w)


class VideoShuffle(nn.Module):
    """Parameter-free video shuffle (its own inverse). B x N x (N*c) x h x w -> B x N x (N*c) x h x w."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return video_shuffle(x)


class GlobalFusionBlock(nn.Module):
    """Frame conv, shuffle, shared group convs, unshuffle, frame conv, + input. B x N x C x h x w -> same."""

    def __init__(self, num_frames: int = 7, num_feat: int = 64, slice_channels: int = 9) -> None:
        super().__init__()
        ch = num_frames * slice_channels  # per frame and per group: paper 7 * 9 = 63
        mid = ch // 2  # paper 63 -> 31
        self.num_frames = num_frames
        self.conv_in = conv3x3(num_feat, ch)
        self.shuffle = VideoShuffle()
        self.conv_reduce = conv1x1(ch, mid)
        self.branch1 = conv1x1(mid, mid)
        self.branch3 = conv3x3(mid, mid)
        self.branch33 = nn.Sequential(conv3x3(mid, mid), lrelu(), conv3x3(mid, mid))
        self.conv_fuse = conv3x3(3 * mid, ch)
        self.conv_out = conv3x3(ch, num_feat)
        self.act = lrelu()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        if n != self.num_frames:
            raise ValueError(f"GlobalFusionBlock built for {self.num_frames} frames, got {n}")
        y = unfold_frames(self.act(self.conv_in(fold_frames(x))), n)
        # The N groups are folded into the batch: one conv call covers them all.
        g = fold_frames(self.shuffle(y))
        g = self.act(self.conv_reduce(g))
        g = torch.cat(
            [self.act(self.branch1(g)), self.act(self.branch3(g)), self.act(self.branch33(g))], dim=1
        )
        g = self.act(self.conv_fuse(g))
        y = self.shuffle(unfold_frames(g, n))
        return x + unfold_frames(self.conv_out(fold_frames(y)), n)


class GlobalFusion(nn.Module):
    """`num_blocks` GlobalFusionBlocks in series, each with its own weights. B x N x C x h x w -> same."""

    def __init__(
        self, num_frames: int = 7, num_feat: int = 64, slice_channels: int = 9, num_blocks: int = 10
    ) -> None:
        super().__init__()
        self.blocks = make_layer(lambda: GlobalFusionBlock(num_frames, num_feat, slice_channels), num_blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)
