"""The opt-in speed paths (channels_last, bf16 autocast, compile fallback) against the reference forward."""

import pytest
import torch

import lgfn.models.inference_speed as perf
from lgfn.models import LGFN, DCNv2Pack
from lgfn.models.inference_speed import CompiledOrEager, cpu_autocast, prepare_for_inference, to_channels_last
from lgfn.ops import deform_conv2d

TINY = {
    "num_frames": 3,
    "num_feat": 8,
    "num_extract_blocks": 1,
    "num_align_stages": 1,
    "deformable_groups": 2,
    "num_lfm": 1,
    "num_gfm": 1,
    "gfm_slice_channels": 2,
    "num_rcab": 1,
    "rcab_reduction": 4,
}


def _net(seed: int = 0) -> LGFN:
    torch.manual_seed(seed)
    net = LGFN(**TINY).eval()
    for m in net.modules():
        if isinstance(m, DCNv2Pack):  # non-zero offsets, so the DCN really samples off the grid
            torch.nn.init.normal_(m.conv_offset.weight, std=0.05)
            torch.nn.init.normal_(m.conv_offset.bias, std=1.0)
    return net


def _lr(h: int = 12, w: int = 10) -> torch.Tensor:
    return torch.rand(2, TINY["num_frames"], 3, h, w, generator=torch.Generator().manual_seed(1))


def test_channels_last_model_matches_reference():
    ref_net, lr = _net(), _lr()
    with torch.inference_mode():
        ref = ref_net(lr)
        fast_net = prepare_for_inference(_net(), channels_last=True)
        conv = fast_net.extraction.conv_first.weight
        assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
        out = fast_net(to_channels_last(lr))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    # Same parameters, same keys: checkpoints load into either layout.
    assert fast_net.state_dict().keys() == ref_net.state_dict().keys()


def test_to_channels_last_keeps_values_and_sets_per_frame_strides():
    x = _lr()
    y = to_channels_last(x)
    assert torch.equal(x, y)
    assert y.flatten(0, 1).is_contiguous(memory_format=torch.channels_last)
    assert to_channels_last(x[0]).is_contiguous(memory_format=torch.channels_last)


def test_deform_conv_channels_last_input_matches_contiguous():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 8, 7, 9, generator=gen)
    off = torch.randn(2, 2 * 2 * 9, 7, 9, generator=gen) * 2
    mask = torch.rand(2, 2 * 9, 7, 9, generator=gen)
    w = torch.randn(4, 8, 3, 3, generator=gen)
    ref = deform_conv2d(x, off, w, padding=1, mask=mask)
    cl = lambda t: t.contiguous(memory_format=torch.channels_last)  # noqa: E731
    out = deform_conv2d(cl(x), cl(off), w, padding=1, mask=cl(mask))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_bf16_autocast_is_close_and_really_bf16():
    net, lr = _net(), _lr()
    with torch.inference_mode():
        ref = net(lr)
        with cpu_autocast(False):
            same = net(lr)
        seen = []
        hook = net.extraction.conv_first.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
        with cpu_autocast(True):
            low = net(lr).float()
        hook.remove()
    assert torch.equal(same, ref)
    assert seen == [torch.bfloat16]
    # bf16 keeps ~3 significant digits: close, but not float32-close.
    err = (low - ref).abs().max().item()
    assert 0 < err < 0.05 * ref.abs().max().item()


def test_compile_failure_falls_back_to_eager_with_one_warning(monkeypatch):
    def broken(*_a, **_k):
        raise RuntimeError("no compiler here")

    def compile_stub(net, **_k):
        return broken

    monkeypatch.setattr(perf.torch, "compile", compile_stub)
    net, lr = _net(), _lr()
    wrapped = prepare_for_inference(_net(), channels_last=False, compile=True)
    assert isinstance(wrapped, CompiledOrEager)
    assert wrapped.num_frames == TINY["num_frames"] and wrapped.config == net.config
    with torch.inference_mode():
        with pytest.warns(UserWarning, match="torch.compile failed"):
            first = wrapped(lr)
        second = wrapped(lr)  # no second warning: the wrapper stays eager
    torch.testing.assert_close(first, net(lr).detach())
    torch.testing.assert_close(second, first)


def test_compile_that_cannot_even_start_falls_back(monkeypatch):
    def compile_raises(net, **_k):
        raise RuntimeError("dynamo unsupported")

    monkeypatch.setattr(perf.torch, "compile", compile_raises)
    with pytest.warns(UserWarning, match="dynamo unsupported"):
        wrapped = CompiledOrEager(_net())
    with torch.inference_mode():
        torch.testing.assert_close(wrapped(_lr()), _net()(_lr()))
