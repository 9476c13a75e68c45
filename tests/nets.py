"""Tiny networks shared by the tests."""

from __future__ import annotations

import torch

from lgfn.models import LGFN

TINY = dict(num_frames=3, num_feat=8, num_extract_blocks=1, num_align_stages=1, deformable_groups=2,
            num_lfm=1, num_gfm=1, gfm_slice_channels=2, num_rcab=1)


def strong_tiny_net() -> LGFN:
    """Tiny LGFN with weights large enough that neighbours, and so the window padding, change the output."""
    net = LGFN(**TINY).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in net.named_parameters():
            std = ((0.3 if "conv_offset" in name else 1.2) / p[0].numel() ** 0.5) if p.dim() > 1 else 0.1
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return net
