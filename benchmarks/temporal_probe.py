"""Is there anything for the neighbours to give? A control experiment outside LGFN (README, "What the frames buy").

An early-fusion CNN (the 7 LR frames stacked as 21 channels, 8 convs, pixel shuffle, bilinear skip) is trained
on clips that are whole-HR-pixel translations of a photograph (no resampling blur), degraded with BI or BD, and
scored on the test photographs by PSNR-Y of the real window and of the window with every neighbour replaced by
the centre frame (the temporal gain):

    python benchmarks/temporal_probe.py --motion fixed --speed 1      # every clip moves by (1, 0.5) HR px/frame
    python benchmarks/temporal_probe.py --motion random --speed 2     # per clip, uniform in +-2 HR px/frame
    python benchmarks/temporal_probe.py --builtin                     # the built-in clips themselves
    python benchmarks/temporal_probe.py --oracle motion               # random motion, told to the network
    python benchmarks/temporal_probe.py --oracle align                # random motion, neighbours pre-aligned
    python benchmarks/temporal_probe.py --curriculum 0.7              # fixed motion first, random by 70 %

`--oracle motion` appends every frame's true displacement (LR px) as constant input channels; `--oracle align`
warps every LR neighbour onto the centre with its true displacement (bicubic) before stacking, as a perfect
alignment module would; `--curriculum F` blends each clip's motion from the fixed one to the random one over
the first fraction F of the steps (the test clips are always random).

With the motion known in advance the frames pay at once; with motion the network must estimate, they do not
within thousands of steps. Telling the network the motion helps only a little, and aligning the neighbours
perfectly helps not at all: an aligned neighbour is nearly the centre frame, and what it adds (its other
sampling phase) is only usable by a fusion that knows that phase, which the network has to learn per motion.
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
from lgfn.metrics import psnr_y
from lgfn.protocol.degradation import degrade, quantize_8bit

N = 7
TRAIN = ("motorcycle", "grace_hopper", "china", "flower", "camera")
TEST = ("astronaut", "chelsea", "coffee", "rocket")


class EarlyFusion(nn.Module):
    """B x N x 3 x h x w -> B x 3 x 4h x 4w: frames stacked as channels, convs, pixel shuffle, bilinear skip."""

    def __init__(self, frames: int = N, width: int = 48, depth: int = 6, motion_channels: bool = False) -> None:
        super().__init__()
        self.motion_channels = motion_channels
        extra = 2 * frames if motion_channels else 0
        layers: list[nn.Module] = [nn.Conv2d(3 * frames + extra, width, 3, padding=1), nn.LeakyReLU(0.1)]
        for _ in range(depth):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.1)]
        layers += [nn.Conv2d(width, 48, 3, padding=1), nn.PixelShuffle(4)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, motion: torch.Tensor | None = None) -> torch.Tensor:
        """x: B x N x 3 x h x w; motion: B x N x 2 displacements (LR px), used only with motion_channels."""
        base = F.interpolate(x[:, x.shape[1] // 2], scale_factor=4, mode="bilinear", align_corners=False)
        inp = x.flatten(1, 2)
        if self.motion_channels:
            inp = torch.cat([inp, motion.flatten(1)[:, :, None, None].expand(-1, -1, *inp.shape[2:])], 1)
        return self.body(inp) + base


def translated_clip(img: torch.Tensor, g: torch.Generator, size: int, motion: str, speed: float, degradation: str,
                    blend: float = 1.0):
    """A window of N crops of `img` moving by whole HR pixels -> (LR N x 3 x s/4 x s/4, HR centre, N x 2 LR px).

    The last item is each frame's displacement from the centre in LR pixels (dy, dx). `blend` < 1 mixes the
    random velocity with the fixed one (the curriculum).
    """
    fixed = torch.tensor([speed, 0.5 * speed])
    if motion == "fixed":
        v = fixed
    else:
        v = blend * (torch.rand(2, generator=g) * 2 - 1) * speed + (1 - blend) * fixed
    h, w = img.shape[1:]
    reach = int((N // 2) * float(v.abs().max()) + 2)
    y0 = reach + int(torch.randint(0, h - size - 2 * reach, (1,), generator=g))
    x0 = reach + int(torch.randint(0, w - size - 2 * reach, (1,), generator=g))
    crops, shifts = [], []
    for t in range(N):
        dy, dx = round(float(v[0]) * (t - N // 2)), round(float(v[1]) * (t - N // 2))
        crops.append(img[:, y0 + dy : y0 + dy + size, x0 + dx : x0 + dx + size])
        shifts.append((dy / 4, dx / 4))
    hr = torch.stack(crops)
    return quantize_8bit(degrade(hr, degradation, 4)), hr[N // 2], torch.tensor(shifts)


def align_to_centre(lr: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Warp each frame onto the centre by its true displacement (bicubic). N x 3 x h x w, N x 2 -> N x 3 x h x w."""
    n, _, h, w = lr.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=lr.dtype), torch.arange(w, dtype=lr.dtype), indexing="ij")
    # Frame t shows at p what the centre shows at p + shift: sample frame t at p - shift.
    gy = ys[None] - shifts[:, 0, None, None].to(lr.dtype)
    gx = xs[None] - shifts[:, 1, None, None].to(lr.dtype)
    grid = torch.stack([(gx + 0.5) / w * 2 - 1, (gy + 0.5) / h * 2 - 1], dim=-1)
    return F.grid_sample(lr, grid, mode="bicubic", padding_mode="border", align_corners=False)


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
    ap.add_argument("--oracle", choices=("none", "motion", "align"), default="none",
                    help="give the network the true motion (input channels) or pre-aligned neighbours")
    ap.add_argument("--curriculum", type=float, default=0.0, metavar="F",
                    help="blend the training motion from fixed to random over the first fraction F of the steps")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.builtin and (args.oracle != "none" or args.curriculum):
        ap.error("--oracle and --curriculum need the translated photos (the built-in clips carry no motion)")
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    if args.builtin:
        train = VSRTrainDataset(discover_folder(f"{args.builtin}/train").clips, num_frames=N, patch_size=64,
                                cache_frames=True, degradation=args.degradation)
        test = VSRTestDataset(discover_folder(f"{args.builtin}/test").clips, num_frames=N, cache_frames=True,
                              degradation=args.degradation)

        def batch(it: int):
            items = [train[(int(i), it * 8 + k)] for k, i in enumerate(torch.randint(0, len(train), (8,), generator=g))]
            lr = torch.stack([s["lr"] for s in items])
            return lr, torch.stack([s["hr"] for s in items]), torch.zeros(lr.shape[0], N, 2)

        tests = [(test[i]["lr"], test[i]["hr"], torch.zeros(N, 2)) for i in range(len(test))]
    else:
        photos = {n: builtin._load_photo(n) for n in TRAIN + TEST}

        def batch(it: int):
            blend = min(1.0, it / (args.curriculum * args.steps)) if args.curriculum > 0 else 1.0
            clips = [translated_clip(photos[TRAIN[int(torch.randint(0, len(TRAIN), (1,), generator=g))]], g, 64,
                                     args.motion, args.speed, args.degradation, blend) for _ in range(8)]
            return tuple(torch.stack([c[k] for c in clips]) for k in range(3))

        gt = torch.Generator().manual_seed(123)
        tests = [translated_clip(photos[TEST[i % 4]], gt, 128, args.motion, args.speed, args.degradation)
                 for i in range(40)]

    def prepare(lr: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
        if args.single:
            return lr[:, N // 2 : N // 2 + 1].expand_as(lr).contiguous()
        if args.oracle == "align":
            return torch.stack([align_to_centre(x, s) for x, s in zip(lr, shifts, strict=True)])
        return lr

    net = EarlyFusion(motion_channels=args.oracle == "motion")
    opt = torch.optim.Adam(net.parameters(), 4e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps, 4e-6)
    start = time.perf_counter()
    for it in range(args.steps):
        lr, hr, shifts = batch(it)
        loss = F.l1_loss(net(prepare(lr, shifts), shifts), hr)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    real, alone = [], []
    with torch.no_grad():
        for lr, hr, shifts in tests:
            lr, hr, shifts = prepare(lr[None], shifts[None]), hr[None], shifts[None]
            real.append(psnr_y(net(lr, shifts).clamp(0, 1), hr).item())
            # Centre repeated: every frame is the centre, so (for the motion oracle) every displacement is 0.
            repeated = lr[:, N // 2 : N // 2 + 1].expand_as(lr)
            alone.append(psnr_y(net(repeated, torch.zeros_like(shifts)).clamp(0, 1), hr).item())
    what = f"built-in clips ({args.builtin})" if args.builtin else f"{args.motion} motion, speed {args.speed} HR px/frame"
    what += ", single-frame twin" if args.single else ""
    what += f", oracle {args.oracle}" if args.oracle != "none" else ""
    what += f", curriculum {args.curriculum}" if args.curriculum else ""
    print(f"early fusion, {what}, {args.degradation}, {args.steps} steps ({time.perf_counter() - start:.0f} s): "
          f"PSNR-Y {np.mean(real):.2f}, centre repeated {np.mean(alone):.2f}, "
          f"temporal gain {np.mean(real) - np.mean(alone):+.2f} dB")


if __name__ == "__main__":
    main()
