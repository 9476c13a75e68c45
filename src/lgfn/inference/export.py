"""Export a trained LGFN to ONNX or a torch.export program (.pt2) (running them: ``lgfn.inference.onnx_runner``).

`lgfn-export --ckpt PATH --format onnx|torch_export --out FILE [--frames N] [--dynamic] [--height H --width W]
[--opset N]` writes FILE and a JSON sidecar FILE.json (scale, frames, padding, tensor names, layout).

Both formats are traced with the portable deformable-conv backend (`dcn_backend("pytorch")`: grid_sample +
matmul), because torchvision's DCN kernel has no ONNX / torch.export lowering.

ONNX uses the torch.export-based exporter (`torch.onnx.export(..., dynamo=True)`, the default since
torch 2.9). The legacy TorchScript exporter (`dynamo=False`) was tried and rejected: it freezes the shape
arithmetic inside the DCN (batch, Ho*Wo in `view`s) into constants, so a "--dynamic" model fails in ONNX
Runtime at any other size, and it is deprecated. The dynamo exporter keeps those shapes symbolic; it is
slower to export (tens of seconds for a small net on 2 cores) but its graphs match eager to ~1e-6.
The exporter emits opset 18 natively (GridSample is native since opset 16); lower requests (16, 17) go
through ONNX's version converter.

This module imports torch lazily: importing it stays light.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lgfn.common.atomic import atomic_path, write_json_atomic
from lgfn.common.console import console_main
from lgfn.inference.onnx_runner import ExportError, OnnxUpscaler, read_sidecar, require, sidecar_path

if TYPE_CHECKING:
    from torch import nn

FORMATS = ("onnx", "torch_export")
INPUT_NAME = "lr"
OUTPUT_NAME = "sr"
LAYOUT = "B x N x 3 x h x w RGB in [0,1]"
DEFAULT_OPSET = 18  # the dynamo exporter's native opset; GridSample needs >= 16
MIN_OPSET = 16
# Max |onnx - eager| accepted by the CLI's check after export (float32, different kernels).
VERIFY_TOLERANCE = 1e-3


@contextlib.contextmanager
def _exportable(net: nn.Module) -> Iterator[None]:
    """Eval mode, portable DCN backend, out-of-place activations; the net's attributes restored afterwards.

    DCNv2Pack stores `last_offset_abs_mean` (a tensor) during forward; under tracing that would leave a
    fake tensor on the module, so every public attribute is put back as it was.
    """
    from lgfn.ops import dcn_backend

    was_training = net.training
    saved = [(m, {k: v for k, v in vars(m).items() if not k.startswith("_")}) for m in net.modules()]
    net.eval()
    for module in net.modules():
        # In-place activations are decomposed through slow symbolic-shape refs (about half of the
        # export time of LGFN); the out-of-place ops map straight to ONNX LeakyRelu/Relu.
        if isinstance(getattr(module, "inplace", None), bool):
            module.inplace = False
    try:
        with dcn_backend("pytorch"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"The tensor attributes? .* assigned during export")
            yield
    finally:
        for module, attrs in saved:
            for key in [k for k in vars(module) if not k.startswith("_") and k not in attrs]:
                delattr(module, key)
            for key, value in attrs.items():
                setattr(module, key, value)
        net.train(was_training)


def _check_sizes(net: nn.Module, num_frames: int | None, height: int, width: int) -> int:
    """Validate the export geometry; return the frame count to trace with."""
    built = getattr(net, "num_frames", None)
    frames = built if num_frames is None else num_frames
    if frames is None:
        raise ValueError("num_frames: the network has no num_frames attribute; pass num_frames=")
    if built is not None and frames != built:
        raise ValueError(f"num_frames: the network was built for {built} frames, asked {frames}")
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ValueError(f"num_frames must be a positive int, got {frames!r}")
    # torch.export specialises sizes 0 and 1, so a dynamic dimension must be traced at >= 2.
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise ValueError(f"{name} must be an int >= 2, got {value!r}")
    return frames


def _example_and_dims(frames: int, height: int, width: int, dynamic: bool, dtype: Any = None):
    """Example input (batch 2 when dynamic, so batch is not specialised to 1) and dynamic_shapes spec."""
    import torch

    batch = 2 if dynamic else 1
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(batch, frames, 3, height, width, generator=generator, dtype=dtype or torch.float32)
    if not dynamic:
        return example, None
    dims = {
        0: torch.export.Dim("batch", min=1),
        3: torch.export.Dim("height", min=2),
        4: torch.export.Dim("width", min=2),
    }
    return example, {INPUT_NAME: dims}


def _base_meta(net: nn.Module, fmt: str, frames: int, dynamic: bool, height: int, width: int,
               meta: dict | None) -> dict:
    import torch

    meta = dict(meta or {})
    config = getattr(net, "config", None)
    return {
        "format": fmt,
        "scale": int(meta.get("scale", getattr(net, "scale", 4))),
        "num_frames": frames,
        "padding": meta.get("padding", "reflection_circle"),
        "degradation": meta.get("degradation"),
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "layout": LAYOUT,
        "dynamic": bool(dynamic),
        # The traced example size: the only accepted size when dynamic is false.
        "height": height,
        "width": width,
        "opset": None,
        "net_class": type(net).__name__,
        "net_config": dict(config) if config is not None else None,
        "torch_version": torch.__version__,
    }


def export_onnx(
    net: nn.Module,
    out: str | os.PathLike,
    num_frames: int | None = None,
    dynamic: bool = False,
    height: int = 64,
    width: int = 64,
    opset: int | None = None,
    meta: dict | None = None,
) -> Path:
    """Export `net` (lr B x N x 3 x h x w -> sr B x 3 x sh x sw) to an ONNX file plus FILE.json; returns FILE.

    `dynamic` makes batch, height and width symbolic; otherwise the graph is fixed to 1 x N x 3 x height x width.
    """
    import torch

    require("onnx", "ONNX export")
    require("onnxscript", "ONNX export")
    opset = DEFAULT_OPSET if opset is None else opset
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
        raise ValueError(f"opset must be an int >= {MIN_OPSET} (GridSample), got {opset!r}")
    frames = _check_sizes(net, num_frames, height, width)
    out = Path(out)
    example, dynamic_shapes = _example_and_dims(frames, height, width, dynamic)
    with _exportable(net), warnings.catch_warnings():
        # The exporter's note that it converts down from opset 18 is expected for --opset 16/17.
        warnings.filterwarnings("ignore", message=r".*opset_version.*")
        program = torch.onnx.export(
            net,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=dynamic_shapes,
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    import onnx

    with atomic_path(out) as tmp:
        program.save(tmp, external_data=False)
        model = onnx.load(os.fspath(tmp))
        onnx.checker.check_model(model)
    sidecar = _base_meta(net, "onnx", frames, dynamic, height, width, meta)
    sidecar["opset"] = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset)
    sidecar["exporter"] = "torch.onnx.export(dynamo=True)"
    write_json_atomic(sidecar, sidecar_path(out), sort_keys=True)
    return out


def export_torch(
    net: nn.Module,
    out: str | os.PathLike,
    num_frames: int | None = None,
    dynamic: bool = False,
    height: int = 64,
    width: int = 64,
    meta: dict | None = None,
) -> Path:
    """`torch.export.export` + `torch.export.save` of `net` to FILE (.pt2) plus FILE.json; returns FILE.

    Load with `torch.export.load(FILE).module()`; the module takes lr B x N x 3 x h x w float32.
    """
    import torch

    frames = _check_sizes(net, num_frames, height, width)
    out = Path(out)
    example, dynamic_shapes = _example_and_dims(frames, height, width, dynamic)
    with _exportable(net):
        program = torch.export.export(net, (example,), dynamic_shapes=dynamic_shapes)
    with atomic_path(out) as tmp:
        torch.export.save(program, tmp)
    sidecar = _base_meta(net, "torch_export", frames, dynamic, height, width, meta)
    sidecar["exporter"] = "torch.export.export"
    write_json_atomic(sidecar, sidecar_path(out), sort_keys=True)
    return out


def export(net: nn.Module, out: str | os.PathLike, fmt: str, **kwargs: Any) -> Path:
    """Dispatch to `export_onnx` (fmt 'onnx') or `export_torch` (fmt 'torch_export')."""
    exporters: dict[str, Callable[..., Path]] = {"onnx": export_onnx, "torch_export": export_torch}
    if fmt not in exporters:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "torch_export":
        if kwargs.pop("opset", None) is not None:
            raise ValueError("opset only applies to format 'onnx'")
    return exporters[fmt](net, out, **kwargs)


def max_abs_diff_onnx(net: nn.Module, path: str | os.PathLike, lr: Any) -> float:
    """Max |onnxruntime(path)(lr) - net(lr)| for one input (a torch tensor B x N x 3 x h x w)."""
    import torch

    with _exportable(net), torch.inference_mode():
        ref = net(lr).float().cpu().numpy()
    got = OnnxUpscaler(path)(lr.float().cpu().numpy())
    if got.shape != ref.shape:
        raise ValueError(f"{path}: output shape {got.shape} differs from PyTorch's {ref.shape}")
    return float(np.abs(got - ref).max())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lgfn-export",
        description="Export an LGFN checkpoint to ONNX or torch.export (.pt2), with a FILE.json sidecar.",
    )
    p.add_argument("--ckpt", required=True, help="weights file (lgfn-weights) or Lightning .ckpt")
    p.add_argument("--format", required=True, dest="fmt", metavar="onnx|torch_export")
    p.add_argument("--out", required=True, help="output file (.onnx or .pt2); FILE.json is written beside it")
    p.add_argument("--frames", type=int, default=None, help="input frames N (default: the checkpoint's)")
    p.add_argument("--dynamic", action="store_true", help="make batch, height and width dynamic")
    p.add_argument("--height", type=int, default=64, help="LR height to trace with (the fixed size if static)")
    p.add_argument("--width", type=int, default=64, help="LR width to trace with (the fixed size if static)")
    p.add_argument("--opset", type=int, default=None, help=f"ONNX opset (>= {MIN_OPSET}, default {DEFAULT_OPSET})")
    p.add_argument("--no-verify", action="store_true",
                   help="skip running the ONNX file in onnxruntime against PyTorch after export")
    return p


def run(args: argparse.Namespace) -> Path:
    """The CLI body: load, check, export, verify. Raises ExportError/ValueError/FileNotFoundError."""
    if args.fmt not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, got {args.fmt!r}")
    if args.fmt == "onnx":  # fail before the slow checkpoint load
        for module in ("onnx", "onnxscript", *(() if args.no_verify else ("onnxruntime",))):
            require(module, "--format onnx")
    elif args.opset is not None:
        raise ExportError("--opset only applies to --format onnx")

    from lgfn.checkpoints.reader import load_network

    net, meta = load_network(args.ckpt, map_location="cpu")
    trained = int(meta.get("num_frames", getattr(net, "num_frames", 0)))
    frames = trained if args.frames is None else args.frames
    if frames != trained:
        raise ExportError(f"checkpoint was trained with {trained} frames, --frames asked {frames}")
    common = dict(num_frames=frames, dynamic=args.dynamic, height=args.height, width=args.width, meta=meta)
    start = time.perf_counter()
    if args.fmt == "onnx":
        out = export_onnx(net, args.out, opset=args.opset, **common)
    else:
        out = export_torch(net, args.out, **common)
    print(f"wrote {out} and {sidecar_path(out)} ({time.perf_counter() - start:.1f} s)")

    if args.fmt == "onnx" and not args.no_verify:
        import torch

        sizes = [(1, args.height, args.width)] if not args.dynamic else [
            (2, args.height, args.width), (1, args.height + 3, args.width + 5)]
        for batch, h, w in sizes:
            lr = torch.rand(batch, frames, 3, h, w, generator=torch.Generator().manual_seed(1))
            diff = max_abs_diff_onnx(net, out, lr)
            print(f"onnxruntime vs PyTorch at {batch}x{frames}x3x{h}x{w}: max |diff| = {diff:.2e}")
            if not diff <= VERIFY_TOLERANCE:
                raise ExportError(f"{out}: ONNX output differs from PyTorch by {diff:.3g} (> {VERIFY_TOLERANCE})")
    return out


def main(argv: list[str] | None = None) -> int:
    """Console entry point `lgfn-export`; one-line error and exit 1 on bad input."""
    return console_main("lgfn-export", _parser(), run, argv, interrupted="interrupted; no file written")



if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "FORMATS",
    "ExportError",
    "export",
    "export_onnx",
    "export_torch",
    "main",
    "max_abs_diff_onnx",
    "read_sidecar",
    "sidecar_path",
]
