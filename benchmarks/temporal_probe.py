"""Is there anything for the neighbours to give? A control experiment outside LGFN (README, "What the frames buy").

An early-fusion CNN (the 7 LR frames stacked as 21 channels, 8 convs, pixel shuffle, bilinear skip) is trained
on clips that are whole-HR-pixel translations of a photograph (no resampling blur), degraded with BI or BD, and
scored on the test photographs by PSNR-Y of the real window and of the window with every neighbour replaced by
the centre frame (the temporal gain):

    python benchmarks/temporal_probe.py --motion fixed --speed 1      # every clip moves by (1, 0.5) HR px/frame
    python benchmarks/temporal_probe.py --motion random --speed 2     # per clip, uniform in +-2 HR px/frame
    python benchmarks/temporal_probe.py --builtin                     # the built-in clips themselves

With the motion known in advance the frames pay at once; with motion the network must estimate, they do not
within thousands of steps: what is missing on the CPU is learning to align, not information in the frames.
"""

from __future__ import annotations

# isort: off
import lgfn  # noqa: F401  (first: sets the OpenMP wait policy before torch loads)
# isort: on

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lgfn.data import builtin
from lgfn.data.datasets import VSRTestDataset, VSRTrainDataset
from lgfn.data.layouts import discover_folder
from lgfn.degradation import degrade, quantize_8bit
from lgfn.metrics import psnr_y

N = 7
TRAIN = ("motorcycle", "grace_hopper", "china", "flower", "camera")
TEST = ("astronaut", "chelsea", "coffee", "rocket")


class EarlyFusion(nn.Module):
    """B x N x 3 x h x w -> B x 3 x 4h x 4w: frames stacked as channels, convs, pixel shuffle, bilinear skip."""

    def __init__(self, frames: int = N, width: int = 48, depth: int = 6) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3 * frames, width, 3, padding=1), nn.LeakyReLU(0.1)]
        for _ in range(depth):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.1)]
        layers += [nn.Conv2d(width, 48, 3, padding=1), nn.PixelShuffle(4)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.interpolate(x[:, x.shape[1] // 2], scale_factor=4, mode="bilinear", align_corners=False)
        return self.body(x.flatten(1, 2)) + base


def translated_clip(img: torch.Tensor, g: torch.Generator, size: int, motion: str, speed: float, degradation: str):
    """A window of N crops of `img` moving by whole HR pixels -> (LR N x 3 x s/4 x s/4, HR centre)."""
    if motion == "fixed":
        v = torch.tensor([speed, 0.5 * speed])
    else:
        v = (torch.rand(2, generator=g) * 2 - 1) * speed
    h, w = img.shape[1:]
    reach = int((N // 2) * float(v.abs().max()) + 2)
    y0 = reach + int(torch.randint(0, h - size - 2 * reach, (1,), generator=g))
    x0 = reach + int(torch.randint(0, w - size - 2 * reach, (1,), generator=g))
    crops = []
    for t in range(N):
        dy, dx = round(float(v[0]) * (t - N // 2)), round(float(v[1]) * (t - N // 2))
        crops.append(img[:, y0 + dy : y0 + dy + size, x0 + dx : x0 + dx + size])
    hr = torch.stack(crops)
    return quantize_8bit(degrade(hr, degradation, 4)), hr[N // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--motion", choices=("fixed", "random"), default="random")
    ap.add_argument("--speed", type=float, default=2.0, help="HR px per frame (fixed: x; random: max per axis)")
    ap.add_argument("--degradation", choices=("bi", "bd"), default="bi")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--builtin", default=None, metavar="ROOT", nargs="?", const="data/builtin",
                    help="train and test on the built-in clips under ROOT instead of translated photos")
    ap.add_argument("--single", action="store_true",
                    help="the single-frame twin: train and test on windows of the centre frame repeated")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    if args.builtin:
        train = VSRTrainDataset(discover_folder(f"{args.builtin}/train").clips, num_frames=N, patch_size=64,
                                cache_frames=True, degradation=args.degradation)
        test = VSRTestDataset(discover_folder(f"{args.builtin}/test").clips, num_frames=N, cache_frames=True,
                              degradation=args.degradation)

        def batch(it: int):
            items = [train[(int(i), it * 8 + k)] for k, i in enumerate(torch.randint(0, len(train), (8,), generator=g))]
            return torch.stack([s["lr"] for s in items]), torch.stack([s["hr"] for s in items])

        tests = [(test[i]["lr"], test[i]["hr"]) for i in range(len(test))]
    else:
        photos = {n: builtin._load_photo(n) for n in TRAIN + TEST}

        def batch(it: int):
            pairs = [translated_clip(photos[TRAIN[int(torch.randint(0, len(TRAIN), (1,), generator=g))]], g, 64,
                                     args.motion, args.speed, args.degradation) for _ in range(8)]
            return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

        gt = torch.Generator().manual_seed(123)
        tests = [translated_clip(photos[TEST[i % 4]], gt, 128, args.motion, args.speed, args.degradation)
                 for i in range(40)]
    net = EarlyFusion()
    opt = torch.optim.Adam(net.parameters(), 4e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps, 4e-6)
    start = time.perf_counter()
    def centre(lr: torch.Tensor) -> torch.Tensor:
        return lr[:, N // 2 : N // 2 + 1].expand_as(lr).contiguous()

    for it in range(args.steps):
        lr, hr = batch(it)
        lr = centre(lr) if args.single else lr
        loss = F.l1_loss(net(lr), hr)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    real, alone = [], []
    with torch.no_grad():
        for lr, hr in tests:
            lr, hr = lr[None], hr[None]
            lr = centre(lr) if args.single else lr
            real.append(psnr_y(net(lr).clamp(0, 1), hr).item())
            alone.append(psnr_y(net(lr[:, N // 2 : N // 2 + 1].expand_as(lr)).clamp(0, 1), hr).item())
    what = f"built-in clips ({args.builtin})" if args.builtin else f"{args.motion} motion, speed {args.speed} HR px/frame"
    what += ", single-frame twin" if args.single else ""
    print(f"early fusion, {what}, {args.degradation}, {args.steps} steps ({time.perf_counter() - start:.0f} s): "
          f"PSNR-Y {np.mean(real):.2f}, centre repeated {np.mean(alone):.2f}, "
          f"temporal gain {np.mean(real) - np.mean(alone):+.2f} dB")


if __name__ == "__main__":
    main()
