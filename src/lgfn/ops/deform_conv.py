"""Modulated deformable convolution (DCNv2) with the layout of `torchvision.ops.deform_conv2d`.

Two backends:
- "torchvision": `torchvision.ops.deform_conv2d` (fast on CUDA, slow on the CPU, not exportable).
- "pytorch": in eager mode on the CPU (float32/64, weight groups 1), `_DeformConvFn`: C++ kernels
  (lgfn.ops.cpu_kernels) for the bilinear sampling and its transposed scatter, MKL GEMMs for the rest.
  Otherwise (tracing/exporting, CUDA when forced, other dtypes, or no C++ compiler) the same maths as plain
  ops: one batched `grid_sample` for all offset groups and taps, then one batched GEMM with the weight,
  which torch.onnx / torch.export can trace and autograd differentiates.

"auto" picks "pytorch" on the CPU and "torchvision" on CUDA, also under `torch.compile` (torchvision's op has
a fake kernel and compiles; the grid_sample path would need 9x the column memory); tracing, ONNX and
`torch.export` take the plain ops. `dcn_backend(name)` forces one globally.

Precision: the op always computes in float32 (or float64). float16 / bfloat16 inputs, and any call under
autocast, are cast up and run with autocast off, and the result is cast back to the input's dtype: the
rule torchvision's CUDA autocast applies to its own op, here for every backend and for `net.half()` too.
Sampling positions are pixel coordinates plus offsets: float16 has a spacing of 0.5 px beyond 1024 and
1 px beyond 2048, so a float16 kernel loses the sub-pixel offsets towards the right of wide frames.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from lgfn.ops import cpu_kernels

__all__ = ["available_backends", "dcn_backend", "deform_conv2d", "current_backend"]

_BACKENDS = ("torchvision", "pytorch")
_state = threading.local()


def _torchvision_available() -> bool:
    try:
        import torchvision.ops  # noqa: F401

        return hasattr(torch.ops.torchvision, "deform_conv2d")
    except (ImportError, RuntimeError, AttributeError):
        return False


def available_backends() -> list[str]:
    """Backends usable in this environment ("pytorch" always; "torchvision" if its C++ op is built)."""
    return [b for b in _BACKENDS if b == "pytorch" or _torchvision_available()]


def current_backend() -> str | None:
    """The backend forced by an enclosing `dcn_backend(...)`, or None."""
    return getattr(_state, "forced", None)


@contextlib.contextmanager
def dcn_backend(name: str) -> Iterator[None]:
    """Force every `deform_conv2d` call inside the block to use backend `name` (wins over `backend=`)."""
    if name not in _BACKENDS:
        raise ValueError(f"dcn_backend: name must be one of {_BACKENDS}, got {name!r}")
    if name not in available_backends():
        raise ValueError(f"dcn_backend: backend {name!r} is not available here ({available_backends()})")
    previous = current_backend()
    _state.forced = name
    try:
        yield
    finally:
        _state.forced = previous


def _pair(value: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    raise ValueError(f"deform_conv2d: {name} must be an int or a pair of ints, got {value!r}")


def _exporting() -> bool:
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling():
        return True
    onnx = getattr(torch, "onnx", None)
    return bool(onnx is not None and hasattr(onnx, "is_in_onnx_export") and onnx.is_in_onnx_export())


def _exporting_graph() -> bool:
    """Tracing, scripting, ONNX export or torch.export: a graph without torchvision's op. Not torch.compile."""
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and hasattr(compiler, "is_exporting") and compiler.is_exporting():
        return True
    onnx = getattr(torch, "onnx", None)
    return bool(onnx is not None and hasattr(onnx, "is_in_onnx_export") and onnx.is_in_onnx_export())


def _resolve_backend(backend: str, device: torch.device) -> str:
    forced = current_backend()
    if forced is not None:
        return forced
    if backend not in ("auto", *_BACKENDS):
        raise ValueError(
            f"deform_conv2d: backend must be 'auto', 'torchvision' or 'pytorch', got {backend!r}"
        )
    if backend == "auto":
        # Under torch.compile on CUDA too: torchvision's op compiles (fake kernel), grid_sample needs 9x the memory.
        if device.type == "cuda" and not _exporting_graph() and _torchvision_available():
            return "torchvision"
        return "pytorch"
    if backend == "torchvision" and not _torchvision_available():
        raise ValueError(
            "deform_conv2d: backend 'torchvision' requested but torchvision.ops is not available"
        )
    return backend


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: Tensor | None = None,
    *,
    backend: str = "auto",
) -> Tensor:
    """(Modulated) deformable conv; input B x Cin x H x W, offset B x 2*G*kh*kw x Ho x Wo -> B x Cout x Ho x Wo.

    Same meaning and layout as `torchvision.ops.deform_conv2d`: offsets are (dy, dx) pairs per tap per
    offset group, mask is B x G*kh*kw x Ho x Wo, G = offset.shape[1] // (2*kh*kw). Computed in float32 at
    least (see the module docstring); returned in ``input``'s dtype.
    """
    if input.dtype in (torch.float16, torch.bfloat16) or _autocast_on(input.device.type):
        def up(t: Tensor | None) -> Tensor | None:
            return None if t is None else (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t)

        with torch.autocast(input.device.type, enabled=False):
            out = deform_conv2d(up(input), up(offset), up(weight), up(bias), stride, padding, dilation, up(mask),
                                backend=backend)
        return out.to(input.dtype)
    stride_, padding_, dilation_ = (
        _pair(stride, "stride"),
        _pair(padding, "padding"),
        _pair(dilation, "dilation"),
    )
    with warnings.catch_warnings():
        # Under torch.jit.trace (legacy ONNX export) these shape checks are constants of the trace, as intended.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        offset_groups, weight_groups = _check_shapes(
            input, offset, weight, bias, stride_, padding_, dilation_, mask
        )
        fast = _use_fast_path(input, offset, weight, bias, mask, weight_groups)
    chosen = _resolve_backend(backend, input.device)
    if chosen == "torchvision":
        import torchvision.ops

        return torchvision.ops.deform_conv2d(
            input, offset, weight, bias, stride=stride_, padding=padding_, dilation=dilation_, mask=mask
        )
    if fast:
        geometry = ((weight.shape[2], weight.shape[3]), stride_, padding_, dilation_)
        tensors = (input, offset, mask, weight, bias)
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
            return _DeformConvFn.apply(input, offset, mask, weight, bias, geometry, offset_groups)
        # No gradient wanted: skip the autograd.Function and the tensors it would keep for backward.
        return _kernels_forward(input, offset, mask, weight, bias, geometry, offset_groups)[0]
    return _deform_conv2d_plain(
        input, offset, weight, bias, stride_, padding_, dilation_, mask, offset_groups, weight_groups
    )


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except (TypeError, RuntimeError):  # a device type autocast does not know
        return False


def _check_shapes(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    mask: Tensor | None,
) -> tuple[int, int]:
    """Validate shapes like torchvision does; return (offset_groups, weight_groups)."""
    if input.dim() != 4:
        raise ValueError(f"deform_conv2d: input must be B x Cin x H x W, got shape {tuple(input.shape)}")
    if weight.dim() != 4:
        raise ValueError(
            f"deform_conv2d: weight must be Cout x Cin/groups x kh x kw, got {tuple(weight.shape)}"
        )
    if offset.dim() != 4:
        raise ValueError(f"deform_conv2d: offset must be B x 2*G*kh*kw x Ho x Wo, got {tuple(offset.shape)}")
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ValueError(
            f"deform_conv2d: need stride >= 1, dilation >= 1, padding >= 0; got {stride}, {dilation}, {padding}"
        )
    batch, in_ch, height, width = input.shape
    out_ch, w_in_ch, kh, kw = weight.shape
    taps = kh * kw
    if w_in_ch == 0 or in_ch % w_in_ch != 0:
        raise ValueError(
            f"deform_conv2d: weight.shape[1]={w_in_ch} must divide the input channels {in_ch} (groups)"
        )
    weight_groups = in_ch // w_in_ch
    if out_ch % weight_groups != 0:
        raise ValueError(
            f"deform_conv2d: weight.shape[0]={out_ch} must be divisible by groups={weight_groups}"
        )
    if offset.shape[1] == 0 or offset.shape[1] % (2 * taps) != 0:
        raise ValueError(
            f"deform_conv2d: offset.shape[1]={offset.shape[1]} must be a positive multiple of "
            f"2*kh*kw={2 * taps} for the {kh}x{kw} kernel"
        )
    offset_groups = offset.shape[1] // (2 * taps)
    if in_ch % offset_groups != 0:
        raise ValueError(
            f"deform_conv2d: input channels {in_ch} must be divisible by the {offset_groups} offset groups "
            f"implied by offset.shape[1]={offset.shape[1]}"
        )
    out_h = (height + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (width + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if out_h <= 0 or out_w <= 0:
        raise ValueError(
            f"deform_conv2d: output would be empty ({out_h}x{out_w}) for input {height}x{width}, "
            f"kernel {kh}x{kw}, stride {stride}, padding {padding}, dilation {dilation}"
        )
    expected = (batch, 2 * offset_groups * taps, out_h, out_w)
    if tuple(offset.shape) != expected:
        raise ValueError(f"deform_conv2d: offset must have shape {expected}, got {tuple(offset.shape)}")
    if mask is not None:
        expected_mask = (batch, offset_groups * taps, out_h, out_w)
        if tuple(mask.shape) != expected_mask:
            raise ValueError(f"deform_conv2d: mask must have shape {expected_mask}, got {tuple(mask.shape)}")
    if bias is not None and tuple(bias.shape) != (out_ch,):
        raise ValueError(f"deform_conv2d: bias must have shape ({out_ch},), got {tuple(bias.shape)}")
    return offset_groups, weight_groups


def _grid_base(
    out_hw: tuple[int, int],
    in_hw: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    like: Tensor,
) -> tuple[Tensor, Tensor]:
    """Normalised (x, y) of every tap with zero offset, K x Ho x Wo x 2, and the offset scale (2/W, 2/H)."""
    (out_h, out_w), (height, width), (kh, kw) = out_hw, in_hw, kernel
    dtype, device = like.dtype, like.device
    tap = torch.arange(kh * kw, device=device)
    tap_y = torch.div(tap, kw, rounding_mode="floor").to(dtype) * dilation[0]
    tap_x = (tap % kw).to(dtype) * dilation[1]
    rows = torch.arange(out_h, device=device, dtype=dtype) * stride[0] - padding[0]
    cols = torch.arange(out_w, device=device, dtype=dtype) * stride[1] - padding[1]
    # align_corners=False maps pixel i to (2i+1)/size - 1: no division by (size-1), so H or W == 1 is fine.
    base_y = ((rows.view(1, out_h, 1) + tap_y.view(-1, 1, 1)) * 2 + 1) / height - 1
    base_x = ((cols.view(1, 1, out_w) + tap_x.view(-1, 1, 1)) * 2 + 1) / width - 1
    base = torch.stack(torch.broadcast_tensors(base_x, base_y), dim=-1)
    one = base.new_ones(())  # not torch.tensor([...]): sizes stay symbolic under tracing
    scale = torch.stack((one * 2.0 / width, one * 2.0 / height))
    return base, scale


def _sampling_grid(offset: Tensor, base: Tensor, scale: Tensor, offset_groups: int) -> Tensor:
    """`grid_sample` grid (B*G) x (K*Ho) x Wo x 2 from offsets B x 2*G*K x Ho x Wo ((dy, dx) pairs)."""
    batch, _, out_h, out_w = offset.shape
    taps = base.shape[0]
    # (dy, dx) -> (dx, dy) as grid_sample wants (x, y); then one fused op builds the grid.
    off = offset.reshape(batch, offset_groups, taps, 2, out_h, out_w).flip(3).permute(0, 1, 2, 4, 5, 3)
    return torch.addcmul(base, off, scale).reshape(batch * offset_groups, taps * out_h, out_w, 2)


def _deform_conv2d_plain(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    mask: Tensor | None,
    offset_groups: int,
    weight_groups: int,
) -> Tensor:
    """Exportable reference: grid_sample for all groups and taps, then one (grouped) einsum."""
    batch, in_ch, height, width = input.shape
    out_ch, _, kh, kw = weight.shape
    _, _, out_h, out_w = offset.shape
    taps, pixels = kh * kw, out_h * out_w
    base, scale = _grid_base((out_h, out_w), (height, width), (kh, kw), stride, padding, dilation, input)
    grid = _sampling_grid(offset, base, scale, offset_groups)
    images = input.reshape(batch * offset_groups, in_ch // offset_groups, height, width)
    cols = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # cols: (b, g, c, k, p), i.e. channel-major then tap, the order of weight.view(Cout, Cin*kh*kw).
    cols = cols.view(batch, offset_groups, in_ch // offset_groups, taps, pixels)
    if mask is not None:
        cols = cols * mask.view(batch, offset_groups, 1, taps, pixels)
    cols = cols.reshape(batch, weight_groups, (in_ch // weight_groups) * taps, pixels)
    w = weight.reshape(weight_groups, out_ch // weight_groups, (in_ch // weight_groups) * taps)
    out = torch.einsum("goc,bgcp->bgop", w, cols).reshape(batch, out_ch, out_h, out_w)
    if bias is not None:
        out = out + bias.view(1, out_ch, 1, 1)
    return out


def _use_fast_path(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    mask: Tensor | None,
    weight_groups: int,
) -> bool:
    if weight_groups != 1 or _exporting() or input.device.type != "cpu":
        return False
    if input.dtype not in (torch.float32, torch.float64):
        return False
    tensors = [t for t in (input, offset, weight, bias, mask) if t is not None]
    if not all(t.dtype == input.dtype and t.device == input.device for t in tensors):
        return False
    return cpu_kernels.available()


def _kernels_forward(input, offset, mask, weight, bias, geometry, offset_groups):
    """Output B x Cout x Ho x Wo of the C++ kernels, and the bordered input, offset, mask they read."""
    batch = input.shape[0]
    out_ch = weight.shape[0]
    out_h, out_w = offset.shape[2:]
    bordered = F.pad(input, (1, 1, 1, 1)).permute(0, 2, 3, 1).contiguous()
    offset = offset.contiguous()
    mask = None if mask is None else mask.contiguous()
    weight_rows = weight.permute(0, 2, 3, 1).reshape(out_ch, -1)  # (tap, channel) like the columns
    out = input.new_empty(batch, out_h * out_w, out_ch)
    cpu_kernels.ops().forward(bordered, offset, mask, weight_rows.t(), out, offset_groups, *geometry)
    out = out.transpose(1, 2)
    out = out + bias.view(1, out_ch, 1) if bias is not None else out.contiguous()
    return out.view(batch, out_ch, out_h, out_w), bordered, offset, mask


class _DeformConvFn(torch.autograd.Function):
    """The C++ kernels of lgfn.ops.cpu_kernels, forward and backward (CPU, float32/64, weight groups 1).

    They work on a channels-last copy of the input with a one-pixel zero border (no bounds checks per
    corner) and go block by block over the pixels: sample a block's columns (K*Cin values per pixel, tap
    then channel), multiply them with the weight at once, so no B x P x K*Cin buffer is ever written.
    Backward rebuilds each block's columns inside the scatter kernel, which reads the same corners anyway.
    """

    @staticmethod
    def forward(ctx, input, offset, mask, weight, bias, geometry, offset_groups):
        out, bordered, offset, mask = _kernels_forward(input, offset, mask, weight, bias, geometry, offset_groups)
        ctx.save_for_backward(bordered, offset, mask, weight)
        ctx.meta = (offset_groups, geometry, bias is not None)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        bordered, offset, mask, weight = ctx.saved_tensors
        offset_groups, geometry, has_bias = ctx.meta
        need_input, need_offset, need_mask, need_weight, need_bias = ctx.needs_input_grad[:5]
        batch, out_ch = grad_out.shape[:2]
        grad_out = grad_out.reshape(batch, out_ch, -1).contiguous()
        weight_rows = weight.permute(0, 2, 3, 1).reshape(out_ch, -1).contiguous()
        grad_bordered = torch.zeros_like(bordered) if need_input else None
        grad_offset = torch.empty_like(offset) if need_offset else None
        grad_mask = torch.empty_like(mask) if (need_mask and mask is not None) else None
        grad_rows = torch.zeros_like(weight_rows) if need_weight else None
        cpu_kernels.ops().backward(
            bordered, offset, mask, grad_out, weight_rows, grad_bordered, grad_offset, grad_mask, grad_rows,
            offset_groups, *geometry,
        )  # fmt: skip
        grad_input = grad_weight = None
        if grad_bordered is not None:
            grad_input = grad_bordered[:, 1:-1, 1:-1].permute(0, 3, 1, 2).contiguous()
        if grad_rows is not None:
            _, in_ch, kh, kw = weight.shape
            grad_weight = grad_rows.view(out_ch, kh, kw, in_ch).permute(0, 3, 1, 2).contiguous()
        grad_bias = grad_out.sum(dim=(0, 2)) if (need_bias and has_bias) else None
        return grad_input, grad_offset, grad_mask, grad_weight, grad_bias, None, None
