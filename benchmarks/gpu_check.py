"""The GPU check (issue 16): one script, at most ~8 minutes on a CUDA machine, of what feeding the GPUs needs.

Measures, on `--device cuda` (default when available):
- training samples/s of the paper's `lgfn` (random weights, trained-like DCN offsets) at batch 8, LR 48:
  float32 (`torch.set_float32_matmul_precision("highest")`) and bf16-mixed (autocast bf16 with "high",
  what `trainer=gpu_bf16` runs), interleaved; peak GPU memory of each;
- inference frames/s at Vid4 size (LR 144 x 180, 7 frames, batch 1): float32 and `--half` (float16
  autocast), with the float16 output's PSNR against float32;
- the deformable conv at the alignment's shape (7 x 64 x 64 x 112, 8 groups): torchvision's kernel vs the
  portable grid_sample path, forward and forward+backward ms, and peak memory;
- loader samples/s per worker (one process, one thread, on the host CPU) for the HR-only, pre-made LR and
  LMDB layouts (benchmarks/bench_data.py's data), and the workers per GPU for the step rate measured here.
`--tiny` shrinks every size so the whole script runs in seconds on the CPU (the test does that). Each part
is skipped with a note once the time budget (`--budget`, 480 s) is spent. Prints a markdown table and writes
`--json` (default `gpu_check.json` in the current folder).
Run: `python benchmarks/gpu_check.py [--device cuda|cpu] [--tiny] [--budget S] [--json PATH] [--md PATH]`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

TINY_NET = dict(num_feat=8, num_extract_blocks=1, num_align_stages=1, deformable_groups=2, num_lfm=1, num_gfm=1,
                gfm_slice_channels=2, num_rcab=1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, repeats: int, warmup: int = 2) -> float:
    """Median seconds of fn() (device-synchronised)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def _peak_reset(device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def _net(tiny: bool, device):
    from lgfn.models import LGFN, DCNv2Pack

    torch.manual_seed(0)
    net = LGFN(**(TINY_NET if tiny else {}))
    for m in net.modules():
        if isinstance(m, DCNv2Pack):  # trained-like motion: a few pixels of offset
            torch.nn.init.normal_(m.conv_offset.weight, std=0.01)
            torch.nn.init.normal_(m.conv_offset.bias, std=1.0)
    return net.to(device)


def train_rates(device, tiny: bool, repeats: int) -> list[dict]:
    batch, patch = (2, 16) if tiny else (8, 48)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for name, bf16, matmul in (("float32", False, "highest"), ("bf16-mixed", True, "high")):
        torch.set_float32_matmul_precision(matmul)
        net = _net(tiny, device).train()
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)
        lr = torch.rand(batch, net.num_frames, 3, patch, patch, generator=gen).to(device)
        hr = torch.rand(batch, 3, 4 * patch, 4 * patch, generator=gen).to(device)

        def step(net=net, opt=opt, lr=lr, hr=hr, bf16=bf16):
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = (net(lr).float() - hr).abs().mean()
            loss.backward()
            opt.step()

        _peak_reset(device)
        t = _timed(step, device, repeats)
        rows.append({"what": f"train lgfn{' (tiny)' if tiny else ''}, batch {batch}, LR {patch}, {name}",
                     "per_s": round(batch / t, 2), "unit": "samples/s", "ms": round(1e3 * t, 1),
                     "peak_gpu_gib": _peak_gib(device)})
        del net, opt
    torch.set_float32_matmul_precision("highest")
    return rows


def inference_rates(device, tiny: bool, repeats: int) -> list[dict]:
    from lgfn.metrics import psnr_y
    from lgfn.models.inference_speed import half_precision

    h, w = (24, 32) if tiny else (144, 180)  # Vid4: 576 x 720 HR
    net = _net(tiny, device).eval()
    lr = torch.rand(1, net.num_frames, 3, h, w, generator=torch.Generator().manual_seed(1)).to(device)
    outs, rows = {}, []
    half_ok = device.type == "cuda" or tiny
    for name, half in (("float32", False), ("float16 autocast (--half)", True)):
        if half and not half_ok:
            continue

        def infer(half=half, name=name):
            with torch.inference_mode(), half_precision(device.type, half):
                outs[name] = net(lr).float()

        _peak_reset(device)
        t = _timed(infer, device, repeats)
        row = {"what": f"inference lgfn{' (tiny)' if tiny else ''}, LR {h}x{w}, 7 frames, {name}",
               "per_s": round(1 / t, 2), "unit": "frames/s", "ms": round(1e3 * t, 1), "peak_gpu_gib": _peak_gib(device)}
        if half:
            row["psnr_vs_float32_db"] = round(float(psnr_y(outs[name].clamp(0, 1), outs["float32"].clamp(0, 1))), 2)
        rows.append(row)
    return rows


def dcn_rates(device, tiny: bool, repeats: int) -> list[dict]:
    from lgfn.ops import dcn_backend, deform_conv2d

    b, c, h, w, g = (2, 8, 16, 24, 2) if tiny else (7, 64, 64, 112, 8)
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(b, c, h, w, generator=gen).to(device)
    off = ((torch.rand(b, 2 * g * 9, h, w, generator=gen) - 0.5) * 6).to(device)
    mask = torch.rand(b, g * 9, h, w, generator=gen).to(device)
    weight = (torch.randn(c, c, 3, 3, generator=gen) * 0.05).to(device)
    bias = torch.zeros(c, device=device)
    rows = []
    for backend in ("torchvision", "pytorch"):
        leaves = [t.clone().requires_grad_() for t in (x, off, weight, mask)]

        def fwd(backend=backend):
            with torch.no_grad(), dcn_backend(backend):
                deform_conv2d(x, off, weight, bias, padding=1, mask=mask)

        def fwd_bwd(backend=backend, leaves=leaves):
            xi, oi, wi, mi = leaves
            with dcn_backend(backend):
                deform_conv2d(xi, oi, wi, bias, padding=1, mask=mi).sum().backward()

        for label, fn in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
            _peak_reset(device)
            t = _timed(fn, device, repeats)
            rows.append({"what": f"DCN {label} B{b} C{c} {h}x{w} G{g}, {backend}"
                                 + (" (grid_sample)" if backend == "pytorch" and device.type == "cuda" else ""),
                         "per_s": round(1 / t, 1), "unit": "calls/s", "ms": round(1e3 * t, 2),
                         "peak_gpu_gib": _peak_gib(device)})
    return rows


def loader_rates(tiny: bool, step_samples_per_s: float | None) -> list[dict]:
    import bench_data

    from lgfn.data.datasets import VSRTrainDataset
    from lgfn.data.layouts import discover_vimeo90k

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one loader worker's thread
    samples, rounds, clips = (2, 1, 2) if tiny else (16, 3, 8)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        bench_data.make_vimeo(base / "full", clips=clips)
        roots = bench_data._layout_roots(base)
        sets = {k: VSRTrainDataset(discover_vimeo90k(r, "train").clips, patch_size=bench_data.PATCH)
                for k, r in roots.items()}
        n = clips
        rates = bench_data._rates({k: (lambda d: (lambda i: d[(i % n, i)]))(ds) for k, ds in sets.items()},
                                  samples, rounds)
    torch.set_num_threads(threads)
    demand = step_samples_per_s or bench_data.GPU_DEMAND
    return [{"what": f"loader, {k} (1 worker)", "per_s": round(r, 1), "unit": "samples/s", "ms": round(1e3 / r, 2),
             "workers_per_gpu": math.ceil(demand / r)} for k, r in rates.items()]


def run(device: str | None = None, tiny: bool = False, budget: float = 480.0, repeats: int | None = None) -> dict:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    repeats = repeats or (2 if tiny else 10)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    start = time.perf_counter()
    info = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "torch": torch.__version__,
            "tiny": tiny}
    rows, skipped = [], []
    parts = [("train", lambda: train_rates(dev, tiny, repeats)), ("inference", lambda: inference_rates(dev, tiny, repeats)),
             ("dcn", lambda: dcn_rates(dev, tiny, repeats)), ("loader", None)]
    for name, fn in parts:
        if time.perf_counter() - start > budget:
            skipped.append(name)
            continue
        if name == "loader":
            bf16 = [r for r in rows if "bf16-mixed" in r["what"]]
            rows += loader_rates(tiny, None if tiny or not bf16 else bf16[0]["per_s"])
        else:
            rows += fn()
    info["seconds"] = round(time.perf_counter() - start, 1)
    info["skipped (time budget)"] = skipped
    return {"info": info, "rows": rows}


def markdown(result: dict) -> str:
    import common

    info = result["info"]
    head = ", ".join(f"{k} {v}" for k, v in info.items())
    return f"{head}\n\n{common.markdown(result['rows'])}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default=None)
    p.add_argument("--tiny", action="store_true", help="tiny sizes (seconds on a CPU)")
    p.add_argument("--budget", type=float, default=480.0, help="seconds after which remaining parts are skipped")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--json", default="gpu_check.json")
    p.add_argument("--md", default=None, help="also write the markdown table here")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here")
    result = run(args.device, args.tiny, args.budget, args.repeats)
    text = markdown(result)
    print(text)
    Path(args.json).write_text(json.dumps(result, indent=1))
    if args.md:
        Path(args.md).write_text(f"`python benchmarks/gpu_check.py {' '.join(argv or sys.argv[1:])}`\n\n{text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
