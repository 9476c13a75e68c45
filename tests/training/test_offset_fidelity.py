"""model.offset_fidelity_weight: the offset-fidelity loss of Chan et al. (AAAI 2021) against a SPyNet flow teacher."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lgfn.models import LGFN
from lgfn.training.lit_module import LitLGFN

TINY = dict(num_frames=3, num_feat=8, num_extract_blocks=1, num_align_stages=2, deformable_groups=2, num_lfm=1,
            num_gfm=1, gfm_slice_channels=2, num_rcab=1)


class ConstantFlow(nn.Module):
    """A stand-in teacher: the same flow (dx, dy) everywhere, whatever the frames."""

    def __init__(self, dx: float, dy: float) -> None:
        super().__init__()
        self.flow = (dx, dy)

    def forward(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(ref.shape[0], 2, *ref.shape[-2:])
        out[:, 0], out[:, 1] = self.flow
        return out


def module(threshold: float, flow=(3.0, -2.0)) -> LitLGFN:
    try:
        m = LitLGFN(LGFN(**TINY), offset_fidelity_weight=1.0, offset_fidelity_threshold=threshold, dcn_init="identity")
    except RuntimeError as e:  # the baselines extra is absent: the teacher cannot be loaded
        pytest.skip(str(e))
    m._flow_teacher[0] = ConstantFlow(*flow)
    return m.train()


def set_offsets(m: LitLGFN, dy: float, dx: float) -> None:
    """Every DCN of the alignment predicts the offset (dy, dx) at every tap and pixel (torchvision's order)."""
    for stage in m.net.alignment.stages:
        conv = stage.dcn.conv_offset
        taps = conv.out_channels // 3
        with torch.no_grad():
            conv.weight.zero_()
            conv.bias.zero_()
            conv.bias[: 2 * taps : 2] = dy
            conv.bias[1 : 2 * taps : 2] = dx


def loss_for(m: LitLGFN) -> float:
    lr = torch.rand(2, 3, 3, 8, 8)
    m.net(lr)
    assert len(m._offsets) == len(m.net.alignment.stages)
    return float(m.offset_fidelity_loss(lr).detach())


def test_offsets_that_follow_the_flow_cost_nothing():
    m = module(threshold=0.0)
    set_offsets(m, dy=-2.0, dx=3.0)  # the teacher's (dx, dy) = (3, -2)
    assert loss_for(m) == pytest.approx(0.0, abs=1e-6)


def test_only_the_distance_beyond_the_threshold_is_paid():
    m = module(threshold=4.0)
    set_offsets(m, dy=-2.0 + 10.0, dx=3.0 + 1.0)  # |d dy| = 10 > 4 pays 10; |d dx| = 1 <= 4 pays nothing
    assert loss_for(m) == pytest.approx(10.0 / 2, rel=1e-5)  # the mean over both components
    m = module(threshold=20.0)
    set_offsets(m, dy=8.0, dx=4.0)
    assert loss_for(m) == 0.0


def test_the_loss_reaches_the_offset_branch_and_the_teacher_stays_out_of_the_state():
    m = module(threshold=0.0)
    set_offsets(m, dy=5.0, dx=5.0)
    loss = loss_for(m)
    loss_t = m.offset_fidelity_loss  # the hook collected this forward's offsets; run again for the gradient
    lr = torch.rand(2, 3, 3, 8, 8)
    m.net(lr)
    loss_t(lr).backward()
    assert loss > 0 and m.net.alignment.stages[0].dcn.conv_offset.bias.grad.abs().sum() > 0
    assert not any("basic_module" in k for k in m.state_dict())
    assert all(p is not q for p in m.parameters() for q in m._flow_teacher[0].parameters())


def test_negative_weight_is_refused_with_the_key():
    with pytest.raises(ValueError, match="model.offset_fidelity_weight"):
        LitLGFN(LGFN(**TINY), offset_fidelity_weight=-1.0)
