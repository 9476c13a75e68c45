"""Deformable alignment: stacked single-scale DCNv2 stages, each with a DMDCU on the offset path."""

from __future__ import annotations

import math

import torch
from torch import nn

from lgfn.ops import deform_conv2d

from .blocks import conv3x3, fold_frames, lrelu, unfold_frames
from .dmdcu import DMDCU


class DCNv2Pack(nn.Module):
    """Modulated deformable conv3x3 whose offsets/masks come from a zero-initialised conv3x3 on `cond`.

    x: M x C_in x h x w, cond: M x C_cond x h x w -> M x C_out x h x w.
    """

    def __init__(
        self,
        in_channels: int = 64,
        out_channels: int = 64,
        cond_channels: int = 64,
        kernel_size: int = 3,
        deformable_groups: int = 8,
    ) -> None:
        super().__init__()
        if in_channels % deformable_groups:
            raise ValueError(
                f"deformable_groups ({deformable_groups}) must divide the channel count ({in_channels})"
            )
        self.kernel_size = kernel_size
        self.deformable_groups = deformable_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))
        taps = deformable_groups * kernel_size * kernel_size
        self.num_offset_channels = 2 * taps  # (dy, dx) per tap per group: torchvision layout
        self.conv_offset = nn.Conv2d(cond_channels, 3 * taps, kernel_size, padding=kernel_size // 2)
        # Detached mean |offset| of the last forward (a 0-dim tensor; None before the first call).
        self.last_offset_abs_mean: torch.Tensor | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same init as nn.Conv2d for the main weights.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        fan_in = self.weight.shape[1] * self.kernel_size * self.kernel_size
        nn.init.uniform_(self.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        # Zero init: the pack starts as a plain conv with offsets 0 and masks sigmoid(0) = 0.5.
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        out = self.conv_offset(cond)
        offset = out[:, : self.num_offset_channels]
        mask = torch.sigmoid(out[:, self.num_offset_channels :])
        self.last_offset_abs_mean = offset.detach().abs().mean()
        pad = self.kernel_size // 2
        return deform_conv2d(x, offset, self.weight, self.bias, padding=pad, mask=mask)


class AlignmentStage(nn.Module):
    """y = LReLU(conv[x, ref]); z = DMDCU(y); DCN(x; offsets from z). x, ref: M x C x h x w -> M x C x h x w."""

    def __init__(
        self, num_feat: int = 64, num_branches: int = 8, deformable_groups: int = 8, use_dmdcu: bool = True
    ) -> None:
        super().__init__()
        self.conv_cat = conv3x3(2 * num_feat, num_feat)
        self.act = lrelu()
        # Ablation "DMDCU off": offsets are predicted from y directly; the unit is not created at all.
        self.dmdcu = DMDCU(num_feat, num_branches) if use_dmdcu else None
        self.dcn = DCNv2Pack(num_feat, num_feat, num_feat, 3, deformable_groups)

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv_cat(torch.cat([x, ref], dim=1)))
        z = self.dmdcu(y) if self.dmdcu is not None else y
        return self.dcn(x, z)


class DeformableAlignment(nn.Module):
    """Aligns every neighbour to the centre; the centre passes unchanged. B x N x C x h x w -> same."""

    def __init__(
        self, num_feat: int = 64, num_stages: int = 4, deformable_groups: int = 8, use_dmdcu: bool = True
    ) -> None:
        super().__init__()
        if num_stages < 1:
            raise ValueError(f"num_align_stages must be >= 1, got {num_stages}")
        # Stage k of S uses K = 2(S - k) dilation branches: 8, 6, 4, 2 for S = 4 ("decreasing").
        self.stages = nn.ModuleList(
            AlignmentStage(num_feat, 2 * (num_stages - k), deformable_groups, use_dmdcu)
            for k in range(num_stages)
        )

    def forward(self, feat: torch.Tensor, centre: int) -> torch.Tensor:
        b, n = feat.shape[:2]
        if n == 1:
            return feat
        # Neighbours are folded into the batch so the shared module runs once for all of them.
        neighbours = torch.cat([feat[:, :centre], feat[:, centre + 1 :]], dim=1)
        ref = feat[:, centre : centre + 1].expand_as(neighbours)
        x, ref = fold_frames(neighbours), fold_frames(ref)
        for stage in self.stages:
            x = stage(x, ref)
        x = unfold_frames(x, n - 1)
        return torch.cat([x[:, :centre], feat[:, centre : centre + 1], x[:, centre:]], dim=1)

    def offset_stats(self) -> dict[str, float]:
        """Mean |offset| of each stage's DCN at the last forward, keyed 'stage{k}'."""
        return {
            f"stage{k}": float(s.dcn.last_offset_abs_mean)
            for k, s in enumerate(self.stages)
            if s.dcn.last_offset_abs_mean is not None
        }
