"""Modulated deformable convolution (DCNv2) with the layout of `torchvision.ops.deform_conv2d`.

Two backends:
- "torchvision": `torchvision.ops.deform_conv2d` (fast on CUDA, slow on the CPU, not exportable).
- "pytorch": bilinear sampling with one batched `grid_sample` for all offset groups and taps, then one
  batched GEMM with the weight. In eager mode on the CPU it runs through `_DeformConvFn`, whose
  hand-written backward avoids autograd's extra copies; when tracing/exporting, or when no gradient is
  needed, the same maths runs as plain ops that torch.onnx / torch.export can trace.

"auto" picks "pytorch" on the CPU and "torchvision" on CUDA; `dcn_backend(name)` forces one globally.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

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


def _resolve_backend(backend: str, device: torch.device) -> str:
    forced = current_backend()
    if forced is not None:
        return forced
    if backend not in ("auto", *_BACKENDS):
        raise ValueError(
            f"deform_conv2d: backend must be 'auto', 'torchvision' or 'pytorch', got {backend!r}"
        )
    if backend == "auto":
        if device.type == "cuda" and not _exporting() and _torchvision_available():
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
    offset group, mask is B x G*kh*kw x Ho x Wo, G = offset.shape[1] // (2*kh*kw).
    """
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
        return _DeformConvFn.apply(
            input, offset, mask, weight, bias, stride_, padding_, dilation_, offset_groups
        )
    return _deform_conv2d_plain(
        input, offset, weight, bias, stride_, padding_, dilation_, mask, offset_groups, weight_groups
    )


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
    return all(t.dtype == input.dtype and t.device == input.device for t in tensors)


class _DeformConvFn(torch.autograd.Function):
    """grid_sample + GEMM frame by frame, with a hand-written backward (weight groups 1, CPU float32/64).

    Working frame by frame keeps every temporary at one frame's columns (Cin*kh*kw x Ho*Wo): those blocks
    are reused by the allocator instead of faulting in fresh pages for a whole-batch buffer, and they stay
    warmer in cache. Nothing column-sized is saved for backward: the sampled columns are recomputed there
    (one grid_sample per frame) rather than keeping B x Cin*kh*kw x Ho*Wo values alive between the passes.
    """

    @staticmethod
    def forward(ctx, input, offset, mask, weight, bias, stride, padding, dilation, offset_groups):
        batch, in_ch, height, width = input.shape
        out_ch, _, kh, kw = weight.shape
        _, _, out_h, out_w = offset.shape
        taps, pixels = kh * kw, out_h * out_w
        group_ch = in_ch // offset_groups
        images = input.contiguous().view(batch, offset_groups, group_ch, height, width)
        geometry = ((out_h, out_w), (height, width), (kh, kw), stride, padding, dilation)
        base, scale = _grid_base(*geometry, input)
        masks = None if mask is None else mask.reshape(batch, offset_groups, 1, taps, pixels)
        w2 = weight.reshape(out_ch, in_ch * taps)
        out = input.new_empty(batch, out_ch, pixels)
        for b in range(batch):
            grid = _sampling_grid(offset[b : b + 1], base, scale, offset_groups)
            cols = _sample_frame(images[b], grid, masks, b, taps, pixels)
            # cols^T @ w2^T measured faster than w2 @ cols (MKL, long M); the transpose back is small.
            out[b] = torch.mm(cols.view(in_ch * taps, pixels).t(), w2.t()).t()
        if bias is not None:
            out.add_(bias.view(1, out_ch, 1))
        ctx.save_for_backward(images, offset, mask, weight)
        ctx.geometry = geometry
        ctx.meta = (offset_groups, (height, width), (kh, kw), (out_h, out_w), bias is not None)
        return out.view(batch, out_ch, out_h, out_w)

    @staticmethod
    def backward(ctx, grad_out):
        images, offset, mask, weight = ctx.saved_tensors
        offset_groups, (height, width), (kh, kw), (out_h, out_w), has_bias = ctx.meta
        base, scale = _grid_base(*ctx.geometry, images)
        need_input, need_offset, need_mask, need_weight, need_bias = ctx.needs_input_grad[:5]
        batch, _, group_ch = images.shape[:3]
        out_ch = weight.shape[0]
        in_ch = offset_groups * group_ch
        taps, pixels = kh * kw, out_h * out_w
        grad_out = grad_out.reshape(batch, out_ch, pixels)
        masks = None if mask is None else mask.reshape(batch, offset_groups, 1, taps, pixels)
        need_mask = need_mask and mask is not None
        need_sampling = need_input or need_offset
        w2t = weight.reshape(out_ch, in_ch * taps).t()

        grad_bias = grad_out.sum(dim=(0, 2)) if (need_bias and has_bias) else None
        grad_weight = weight.new_zeros(out_ch, in_ch * taps) if need_weight else None
        grad_mask = grad_out.new_empty(batch, offset_groups, taps, pixels) if need_mask else None
        grad_input = grad_out.new_empty(batch, offset_groups, group_ch, height, width) if need_input else None
        grad_offset = grad_out.new_empty(batch, offset_groups, taps, 2, out_h, out_w) if need_offset else None
        for b in range(batch):
            grad_cols = None
            grid = _sampling_grid(offset[b : b + 1], base, scale, offset_groups)
            if need_sampling or need_mask:
                grad_cols = torch.mm(w2t, grad_out[b]).view(offset_groups, group_ch, taps, pixels)
            if need_mask or need_weight:
                sampled = _sample_frame(images[b], grid, None, b, taps, pixels)
                if need_mask:
                    # Sum over the group's channels with in-place FMAs: no column-sized temporary.
                    torch.mul(grad_cols[:, 0], sampled[:, 0], out=grad_mask[b])
                    for c in range(1, group_ch):
                        grad_mask[b].addcmul_(grad_cols[:, c], sampled[:, c])
                if need_weight:
                    if masks is not None:
                        sampled.mul_(masks[b])
                    grad_weight.addmm_(grad_out[b], sampled.view(in_ch * taps, pixels).t())
            if need_sampling:
                if masks is not None:
                    grad_cols.mul_(masks[b])
                grad_images, grad_grid = torch.ops.aten.grid_sampler_2d_backward(
                    grad_cols.view(offset_groups, group_ch, taps * out_h, out_w),
                    images[b],
                    grid,
                    0,
                    0,
                    False,
                    [need_input, need_offset],
                )
                if need_input:
                    grad_input[b] = grad_images
                if need_offset:
                    # grid = offset * 2/size + const; the grid holds (x, y), the offsets (dy, dx).
                    grad_grid = grad_grid.view(offset_groups, taps, out_h, out_w, 2)
                    torch.mul(grad_grid[..., 1], 2.0 / height, out=grad_offset[b, :, :, 0])
                    torch.mul(grad_grid[..., 0], 2.0 / width, out=grad_offset[b, :, :, 1])
        return (
            None if grad_input is None else grad_input.view(batch, in_ch, height, width),
            None if grad_offset is None else grad_offset.view(batch, 2 * offset_groups * taps, out_h, out_w),
            None if grad_mask is None else grad_mask.view_as(mask),
            None if grad_weight is None else grad_weight.view_as(weight),
            grad_bias,
            None,
            None,
            None,
            None,
        )


def _sample_frame(
    images: Tensor, grid: Tensor, masks: Tensor | None, b: int, taps: int, pixels: int
) -> Tensor:
    """One frame's columns G x Cg x K x P (masked when `masks` is given): one grid_sample for all groups."""
    sampled = torch.grid_sampler_2d(images, grid, 0, 0, False)  # bilinear, zeros, align_corners=False
    sampled = sampled.view(images.shape[0], images.shape[1], taps, pixels)
    if masks is not None:
        sampled.mul_(masks[b])
    return sampled
