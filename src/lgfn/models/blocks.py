"""Small building blocks shared by the LGFN modules (BasicSR style)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

# The paper uses LeakyReLU(0.1) everywhere except inside the RCABs (plain ReLU, as in RCAN).
LRELU_SLOPE = 0.1


def lrelu() -> nn.LeakyReLU:
    """LeakyReLU(0.1), the activation used throughout LGFN."""
    return nn.LeakyReLU(LRELU_SLOPE, inplace=True)


def conv3x3(in_channels: int, out_channels: int, dilation: int = 1, bias: bool = True) -> nn.Conv2d:
    """3x3 convolution with 'same' padding (padding = dilation)."""
    return nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=bias)


def conv1x1(in_channels: int, out_channels: int, bias: bool = True) -> nn.Conv2d:
    """1x1 convolution."""
    return nn.Conv2d(in_channels, out_channels, 1, bias=bias)


def make_layer(block: Callable[[], nn.Module], num_blocks: int) -> nn.Sequential:
    """Stack `num_blocks` fresh instances of `block()` in an nn.Sequential."""
    return nn.Sequential(*(block() for _ in range(num_blocks)))


def fold_frames(x: torch.Tensor) -> torch.Tensor:
    """B x N x C x h x w -> (B*N) x C x h x w, so shared-weight convs run once over all frames."""
    return x.flatten(0, 1)


def unfold_frames(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(B*N) x C x h x w -> B x N x C x h x w (inverse of `fold_frames`)."""
    return x.unflatten(0, (-1, num_frames))


class ResidualBlockNoBN(nn.Module):
    """conv3x3, LReLU, conv3x3, + identity; no batch norm. M x C x h x w -> M x C x h x w."""

    def __init__(self, num_feat: int = 64) -> None:
        super().__init__()
        self.conv1 = conv3x3(num_feat, num_feat)
        self.act = lrelu()
        self.conv2 = conv3x3(num_feat, num_feat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))
