"""Weight initialisation schemes for the LGFN modules (training recipe; the network's function is unchanged)."""

from __future__ import annotations

import torch
from torch import nn

from .alignment import DCNv2Pack
from .blocks import LRELU_SLOPE, ResidualBlockNoBN
from .dmdcu import DMDCU
from .global_fusion import GlobalFusionBlock
from .reconstruction import RCAB, ResidualGroup

INIT_SCHEMES = ("pytorch", "kaiming")
DCN_INITS = ("default", "identity")
# Residual branches start small (BasicSR / EDVR scale their residual blocks by 0.1), so the deep path
# starts near the identity instead of adding noise of the same size as its input.
RESIDUAL_SCALE = 0.1


def _kaiming_(weight, scale: float = 1.0) -> None:
    nn.init.kaiming_normal_(weight, a=LRELU_SLOPE, mode="fan_in", nonlinearity="leaky_relu")
    weight.data.mul_(scale)


def init_weights(net: nn.Module, scheme: str = "pytorch") -> nn.Module:
    """Initialise ``net`` in place. ``pytorch``: leave PyTorch's defaults (the authors' release).

    ``kaiming``: He-normal convs for LeakyReLU(0.1) with zero biases, the convs that end a residual branch
    scaled by 0.1; the DCN offset/mask convs stay zero (offsets 0, masks 0.5).
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"model.weight_init={scheme!r}: expected one of {', '.join(INIT_SCHEMES)}")
    if scheme == "pytorch":
        return net
    offset_convs = {id(m.conv_offset) for m in net.modules() if isinstance(m, DCNv2Pack)}
    for m in net.modules():
        if isinstance(m, nn.Conv2d) and id(m) not in offset_convs:
            _kaiming_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, DCNv2Pack):
            _kaiming_(m.weight)
            nn.init.zeros_(m.bias)
    residual_ends = []
    for m in net.modules():
        if isinstance(m, ResidualBlockNoBN):
            residual_ends += [m.conv1, m.conv2]
        elif isinstance(m, RCAB):
            residual_ends += [m.body[0], m.body[2]]
        elif isinstance(m, DMDCU):
            residual_ends.append(m.conv_fuse)
        elif isinstance(m, GlobalFusionBlock):
            residual_ends.append(m.conv_out)
        elif isinstance(m, ResidualGroup):
            residual_ends.append(m.conv)
    for conv in residual_ends:
        conv.weight.data.mul_(RESIDUAL_SCALE)
    return net


def init_dcn_identity(net: nn.Module) -> nn.Module:
    """Start every alignment DCN as the identity: the aligned neighbour is the neighbour itself.

    The main 3x3 weight is 2 x identity on the centre tap (zero elsewhere) and the bias zero, so with the
    zero-initialised offset/mask conv (offsets 0, masks sigmoid(0) = 0.5) each stage outputs its input.
    The gradient that reaches the offsets is then the neighbour feature's own spatial gradient, the
    signal an optical-flow estimate needs, instead of a random mix of channels; with PyTorch's random
    init the stacked DCNs first scramble every neighbour and the fusion modules learn to ignore them.
    """
    for m in net.modules():
        if isinstance(m, DCNv2Pack):
            out_ch, in_ch, kh, kw = m.weight.shape
            if out_ch != in_ch:
                raise ValueError(f"dcn_init=identity needs a square DCN, got {out_ch} x {in_ch} channels")
            with torch.no_grad():
                m.weight.zero_()
                m.weight[:, :, kh // 2, kw // 2] = 2.0 * torch.eye(out_ch)
                m.bias.zero_()
    return net


def init_dcn(net: nn.Module, scheme: str = "default") -> nn.Module:
    """``default``: as the network builds it (random main weight, like nn.Conv2d); ``identity``: see above."""
    if scheme not in DCN_INITS:
        raise ValueError(f"model.dcn_init={scheme!r}: expected one of {', '.join(DCN_INITS)}")
    return init_dcn_identity(net) if scheme == "identity" else net


__all__ = ["DCN_INITS", "INIT_SCHEMES", "init_dcn", "init_dcn_identity", "init_weights"]
