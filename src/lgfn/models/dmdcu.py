"""Decreasing multi-dilation convolution unit (DMDCU)."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import conv1x1, conv3x3, lrelu


class DMDCU(nn.Module):
    """conv3x3; K dilated conv3x3 branches (dilation 1..K); conv1x1; + input. M x C x h x w -> M x C x h x w."""

    def __init__(self, num_feat: int = 64, num_branches: int = 8, branch_channels: int | None = None) -> None:
        super().__init__()
        if num_branches < 1:
            raise ValueError(f"DMDCU num_branches must be >= 1, got {num_branches}")
        branch_channels = branch_channels or num_feat // 2
        self.num_branches = num_branches
        self.conv_in = conv3x3(num_feat, num_feat)
        self.branches = nn.ModuleList(
            conv3x3(num_feat, branch_channels, dilation=d) for d in range(1, num_branches + 1)
        )
        self.conv_fuse = conv1x1(branch_channels * num_branches, num_feat)
        self.act = lrelu()

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        u = self.act(self.conv_in(y))
        z = torch.cat([self.act(branch(u)) for branch in self.branches], dim=1)
        return y + self.act(self.conv_fuse(z))
