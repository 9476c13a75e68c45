"""``lgfn-convert``: the authors' released LGFN state dict to and from this project's weights-only file.

    lgfn-convert release SRC DST      # their model_best.pt -> an lgfn-weights file (eval.py, lgfn-upscale, ...)
    lgfn-convert to-release SRC DST   # a weights file or Lightning .ckpt -> their layout (runs in their code)

Both read with ``torch.load(weights_only=True)``, map every key strictly (``lgfn.checkpoints.authors_release``), and write
atomically: on any error nothing is written, one line says why, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import torch

from lgfn.checkpoints.authors_release import (
    PAPER_CONFIG,
    ReleaseError,
    release_to_state,
    state_to_release,
    strip_wrapper,
)
from lgfn.checkpoints.lightning_io import atomic_torch_save, load_checkpoint
from lgfn.checkpoints.reader import read_net_file
from lgfn.checkpoints.weights_file import DEFAULT_META, FORMAT, VERSION
from lgfn.common.console import console_main

PROG = "lgfn-convert"


def sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _check_paths(src: Path, dst: Path) -> None:
    if not src.is_file():
        raise FileNotFoundError(f"no such file: {src}")
    if dst.exists() and dst.resolve() == src.resolve():
        raise ValueError(f"DST is SRC ({src}): write the conversion to another file")
    if dst.is_dir():
        raise ValueError(f"DST {dst} is a folder: give a file name")


def release_to_weights(src: str | os.PathLike, dst: str | os.PathLike) -> dict:
    """The authors' released state dict at ``src`` -> an lgfn-weights file at ``dst``; returns its meta."""
    src, dst = Path(src), Path(dst)
    _check_paths(src, dst)
    obj = load_checkpoint(src)
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        raise ReleaseError(f"{src} is already an lgfn-weights file (to-release converts it the other way)")
    if isinstance(obj, Mapping) and "state_dict" in obj:
        raise ReleaseError(f"{src} is a Lightning checkpoint, not the authors' release (to-release converts a "
                           "model trained here)")
    state = release_to_state(obj, str(src))
    _, prefix = strip_wrapper(obj)
    meta = {
        **DEFAULT_META,
        "num_frames": PAPER_CONFIG["num_frames"],
        "scale": PAPER_CONFIG["scale"],
        "source": "release",
        "source_file": src.name,
        "source_sha256": sha256(src),
        "source_prefix": prefix,
        "converted_by": f"{PROG} release",
    }
    weights = {
        "format": FORMAT,
        "version": VERSION,
        "net_class": "LGFN",
        "net_config": dict(PAPER_CONFIG),
        "state_dict": {k: v.detach().cpu().to(torch.float32).contiguous() for k, v in state.items()},
        "meta": meta,
    }
    atomic_torch_save(weights, dst)
    return meta


def weights_to_release(src: str | os.PathLike, dst: str | os.PathLike) -> int:
    """A paper-size LGFN (weights file or Lightning .ckpt) -> the authors' layout at ``dst``; returns #tensors."""
    src, dst = Path(src), Path(dst)
    _check_paths(src, dst)
    nf = read_net_file(src)
    if nf.kind == "release":
        raise ReleaseError(f"{src} is already in the authors' layout")
    release = state_to_release(nf.state, nf.net_config, str(src))
    atomic_torch_save(release, dst)
    return len(release)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Convert between the authors' released LGFN state dict "
                                "(BIOINSu/LGFN) and this project's weights-only file.")
    sub = p.add_subparsers(dest="command", required=True, metavar="{release,to-release}")
    r = sub.add_parser("release", help="the authors' released state dict (e.g. model_best.pt) -> lgfn-weights file")
    r.add_argument("src", metavar="SRC")
    r.add_argument("dst", metavar="DST")
    t = sub.add_parser("to-release", help="weights file or Lightning .ckpt (paper sizes) -> the authors' layout")
    t.add_argument("src", metavar="SRC")
    t.add_argument("dst", metavar="DST")
    return p


def _run(args: argparse.Namespace) -> None:
    if args.command == "release":
        meta = release_to_weights(args.src, args.dst)
        print(f"{PROG}: wrote {args.dst} (LGFN, paper sizes, lgfn-weights v{VERSION}) from {args.src} "
              f"(sha256 {meta['source_sha256'][:16]}...)")
    else:
        n = weights_to_release(args.src, args.dst)
        print(f"{PROG}: wrote {args.dst} (the authors' layout, {n} float32 tensors) from {args.src}")


def main(argv: list[str] | None = None) -> int:
    """Console entry point; 0 on success, 1 with one line on stderr otherwise (2 for bad usage)."""
    return console_main(PROG, _parser(), _run, argv, interrupted="interrupted; no file written")



if __name__ == "__main__":
    sys.exit(main())


__all__ = ["main", "release_to_weights", "sha256", "weights_to_release"]
