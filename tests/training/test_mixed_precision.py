"""Issue 16's precision: float32 deformable convs under float16/bf16 and autocast, --half at wide frames,
the DCN backend under torch.compile, bf16-mixed training config, float64 metrics."""

from __future__ import annotations

import pytest
import torch
import torchvision

from lgfn.models import LGFN
from lgfn.ops import deform_conv as dc
from lgfn.ops import deform_conv2d

TINY = dict(num_frames=3, num_feat=8, num_extract_blocks=1, num_align_stages=1, deformable_groups=2,
            num_lfm=1, num_gfm=1, gfm_slice_channels=2, num_rcab=1)


def _wide_dcn_inputs(width: int = 1280):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 4, 4, width, generator=g)
    offset = (torch.rand(1, 18, 4, width, generator=g) - 0.5) * 4  # sub-pixel offsets within +-2 px
    mask = torch.rand(1, 9, 4, width, generator=g)
    weight = torch.randn(4, 4, 3, 3, generator=g) * 0.3
    return x, offset, weight, torch.zeros(4), mask


def _edge_errors(out: torch.Tensor, ref: torch.Tensor, cols: int) -> tuple[float, float]:
    err = (out.double() - ref.double()).abs()
    return float(err[..., :cols].max()), float(err[..., -cols:].max())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_dcn_samples_in_float32_at_wide_frames(dtype):
    x, off, w, b, m = (t.to(dtype) for t in _wide_dcn_inputs())
    ref = torchvision.ops.deform_conv2d(x.double(), off.double(), w.double(), b.double(), padding=1, mask=m.double())
    out = deform_conv2d(x, off, w, b, padding=1, mask=m)
    assert out.dtype == dtype
    left, right = _edge_errors(out, ref, 64)
    tol = 1e-3 if dtype == torch.float16 else 8e-3  # the output's own rounding
    assert left < tol and right < tol and right < 2 * left + tol / 4


def test_torchvision_float16_kernel_loses_the_right_edge():
    # What the fix is for (issue 16): positions in float16 are 0.5 px apart beyond 1024 columns.
    x, off, w, b, m = (t.half() for t in _wide_dcn_inputs())
    ref = torchvision.ops.deform_conv2d(x.double(), off.double(), w.double(), b.double(), padding=1, mask=m.double())
    try:
        raw = torchvision.ops.deform_conv2d(x, off, w, b, padding=1, mask=m)
    except RuntimeError:
        pytest.skip("this torchvision has no float16 CPU kernel")
    left, right = _edge_errors(raw, ref, 64)
    assert right > 10 * left


def _net_with_offsets() -> LGFN:
    torch.manual_seed(0)
    net = LGFN(**TINY).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if hasattr(m, "conv_offset"):  # trained-like offsets: a few pixels, sub-pixel parts
                m.conv_offset.weight.copy_(torch.randn(m.conv_offset.weight.shape, generator=g) * 0.5)
                m.conv_offset.bias.copy_(torch.randn(m.conv_offset.bias.shape, generator=g))
    return net


def _run_with_aligned(net, frames, half: bool):
    """Output of ``upscale_window`` and every DCN output (the aligned features) of that run."""
    from lgfn.inference.tiling import upscale_window
    from lgfn.models.alignment import DCNv2Pack
    from lgfn.models.inference_speed import half_precision

    outs = []
    hooks = [m.register_forward_hook(lambda m, i, o: outs.append(o.float().flatten(0, 1)))
             for m in net.modules() if isinstance(m, DCNv2Pack)]
    try:
        with half_precision("cpu", half):  # what `lgfn-upscale --half` runs (on CUDA there)
            sr = upscale_window(net, frames)
    finally:
        for h in hooks:
            h.remove()
    return sr.float(), torch.cat(outs)


def test_half_upscale_is_as_accurate_at_the_right_edge_as_at_the_left():
    net = _net_with_offsets()
    frames = torch.rand(3, 3, 8, 1280, generator=torch.Generator().manual_seed(2))  # a 1280 px wide LR window
    full, aligned = _run_with_aligned(net, frames, half=False)
    half, aligned_half = _run_with_aligned(net, frames, half=True)
    offsets = [m.last_offset_abs_mean for m in net.modules() if hasattr(m, "last_offset_abs_mean")]
    assert max(float(o) for o in offsets if o is not None) > 0.3  # the DCN really samples off the grid
    assert float((half - full).abs().max()) > 1e-4  # the convolutions really ran in float16
    # The aligned features: with float16 positions (net.half() into torchvision's kernel) the last 64
    # columns were 19x worse than the first 64 here (1.4e-2 vs 7e-4); the output 1.2x.
    left, right = _edge_errors(aligned_half, aligned, 64)
    assert right < 2 * left + 1e-4, (left, right)
    left, right = _edge_errors(half, full, 4 * 64)  # the first and last 64 LR columns of the SR frame
    assert right < 2 * left + 1e-4, (left, right)


def test_dcn_under_autocast_runs_in_float32(monkeypatch):
    seen = []
    real = dc._deform_conv2d_plain

    def spy(input, offset, weight, *args, **kw):
        seen.append((input.dtype, offset.dtype, weight.dtype, torch.is_autocast_enabled("cpu")))
        return real(input, offset, weight, *args, **kw)

    monkeypatch.setattr(dc, "_deform_conv2d_plain", spy)
    monkeypatch.setattr(dc, "_use_fast_path", lambda *a: False)
    x, off, w, b, m = _wide_dcn_inputs(32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = torch.nn.functional.conv2d(x, w, padding=1)  # a bf16 activation, as in the network
        out = deform_conv2d(y, off, w, b, padding=1, mask=m)
    assert y.dtype == torch.bfloat16 and out.dtype == torch.bfloat16
    assert seen == [(torch.float32, torch.float32, torch.float32, False)]


# --------------------------------------------------------------------------- backend choice
class _FakeCompiler:
    def __init__(self, compiling: bool, exporting: bool) -> None:
        self.compiling, self.exporting = compiling, exporting

    def is_compiling(self) -> bool:
        return self.compiling

    def is_exporting(self) -> bool:
        return self.exporting


@pytest.mark.parametrize(
    "device,compiling,exporting,onnx,want",
    [
        ("cuda", False, False, False, "torchvision"),
        ("cuda", True, False, False, "torchvision"),  # torch.compile on CUDA keeps torchvision's op
        ("cuda", True, True, False, "pytorch"),  # torch.export: plain ops
        ("cuda", False, False, True, "pytorch"),  # ONNX export: plain ops
        ("cpu", True, False, False, "pytorch"),
        ("cpu", False, False, False, "pytorch"),
    ],
)
def test_backend_choice_with_a_faked_device(monkeypatch, device, compiling, exporting, onnx, want):
    monkeypatch.setattr(dc, "_torchvision_available", lambda: True)
    monkeypatch.setattr(torch, "compiler", _FakeCompiler(compiling, exporting))
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: onnx)
    assert dc._resolve_backend("auto", torch.device(device)) == want


# --------------------------------------------------------------------------- bf16-mixed training
def test_gpu_bf16_trainer_config_and_matmul_precision(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from entry import compose_cfg

    from lgfn.training.mixed_precision import MatmulPrecision

    cfg = compose_cfg("train", ["trainer=gpu_bf16"], tmp_path)
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.accelerator == "gpu"
    assert cfg.callbacks.matmul_precision._target_ == "lgfn.training.mixed_precision.MatmulPrecision"

    calls = []
    monkeypatch.setattr(torch, "set_float32_matmul_precision", calls.append)
    cb = MatmulPrecision()
    cb.setup(SimpleNamespace(precision="bf16-mixed", root_device=torch.device("cuda", 0)), None, "fit")
    cb.setup(SimpleNamespace(precision="32-true", root_device=torch.device("cuda", 0)), None, "fit")
    cb.setup(SimpleNamespace(precision="bf16-mixed", root_device=torch.device("cpu")), None, "fit")
    assert calls == ["high"]
    MatmulPrecision("high", always=True).setup(
        SimpleNamespace(precision="32-true", root_device=torch.device("cuda", 0)), None, "fit")
    assert calls == ["high", "high"]


def test_metrics_stay_float64_under_bf16_autocast():
    from lgfn.metrics import psnr_y, ssim_y

    a = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    b = (a + 0.05 * torch.randn(a.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    ref = psnr_y(a, b), ssim_y(a, b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = psnr_y(a.bfloat16(), b), ssim_y(a, b.bfloat16())
    assert all(g.dtype == torch.float64 for g in got)
    assert abs(float(got[1] - ref[1])) < 1e-2 and abs(float(got[0] - ref[0])) < 0.2


def test_a_bf16_autocast_training_step_has_float32_gradients():
    # What bf16-mixed does per step (here on the CPU): forward under autocast, float32 parameters and grads.
    net = _net_with_offsets().train()
    lr = torch.rand(2, 3, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    hr = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = (net(lr) - hr).abs().mean()
    loss.backward()
    dcn = [m for m in net.modules() if hasattr(m, "conv_offset")][0]
    assert dcn.weight.grad is not None and dcn.weight.grad.dtype == torch.float32
    assert dcn.conv_offset.weight.grad is not None and float(dcn.conv_offset.weight.grad.abs().sum()) > 0
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
