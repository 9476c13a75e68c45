"""Running exported ONNX models: ``OnnxUpscaler`` (onnxruntime, numpy in and out) and ``OnnxNet`` (the same
behind the torch interface ``lgfn-upscale``'s tiling uses), and the JSON sidecar an export writes beside the model.

Importing this module does not load torch unless ``OnnxNet`` is used (``lgfn-upscale --onnx`` loads it anyway).
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lgfn.common.console import error_line

if TYPE_CHECKING:
    import torch


class ExportError(Exception):
    """A user-facing export failure (bad argument, missing optional package, wrong checkpoint)."""


def require(module: str, purpose: str) -> Any:
    """Import an optional package of the `export` extra, or fail with a one-line hint."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExportError(
            f"{purpose} needs the '{module}' package: pip install 'lgfn[export]'"
        ) from None


def sidecar_path(path: str | os.PathLike) -> Path:
    """FILE -> FILE.json, the sidecar beside an exported model."""
    return Path(f"{os.fspath(path)}.json")


def read_sidecar(path: str | os.PathLike) -> dict:
    """The sidecar JSON of an exported model, or {} when there is none."""
    side = sidecar_path(path)
    if not side.is_file():
        return {}
    try:
        return json.loads(side.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{side}: not valid JSON ({e.msg} at line {e.lineno})") from None


class OnnxUpscaler:
    """An exported ONNX model run by onnxruntime (CPU). lr B x N x 3 x h x w float32 in [0,1] -> B x 3 x sh x sw."""

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {path}")
        ort = require("onnxruntime", "running an ONNX model")
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
        try:
            self.session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for invalid files
            raise ValueError(f"cannot load ONNX model {path}: {error_line(e)}") from None
        self.path = path
        self.meta = read_sidecar(path)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"{path}: expected one input and one output, found {len(inputs)} and {len(outputs)}")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        # Static dims are ints, dynamic ones strings (or None); checked before running for a clear error.
        self.input_shape = list(inputs[0].shape)
        if len(self.input_shape) != 5:
            raise ValueError(f"{path}: input {self.input_name!r} must be B x N x 3 x h x w, has {self.input_shape}")
        frames = self.input_shape[1]
        self.num_frames = int(self.meta.get("num_frames") or (frames if isinstance(frames, int) else 0)) or None
        self.scale = int(self.meta.get("scale", 4))

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        lr = np.ascontiguousarray(lr, dtype=np.float32)
        if lr.ndim != 5 or lr.shape[2] != 3:
            raise ValueError(f"{self.path}: input must be B x N x 3 x h x w, got shape {lr.shape}")
        if self.num_frames is not None and lr.shape[1] != self.num_frames:
            raise ValueError(f"{self.path}: model takes {self.num_frames} frames, got {lr.shape[1]}")
        for axis, (want, got) in enumerate(zip(self.input_shape, lr.shape, strict=True)):
            if isinstance(want, int) and want != got:
                raise ValueError(
                    f"{self.path}: exported for input shape {self.input_shape}, got {lr.shape} "
                    f"(axis {axis}; export with --dynamic for other sizes)"
                )
        return self.session.run([self.output_name], {self.input_name: lr})[0]


class OnnxNet:
    """OnnxUpscaler behind the torch interface tiling uses; pads LR up to a static export size."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.runner = OnnxUpscaler(path)
        self.path = Path(path)
        self.meta = self.runner.meta
        self.num_frames = self.runner.num_frames or int(self.meta.get("num_frames", 7))
        self.scale = self.runner.scale
        hw = self.runner.input_shape[-2:]
        self.fixed_hw = tuple(hw) if all(isinstance(s, int) for s in hw) else None
        # What lgfn.inference.tiling.receptive_radius reads: the exported network's class and constructor arguments.
        self.net_class = self.meta.get("net_class")
        self.config = self.meta.get("net_config")

    def __call__(self, lr: torch.Tensor) -> torch.Tensor:
        import torch  # deferred: the numpy-only OnnxUpscaler must not load torch (lgfn-export's import check)

        h, w = lr.shape[-2:]
        x = lr.detach().float().cpu()
        if self.fixed_hw is not None:
            fh, fw = self.fixed_hw
            if h > fh or w > fw:
                raise ValueError(f"the ONNX model takes {fw}x{fh} LR inputs only, got {w}x{h}")
            b, n = x.shape[:2]
            x = torch.nn.functional.pad(x.flatten(0, 1), (0, fw - w, 0, fh - h), mode="replicate").unflatten(0, (b, n))
        sr = self.runner(x.numpy())
        out = torch.from_numpy(sr)[..., : self.scale * h, : self.scale * w]
        return out.to(lr.device, lr.dtype)
