"""Custom operators: `deform_conv2d` (torchvision layout, CPU-fast and exportable PyTorch backend)."""

from lgfn.ops.deform_conv import available_backends, current_backend, dcn_backend, deform_conv2d

__all__ = ["available_backends", "current_backend", "dcn_backend", "deform_conv2d"]
