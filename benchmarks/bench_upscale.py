"""`lgfn-upscale` wall time with decoding and encoding overlapped with the network (the default) vs `--sequential`.

Input: a folder of 30 synthetic 320x180 PNG frames (crops of test photographs shifted per frame, so they
compress like real frames); output 1280x720 PNG frames, or an H.264 mp4. Network: `LGFN` at a tiny size
with random weights (3 frames, 8 features, one block of each kind), so that the network's share of a frame
is comparable to the decode and encode shares, where overlapping them matters. Each run is a whole
`lgfn.inference.upscale.main` call (model load included); the two modes are timed interleaved in one process (median
of `repeats`). The `stages alone` row times decoding one input PNG, the network on one window and encoding
one output PNG, each on its own: their sum over their maximum is the most overlapping could give. The
network runs on `threads` intra-op threads (default: every core); the reader and writer threads compete
with them for the cores (PIL's PNG decode and zlib encode release the GIL).
Run `python benchmarks/bench_upscale.py [repeats] [threads]`, or call `run(repeats, threads)` for the rows.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
import tempfile
from pathlib import Path

import common
import numpy as np
import torch

from lgfn.checkpoints.weights_file import save_weights
from lgfn.models import LGFN

FRAMES, HEIGHT, WIDTH = 30, 180, 320
TINY = dict(num_frames=3, num_feat=8, num_extract_blocks=1, num_align_stages=1, deformable_groups=2,
            num_lfm=1, num_gfm=1, gfm_slice_channels=2, num_rcab=1)


def make_frames(folder: Path, frames: int = FRAMES, height: int = HEIGHT, width: int = WIDTH) -> Path:
    """``frames`` PNGs ``f00000.png``...: a photograph panned 3 px right and 2 px down per frame."""
    import skimage.data
    from PIL import Image

    photo = np.concatenate([skimage.data.astronaut(), skimage.data.coffee()[:, :512]], axis=0)  # 912 x 512
    folder.mkdir(parents=True, exist_ok=True)
    for t in range(frames):
        y, x = (2 * t) % (photo.shape[0] - height), (3 * t) % (photo.shape[1] - width)
        Image.fromarray(np.ascontiguousarray(photo[y : y + height, x : x + width])).save(folder / f"f{t:05d}.png")
    return folder


def _weights(path: Path, cfg: dict) -> Path:
    torch.manual_seed(0)
    net = LGFN(**cfg).eval()
    save_weights(net, path, meta={"padding": "reflection_circle"})
    return path


def _upscale(src: Path, out: Path, ckpt: Path, *flags: str) -> None:
    from lgfn.inference.upscale import main

    shutil.rmtree(out, ignore_errors=True)
    if out.is_file():
        out.unlink()
    with contextlib.redirect_stderr(io.StringIO()) as err:
        code = main([str(src), str(out), "--ckpt", str(ckpt), "--device", "cpu", *flags])
    if code != 0:
        raise RuntimeError(f"lgfn-upscale failed ({code}): {err.getvalue()[-500:]}")


def stage_ms(src: Path, ckpt: Path, repeats: int) -> dict[str, float]:
    """ms per frame of decoding one input PNG, the network on one window, encoding one output PNG."""
    from PIL import Image

    from lgfn.checkpoints.reader import load_network
    from lgfn.inference.video import _read_image

    net, _ = load_network(ckpt, map_location="cpu")
    files = sorted(src.iterdir())
    frame = _read_image(files[0], set())
    x = torch.from_numpy(np.stack([frame] * net.num_frames)).permute(0, 3, 1, 2).float().div(255)[None]
    with torch.inference_mode():
        sr = net(x)[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()

    def net_call():
        with torch.inference_mode():
            net(x)

    meds = common.interleaved_medians([lambda: _read_image(files[1], set()), net_call,
                                       lambda: Image.fromarray(sr).save(io.BytesIO(), format="PNG")], repeats)
    return dict(zip(("decode", "network", "encode"), (1e3 * m for m in meds), strict=True))


def run(repeats: int = 3, threads: int | None = None) -> list[dict]:
    threads = threads or common.threads()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            src = make_frames(tmp / "in")
            ckpt = _weights(tmp / "tiny.pt", TINY)
            stages = stage_ms(src, ckpt, max(5, repeats))
            for output in ("frames", "sr.mp4"):
                over, seq = common.interleaved_medians(
                    [lambda o=output: _upscale(src, tmp / f"over_{o}", ckpt),
                     lambda o=output: _upscale(src, tmp / f"seq_{o}", ckpt, "--sequential")], repeats)
                rows.append({"output": "PNG folder" if output == "frames" else "H.264 mp4", "threads": threads,
                             "sequential_s": round(seq, 2), "overlap_s": round(over, 2),
                             "speedup": f"{seq / over:.2f}x", "sequential_fps": round(FRAMES / seq, 2),
                             "overlap_fps": round(FRAMES / over, 2)})
            rows.append({"output": "stages alone, ms/frame: decode / network / PNG encode", "threads": threads,
                         "sequential_s": " / ".join(f"{v:.1f}" for v in stages.values()),
                         "speedup": f"at most {sum(stages.values()) / max(stages.values()):.2f}x"})
    finally:
        torch.set_num_threads(before)
    return rows

if __name__ == "__main__":
    print(common.markdown(run(*(int(a) for a in sys.argv[1:]))))
