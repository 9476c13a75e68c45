"""Whole-model CPU speed: inference frames/s, training samples/s, peak RSS, GFLOP/s vs measured matmul GFLOP/s.

Models have random weights with trained-like DCN offsets (a few pixels). Each configuration runs in its
own interpreter (`common.run_isolated`) so its peak RSS is its own. Variants of one configuration
(eager vs channels_last vs bf16) are timed interleaved in one process, so their ratio is like for like.
Run `python benchmarks/bench_model.py`, or call `run()` for the rows.
"""

from __future__ import annotations

import time

import common
import torch

from lgfn.metrics import psnr_y
from lgfn.models import LGFN, LGFN_SMALL, DCNv2Pack
from lgfn.models.complexity import gflops_per_frame
from lgfn.models.inference_speed import cpu_autocast, prepare_for_inference, to_channels_last

CONFIGS = {"lgfn": {}, "lgfn_small": LGFN_SMALL}
VID4_LR = (144, 180)  # 576 x 720 HR
P270_LR = (270, 480)  # 1080 x 1920 HR


def _model(name: str) -> LGFN:
    torch.manual_seed(0)
    net = LGFN(**CONFIGS[name]).eval()
    for m in net.modules():
        if isinstance(m, DCNv2Pack):  # trained-like motion: a few pixels of offset
            torch.nn.init.normal_(m.conv_offset.weight, std=0.01)
            torch.nn.init.normal_(m.conv_offset.bias, std=1.0)
    return net


def infer(name: str, height: int, width: int, repeats: int = 3, variants: tuple[str, ...] = ("eager",)) -> dict:
    """Frames/s of each variant (eager, channels_last, bf16) at LR height x width, batch 1, interleaved."""
    torch.set_num_threads(common.threads())
    net = _model(name)
    lr = torch.rand(1, net.num_frames, 3, height, width, generator=torch.Generator().manual_seed(0))
    fns, outs = {}, {}

    def make(variant):
        model = prepare_for_inference(net, channels_last=False)
        x = lr
        if variant == "channels_last":
            model = prepare_for_inference(_model(name), channels_last=True)
            x = to_channels_last(lr)

        def step():
            with torch.inference_mode(), cpu_autocast(variant == "bf16"):
                outs[variant] = model(x).float()

        return step

    for v in variants:
        fns[v] = make(v)
    times = common.interleaved_medians(list(fns.values()), repeats, warmup=1 if repeats > 1 else 0)
    gflop = gflops_per_frame(net, (height, width))
    row = {"model": name, "lr": f"{height}x{width}", "gflop_per_frame": round(gflop, 1),
           "matmul_gflops": common.matmul_gflops()}
    for v, t in zip(variants, times, strict=True):
        row[f"{v}_fps"] = round(1 / t, 4)
        row[f"{v}_gflops"] = round(gflop / t, 1)
    ref = outs[variants[0]].clamp(0, 1)
    for v in variants[1:]:
        row[f"{v}_speedup"] = round(times[0] / times[variants.index(v)], 2)
        row[f"{v}_psnr_vs_{variants[0]}_db"] = round(float(psnr_y(outs[v].clamp(0, 1), ref).mean()), 1)
    return row


def infer_tiled(name: str, height: int, width: int, tile: int, overlap: int) -> dict:
    """One tiled upscale (lgfn.inference.tiling.upscale_window) of a 270p window; frames/s and achieved GFLOP/s."""
    from lgfn.inference.tiling import upscale_window

    torch.set_num_threads(common.threads())
    net = prepare_for_inference(_model(name), channels_last=True)
    frames = torch.rand(net.num_frames, 3, height, width, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    out = upscale_window(net, frames, tile=tile, overlap=overlap, exact_pooling=False)
    t = time.perf_counter() - start
    gflop = gflops_per_frame(net, (height, width))  # useful work; the overlap's recomputation is overhead
    return {
        "matmul_gflops": common.matmul_gflops(),
        "model": name,
        "lr": f"{height}x{width} -> {tuple(out.shape[-2:])[0]}x{tuple(out.shape[-2:])[1]}",
        "tile/overlap": f"{tile}/{overlap}",
        "fps": round(1 / t, 4),
        "useful_gflops": round(gflop / t, 1),
    }


def train(name: str, batch: int, patch: int, steps: int = 3) -> dict:
    """Training samples/s (forward, L1 loss, backward, Adam step) at LR patch `patch`, median of `steps`."""
    torch.set_num_threads(common.threads())
    net = _model(name).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    lr = torch.rand(batch, net.num_frames, 3, patch, patch, generator=gen)
    hr = torch.rand(batch, 3, 4 * patch, 4 * patch, generator=gen)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = (net(lr) - hr).abs().mean()
        loss.backward()
        opt.step()

    (t,) = common.interleaved_medians([step], steps)
    gflop = 3 * gflops_per_frame(net, (patch, patch)) * batch  # backward ~ 2x forward
    return {
        "matmul_gflops": common.matmul_gflops(),
        "model": name,
        "batch x lr patch": f"{batch} x {patch}x{patch}",
        "samples_per_s": round(batch / t, 3),
        "step_s": round(t, 2),
        "gflops": round(gflop / t, 1),
    }


def train_layouts(name: str, batch: int, patch: int, steps: int = 3) -> dict:
    """Training step time, default layout vs channels_last (same weights), interleaved; their ratio."""
    torch.set_num_threads(common.threads())
    gen = torch.Generator().manual_seed(0)
    lr = torch.rand(batch, CONFIGS[name].get("num_frames", 7), 3, patch, patch, generator=gen)
    hr = torch.rand(batch, 3, 4 * patch, 4 * patch, generator=gen)
    steps_fns = []
    for cl in (False, True):
        net = _model(name).train()
        x = lr
        if cl:
            net = net.to(memory_format=torch.channels_last)
            x = to_channels_last(lr)
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)

        def step(net=net, opt=opt, x=x):
            opt.zero_grad(set_to_none=True)
            (net(x) - hr).abs().mean().backward()
            opt.step()

        steps_fns.append(step)
    t0, t1 = common.interleaved_medians(steps_fns, steps)
    return {
        "matmul_gflops": common.matmul_gflops(),
        "model": name,
        "batch x lr patch": f"{batch} x {patch}x{patch}",
        "samples_per_s": f"{batch / t0:.3f} (default) / {batch / t1:.3f} (channels_last)",
        "step_s": f"{t0:.2f} / {t1:.2f}",
        "gflops": round(3 * gflops_per_frame(_model(name), (patch, patch)) * batch / min(t0, t1), 1),
        "channels_last_speedup": round(t0 / t1, 2),
    }


def run(repeats: int = 3, full: bool = False) -> dict[str, list[dict]]:
    """Inference, tiled inference and training rows (each with peak RSS), plus the matmul reference."""
    mm = common.matmul_gflops()
    inference = [
        common.run_isolated(
            "bench_model", "infer", name="lgfn_small", height=VID4_LR[0], width=VID4_LR[1],
            repeats=repeats, variants=["eager", "channels_last"],
        ),
        # bf16 at a small size: without native bf16 matmuls it is several times slower.
        common.run_isolated(
            "bench_model", "infer", name="lgfn_small", height=64, width=64,
            repeats=repeats, variants=["eager", "bf16"],
        ),
        common.run_isolated(
            "bench_model", "infer", name="lgfn", height=VID4_LR[0], width=VID4_LR[1],
            repeats=repeats if full else 1, variants=["eager", "channels_last"] if full else ["channels_last"],
        ),
    ]
    tiled = [common.run_isolated("bench_model", "infer_tiled", name="lgfn_small", height=P270_LR[0],
                                 width=P270_LR[1], tile=135, overlap=16)]
    if full:
        tiled.append(common.run_isolated("bench_model", "infer_tiled", name="lgfn", height=P270_LR[0],
                                         width=P270_LR[1], tile=135, overlap=16))
    training = [
        common.run_isolated("bench_model", "train", name="lgfn_small", batch=8, patch=48, steps=repeats),
        common.run_isolated("bench_model", "train_layouts", name="lgfn_small", batch=8, patch=48, steps=repeats),
        common.run_isolated("bench_model", "train", name="lgfn", batch=1 if not full else 8, patch=48,
                            steps=1 if not full else repeats),
    ]
    for rows in (inference, tiled, training):
        for r in rows:
            # Against the matmul rate measured in the same process just before (the load changes).
            local = r.pop("matmul_gflops", mm)
            for k in [k for k in r if k.endswith("gflops")]:
                r[k.replace("gflops", "of_matmul")] = f"{100 * r[k] / local:.0f}%"
    return {"matmul_gflops": round(mm, 1), "inference": inference, "tiled": tiled, "training": training}


if __name__ == "__main__":
    result = run()
    print(f"matmul: {result['matmul_gflops']} GFLOP/s")
    for key in ("inference", "tiled", "training"):
        print(common.markdown(result[key]))
