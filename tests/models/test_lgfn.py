"""Tests of the LGFN network (lgfn.models): shapes, sizes, ablations, initial behaviour."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lgfn.models import (
    DMDCU,
    LGFN,
    LGFN_SMALL,
    DCNv2Pack,
    GlobalFusion,
    GlobalFusionBlock,
    LocalFusion,
    LocalFusionBlock,
    video_shuffle,
)
from lgfn.models.complexity import count_parameters, gflops_per_frame

TINY = dict(
    num_feat=8,
    num_extract_blocks=1,
    num_align_stages=2,
    deformable_groups=2,
    num_lfm=1,
    num_gfm=1,
    gfm_slice_channels=2,
    num_rcab=1,
    rcab_reduction=4,
)


def tiny(**kw) -> LGFN:
    return LGFN(**{**TINY, **kw})


def params(m: nn.Module | None) -> int:
    return 0 if m is None else sum(p.numel() for p in m.parameters())


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("n", [3, 5, 7])
@pytest.mark.parametrize("h,w", [(6, 9), (8, 5)])
def test_output_shape(n, h, w):
    model = tiny(num_frames=n)
    out = model(torch.rand(2, n, 3, h, w))
    assert out.shape == (2, 3, 4 * h, 4 * w)
    assert torch.isfinite(out).all()


def test_scale_2_and_bad_scale():
    assert tiny(num_frames=3, scale=2)(torch.rand(1, 3, 3, 5, 6)).shape == (1, 3, 10, 12)
    with pytest.raises(ValueError, match="scale"):
        tiny(scale=5)


def test_paper_parameter_count_and_split():
    model = LGFN()
    total = count_parameters(model)
    assert abs(total - 7.85e6) / 7.85e6 < 0.01
    rec = model.reconstruction
    # Per-part split given in LGFN_REFERENCE.md (M params, rounded to 0.01).
    parts = {
        "extraction": (params(model.extraction), 0.41),
        "alignment": (params(model.alignment), 1.50),
        "lfm": (params(model.local_fusion), 2.30),
        "gfm": (params(model.global_fusion), 1.55),
        "merge": (params(model.merge) + params(rec.conv_fuse), 0.26),
        "residual group": (params(rec.body), 1.54),
        "tail": (params(rec.upsample) + params(rec.conv_last), 0.30),
    }
    for name, (got, want) in parts.items():
        assert abs(got / 1e6 - want) < 0.01, (name, got)
    assert sum(got for got, _ in parts.values()) == total


def test_small_config_builds_and_runs():
    model = LGFN(**LGFN_SMALL)
    assert count_parameters(model) < 1.5e6
    n = LGFN_SMALL["num_frames"]
    assert model(torch.rand(1, n, 3, 8, 8)).shape == (1, 3, 32, 32)


def test_dmdcu_branches_decrease():
    model = LGFN(num_align_stages=4)
    units = [stage.dmdcu for stage in model.alignment.stages]
    assert [u.num_branches for u in units] == [8, 6, 4, 2]
    assert [b.dilation for b in units[0].branches] == [(d, d) for d in range(1, 9)]
    assert [b.padding for b in units[0].branches] == [(d, d) for d in range(1, 9)]
    assert tiny(num_align_stages=3).alignment.stages[0].dmdcu.num_branches == 6


def test_ablation_no_dmdcu():
    full, ablated = tiny(), tiny(use_dmdcu=False)
    assert not any(isinstance(m, DMDCU) for m in ablated.modules())
    dmdcu_params = sum(params(m) for m in full.modules() if isinstance(m, DMDCU))
    assert dmdcu_params > 0
    assert params(full) - params(ablated) == dmdcu_params
    assert ablated(torch.rand(1, 7, 3, 5, 6)).shape == (1, 3, 20, 24)


@pytest.mark.parametrize("drop", ["lfm", "gfm"])
def test_ablation_single_branch(drop):
    nf = TINY["num_feat"]
    full = tiny()
    ablated = tiny(use_lfm=drop != "lfm", use_gfm=drop != "gfm")
    kinds = (LocalFusion, LocalFusionBlock) if drop == "lfm" else (GlobalFusion, GlobalFusionBlock)
    kept = (GlobalFusion,) if drop == "lfm" else (LocalFusion,)
    assert not any(isinstance(m, kinds) for m in ablated.modules())
    assert any(isinstance(m, kept) for m in ablated.modules())
    dropped = full.local_fusion if drop == "lfm" else full.global_fusion
    # The merge conv1x1 loses nf input channels (nf * nf weights).
    assert params(full) - params(ablated) == params(dropped) + nf * nf
    assert ablated(torch.rand(1, 7, 3, 5, 6)).shape == (1, 3, 20, 24)


def test_both_branches_off_is_an_error():
    with pytest.raises(ValueError, match="model.net.use_lfm and model.net.use_gfm cannot both be false"):
        tiny(use_lfm=False, use_gfm=False)


def test_bad_frame_counts():
    with pytest.raises(ValueError, match="num_frames"):
        tiny(num_frames=4)
    model = tiny(num_frames=5)
    with pytest.raises(ValueError, match="num_frames=5"):
        model(torch.rand(1, 7, 3, 6, 6))
    with pytest.raises(ValueError, match="B x N x 3 x h x w"):
        model(torch.rand(1, 5, 6, 6))


def test_dcn_starts_as_half_weight_conv():
    dcn = DCNv2Pack(8, 6, cond_channels=5, deformable_groups=2)
    x, cond = torch.randn(2, 8, 7, 9), torch.randn(2, 5, 7, 9)
    ref = F.conv2d(x, 0.5 * dcn.weight, dcn.bias, padding=1)
    torch.testing.assert_close(dcn(x, cond), ref, atol=1e-5, rtol=1e-5)
    assert dcn.last_offset_abs_mean == 0


def test_dcn_offset_and_mask_layout_match_torchvision():
    from torchvision.ops import deform_conv2d as tv_deform_conv2d

    from lgfn.models import alignment
    from lgfn.ops import deform_conv2d

    assert alignment.deform_conv2d is deform_conv2d  # the project's op, not torchvision's
    dcn = DCNv2Pack(8, 6, cond_channels=5, deformable_groups=2)
    with torch.no_grad():
        dcn.conv_offset.weight.normal_(std=0.3)
        dcn.conv_offset.bias.normal_()
    x, cond = torch.randn(2, 8, 7, 9), torch.randn(2, 5, 7, 9)
    out = dcn.conv_offset(cond)  # 2*2*9 = 36 (dy, dx) offsets, then 18 mask logits
    ref = tv_deform_conv2d(x, out[:, :36], dcn.weight, dcn.bias, padding=1, mask=torch.sigmoid(out[:, 36:]))
    torch.testing.assert_close(dcn(x, cond), ref, atol=1e-4, rtol=1e-4)
    assert dcn.last_offset_abs_mean == pytest.approx(out[:, :36].abs().mean().item())


def test_offset_stats():
    model = tiny(num_align_stages=3)
    assert model.offset_stats() == {}
    model(torch.rand(1, 7, 3, 5, 5))
    stats = model.offset_stats()
    assert stats == {"align/stage0": 0.0, "align/stage1": 0.0, "align/stage2": 0.0}
    with torch.no_grad():
        model.alignment.stages[1].dcn.conv_offset.bias.fill_(-2.0)
    model(torch.rand(1, 7, 3, 5, 5))
    assert model.offset_stats()["align/stage1"] == pytest.approx(2.0)
    assert isinstance(model.offset_stats()["align/stage0"], float)


def test_gradients_reach_every_parameter():
    model = tiny(num_feat=16, rcab_reduction=2)
    lr, hr = torch.rand(2, 7, 3, 6, 7), torch.rand(2, 3, 24, 28)
    (model(lr) - hr).abs().mean().backward()
    # Zero-initialised offset convs pass no gradient upstream at the first step, so only the
    # offset path in front of them (conv_cat, DMDCU) has zero gradient; the offset convs themselves learn.
    offset_path = re.compile(r"alignment\.stages\.\d+\.(conv_cat|dmdcu)\.")
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert (p.grad.abs().sum() > 0) != bool(offset_path.match(name)), name
    assert all(s.dcn.conv_offset.weight.grad.abs().sum() > 0 for s in model.alignment.stages)
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    model.zero_grad()
    (model(lr) - hr).abs().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad.abs().sum() > 0, name


def test_every_frame_is_used_and_batch_items_stay_separate():
    model = tiny(num_frames=5)
    lr = torch.rand(3, 5, 3, 6, 6, requires_grad=True)
    out = model(lr)
    out[1].sum().backward()
    per_frame = lr.grad.abs().sum(dim=(2, 3, 4))
    assert (per_frame[1] > 0).all()  # each of the 5 frames reaches the output
    assert (per_frame[[0, 2]] == 0).all()  # batch items never mix through the frame folding
    with torch.no_grad():
        single = model(lr[1:2])
    torch.testing.assert_close(out[1:2].detach(), single, atol=1e-5, rtol=1e-5)


def test_alignment_keeps_centre():
    model = tiny(num_frames=5)
    feat = torch.randn(2, 5, 8, 6, 6)
    with torch.no_grad():
        for stage in model.alignment.stages:
            stage.dcn.conv_offset.bias.normal_()  # non-trivial offsets
        out = model.alignment(feat, 2)
    assert torch.equal(out[:, 2], feat[:, 2])
    assert not torch.allclose(out[:, 0], feat[:, 0])


def test_local_fusion_scans_forwards():
    block = LocalFusionBlock(8)
    x = torch.randn(1, 4, 8, 5, 5, requires_grad=True)
    block(x)[:, 1].sum().backward()
    touched = x.grad.abs().sum(dim=(2, 3, 4))[0]
    assert touched[0] > 0 and touched[1] > 0
    assert touched[2] == 0 and touched[3] == 0


def test_global_fusion_mixes_all_frames():
    block = GlobalFusionBlock(num_frames=5, num_feat=8, slice_channels=2)
    x = torch.randn(1, 5, 8, 4, 4, requires_grad=True)
    block(x)[:, 0].sum().backward()
    assert (x.grad.abs().sum(dim=(2, 3, 4))[0] > 0).all()
    paper = GlobalFusionBlock()
    assert (paper.conv_in.out_channels, paper.conv_reduce.out_channels) == (63, 31)


def test_video_shuffle():
    b, n, c = 2, 5, 3
    x = torch.randn(b, n, n * c, 4, 6)
    y = video_shuffle(x)
    # Independent definition: group g holds slice g of every frame, frames in order.
    for g in range(n):
        for f in range(n):
            assert torch.equal(y[:, g, f * c : (f + 1) * c], x[:, f, g * c : (g + 1) * c])
    assert torch.equal(video_shuffle(y), x)
    with pytest.raises(ValueError, match="multiple of the frame count"):
        video_shuffle(torch.randn(1, 5, 12, 2, 2))


@pytest.mark.parametrize("scale", [2, 4])
def test_bilinear_skip(scale):
    model = tiny(num_frames=3, scale=scale)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    lr = torch.rand(2, 3, 3, 5, 7)
    ref = F.interpolate(lr[:, 1], scale_factor=scale, mode="bilinear", align_corners=False)
    torch.testing.assert_close(model(lr), ref)
    # Zeroing only the last conv isolates the skip just as well.
    model = tiny(num_frames=3, scale=scale)
    with torch.no_grad():
        model.reconstruction.conv_last.weight.zero_()
        model.reconstruction.conv_last.bias.zero_()
    torch.testing.assert_close(model(lr), ref)


def test_gflops_matches_conv_hook_count():
    model = tiny(num_frames=5)
    h, w = 6, 7
    total = 0

    def hook(module, inputs, out):
        nonlocal total
        cin = inputs[0].shape[1] // getattr(module, "groups", 1)
        total += 2 * out.numel() * cin * module.weight.shape[2] * module.weight.shape[3]

    hooked = [m for m in model.modules() if isinstance(m, (nn.Conv2d, DCNv2Pack))]
    handles = [m.register_forward_hook(hook) for m in hooked]
    with torch.no_grad():
        model(torch.rand(1, 5, 3, h, w))
    for handle in handles:
        handle.remove()
    assert gflops_per_frame(model, (h, w)) == pytest.approx(total / 1e9)


def test_kaiming_init_keeps_offsets_zero_and_scales_residual_branches():
    import math

    from lgfn.models.weight_init import init_weights

    torch.manual_seed(0)
    net = init_weights(LGFN(num_frames=3, num_feat=32, num_extract_blocks=2, num_align_stages=2,
                            deformable_groups=4, num_lfm=1, num_gfm=1, gfm_slice_channels=4, num_rcab=2), "kaiming")
    gain = math.sqrt(2 / (1 + 0.1**2))
    for stage in net.alignment.stages:
        assert not stage.dcn.conv_offset.weight.any() and not stage.dcn.conv_offset.bias.any()
    fuse = net.reconstruction.conv_fuse  # a plain conv: He-normal, std gain / sqrt(fan_in)
    want = gain / math.sqrt(fuse.weight[0].numel())
    assert fuse.weight.std().item() == pytest.approx(want, rel=0.05) and not fuse.bias.any()
    rb = net.extraction.body[0] if hasattr(net.extraction, "body") else None
    res = [m for m in net.modules() if type(m).__name__ == "ResidualBlockNoBN"][0] if rb is None else rb
    want_res = 0.1 * gain / math.sqrt(res.conv2.weight[0].numel())
    assert res.conv2.weight.std().item() == pytest.approx(want_res, rel=0.1)
    with pytest.raises(ValueError, match="model.weight_init='xavier'"):
        init_weights(net, "xavier")


def test_identity_dcn_init_passes_every_neighbour_through_unchanged():
    from lgfn.models.weight_init import init_dcn

    torch.manual_seed(0)
    net = LGFN(num_frames=5, num_feat=16, num_extract_blocks=1, num_align_stages=2, deformable_groups=4,
               num_lfm=1, num_gfm=1, gfm_slice_channels=2, num_rcab=1)
    feat = torch.randn(2, 5, 16, 9, 11)
    assert not torch.allclose(net.alignment(feat, 2), feat, atol=1e-3)  # random DCNs scramble the neighbours
    init_dcn(net, "identity")
    torch.testing.assert_close(net.alignment(feat, 2), feat, rtol=0, atol=1e-6)
    # the offsets still get a gradient: the neighbour features' own spatial gradient
    feat.requires_grad_(False)
    net.alignment(feat, 2).square().sum().backward()
    assert net.alignment.stages[0].dcn.conv_offset.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="model.dcn_init='eye'"):
        init_dcn(net, "eye")
