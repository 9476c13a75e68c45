"""Shared benchmark helpers: interleaved medians, the machine line, matmul GFLOP/s, peak RSS, tables."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def threads() -> int:
    """Threads the benchmarks use: every core of the machine."""
    return os.cpu_count() or 1


def interleaved_medians(fns: list[Callable[[], object]], repeats: int, warmup: int = 1) -> list[float]:
    """Median seconds of each fn; the fns take turns so a load change on the machine hits them alike."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def machine() -> dict:
    """Cores, CPU model, torch/torchvision versions and the load average when the run started."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torchvision

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "threads": torch.get_num_threads(),
        "load_1min": round(load, 2),
    }


def matmul_gflops(size: int = 1024, repeats: int = 5) -> float:
    """Measured float32 GEMM GFLOP/s (median): the practical compute limit the models are compared to."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen)
    b = torch.randn(size, size, generator=gen)
    (t,) = interleaved_medians([lambda: torch.mm(a, b)], repeats)
    return 2 * size**3 / t / 1e9


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MB.

    Linux's VmHWM belongs to the process's own address space. getrusage's ru_maxrss is not enough for
    `run_isolated`: it survives fork + exec, so a child would report at least the parent's RSS at fork.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KB


def run_isolated(module: str, function: str, **kwargs) -> dict:
    """Call benchmarks.<module>.<function>(**kwargs) in a fresh interpreter; its dict plus `peak_rss_mb`.

    A fresh process is the only way to get one configuration's peak RSS without the others' high-water mark.
    """
    code = (
        "import json, sys; sys.path.insert(0, {bench!r});"
        "import common; import {module} as m;"
        "r = m.{function}(**json.loads(sys.argv[1])); r['peak_rss_mb'] = round(common.peak_rss_mb(), 1);"
        "print('@@' + json.dumps(r))"
    ).format(bench=str(ROOT / "benchmarks"), module=module, function=function)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(kwargs)], capture_output=True, text=True, env=env, check=False
    )
    for line in proc.stdout.splitlines():
        if line.startswith("@@"):
            return json.loads(line[2:])
    raise RuntimeError(f"benchmark {module}.{function}({kwargs}) failed:\n{proc.stderr[-2000:]}")


def markdown(rows: list[dict]) -> str:
    """Rows (dicts with the same keys) as a markdown table."""
    if not rows:
        return "(no rows)"
    keys = list(dict.fromkeys(k for r in rows for k in r))  # union: rows of one table may differ
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)
