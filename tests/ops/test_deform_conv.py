"""lgfn.ops.deform_conv2d against torchvision.ops.deform_conv2d (values and gradients), and its API."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torchvision

import lgfn.ops.deform_conv as dc
from lgfn.ops import available_backends, cpu_kernels, current_backend, dcn_backend, deform_conv2d

CASES = {
    # name: batch, in_ch, out_ch, height, width, offset_groups, kernel, stride, padding, dilation, use_mask
    "basic": (2, 4, 3, 6, 7, 1, (3, 3), 1, 1, 1, True),
    "groups_nonsquare": (2, 8, 5, 5, 9, 4, (3, 3), 1, 1, 1, True),
    "no_mask": (1, 4, 2, 6, 5, 2, (3, 3), 1, 1, 1, False),
    "stride2_dilation2": (2, 4, 3, 9, 8, 2, (3, 3), 2, 2, 2, True),
    "rect_kernel_pairs": (1, 6, 4, 7, 6, 3, (3, 2), (2, 1), (1, 0), (1, 2), True),
    "single_row": (2, 2, 3, 1, 6, 1, (3, 3), 1, 1, 1, True),
    "single_pixel": (1, 2, 2, 1, 1, 2, (3, 3), 1, 1, 1, True),
}


def _make(case, dtype=torch.float64, offset_scale=2.5, seed=0):
    batch, cin, cout, h, w, groups, (kh, kw), stride, padding, dilation, use_mask = case
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(padding), pair(dilation)
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    gen = torch.Generator().manual_seed(seed)
    # offset_scale 2.5 px on 5-9 px images sends many samples outside the image (and past -1 / H).
    tensors = {
        "input": torch.randn(batch, cin, h, w, generator=gen, dtype=dtype),
        "offset": torch.randn(batch, 2 * groups * kh * kw, ho, wo, generator=gen, dtype=dtype) * offset_scale,
        "weight": torch.randn(cout, cin, kh, kw, generator=gen, dtype=dtype),
        "bias": torch.randn(cout, generator=gen, dtype=dtype),
        "mask": torch.rand(batch, groups * kh * kw, ho, wo, generator=gen, dtype=dtype) if use_mask else None,
    }
    kwargs = {"stride": stride, "padding": padding, "dilation": dilation}
    return tensors, kwargs


def _call(fn, t, kwargs, **extra):
    return fn(t["input"], t["offset"], t["weight"], t["bias"], mask=t["mask"], **kwargs, **extra)


def _value_and_grads(fn, t, kwargs, grad_seed=1, **extra):
    leaves = {k: v.detach().clone().requires_grad_() for k, v in t.items() if v is not None}
    out = _call(fn, {**t, **leaves}, kwargs, **extra)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=out.dtype)
    out.backward(grad_out)
    return out.detach(), {k: v.grad for k, v in leaves.items()}


@pytest.fixture(params=["fast", "plain"])
def pytorch_path(request, monkeypatch):
    """Run the pytorch backend through the custom Function ("fast") or the exportable plain ops."""
    if request.param == "plain":
        monkeypatch.setattr(dc, "_use_fast_path", lambda *a, **k: False)
    return request.param


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_pytorch_backend_matches_torchvision_float64(case, pytorch_path):
    t, kwargs = _make(case)
    ref_out, ref_grads = _value_and_grads(torchvision.ops.deform_conv2d, t, kwargs)
    out, grads = _value_and_grads(deform_conv2d, t, kwargs, backend="pytorch")
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-9)
    assert grads.keys() == ref_grads.keys()
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=0, atol=1e-8, msg=f"grad of {name}")


def test_samples_really_leave_the_image():
    """The 'outside' claim of the cases above: many taps land beyond -1 or H/W, where the result is 0."""
    t, _ = _make(CASES["basic"])
    dy = t["offset"][:, 0::2]
    assert (dy.abs() > 3).float().mean() > 0.1


@pytest.mark.parametrize("backend", ["pytorch", "torchvision"])
def test_backends_match_torchvision_float32(backend):
    t, kwargs = _make(CASES["groups_nonsquare"], dtype=torch.float32)
    ref_out, ref_grads = _value_and_grads(torchvision.ops.deform_conv2d, t, kwargs)
    out, grads = _value_and_grads(deform_conv2d, t, kwargs, backend=backend)
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-4)
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-4, msg=f"grad of {name}")


def test_only_some_inputs_need_grad():
    t, kwargs = _make(CASES["basic"])
    offset = t["offset"].clone().requires_grad_()
    out = deform_conv2d(
        t["input"], offset, t["weight"], t["bias"], mask=t["mask"], **kwargs, backend="pytorch"
    )
    (grad,) = torch.autograd.grad(out.sum(), offset)
    ref_offset = t["offset"].clone().requires_grad_()
    ref = torchvision.ops.deform_conv2d(
        t["input"], ref_offset, t["weight"], t["bias"], mask=t["mask"], **kwargs
    )
    (ref_grad,) = torch.autograd.grad(ref.sum(), ref_offset)
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-8)


def test_zero_offsets_full_mask_equal_plain_conv():
    """Independent of torchvision: offset 0 and mask 1 is an ordinary convolution."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 6, 5, generator=gen, dtype=torch.float64)
    w = torch.randn(3, 4, 3, 3, generator=gen, dtype=torch.float64)
    offset = torch.zeros(2, 2 * 2 * 9, 2, 3, dtype=torch.float64)
    mask = torch.ones(2, 2 * 9, 2, 3, dtype=torch.float64)
    out = deform_conv2d(
        x, offset, w, None, stride=2, padding=1, dilation=(2, 1), mask=mask, backend="pytorch"
    )
    ref = torch.nn.functional.conv2d(x, w, None, stride=2, padding=1, dilation=(2, 1))
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


def test_half_pixel_shift_and_far_outside_values():
    """dx = 0.5 averages two neighbours; a sample at y <= -1 reads 0 (1x1 kernel, one channel)."""
    x = torch.arange(12, dtype=torch.float64).view(1, 1, 3, 4)
    w = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    offset = torch.zeros(1, 2, 3, 4, dtype=torch.float64)
    offset[0, 1] = 0.5
    out = deform_conv2d(x, offset, w, backend="pytorch")[0, 0]
    expected = (x[0, 0] + torch.cat([x[0, 0, :, 1:], torch.zeros(3, 1, dtype=torch.float64)], 1)) / 2
    torch.testing.assert_close(out, expected)
    offset = torch.zeros(1, 2, 3, 4, dtype=torch.float64)
    offset[0, 0] = -10.0
    assert deform_conv2d(x, offset, w, backend="pytorch").abs().max() == 0


def test_no_grad_forward_matches():
    t, kwargs = _make(CASES["groups_nonsquare"], dtype=torch.float32)
    with torch.no_grad():
        out = _call(deform_conv2d, t, kwargs, backend="pytorch")
    ref = _call(torchvision.ops.deform_conv2d, t, kwargs)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_weight_groups_plain_path_matches_torchvision():
    t, kwargs = _make(CASES["groups_nonsquare"])
    t["weight"] = t["weight"][:, :4].repeat(2, 1, 1, 1)[:6].contiguous()  # 6 x 4 x 3 x 3: groups = 2
    t["bias"] = torch.arange(6, dtype=torch.float64)
    ref_out, ref_grads = _value_and_grads(torchvision.ops.deform_conv2d, t, kwargs)
    out, grads = _value_and_grads(deform_conv2d, t, kwargs, backend="pytorch")
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-9)
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=0, atol=1e-8, msg=f"grad of {name}")


def test_trace_uses_plain_ops_and_matches():
    t, kwargs = _make(CASES["basic"], dtype=torch.float32)
    args = (t["input"], t["offset"], t["weight"], t["bias"], t["mask"])

    def f(x, offset, weight, bias, mask):
        return deform_conv2d(x, offset, weight, bias, mask=mask, **kwargs)

    traced = torch.jit.trace(f, args)
    graph = str(traced.graph)
    assert "grid_sampler" in graph and "torchvision" not in graph and "_DeformConvFn" not in graph
    torch.testing.assert_close(
        traced(*args), _call(torchvision.ops.deform_conv2d, t, kwargs), rtol=1e-4, atol=1e-4
    )


def test_auto_picks_pytorch_on_cpu_and_context_forces(monkeypatch):
    calls = []
    real = torchvision.ops.deform_conv2d
    monkeypatch.setattr(torchvision.ops, "deform_conv2d", lambda *a, **k: calls.append(1) or real(*a, **k))
    t, kwargs = _make(CASES["basic"], dtype=torch.float32)
    assert dc._resolve_backend("auto", torch.device("cpu")) == "pytorch"
    _call(deform_conv2d, t, kwargs)
    assert calls == []
    with dcn_backend("torchvision"):
        assert current_backend() == "torchvision"
        _call(deform_conv2d, t, kwargs)
        _call(deform_conv2d, t, kwargs, backend="pytorch")  # the context wins over the argument
    assert calls == [1, 1]
    assert current_backend() is None
    with dcn_backend("pytorch"):
        assert dc._resolve_backend("auto", torch.device("cuda")) == "pytorch"
        _call(deform_conv2d, t, kwargs, backend="torchvision")
    assert calls == [1, 1]
    assert dc._resolve_backend("auto", torch.device("cuda")) == "torchvision"


def test_available_backends_and_bad_names():
    assert available_backends() == ["torchvision", "pytorch"]
    with pytest.raises(ValueError, match="dcn_backend"):
        with dcn_backend("cudnn"):
            pass
    t, kwargs = _make(CASES["basic"], dtype=torch.float32)
    with pytest.raises(ValueError, match="backend"):
        _call(deform_conv2d, t, kwargs, backend="fast")


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda t: t.update(offset=t["offset"][:, :-1]), "offset.shape\\[1\\]"),
        (lambda t: t.update(offset=t["offset"][:, :, :-1]), "offset must have shape"),
        (lambda t: t.update(mask=t["mask"][:, :-1]), "mask must have shape"),
        (lambda t: t.update(bias=t["bias"][:-1]), "bias must have shape"),
        (lambda t: t.update(input=t["input"][0]), "input must be"),
        (lambda t: t.update(weight=t["weight"][:, :3]), "weight.shape\\[1\\]"),
    ],
)
def test_bad_shapes_name_the_argument(change, match):
    t, kwargs = _make(CASES["basic"], dtype=torch.float32)
    change(t)
    with pytest.raises(ValueError, match=match):
        _call(deform_conv2d, t, kwargs)


def test_bad_stride_type():
    t, kwargs = _make(CASES["basic"], dtype=torch.float32)
    with pytest.raises(ValueError, match="stride"):
        _call(deform_conv2d, t, {**kwargs, "stride": (1, 1, 1)})


def test_non_contiguous_inputs():
    t, kwargs = _make(CASES["groups_nonsquare"])
    ref = _call(torchvision.ops.deform_conv2d, t, kwargs)
    strided = {k: v.transpose(2, 3).contiguous().transpose(2, 3) if k != "bias" else v for k, v in t.items()}
    assert not strided["offset"].is_contiguous() and not strided["input"].is_contiguous()
    out = _call(deform_conv2d, strided, kwargs, backend="pytorch")
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-9)


def test_cpu_kernels_build_and_serve_the_fast_path():
    """This machine (and CI) has a C++ compiler: the CPU fast path is the C++ kernels' autograd Function."""
    assert cpu_kernels.available()
    t, kwargs = _make(CASES["groups_nonsquare"])
    leaves = {k: v.clone().requires_grad_() for k, v in t.items()}
    out = _call(deform_conv2d, leaves, kwargs, backend="pytorch")
    assert type(out.grad_fn).__name__ == "_DeformConvFnBackward"


@pytest.fixture
def fresh_kernel_state(monkeypatch):
    """Forget whether the kernels loaded, so `available()` decides again (and restore it afterwards)."""
    monkeypatch.setattr(cpu_kernels, "_state", {})


def test_failed_kernel_build_warns_once_and_falls_back(monkeypatch, fresh_kernel_state):
    def broken_build(verbose=False):
        raise RuntimeError("Error building extension 'lgfn_dcn_cpu'\nc++: not found")

    monkeypatch.setattr(cpu_kernels, "build", broken_build)
    monkeypatch.setattr(torch.ops, "lgfn_dcn", object(), raising=False)  # pretend nothing is loaded
    t, kwargs = _make(CASES["basic"])
    with pytest.warns(
        RuntimeWarning, match=r"could not build the C\+\+ deformable-conv kernels \(c\+\+: not found\)"
    ):
        out, grads = _value_and_grads(deform_conv2d, t, kwargs, backend="pytorch")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the reason was given once; later calls stay quiet
        assert cpu_kernels.available() is False
        _call(deform_conv2d, t, kwargs)
    ref_out, ref_grads = _value_and_grads(torchvision.ops.deform_conv2d, t, kwargs)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-9)
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=0, atol=1e-8)


def test_env_switch_turns_the_kernels_off_silently(monkeypatch, fresh_kernel_state, recwarn):
    monkeypatch.setenv(cpu_kernels.ENV_SWITCH, "0")
    assert cpu_kernels.available() is False
    t, kwargs = _make(CASES["basic"])
    out = _call(deform_conv2d, {k: v.clone().requires_grad_() for k, v in t.items()}, kwargs)
    assert type(out.grad_fn).__name__ != "_DeformConvFnBackward"
    assert not [w for w in recwarn if "deformable-conv kernels" in str(w.message)]


def test_kernel_ops_reject_mismatched_buffers():
    assert cpu_kernels.available()
    ops = cpu_kernels.ops()
    bordered = torch.zeros(1, 6, 7, 8)  # a 4 x 5 image with its one-pixel border, 8 channels
    offset = torch.zeros(1, 2 * 2 * 9, 4, 5)
    weight_t = torch.zeros(9 * 8, 3)
    out = torch.empty(1, 20, 3)
    geometry = ([3, 3], [1, 1], [1, 1], [1, 1])
    ops.forward(bordered, offset, None, weight_t, out, 2, *geometry)
    with pytest.raises(RuntimeError, match="out must be contiguous with shape"):
        ops.forward(bordered, offset, None, weight_t, out[:, :-1], 2, *geometry)
    with pytest.raises(RuntimeError, match="offset must match the input's dtype"):
        ops.forward(bordered, offset.double(), None, weight_t, out, 2, *geometry)
    with pytest.raises(RuntimeError, match="channels must divide into offset groups"):
        ops.forward(bordered, offset, None, weight_t, out, 3, *geometry)
    with pytest.raises(RuntimeError, match="weight_t must be"):
        ops.forward(bordered, offset, None, weight_t[1:], out, 2, *geometry)
    with pytest.raises(RuntimeError, match="grad_mask given without a mask"):
        grad_out, rows = torch.zeros(1, 3, 20), weight_t.t().contiguous()
        ops.backward(bordered, offset, None, grad_out, rows, None, None, torch.zeros(1, 18, 4, 5), None, 2, *geometry)


def test_baseline_instruction_set_kernels_match_torchvision():
    """The non-AVX2 build of the kernels (what CPUs without AVX2 run), forced by LGFN_DCN_NO_AVX2."""
    script = (
        "import torch, torchvision\n"
        "from tests.ops.test_deform_conv import CASES, _make, _value_and_grads\n"
        "from lgfn.ops import cpu_kernels, deform_conv2d\n"
        "assert cpu_kernels.available()\n"
        "for dtype, tol in ((torch.float64, 1e-8), (torch.float32, 1e-4)):\n"
        "    for case in (CASES['groups_nonsquare'], CASES['stride2_dilation2'], CASES['no_mask']):\n"
        "        t, kwargs = _make(case, dtype=dtype)\n"
        "        out, grads = _value_and_grads(deform_conv2d, t, kwargs)\n"
        "        ref, ref_grads = _value_and_grads(torchvision.ops.deform_conv2d, t, kwargs)\n"
        "        torch.testing.assert_close(out, ref, rtol=tol, atol=tol)\n"
        "        for name in ref_grads:\n"
        "            torch.testing.assert_close(grads[name], ref_grads[name], rtol=tol, atol=tol)\n"
        "print('ok')\n"
    )
    env = {**os.environ, "LGFN_DCN_NO_AVX2": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.parametrize("mode", ["inference_mode", "no_grad", "grad"])
def test_multithreaded_kernels_under_every_autograd_mode(mode):
    """Images of several pixel blocks, so both threads run block GEMMs; inference tensors included."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        context = {"inference_mode": torch.inference_mode, "no_grad": torch.no_grad}.get(mode)
        t, kwargs = _make((2, 16, 8, 24, 20, 2, (3, 3), 1, 1, 1, True), dtype=torch.float32)
        ref = _call(torchvision.ops.deform_conv2d, t, kwargs)
        if context is None:
            out, grads = _value_and_grads(deform_conv2d, t, kwargs)
            _, ref_grads = _value_and_grads(torchvision.ops.deform_conv2d, t, kwargs)
            for name in ref_grads:
                torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-4)
        else:
            with context():
                t = {k: v.clone() for k, v in t.items()}  # inference tensors under inference_mode
                out = _call(deform_conv2d, t, kwargs)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    finally:
        torch.set_num_threads(threads)


def test_build_directory_is_per_torch_version_under_torch_extensions_dir(monkeypatch, tmp_path):
    assert cpu_kernels.build_directory().name.endswith(torch.__version__.replace("+", "_"))
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert cpu_kernels.build_directory().parent == tmp_path


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_samples_just_inside_the_bottom_right_edge(dtype):
    """y, x a hair below H, W: 4 - 2^-22 is a float32, 5 - 2^-22 is not (it rounds to 5 = H + 1), which
    once put the lower corners past the zero border: garbage in the offset gradient."""
    h, w = 4, 4
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, 8, h, w, generator=gen, dtype=dtype)
    weight = torch.randn(4, 8, 3, 3, generator=gen, dtype=dtype)
    mask = torch.rand(1, 2 * 9, h, w, generator=gen, dtype=dtype)
    tap_y = torch.div(torch.arange(9), 3, rounding_mode="floor").to(dtype).view(9, 1, 1)
    rows = torch.arange(h, dtype=dtype).view(h, 1) - 1 + tap_y  # padding 1
    cols = torch.arange(w, dtype=dtype).view(1, w) - 1 + (torch.arange(9) % 3).to(dtype).view(9, 1, 1)
    eps = 2.0**-22
    # every tap of every pixel samples at (H - eps, W - eps)
    offset = torch.stack([((h - eps) - rows).expand(9, h, w), ((w - eps) - cols).expand(9, h, w)], dim=1)
    offset = offset.expand(9, 2, h, w).repeat(2, 1, 1, 1).reshape(1, 2 * 2 * 9, h, w).contiguous()
    t = {"input": x, "offset": offset, "weight": weight, "bias": None, "mask": mask}
    out, grads = _value_and_grads(deform_conv2d, t, {"padding": 1})
    ref, ref_grads = _value_and_grads(torchvision.ops.deform_conv2d, t, {"padding": 1})
    tol = 1e-5 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=tol, atol=tol, msg=f"grad of {name}")
