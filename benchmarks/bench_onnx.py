"""Inference speed on the CPU: the exported ONNX model in ONNX Runtime vs PyTorch eager (inference_mode).

Model: `lgfn_small` (random weights, DCN offsets made non-zero), exported once with dynamic batch/height/width
via `lgfn.inference.export.export_onnx`; both runtimes see the same 1 x N x 3 x h x w input at LR 64x64 and 144x180.
Frames/s counts restored (centre) frames: one per forward at batch 1. Medians of `repeats` interleaved runs.
Run `python benchmarks/bench_onnx.py`, or call `run(repeats)` for the rows.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import common
import numpy as np
import torch

from lgfn.inference.export import export_onnx
from lgfn.inference.onnx_runner import OnnxUpscaler
from lgfn.models import LGFN, LGFN_SMALL, DCNv2Pack
from lgfn.ops import dcn_backend

SIZES = ((64, 64), (144, 180))



def _model() -> LGFN:
    torch.manual_seed(0)
    net = LGFN(**LGFN_SMALL).eval()
    for m in net.modules():
        if isinstance(m, DCNv2Pack):  # trained-like motion: a few pixels of offset
            torch.nn.init.normal_(m.conv_offset.weight, std=0.01)
            torch.nn.init.normal_(m.conv_offset.bias, std=1.0)
    return net


def run(repeats: int = 5) -> list[dict]:
    """One row per LR size: ONNX Runtime and PyTorch eager frames/s (medians), their ratio, max |diff|."""
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    net = _model()
    frames = net.num_frames
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = export_onnx(net, Path(tmp) / "lgfn_small.onnx", dynamic=True, height=32, width=32)
        export_s = time.perf_counter() - start
        upscaler = OnnxUpscaler(path, num_threads=threads)
        for h, w in SIZES:
            lr = torch.rand(1, frames, 3, h, w, generator=torch.Generator().manual_seed(1))
            lr_np = lr.numpy()

            def eager(lr=lr):
                # The default CPU backend of lgfn.ops ("pytorch") is also the exported one.
                with torch.inference_mode(), dcn_backend("pytorch"):
                    return net(lr)

            def onnx(lr_np=lr_np):
                return upscaler(lr_np)

            diff = float(np.abs(onnx() - eager().numpy()).max())
            t_onnx, t_eager = common.interleaved_medians([onnx, eager], repeats, warmup=1)
            rows.append(
                {
                    "model": "lgfn_small",
                    "lr_size": f"{h}x{w}",
                    "frames_in": frames,
                    "threads": threads,
                    "onnxruntime_fps": round(1.0 / t_onnx, 2),
                    "pytorch_eager_fps": round(1.0 / t_eager, 2),
                    "onnx_vs_eager": round(t_eager / t_onnx, 2),
                    "max_abs_diff": f"{diff:.1e}",
                    "export_s": round(export_s, 1),
                }
            )
    return rows



if __name__ == "__main__":
    print(common.markdown(run()))
