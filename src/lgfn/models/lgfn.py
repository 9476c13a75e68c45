"""LGFN: Local-Global Fusion Network for video super-resolution (IEEE Access 2020)."""

from __future__ import annotations

import torch
from torch import nn

from .alignment import DeformableAlignment
from .blocks import conv1x1, fold_frames, lrelu, unfold_frames
from .feature_extraction import FeatureExtraction
from .global_fusion import GlobalFusion
from .local_fusion import LocalFusion
from .reconstruction import Reconstruction

# CPU-friendly sizes (mirrored by conf/model/lgfn_small.yaml); the rest keep the paper defaults.
LGFN_SMALL: dict[str, int | bool] = {
    "num_frames": 7,
    "num_feat": 32,
    "num_extract_blocks": 2,
    "num_align_stages": 2,
    "deformable_groups": 4,
    "num_lfm": 2,
    "num_gfm": 2,
    "gfm_slice_channels": 4,
    "num_rcab": 4,
}


class Merge(nn.Module):
    """Per-frame conv1x1 + LReLU over the branch outputs. B x N x (k*C) x h x w -> B x N x C x h x w."""

    def __init__(self, in_channels: int = 128, num_feat: int = 64) -> None:
        super().__init__()
        self.conv = conv1x1(in_channels, num_feat)
        self.act = lrelu()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return unfold_frames(self.act(self.conv(fold_frames(x))), x.shape[1])


class LGFN(nn.Module):
    """Local-Global Fusion Network. lr: B x N x 3 x h x w in [0, 1] -> B x 3 x (scale*h) x (scale*w).

    Ablations: `use_dmdcu=False` predicts the DCN offsets from y directly (no DMDCU modules);
    `use_lfm` / `use_gfm` drop a fusion branch entirely. With one branch the merge is kept as a
    conv1x1 C -> C + LReLU (so the depth in front of the reconstruction stays the same).
    The output is not clamped; evaluation clamps to [0, 1].
    """

    def __init__(
        self,
        num_frames: int = 7,
        num_feat: int = 64,
        num_extract_blocks: int = 5,
        num_align_stages: int = 4,
        deformable_groups: int = 8,
        num_lfm: int = 10,
        num_gfm: int = 10,
        gfm_slice_channels: int = 9,
        num_rcab: int = 20,
        rcab_reduction: int = 8,
        scale: int = 4,
        use_dmdcu: bool = True,
        use_lfm: bool = True,
        use_gfm: bool = True,
    ) -> None:
        super().__init__()
        # Constructor arguments, saved with every checkpoint so the network can be rebuilt from the file alone.
        self.config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        if num_frames < 1 or num_frames % 2 == 0:
            raise ValueError(f"model.net.num_frames must be a positive odd number, got {num_frames}")
        if not use_lfm and not use_gfm:
            raise ValueError("model.net.use_lfm and model.net.use_gfm cannot both be false")
        if num_feat % deformable_groups:
            raise ValueError(
                f"model.net.deformable_groups ({deformable_groups}) must divide model.net.num_feat ({num_feat})"
            )
        self.num_frames = num_frames
        self.centre = num_frames // 2
        self.scale = scale

        self.extraction = FeatureExtraction(num_feat, num_extract_blocks)
        self.alignment = DeformableAlignment(num_feat, num_align_stages, deformable_groups, use_dmdcu)
        self.local_fusion = LocalFusion(num_feat, num_lfm) if use_lfm else None
        self.global_fusion = (
            GlobalFusion(num_frames, num_feat, gfm_slice_channels, num_gfm) if use_gfm else None
        )
        self.merge = Merge(num_feat * (int(use_lfm) + int(use_gfm)), num_feat)
        self.reconstruction = Reconstruction(num_frames, num_feat, num_rcab, rcab_reduction, scale)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        if lr.dim() != 5 or lr.shape[2] != 3:
            raise ValueError(f"LGFN input must be B x N x 3 x h x w, got shape {tuple(lr.shape)}")
        if lr.shape[1] != self.num_frames:
            raise ValueError(
                f"LGFN was built for model.net.num_frames={self.num_frames} frames, got {lr.shape[1]}"
            )
        feat = self.extraction(lr)
        aligned = self.alignment(feat, self.centre)
        branches = []
        if self.local_fusion is not None:
            branches.append(self.local_fusion(aligned))
        if self.global_fusion is not None:
            branches.append(self.global_fusion(aligned))
        merged = self.merge(torch.cat(branches, dim=2))
        return self.reconstruction(merged, feat[:, self.centre], lr[:, self.centre])

    def offset_stats(self) -> dict[str, float]:
        """Mean |DCN offset| of the last forward per alignment stage, e.g. {'align/stage0': 0.3, ...}."""
        return {f"align/{k}": v for k, v in self.alignment.offset_stats().items()}
