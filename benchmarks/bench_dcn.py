"""Deformable conv on the CPU: lgfn.ops.deform_conv2d (C++ sampling kernels + GEMM) vs torchvision, a plain
conv2d of the same shape, and the project's pure-PyTorch fallback (grid_sample + matmul, no compiler needed).

Shape: the alignment's real one, 7 frames x 64 ch x 64 x 112, 8 offset groups, 3x3, padding 1, with mask.
Run `python benchmarks/bench_dcn.py`, or call `run(repeats)` for the rows.
"""

from __future__ import annotations

import os

import common
import torch
import torch.nn.functional as F

from lgfn.ops import deform_conv2d

SHAPE = {"batch": 7, "channels": 64, "height": 64, "width": 112, "offset_groups": 8, "kernel": 3}


def _inputs(requires_grad: bool) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    b, c, h, w = SHAPE["batch"], SHAPE["channels"], SHAPE["height"], SHAPE["width"]
    g, k = SHAPE["offset_groups"], SHAPE["kernel"]
    tensors = {
        "input": torch.randn(b, c, h, w, generator=gen),
        # A few pixels of motion, like trained alignment offsets; masks through a sigmoid.
        "offset": torch.randn(b, 2 * g * k * k, h, w, generator=gen) * 2.0,
        "mask": torch.sigmoid(torch.randn(b, g * k * k, h, w, generator=gen)),
        "weight": torch.randn(c, c, k, k, generator=gen) * (1.0 / (c * k * k)) ** 0.5,
        "bias": torch.zeros(c),
    }
    for t in tensors.values():
        t.requires_grad_(requires_grad)
    return tensors


def _ours(t: dict[str, torch.Tensor]) -> torch.Tensor:
    return deform_conv2d(t["input"], t["offset"], t["weight"], t["bias"], padding=1, mask=t["mask"])


def _plain(t: dict[str, torch.Tensor]) -> torch.Tensor:
    """The pure-PyTorch path (grid_sample + matmul, autograd): what runs without a C++ compiler."""
    from lgfn.ops.deform_conv import _deform_conv2d_plain

    return _deform_conv2d_plain(
        t["input"],
        t["offset"],
        t["weight"],
        t["bias"],
        (1, 1),
        (1, 1),
        (1, 1),
        t["mask"],
        SHAPE["offset_groups"],
        1,
    )


def _torchvision(t: dict[str, torch.Tensor]) -> torch.Tensor:
    import torchvision.ops

    return torchvision.ops.deform_conv2d(
        t["input"], t["offset"], t["weight"], t["bias"], padding=1, mask=t["mask"]
    )


def _conv(t: dict[str, torch.Tensor]) -> torch.Tensor:
    return F.conv2d(t["input"], t["weight"], t["bias"], padding=1)


def _fwd(op, t):
    def step():
        with torch.no_grad():
            op(t)

    return step


def _fwd_bwd(op, t, grad):
    def step():
        for v in t.values():
            v.grad = None
        op(t).backward(grad)

    return step


def run(repeats: int = 5) -> list[dict]:
    """Median milliseconds of forward and forward+backward for ours, torchvision, conv2d and pure PyTorch."""
    torch.set_num_threads(os.cpu_count() or 1)
    shape = "B{batch} C{channels} {height}x{width} G{offset_groups} k{kernel}".format(**SHAPE)
    rows = []
    for name, needs_grad in (("dcn fwd", False), ("dcn fwd+bwd", True)):
        t = _inputs(needs_grad)
        grad = torch.randn(SHAPE["batch"], SHAPE["channels"], SHAPE["height"], SHAPE["width"])

        def make(op, t=t, grad=grad, needs_grad=needs_grad):
            return _fwd_bwd(op, t, grad) if needs_grad else _fwd(op, t)

        fns = [make(_ours), make(_torchvision), make(_conv), make(_plain)]
        ours, tv, conv, plain = (t * 1e3 for t in common.interleaved_medians(fns, repeats, warmup=1))
        rows.append(
            {
                "benchmark": name,
                "shape": shape,
                "threads": torch.get_num_threads(),
                "ours_ms": round(ours, 1),
                "torchvision_ms": round(tv, 1),
                "conv2d_ms": round(conv, 1),
                "pure_pytorch_ms": round(plain, 1),
                "speedup_vs_torchvision": round(tv / ours, 2),
                "ratio_vs_conv2d": round(ours / conv, 2),
                "speedup_vs_pure_pytorch": round(plain / ours, 2),
            }
        )
    return rows


if __name__ == "__main__":
    print(common.markdown(run()))
