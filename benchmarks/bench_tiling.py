"""Bounded-overlap tiling vs exact: PSNR cost and compute, for `lgfn-upscale --tile` (lgfn.inference.tiling).

Exact tiling gives each tile the network's whole receptive radius of context (448 LR px for the paper's
`lgfn`, 108 for `lgfn_small`) and the frame's channel-attention means; bounded tiling caps the context
(`lgfn.inference.tiling.BOUNDED_OVERLAP`) and keeps the global means. Measured with the trained
`checkpoints/lgfn_small_builtin.pt` on a 7-frame clip rendered like the built-in test clips (test photos,
moving layers), BI-degraded to LR 80 x 112, tiles of 32 LR px (12 tiles, so many seams): PSNR (Y) of the
tiled SR against the untiled SR (both rounded to 8 bits), the change of PSNR against the HR frame and
how many 8-bit output values differ from the untiled ones. The `work` columns are the
pixels the network computes per frame pixel (the cost of tiling), for these runs and, computed from the
tile geometry alone, for the paper model at 854 x 480 and 1920 x 1080 LR with tile 256 (no trained
paper-size weights here: its PSNR cost is not measured).
Run `python benchmarks/bench_tiling.py`, or call `run()` for the rows.
"""

from __future__ import annotations

import common
import numpy as np
import torch

from lgfn.inference.tiling import BOUNDED_OVERLAP, default_overlap, tile_work, upscale_window
from lgfn.metrics import psnr_y
from lgfn.protocol.degradation import degrade, quantize_8bit

CKPT = common.ROOT / "checkpoints" / "lgfn_small_builtin.pt"


def _clip(height: int = 320, width: int = 448, frames: int = 7) -> torch.Tensor:
    """frames x 3 x H x W in [0, 1]: a background photo and two moving cut-outs (lgfn.data.builtin)."""
    from lgfn.data.builtin import _load_photo, render_clip

    rng = np.random.default_rng(5)
    clip = render_clip(_load_photo("rocket"), [_load_photo("coffee"), _load_photo("astronaut")], frames=frames,
                       height=height, width=width, rng=rng)
    return clip.permute(0, 3, 1, 2).float().div(255)


def run(tile: int = 32, overlaps: tuple[int, ...] = (16, 32, 48), local_pooling: tuple[int, ...] = (48,)) -> list[dict]:
    from lgfn.checkpoints.reader import load_network

    torch.set_num_threads(1)  # the figures are PSNRs and pixel counts, not times: leave the other core alone
    net, _ = load_network(CKPT, map_location="cpu")
    net.eval()
    hr = _clip()
    lr = quantize_8bit(degrade(hr, "bi", 4))
    target = hr[hr.shape[0] // 2 : hr.shape[0] // 2 + 1]
    h, w = lr.shape[-2:]

    def sr_of(**kw):
        return quantize_8bit(upscale_window(net, lr, **kw).clamp(0, 1)[None])

    exact = sr_of()
    base = float(psnr_y(exact, target))
    rows = [{"mode": f"untiled (= exact, overlap {default_overlap(net)})", "tile": "-", "overlap": "-",
             "psnr_vs_exact_db": "inf", "psnr_vs_hr_change_db": 0.0, "differing_8bit_values": 0, "work": 1.0}]
    for ov, pooling in [(ov, True) for ov in overlaps] + [(ov, False) for ov in local_pooling]:
        out = sr_of(tile=tile, overlap=ov, exact_pooling=pooling)
        rows.append({"mode": "bounded" + ("" if pooling else ", tile-local pooling"), "tile": tile, "overlap": ov,
                     "psnr_vs_exact_db": round(float(psnr_y(out, exact)), 2),
                     "psnr_vs_hr_change_db": round(float(psnr_y(out, target)) - base, 4),
                     "differing_8bit_values": int((out != exact).sum()), "work": round(tile_work(h, w, tile, ov), 2)})
    paper = default_overlap(type("Paper", (), {"net_class": "LGFN", "config": {}})())
    for lw, lh in ((854, 480), (1920, 1080)):
        for ov in (BOUNDED_OVERLAP, paper):
            rows.append({"mode": f"paper lgfn {lw}x{lh}: " + ("bounded" if ov == BOUNDED_OVERLAP else "exact"),
                         "tile": 256, "overlap": ov, "work": round(tile_work(lh, lw, 256, ov), 2)})
    rows.append({"mode": f"(LR {w}x{h}, HR PSNR of the untiled SR: {base:.2f} dB)"})
    return rows


if __name__ == "__main__":
    print(common.markdown(run()))
