"""Data pipeline vs training step: is the loader the bottleneck? (built-in clips, on-the-fly BI degradation)

Loader samples/s for `VSRTrainDataset` (the paper's HR patch 192, 7 frames) without and with the
in-memory frame cache, through a DataLoader in the main process (num_workers=0: the worst case, as
workers would only add throughput), against the lgfn_small training step measured in the same process.
Run `python benchmarks/bench_data.py`, or call `run()` for the rows.
"""

from __future__ import annotations

import time
from pathlib import Path

import common
import torch
from torch.utils.data import DataLoader

from lgfn.data.builtin import ensure_builtin
from lgfn.data.datasets import VSRTrainDataset
from lgfn.data.layouts import discover_folder
from lgfn.degradation import degrade

BATCH, PATCH = 8, 192


def _clips():
    root = common.ROOT / "data" / "builtin"
    folders = ensure_builtin(root)
    return discover_folder(Path(folders["train"])).clips


def _loader_rate(dataset: VSRTrainDataset, batches: int) -> float:
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=0)
    it = iter(loader)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * BATCH / (time.perf_counter() - start)


def run(batches: int = 4) -> list[dict]:
    """Loader samples/s (no cache, warm cache), BI degradation ms per HR frame, train step samples/s."""
    torch.set_num_threads(common.threads())
    torch.manual_seed(0)
    clips = _clips()
    plain = VSRTrainDataset(clips, patch_size=PATCH, repeat=100)
    cached = VSRTrainDataset(clips, patch_size=PATCH, repeat=100, cache_frames=True)
    for i in range(len(cached.items)):  # fill the cache once, as the first epoch does
        cached[i]
    no_cache = _loader_rate(plain, batches)
    with_cache = _loader_rate(cached, batches)

    hr = torch.rand(7, 3, *clips[0].size) if clips[0].size else plain[0]["hr"].expand(7, -1, -1, -1)
    (deg,) = common.interleaved_medians([lambda: degrade(hr, "bi", 4)], 3)

    import bench_model

    train = bench_model.train("lgfn_small", batch=BATCH, patch=PATCH // 4, steps=2)
    step_rate = train["samples_per_s"]
    hw = "x".join(map(str, hr.shape[-2:]))
    return [
        {"what": "loader, no cache (decode + degrade)", "samples_per_s": round(no_cache, 1),
         "x_train_step": round(no_cache / step_rate, 1)},
        {"what": "loader, frame cache warm", "samples_per_s": round(with_cache, 1),
         "x_train_step": round(with_cache / step_rate, 1)},
        {"what": f"BI degradation of 7 HR frames {hw}", "samples_per_s": round(1 / deg, 1),
         "x_train_step": round(1 / deg / step_rate, 1)},
        {"what": f"lgfn_small train step, batch {BATCH}, LR {PATCH // 4}x{PATCH // 4}",
         "samples_per_s": step_rate, "x_train_step": 1.0},
    ]


if __name__ == "__main__":
    print(common.markdown(run()))
