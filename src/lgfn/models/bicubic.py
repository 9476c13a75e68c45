"""Bicubic baseline: MATLAB-style bicubic upscaling of the centre frame (no weights)."""

from __future__ import annotations

import torch
from torch import nn

from lgfn.protocol.degradation import imresize


class Bicubic(nn.Module):
    """B x N x 3 x h x w -> B x 3 x sh x sw, the centre frame upscaled with MATLAB's bicubic kernel."""

    def __init__(self, num_frames: int = 7, scale: int = 4) -> None:
        super().__init__()
        self.num_frames = num_frames
        self.scale = scale
        self.config = {"num_frames": num_frames, "scale": scale}

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        if lr.dim() != 5:
            raise ValueError(f"Bicubic expects B x N x 3 x h x w input, got shape {tuple(lr.shape)}")
        return imresize(lr[:, lr.shape[1] // 2], self.scale)
