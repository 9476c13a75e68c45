"""Training loader throughput per worker, per on-disk layout, and the workers a node needs to feed its GPUs.

One DataLoader worker runs `VSRTrainDataset.__getitem__` on one thread, so the rate of that call in one
process with `torch.set_num_threads(1)` is a worker's samples/s. Data: Vimeo-90K-shaped clips (7 frames of
448x256, natural photographs shifted per frame) written to a temporary folder in the three layouts training
reads: HR PNGs only (`sequences/`, LR made on the fly), pre-made LR PNGs (`lgfn-prepare vimeo90k`), and
BasicSR's LMDBs (`vimeo90k_train_GT_only4th.lmdb` + `vimeo90k_train_LR7frames.lmdb`). Sample: 7 frames,
HR patch 192 (LR 48), flips on, BI. "before" is the previous loader (whole frames degraded, then cropped),
timed interleaved with the others. The GPU demand is issue 16's: ~175 samples/s per GPU (batch 8, LR 48,
~570 GFLOP per sample at ~100 TFLOP/s), 1,400 for an 8-GPU node.
Run `python benchmarks/bench_data.py`, or call `run()` for the rows.
"""

from __future__ import annotations

import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common
import numpy as np
import torch

from lgfn.data.datasets import VSRTrainDataset, _window, load_window
from lgfn.data.layouts import discover_vimeo90k
from lgfn.protocol.degradation import degrade, quantize_8bit

GPU_DEMAND, NODE_GPUS = 175, 8
PATCH = 192
FRAMES = [f"im{i}.png" for i in range(1, 8)]


def _photos() -> list[np.ndarray]:
    import skimage.data

    out = []
    for name in ("astronaut", "coffee", "rocket", "camera"):  # all >= 400 x 512
        img = getattr(skimage.data, name)()
        if img.ndim == 2:
            img = np.stack([img] * 3, -1)
        out.append(img[..., :3])
    return out


def make_vimeo(root: Path, clips: int = 8, lmdb: bool = True) -> Path:
    """A Vimeo-90K-shaped folder: sequences/, sep_trainlist.txt, sequences_BIx4/ (lgfn-prepare) and the LMDBs."""
    from PIL import Image

    from lgfn.data import lmdb_store
    from lgfn.data.prepare import prepare

    root.mkdir(parents=True, exist_ok=True)
    photos = _photos()
    names = [f"{1 + k // 4:05d}/{1 + k % 4:04d}" for k in range(clips)]
    for k, name in enumerate(names):
        img = photos[k % len(photos)]
        for i, f in enumerate(FRAMES):
            y, x = 3 * i + k, 5 * i + 2 * k
            frame = np.ascontiguousarray(img[y : y + 256, x : x + 448])
            (root / "sequences" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(frame).save(root / "sequences" / name / f)
    (root / "sep_trainlist.txt").write_text("\n".join(names) + "\n")
    (root / "sep_testlist.txt").write_text(names[0] + "\n")
    prepare("vimeo90k", root, "bi", 4, workers=1, log=lambda m: None)
    if lmdb:
        from lgfn.data.io import read_u8

        def arr(p):
            return read_u8(p).permute(1, 2, 0).numpy()

        lmdb_store.write_store(root / lmdb_store.VIMEO_GT,
                               {f"{n}/im4": arr(root / "sequences" / n / "im4.png") for n in names})
        lmdb_store.write_store(root / lmdb_store.VIMEO_LR,
                               {f"{n}/{f[:-4]}": arr(root / "sequences_BIx4" / n / f) for n in names for f in FRAMES})
    return root


def _layout_roots(base: Path) -> dict[str, Path]:
    """Three views of one dataset: symlinks so each root shows only what its layout reads."""
    full = base / "full"
    roots = {}
    for layout, entries in (("HR only (official)", ["sequences"]),
                            ("pre-made LR (lgfn-prepare)", ["sequences", "sequences_BIx4"]),
                            ("BasicSR LMDB", ["sequences", "vimeo90k_train_GT_only4th.lmdb",
                                              "vimeo90k_train_LR7frames.lmdb"])):
        r = base / layout.split()[0].lower().replace("-", "")
        r.mkdir()
        for e in [*entries, "sep_trainlist.txt", "sep_testlist.txt"]:
            (r / e).symlink_to(full / e)
        roots[layout] = r
    return roots


def _before(ds: VSRTrainDataset, key: tuple[int, int]) -> dict:
    """The previous loader: whole frames read and degraded, then the crop and flips."""
    index, seed = key
    gen = torch.Generator().manual_seed(seed)
    ci, t = (int(v) for v in ds.items[index % len(ds.items)])
    clip = ds.clips.clip(ci)
    lr, hr = load_window(clip, _window(ds, t, len(clip)), ds.degradation, ds.scale)
    lp, s = ds.patch_size // ds.scale, ds.scale
    top = int(torch.randint(0, lr.shape[-2] - lp + 1, (), generator=gen))
    left = int(torch.randint(0, lr.shape[-1] - lp + 1, (), generator=gen))
    lr, hr = lr[..., top : top + lp, left : left + lp], hr[..., top * s : (top + lp) * s, left * s : (left + lp) * s]
    for dim in (-1, -2):
        if torch.rand((), generator=gen) < 0.5:
            lr, hr = lr.flip(dim), hr.flip(dim)
    if torch.rand((), generator=gen) < 0.5:
        lr, hr = lr.transpose(-1, -2), hr.transpose(-1, -2)
    return {"lr": lr.contiguous(), "hr": hr.contiguous()}


def _rates(fns: dict[str, callable], n: int, rounds: int) -> dict[str, float]:
    """Samples/s of each fn(i) over n samples per round, rounds interleaved; the median round."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm-up: imports, page cache, LMDB maps
        for i in range(2):
            fn(i)
    for r in range(rounds):
        for k, fn in fns.items():
            start = time.perf_counter()
            for i in range(n):
                fn(r * n + i)
            times[k].append(time.perf_counter() - start)
    return {k: n / statistics.median(v) for k, v in times.items()}


def _read_cv2(path: Path) -> torch.Tensor:
    """OpenCV's PNG decode, returned as ``lgfn.data.io.read_u8`` returns frames (3 x H x W RGB uint8).

    Only timed here against the loader's decoder (torchvision's libpng); the loader does not use it.
    """
    import cv2

    rgb = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.11: libpng writes RGB, no swap
    arr = cv2.imread(str(path), rgb) if rgb is not None else cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def stage_times(root: Path, repeats: int = 15) -> dict[str, float]:
    """ms per sample of the pieces of an HR-only sample: 7 PNG decodes, degradation (whole / crop), flips.

    Also 7 LR decodes (a pre-made-LR sample's), and both with OpenCV instead (one OpenCV thread, as in a worker).
    """
    import cv2

    from lgfn.data.io import _read_pil, read_u8

    cv2.setNumThreads(1)
    frames = [root / "sequences" / "00001" / "0001" / f for f in FRAMES]
    lr_frames = [root / "sequences_BIx4" / "00001" / "0001" / f for f in FRAMES]
    for p in frames + lr_frames:  # the same pixels, or the comparison means nothing
        assert torch.equal(_read_cv2(p), read_u8(p)), p
    hr = torch.stack([read_u8(p) for p in frames]).float().div(255)
    region = hr[..., 40 : 40 + 208, 100 : 100 + 208].contiguous()
    lr = torch.rand(7, 3, 48, 48)
    target = torch.rand(3, 192, 192)

    def flips():
        a, b = lr.flip(-1).flip(-2).transpose(-1, -2).contiguous(), target.flip(-1).flip(-2).transpose(-1, -2)
        return a, b.contiguous()

    fns = {
        "decode 7 HR PNGs (torchvision)": lambda: [read_u8(p) for p in frames],
        "decode 7 HR PNGs (PIL)": lambda: [_read_pil(p) for p in frames],
        "decode 7 HR PNGs (OpenCV)": lambda: [_read_cv2(p) for p in frames],
        "decode 7 LR PNGs (torchvision)": lambda: [read_u8(p) for p in lr_frames],
        "decode 7 LR PNGs (OpenCV)": lambda: [_read_cv2(p) for p in lr_frames],
        "BI, 7 whole frames": lambda: quantize_8bit(degrade(hr, "bi", 4)),
        "BI, 7 crops + margin": lambda: quantize_8bit(degrade(region, "bi", 4)),
        "BD, 7 crops + margin": lambda: quantize_8bit(degrade(region, "bd", 4)),
        "flips + transpose of a sample": flips,
    }
    meds = common.interleaved_medians(list(fns.values()), repeats)
    return {k: 1e3 * t for k, t in zip(fns, meds, strict=True)}


def manifest_seconds(clips: int = 64_612) -> tuple[float, float]:
    """Seconds to read a manifest of `clips` Vimeo clips, and its arrays' MiB."""
    from lgfn.data import manifest
    from lgfn.data.layouts import Clip, ClipSet

    with tempfile.TemporaryDirectory() as tmp:
        names = [f"{s:05d}/{c:04d}" for s in range(1, 97) for c in range(1, 675)][:clips]
        seq = Path(tmp) / "sequences"
        cs = ClipSet(clips=[Clip(name=n, hr=[seq / n / f for f in FRAMES], centre=3, size=(256, 448)) for n in names])
        path = Path(tmp) / "m.npz"
        manifest.save(path, cs, {"k": 1}, "stamp")
        (t,) = common.interleaved_medians([lambda: manifest.load(path, {"k": 1}, "stamp")], 3)
        table = manifest.load(path, {"k": 1}, "stamp").clips
        return t, table.nbytes() / 2**20


def run(samples: int = 24, rounds: int = 3, clips: int = 8) -> list[dict]:
    torch.set_num_threads(1)  # a loader worker's thread count (lgfn.data.datamodule)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        make_vimeo(base / "full", clips=clips)
        roots = _layout_roots(base)
        sets = {k: VSRTrainDataset(discover_vimeo90k(r, "train").clips, patch_size=PATCH) for k, r in roots.items()}
        assert sets["BasicSR LMDB"].clips.hr_root.endswith(".lmdb")  # really reading the stores
        assert sets["pre-made LR (lgfn-prepare)"].clips.lr_root.endswith("sequences_BIx4")
        hr_only = sets["HR only (official)"]
        n = len(hr_only)
        fns = {"HR only (official), before: whole frames degraded": lambda i: _before(hr_only, (i % n, i))}
        for k, ds in sets.items():
            fns[k] = (lambda d: (lambda i: d[(i % n, i)]))(ds)
        rates = _rates(fns, samples, rounds)
        stages = stage_times(base / "full")
    mani_s, mani_mib = manifest_seconds()
    rows = []
    for k, rate in rates.items():
        rows.append({"layout / stage": k, "samples_per_s_per_worker": round(rate, 1),
                     "ms_per_sample": round(1e3 / rate, 2),
                     f"workers_per_gpu_for_{GPU_DEMAND}": math.ceil(GPU_DEMAND / rate),
                     f"workers_per_{NODE_GPUS}gpu_node": math.ceil(NODE_GPUS * GPU_DEMAND / rate)})
    for k, ms in stages.items():
        rows.append({"layout / stage": f"stage: {k}", "ms_per_sample": round(ms, 2)})
    rows.append({"layout / stage": f"manifest: read 64,612 Vimeo clips ({mani_mib:.1f} MiB of arrays)",
                 "ms_per_sample": f"{1e3 * mani_s:.0f} ms in all"})
    return rows


if __name__ == "__main__":
    print(common.markdown(run(*(int(a) for a in sys.argv[1:]))))
