"""Where lgfn_small's inference time goes: share of each top-level block, and of the deformable conv op.

`python benchmarks/profile_model.py [--model lgfn_small] [--height 144 --width 180] [--repeats 2]`
(Vid4 LR size by default; forward hooks time each block, the DCN op is timed where the alignment calls it).
"""

from __future__ import annotations

import argparse
import time
from unittest import mock

import common
import torch
from bench_model import CONFIGS, _model

import lgfn.models.alignment as alignment


def shares(name: str = "lgfn_small", height: int = 144, width: int = 180, repeats: int = 2) -> dict[str, float]:
    """Percent of the forward time per top-level block and for the DCN op; 'seconds_per_frame' too."""
    torch.set_num_threads(common.threads())
    net = _model(name)
    spent: dict[str, float] = {}
    starts: dict[str, float] = {}

    def hooks(block):
        def pre(module, args):
            starts[block] = time.perf_counter()

        def post(module, args, out):
            spent[block] = spent.get(block, 0.0) + time.perf_counter() - starts[block]

        return pre, post

    for block, module in net.named_children():
        pre, post = hooks(block)
        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)
    real_dcn = alignment.deform_conv2d

    def timed_dcn(*args, **kwargs):
        start = time.perf_counter()
        out = real_dcn(*args, **kwargs)
        spent["(deform_conv2d op)"] = spent.get("(deform_conv2d op)", 0.0) + time.perf_counter() - start
        return out

    lr = torch.rand(1, net.num_frames, 3, height, width, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode(), mock.patch.object(alignment, "deform_conv2d", timed_dcn):
        net(lr)  # warm-up
        spent.clear()
        start = time.perf_counter()
        for _ in range(repeats):
            net(lr)
        total = time.perf_counter() - start
    result = {block: round(100 * t / total, 1) for block, t in spent.items()}
    result["seconds_per_frame"] = round(total / repeats, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lgfn_small", choices=sorted(CONFIGS))
    parser.add_argument("--height", type=int, default=144)
    parser.add_argument("--width", type=int, default=180)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    result = shares(args.model, args.height, args.width, args.repeats)
    rows = [{"block": k, "share_%": v} for k, v in result.items() if k != "seconds_per_frame"]
    print(common.markdown(rows))
    print(f"\n{result['seconds_per_frame']} s per frame ({args.model}, LR {args.height}x{args.width})")


if __name__ == "__main__":
    main()
