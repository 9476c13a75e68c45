"""Model size and cost: parameters and GFLOPs per output frame (`python -m lgfn.models.complexity`)."""

from __future__ import annotations

import copy
from unittest import mock

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from . import alignment
from .lgfn import LGFN, LGFN_SMALL

# LR sizes reported by default: a 64x64 patch and Vid4's 576x720 / 4.
SIZES: tuple[tuple[int, int], ...] = ((64, 64), (144, 180))


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def parameter_breakdown(model: nn.Module) -> dict[str, int]:
    """Parameters per direct child module (for LGFN: extraction, alignment, ..., reconstruction)."""
    return {name: count_parameters(child) for name, child in model.named_children()}


def _deform_as_conv(input, offset, weight, bias=None, stride=1, padding=0, dilation=1, mask=None):
    # Same shapes and multiply-adds as the DCN's matmul; the bilinear sampling (~4 MACs per sampled
    # value, a few % of the layer) is left out, as in the usual FLOP counters.
    return F.conv2d(input, weight, bias, stride=stride, padding=padding, dilation=dilation)


def gflops_per_frame(
    model: nn.Module, lr_size: tuple[int, int] = (64, 64), num_frames: int | None = None
) -> float:
    """GFLOPs (FlopCounterMode: 1 multiply-add = 2 FLOPs) for one output frame at LR size (h, w).

    Runs one B = 1 forward on the meta device (shapes only, no compute), so it is instant at any size.
    Deformable convs are counted as the plain conv of the same shape.
    """
    n = num_frames or getattr(model, "num_frames", 1)
    h, w = lr_size
    meta_model = copy.deepcopy(model).to("meta")
    lr = torch.zeros(1, n, 3, h, w, device="meta")
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), mock.patch.object(alignment, "deform_conv2d", _deform_as_conv), counter:
        meta_model(lr)
    return counter.get_total_flops() / 1e9


def complexity_table(configs: dict[str, dict] | None = None, sizes=SIZES) -> str:
    """Markdown table: params and GFLOPs per output frame for each named LGFN configuration."""
    configs = configs if configs is not None else {"lgfn": {}, "lgfn_small": LGFN_SMALL}
    head = "| model | params (M) | " + " | ".join(f"GFLOPs @ LR {h}x{w}" for h, w in sizes) + " |"
    lines = [head, "|---" * (2 + len(sizes)) + "|"]
    for name, cfg in configs.items():
        with torch.device("meta"):
            model = LGFN(**cfg)
        flops = [gflops_per_frame(model, s) for s in sizes]
        cells = [name, f"{count_parameters(model) / 1e6:.3f}"] + [f"{g:.1f}" for g in flops]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    print(complexity_table())
    print("\nFLOPs per output frame (B = 1, one forward); 1 multiply-add = 2 FLOPs; DCN counted as a conv.")


if __name__ == "__main__":
    main()
