"""How many CPUs this job really has, and the DataLoader workers that follow from it.

``os.cpu_count()`` is the machine's count; a SLURM/cgroup job, ``taskset`` or a container quota gets
fewer. ``usable_cpus`` takes the affinity mask (``os.sched_getaffinity``) and, where the cgroup v2
``cpu.max`` quota is lower, that quota (rounded up).
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def ranks_on_node(trainer=None) -> int:
    """Training processes sharing this node's CPUs: the trainer's devices, else torchrun/SLURM's count, else 1."""
    n = getattr(trainer, "num_devices", None)
    if isinstance(n, int) and n > 0:
        return n
    for var in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        try:
            return max(1, int(os.environ[var].split("(")[0]))
        except (KeyError, ValueError):
            continue
    return 1


def auto_workers(trainer=None) -> int:
    """Loader workers per rank: this rank's share of the usable CPUs, less one for the training process itself."""
    return max(0, usable_cpus() // ranks_on_node(trainer) - 1)
