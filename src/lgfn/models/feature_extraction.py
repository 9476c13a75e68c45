"""Feature extraction: shared over frames."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import ResidualBlockNoBN, conv3x3, fold_frames, lrelu, make_layer, unfold_frames


class FeatureExtraction(nn.Module):
    """conv3x3 + LReLU, residual blocks, conv3x3 per frame. B x N x 3 x h x w -> B x N x C x h x w."""

    def __init__(self, num_feat: int = 64, num_blocks: int = 5, in_channels: int = 3) -> None:
        super().__init__()
        self.conv_first = conv3x3(in_channels, num_feat)
        self.act = lrelu()
        self.body = make_layer(lambda: ResidualBlockNoBN(num_feat), num_blocks)
        self.conv_last = conv3x3(num_feat, num_feat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        y = self.conv_last(self.body(self.act(self.conv_first(fold_frames(x)))))
        return unfold_frames(y, n)
