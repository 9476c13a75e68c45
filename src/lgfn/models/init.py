"""Weight initialisation schemes for the LGFN modules (training recipe; the network's function is unchanged)."""

from __future__ import annotations

from torch import nn

from .alignment import DCNv2Pack
from .blocks import LRELU_SLOPE, ResidualBlockNoBN
from .dmdcu import DMDCU
from .global_fusion import GlobalFusionBlock
from .reconstruction import RCAB, ResidualGroup

INIT_SCHEMES = ("pytorch", "kaiming")
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


__all__ = ["INIT_SCHEMES", "init_weights"]
