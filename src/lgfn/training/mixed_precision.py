"""Mixed-precision training on GPUs: TF32 matmuls with bf16 autocast, the DCN in float32, metrics in float64.

``trainer=gpu_bf16`` (or ``trainer.precision=bf16-mixed`` on any GPU trainer) runs Lightning's bf16
autocast. The ``MatmulPrecision`` callback (``callbacks.matmul_precision``) then sets
``torch.set_float32_matmul_precision("high")``, so the float32 matmuls autocast leaves (and the
float32 DCN's GEMM) use TF32 tensor cores. The deformable convs compute in float32 under autocast
(``lgfn.ops.deform_conv``: torchvision's CUDA autocast rule, applied to every backend), and
``lgfn.metrics`` casts to float64 before anything is measured, so PSNR/SSIM are unaffected by the
training precision. The PSNR cost of bf16-mixed training itself needs a GPU run to measure
(``benchmarks/gpu_check.py`` times it; bf16 *inference* on the CPU: BENCHMARKS.md, bf16_psnr_vs_eager_db).
"""

from __future__ import annotations

import logging

import torch
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)
_MIXED = ("bf16-mixed", "16-mixed", "bf16", "16", "transformer-engine")


class MatmulPrecision(Callback):
    """``torch.set_float32_matmul_precision(precision)`` at setup, on CUDA, when the trainer runs mixed precision.

    ``always=True`` sets it for float32 training too (TF32 for everything: faster, ~1e-3 relative error
    per matmul). On the CPU it does nothing (the setting only matters for CUDA matmuls).
    """

    def __init__(self, precision: str = "high", always: bool = False) -> None:
        if precision not in ("highest", "high", "medium"):
            raise ValueError(f"MatmulPrecision: precision must be highest, high or medium, got {precision!r}")
        self.precision, self.always = precision, bool(always)

    def setup(self, trainer, pl_module, stage: str) -> None:
        device = getattr(trainer, "root_device", torch.device("cpu"))
        mixed = str(getattr(trainer, "precision", "")) in _MIXED
        if device.type == "cuda" and (mixed or self.always):
            torch.set_float32_matmul_precision(self.precision)
            log.info("float32 matmul precision %r (trainer.precision=%s)", self.precision, trainer.precision)
