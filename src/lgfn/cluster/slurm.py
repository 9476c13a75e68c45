"""SLURM's environment, read without importing Lightning: is this an srun task, who starts the DDP ranks, how many
tasks a node gets. Pure functions of an environment mapping, so every decision is testable without a cluster."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

# SLURM's step ids for the batch script, the extern step and an interactive step: not an srun task.
_NOT_SRUN_STEPS = {"batch", "extern", "interactive", "4294967292", "4294967293", "4294967294", "4294967295"}


def srun_step(env: Mapping[str, str]) -> bool:
    """Whether this process is a task of an ``srun`` step (not the batch script or an ``salloc`` shell)."""
    if "SLURM_JOB_ID" not in env or env.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return False
    step = env.get("SLURM_STEP_ID", env.get("SLURM_STEPID"))
    return step is not None and step not in _NOT_SRUN_STEPS


def _first_count(value: str | None) -> int | None:
    """``8`` from SLURM's ``8``, ``8(x2)`` or ``8,4`` task lists."""
    match = re.match(r"\s*(\d+)", value or "")
    return int(match[1]) if match else None


def launch_decision(env: Mapping[str, str], num_processes: int, num_nodes: int) -> tuple[str, str]:
    """Who starts the DDP ranks: ``("slurm", why)``, ``("spawn", why)`` or ``("lightning", "")``.

    - ``slurm``: an ``srun`` step with one task per device on every node; SLURM started the ranks.
    - ``spawn``: inside a SLURM allocation without ``srun`` (a batch script, ``salloc``), or an ``srun`` step of
      one task on one node: Lightning starts ``num_processes`` ranks on this node.
    - ``lightning``: not under SLURM; Lightning's own detection (torchrun, LSF, MPI, or it spawns) decides.

    Impossible combinations (several nodes without ``srun``, a task count that matches nothing) raise
    ``ValueError`` with the fix.
    """
    if "SLURM_JOB_ID" not in env or env.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return "lightning", ""
    if any(k in env for k in ("TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT")):
        return "lightning", "torchrun inside a SLURM allocation"
    if not srun_step(env):
        if num_nodes > 1:
            raise ValueError(
                f"trainer.num_nodes={num_nodes} inside a SLURM allocation needs srun with one task per device: "
                f"srun --ntasks-per-node={num_processes} python train.py ... (or hydra/launcher=submitit_slurm)")
        return "spawn", (f"SLURM allocation without srun: Lightning starts {num_processes} processes on this "
                         "node")
    per_node = _first_count(env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
                            or env.get("SLURM_NTASKS_PER_NODE"))
    if per_node is None:
        tasks, nodes = _first_count(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS")), \
            _first_count(env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_NNODES")) or 1
        per_node = None if tasks is None else max(1, tasks // nodes)
    step_nodes = _first_count(env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_NNODES")) or 1
    if per_node == num_processes and step_nodes == num_nodes:
        return "slurm", f"srun started {per_node} task(s) on each of {step_nodes} node(s), one per device"
    if per_node == 1 and step_nodes == 1 and num_nodes == 1:
        return "spawn", f"srun started one task: Lightning starts {num_processes} processes on this node"
    raise ValueError(
        f"srun started {per_node} task(s) per node on {step_nodes} node(s), but the trainer wants "
        f"{num_processes} device(s) on each of {num_nodes} node(s): use srun --nodes={num_nodes} "
        f"--ntasks-per-node={num_processes} (one task per device), or set trainer.devices / trainer.num_nodes "
        "to match")


def slurm_tasks_per_node(gpus_per_node: Any, gres: Any = None) -> int:
    """submitit_slurm's ``tasks_per_node``: one task per GPU, from ``gpus_per_node`` or else ``gres`` (``gpu:8``,
    ``gpu:a100:8``); 1 without GPUs. (The ``lgfn_tasks_per_node`` resolver.)"""
    if gpus_per_node not in (None, "", "null", "None"):
        return max(1, int(gpus_per_node))
    for item in str(gres or "").split(","):
        parts = item.strip().split(":")
        if parts[0] == "gpu":
            return max(1, int(parts[-1])) if len(parts) > 1 and parts[-1].isdigit() else 1
    return 1




def srun_master_port(env: Mapping[str, str], job_key: str, base: int | None = None) -> int:
    """The rendezvous port of one sweep job's process group under srun: the same in every task (rank) of the job,
    a different one for each job of the sweep.

    Lightning's SLURM default (``15000`` + the job id's last 4 digits, or a ``MASTER_PORT`` the script exported) is
    one port for every job of an srun sweep; after a job whose process group was aborted (a failing rank) the next
    job's rendezvous on that port hangs. Here: ``base`` (the ``MASTER_PORT`` exported before the first job, else
    20000) plus a hash of the SLURM job and step ids and ``job_key`` (the job's directory) modulo 10000, so every
    rank, which runs the same jobs in the same directories, derives the same port without talking to the others.
    """
    step = env.get("SLURM_STEP_ID", env.get("SLURM_STEPID", ""))
    digest = hashlib.sha1(f"{env.get('SLURM_JOB_ID', '')}.{step}.{job_key}".encode()).hexdigest()
    base = 20000 if base is None or not 1024 <= int(base) <= 65535 - 10000 else int(base)
    return base + int(digest, 16) % 10000
