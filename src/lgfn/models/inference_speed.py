"""Opt-in speed switches for running an LGFN on the CPU (measured in BENCHMARKS.md).

- `prepare_for_inference(net, channels_last=..., compile=...)`: eval mode, optional channels_last
  weights and `torch.compile`, falling back to eager (with one warning) if compilation fails.
- `cpu_autocast(enabled)`: bf16 autocast on the CPU. Only worth it on CPUs with native bf16 matmuls
  (AVX512-BF16/AMX); elsewhere it is slower and costs PSNR (both measured by `make bench`).
- `to_channels_last(x)`: an input tensor in the layout the channels_last weights want.
- `half_precision(device_type, enabled)`: float16 autocast for inference (`lgfn-upscale --half`): weights
  stay float32, convolutions run in float16, the deformable convs (sampling positions included) in float32.

Callers run inference under `torch.inference_mode()` (no autograd bookkeeping at all).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["CompiledOrEager", "cpu_autocast", "half_precision", "prepare_for_inference", "to_channels_last"]


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """4-D tensors to channels_last; 5-D B x N x C x h x w to the per-frame channels_last strides."""
    if x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    if x.dim() == 5:
        b, n = x.shape[:2]
        return x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, (b, n))
    return x


class CompiledOrEager(nn.Module):
    """Runs `torch.compile(net)`; on the first failure warns once and runs `net` eagerly from then on.

    Input/output as `net`. The wrapped network stays reachable as `.net` (its state_dict keys are
    prefixed with `net.`; save `wrapper.net.state_dict()` to keep checkpoints interchangeable).
    """

    def __init__(self, net: nn.Module, **compile_kwargs) -> None:
        super().__init__()
        self.net = net
        self._compiled = None
        self._failed = False
        try:
            self._compiled = torch.compile(net, **compile_kwargs)
        except Exception as exc:  # noqa: BLE001 - any backend problem means "stay eager"
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        self._failed = True
        warnings.warn(f"torch.compile failed, running eagerly: {type(exc).__name__}: {exc}", stacklevel=3)

    def forward(self, *args, **kwargs):
        if self._compiled is not None and not self._failed:
            try:
                return self._compiled(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001
                self._fail(exc)
        return self.net(*args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            # num_frames, scale, config, size_multiple ... of the wrapped network.
            return getattr(super().__getattr__("net"), name)


def prepare_for_inference(
    net: nn.Module, *, channels_last: bool = True, compile: bool = False, **compile_kwargs
) -> nn.Module:
    """`net` in eval mode, with channels_last weights and/or compiled (see `CompiledOrEager`).

    channels_last keeps every parameter value (only strides change); the output equals the default
    layout's up to float rounding (pinned by tests/models/test_inference_speed.py).
    """
    net = net.eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if compile:
        return CompiledOrEager(net, **compile_kwargs)
    return net


@contextlib.contextmanager
def cpu_autocast(enabled: bool = True, dtype: torch.dtype = torch.bfloat16) -> Iterator[None]:
    """bf16 (or `dtype`) autocast on the CPU when `enabled`; a no-op otherwise."""
    if not enabled:
        yield
        return
    with torch.autocast("cpu", dtype=dtype):
        yield


@contextlib.contextmanager
def half_precision(device_type: str = "cuda", enabled: bool = True, dtype: torch.dtype = torch.float16) -> Iterator[None]:
    """float16 autocast (not ``net.half()``): convs in float16, the DCN and its positions in float32.

    ``lgfn.ops.deform_conv2d`` leaves autocast for float32, as torchvision's own CUDA autocast rule does;
    a network cast with ``.half()`` would instead feed every layer float16 and keep no float32 master
    copy of the weights. Output in float16. A no-op when not ``enabled``.
    """
    if not enabled:
        yield
        return
    with torch.autocast(device_type, dtype=dtype):
        yield
