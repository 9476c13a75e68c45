"""``lgfn-prepare vimeo90k|vid4|spmcs ROOT``: write the BI / BD LR frames once, where the loader looks for them.

Training on HR-only Vimeo-90K decodes seven 448 x 256 PNGs and degrades them for every sample; with
pre-made LR frames a sample decodes seven 112 x 64 PNGs and one HR frame. The frames written here are
exactly what the loader makes on the fly (``lgfn.protocol.degradation.degrade`` of the frame cropped to a
multiple of the scale, rounded to 8 bits), saved as PNG in the folder the loader reads
(``lgfn.data.layouts``):

- Vimeo-90K ``<root>/sequences/<seq>/<clip>/im*.png`` -> ``<root>/sequences_BIx4/...`` (``BDx4``);
  mmagic's ``<root>/GT/...`` -> ``<root>/BIx4/...``; every clip of the train and test lists.
- Vid4 / SPMCS ``<root>/GT/<clip>`` (or ``HR/``, or SPMCS's ``<clip>/truth``) -> ``<root>/BIx4/<clip>``.

Frames are written in parallel (``--workers``, default: the CPUs the job has) into ``<folder>.partial``,
renamed to the final folder when every frame is there, so the loader never sees half a set. A killed
run resumes (frames already written are kept). Exit codes: 0 ok, 2 bad usage, 1 any other error.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from lgfn.common.atomic import atomic_path
from lgfn.common.console import UsageError, console_main
from lgfn.data.cpus import usable_cpus
from lgfn.data.io import read_image
from lgfn.data.layouts import VIMEO_FRAMES, clip_dirs, frame_files, read_clip_list, vimeo_group_lists
from lgfn.protocol.degradation import degrade, quantize_8bit

PROG = "lgfn-prepare"
DATASETS = ("vimeo90k", "vid4", "spmcs")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Write BI / BD LR frames of a dataset once.")
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("root", metavar="ROOT", help="the dataset folder (data.root)")
    p.add_argument("--degradation", choices=("bi", "bd", "both"), default="bi")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--workers", type=int, default=None, help="processes (default: the CPUs this job has)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing LR folder")
    return p


def plan(dataset: str, root: Path, degradation: str, scale: int) -> tuple[Path, list[tuple[Path, Path]]]:
    """The LR folder to write and the (HR frame, LR frame) pairs, relative layout kept."""
    tag = f"{degradation.upper()}x{scale}"
    if dataset == "vimeo90k":
        hr_root = next((root / d for d in ("sequences", "GT") if (root / d).is_dir()), None)
        if hr_root is None:
            raise FileNotFoundError(f"no {root / 'sequences'} (or {root / 'GT'}) folder of HR clips in {root}")
        lr_root = root / (f"sequences_{tag}" if hr_root.name == "sequences" else tag)
        names: list[str] = []
        for lst in ("sep_trainlist.txt", "sep_testlist.txt", "meta_info_Vimeo90K_train_GT.txt",
                    "meta_info_Vimeo90K_test_GT.txt"):
            if (root / lst).is_file():
                names += read_clip_list(root / lst)
        for path in vimeo_group_lists(root).values():
            names += read_clip_list(path)
        names = list(dict.fromkeys(names))
        if not names:
            raise FileNotFoundError(f"no sep_trainlist.txt / sep_testlist.txt in {root}")
        pairs = [(hr_root / n / f, lr_root / n / f) for n in names for f in VIMEO_FRAMES]
        return lr_root, pairs
    hr_root = next((root / d for d in ("GT", "HR") if (root / d).is_dir()), None)
    if hr_root is not None:
        clips = {p.name: p for p in clip_dirs(hr_root)}
    else:
        clips = {p.name: p / "truth" for p in clip_dirs(root) if (p / "truth").is_dir()}
    if not clips:
        raise FileNotFoundError(f"no clips under {root} (GT/<clip>, HR/<clip> or <clip>/truth)")
    lr_root = root / tag
    pairs = [(f, lr_root / name / f"{f.stem}.png") for name, d in clips.items() for f in frame_files(d)]
    return lr_root, pairs


def _one(job: tuple[str, str, str, int]) -> int:
    """Degrade one HR frame and write it (tmp file + rename); 0 if it already existed."""
    import numpy as np
    import torch
    from PIL import Image

    src, dst, kind, scale = job
    dst_path = Path(dst)
    if dst_path.is_file():
        return 0
    torch.set_num_threads(1)
    lr = quantize_8bit(degrade(read_image(src), kind, scale))
    arr = lr.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    with atomic_path(dst_path) as tmp:
        Image.fromarray(np.ascontiguousarray(arr)).save(tmp, format="PNG")
    return 1


def prepare(dataset: str, root: str | os.PathLike, degradation: str = "bi", scale: int = 4,
            workers: int | None = None, overwrite: bool = False, log=print) -> list[Path]:
    """Write the LR folder(s); returns them. See the module docstring."""
    from concurrent.futures import ProcessPoolExecutor

    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist or is not a folder")
    kinds = ["bi", "bd"] if degradation == "both" else [degradation]
    workers = usable_cpus() if workers is None else workers
    done = []
    for kind in kinds:
        lr_root, pairs = plan(dataset, root, kind, scale)
        if lr_root.exists():
            if not overwrite:
                log(f"{PROG}: {lr_root} exists; kept (--overwrite replaces it)")
                done.append(lr_root)
                continue
            shutil.rmtree(lr_root)
        partial = lr_root.with_name(lr_root.name + ".partial")
        jobs = [(str(hr), str(partial / lr.relative_to(lr_root)), kind, scale) for hr, lr in pairs]
        missing = [str(hr) for hr, _ in pairs if not hr.is_file()]
        if missing:
            raise FileNotFoundError(f"HR frame {missing[0]} is missing ({len(missing)} listed frames are)")
        start = time.perf_counter()
        if workers <= 1:
            written = sum(_one(j) for j in jobs)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                written = sum(pool.map(_one, jobs, chunksize=max(1, min(64, len(jobs) // (4 * workers) or 1))))
        os.replace(partial, lr_root)
        log(f"{PROG}: wrote {written} {kind.upper()} x{scale} frames ({len(jobs) - written} already there) to "
            f"{lr_root} in {time.perf_counter() - start:.1f} s with {workers} process(es)")
        done.append(lr_root)
    return done


def _run(args: argparse.Namespace) -> None:
    if args.scale < 1:
        raise UsageError(f"--scale must be a positive integer, got {args.scale}")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    prepare(args.dataset, args.root, args.degradation, args.scale, args.workers, args.overwrite,
            log=lambda m: print(m, file=sys.stderr))


def main(argv: list[str] | None = None) -> int:
    return console_main(PROG, build_parser(), _run, argv,
                        interrupted="interrupted; frames written so far are kept in the .partial folder")



if __name__ == "__main__":
    sys.exit(main())
