"""BasicVSR beside LGFN: CPU inference frames/s at Vid4 size (LR 144 x 180 -> 576 x 720), 7-frame windows, batch 1.

`window` is how eval.py and `lgfn-upscale` run every network: one forward per output frame on its 7-frame
window (BasicVSR's `forward`: the 3 + 3 propagation steps and 6 flows the centre frame depends on, plus the
centre's own two trunk steps). `sequence` is BasicVSR's own mode (`forward_sequence`: the 7 frames at once, one
trunk step per frame and direction, 12 flows), per output frame. LGFN and lgfn_small have random weights (speed
does not depend on them); BasicVSR has its released vimeo_bi weights when the `baselines` extra is installed.
The three are timed interleaved in one process (`common.interleaved_medians`), so their ratios are like for like.
Run `python benchmarks/bench_baselines.py [--repeats N] [--threads T]`, or call `run()` for the rows.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import common
import torch

from lgfn.models import LGFN, LGFN_SMALL, BasicVSR

VID4_LR = (144, 180)
FRAMES = 7


def _basicvsr() -> tuple[BasicVSR, str]:
    try:
        from lgfn.checkpoints.basicvsr_weights import pretrained_basicvsr

        return pretrained_basicvsr("vimeo_bi", num_frames=FRAMES), "vimeo_bi"
    except Exception:  # noqa: BLE001 - the extra is missing: same speed with random weights
        torch.manual_seed(0)
        return BasicVSR(num_frames=FRAMES).eval(), "random init"


def run(repeats: int = 3, threads: int | None = None, height: int = VID4_LR[0], width: int = VID4_LR[1]) -> list[dict]:
    """Rows: model, mode, LR size, parameters, frames/s and s/frame (median of ``repeats``)."""
    threads = threads or common.threads()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    lr = torch.rand(1, FRAMES, 3, height, width, generator=torch.Generator().manual_seed(0))
    bvsr, weights = _basicvsr()
    nets: dict[str, torch.nn.Module] = {
        "lgfn": LGFN(num_frames=FRAMES).eval(),
        "lgfn_small": LGFN(**{**LGFN_SMALL, "num_frames": FRAMES}).eval(),
        f"basicvsr ({weights})": bvsr,
    }
    cases: list[tuple[str, str, int, Callable[[], object]]] = []
    for name, net in nets.items():
        def window(net=net):
            with torch.inference_mode():
                return net(lr)

        cases.append((name, "window", 1, window))
    def sequence():
        with torch.inference_mode():
            return bvsr.forward_sequence(lr)

    cases.append((f"basicvsr ({weights})", "sequence", FRAMES, sequence))
    times = common.interleaved_medians([c[3] for c in cases], repeats, warmup=1)
    rows = []
    for (name, mode, frames, _), t in zip(cases, times, strict=True):
        net = nets[name]
        rows.append({"model": name, "mode": mode, "lr": f"{height}x{width}", "threads": threads,
                     "params_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 2),
                     "frames_per_s": round(frames / t, 4), "s_per_frame": round(t / frames, 2)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: every core)")
    args = ap.parse_args()
    print(common.markdown(run(args.repeats, args.threads)))


if __name__ == "__main__":
    main()
