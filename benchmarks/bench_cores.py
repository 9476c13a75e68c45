"""Where the second core goes: lgfn_small training steps on 1 thread, 2 threads, and 2 gloo DDP processes.

    python benchmarks/bench_cores.py [--batch 8] [--lr-patch 16] [--steps 10] [--repeats 2]

Prints the median time per global batch (forward, backward, Adam) of each layout, interleaved so a noisy
machine hits them alike. At the built-in recipe's LR patch of 16 px one step's ops are too small for
intra-op threads (a second thread gains nothing), while two processes with one thread each and half the
batch, averaging gradients over gloo, keep both cores busy (`trainer=cpu2`).
"""

from __future__ import annotations

# isort: off
import lgfn  # noqa: F401  (first: sets the OpenMP wait policy before torch loads)
# isort: on

import argparse
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lgfn.models import LGFN
from lgfn.models.lgfn import LGFN_SMALL


def _step_time(net: torch.nn.Module, batch: int, patch: int, steps: int) -> float:
    opt = torch.optim.Adam(net.parameters(), 1e-4)
    x, y = torch.rand(batch, 7, 3, patch, patch), torch.rand(batch, 3, 4 * patch, 4 * patch)
    for i in range(steps + 2):
        if i == 2:
            start = time.perf_counter()
        loss = (net(x) - y).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / steps


def _rank(rank: int, world: int, port: int, batch: int, patch: int, steps: int, out) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    net = torch.nn.parallel.DistributedDataParallel(LGFN(**LGFN_SMALL))
    t = _step_time(net, batch // world, patch, steps)
    if rank == 0:
        out.put(t)
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_time(batch: int, patch: int, steps: int) -> float:
    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    mp.start_processes(_rank, args=(2, _free_port(), batch, patch, steps, out), nprocs=2, start_method="spawn")
    return out.get()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr-patch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    times: dict[str, list[float]] = {"1 process, 1 thread": [], "1 process, 2 threads": [], "2 DDP processes x 1 thread": []}
    for _ in range(args.repeats):
        for threads, key in ((1, "1 process, 1 thread"), (2, "1 process, 2 threads")):
            torch.set_num_threads(threads)
            torch.manual_seed(0)
            times[key].append(_step_time(LGFN(**LGFN_SMALL), args.batch, args.lr_patch, args.steps))
        times["2 DDP processes x 1 thread"].append(ddp_time(args.batch, args.lr_patch, args.steps))
    base = statistics.median(times["1 process, 1 thread"])
    print(f"lgfn_small training step, global batch {args.batch}, LR patch {args.lr_patch} px "
          f"(median of {args.repeats} x {args.steps} steps)")
    print("| layout | ms per global batch | speed-up |\n|---|---|---|")
    for key, values in times.items():
        t = statistics.median(values)
        print(f"| {key} | {t * 1000:.0f} | {base / t:.2f}x |")


if __name__ == "__main__":
    main()
