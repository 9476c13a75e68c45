"""Local Fusion Module: a forward recurrent scan over the frames."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import ResidualBlockNoBN, conv1x1, conv3x3, lrelu, make_layer


class LocalFusionBlock(nn.Module):
    """One LFM: s_0 = f_0; s_t = RB(LReLU(conv1x1[LReLU(conv3x3[s, f_t]), f_t])) + f_t. B x N x C x h x w -> same."""

    def __init__(self, num_feat: int = 64, num_res_blocks: int = 2) -> None:
        super().__init__()
        self.conv_state = conv3x3(2 * num_feat, num_feat)
        self.conv_fuse = conv1x1(2 * num_feat, num_feat)
        self.act = lrelu()
        self.body = make_layer(lambda: ResidualBlockNoBN(num_feat), num_res_blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = x[:, 0]  # as released: frame 0 is fused with itself at the first step
        outs = []
        for t in range(x.shape[1]):
            f = x[:, t]
            a = self.act(self.conv_state(torch.cat([state, f], dim=1)))
            b = self.act(self.conv_fuse(torch.cat([a, f], dim=1)))
            state = self.body(b) + f
            outs.append(state)
        return torch.stack(outs, dim=1)


class LocalFusion(nn.Module):
    """`num_blocks` LocalFusionBlocks in series, each with its own weights. B x N x C x h x w -> same."""

    def __init__(self, num_feat: int = 64, num_blocks: int = 10) -> None:
        super().__init__()
        self.blocks = make_layer(lambda: LocalFusionBlock(num_feat), num_blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)
