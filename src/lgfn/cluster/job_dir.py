"""A job and its directory: the directory's name, ``status.json``, skipping a finished job, resuming an interrupted one.

**Resume a sweep by re-running it.** A sweep job's directory is named after its overrides
(:func:`job_dir_name`: ``<experiment>-seed<seed>-<hash of every override>``), not its number, so the same
multirun command with the same ``hydra.sweep.dir`` finds each job's own directory again, whatever order or
launcher (basic, joblib, submitit) runs it, and a job whose overrides changed gets a new one. There:

- ``status.json`` says ``ok``: the job finished; it is skipped and none of its files is touched.
- ``checkpoints/last.ckpt`` exists (a kill, a time-out, a pre-emption): training resumes from it
  (:func:`resume_path`; also what a requeued submitit job does).
- nothing: the job starts.

Only global rank 0 writes ``status.json`` (``running`` at the start, then ``ok`` or ``failed`` with the
reason), through a temp file of its own (``runner.write_json_atomic``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import socket
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lgfn.cluster.ddp import process_rank
from lgfn.cluster.slurm import srun_step
from lgfn.common.atomic import write_json_atomic
from lgfn.common.errors import ConfigError

STATUS_FILE = "status.json"
# Overrides that name a job (in this order) in its directory's name; every override goes into the hash.
_NAMING_KEYS = ("experiment", "model", "data")
# What must match for a run directory's last.ckpt to be resumed automatically.
_SAME_RUN_KEYS = ("model", "data", "seed")


# ---------------------------------------------------------------------------- names (Hydra resolvers)
def _parse(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def job_dir_name(overrides: Iterable[str]) -> str:
    """A sweep job's directory name: readable parts from its experiment / model / data / seed overrides, then 8 hex
    digits of a hash of all its overrides (sorted: their order does not matter). ``ablation_lfm-seed2-1f0c2a9e``."""
    overrides = sorted(str(o) for o in overrides)
    values = dict(_parse(o) for o in overrides)
    parts = [values[k] for k in _NAMING_KEYS if values.get(k)]
    if values.get("seed"):
        parts.append(f"seed{values['seed']}")
    digest = hashlib.sha1("\n".join(overrides).encode()).hexdigest()[:8]
    readable = re.sub(r"[^A-Za-z0-9._=-]+", "_", "-".join(parts))[:80]
    return f"{readable}-{digest}" if readable else f"job-{digest}"


def _srun_id(env: Mapping[str, str]) -> str | None:
    """``<job id>.<step id>`` when this process is a task of an srun step, else None."""
    if not srun_step(env):
        return None
    return f"{env['SLURM_JOB_ID']}.{env.get('SLURM_STEP_ID', env.get('SLURM_STEPID'))}"


def unique_suffix(env: Mapping[str, str] | None = None) -> str:
    """6 hex digits, fixed for the process (cached by the resolver): two runs or sweeps started in the same second
    get different directories. Random, except in an srun step, where every task (rank) of the step must name the
    same directory: there a hash of the SLURM job and step ids."""
    srun = _srun_id(os.environ if env is None else env)
    if srun is not None:
        return hashlib.sha1(f"slurm:{srun}".encode()).hexdigest()[:6]
    return secrets.token_hex(3)


def run_id(env: Mapping[str, str] | None = None) -> str:
    """A run's (or sweep's) directory name under logs/<task>/runs|multirun (the ``lgfn_run_id`` resolver): the start
    time and :func:`unique_suffix`. In an srun step the ranks start at different moments, so there it is the SLURM
    job and step instead (``slurm-<job>.<step>``), the same in every rank (and again when the job is requeued,
    which then resumes from that directory's last.ckpt)."""
    env = os.environ if env is None else env
    srun = _srun_id(env)
    if srun is not None:
        return f"slurm-{srun}"
    return f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{unique_suffix(env)}"


# ---------------------------------------------------------------------------- status.json
def read_status(out: Path) -> dict | None:
    try:
        return json.loads((Path(out) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None


def write_status(out: Path, status: str, **extra: Any) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": socket.gethostname(),
              "pid": os.getpid(), **extra}
    write_json_atomic(record, out / STATUS_FILE)


def finished(out: Path) -> bool:
    """Whether the job in ``out`` ended ``ok`` before (a re-run sweep skips it)."""
    status = read_status(out)
    return bool(status) and status.get("status") == "ok"


# ---------------------------------------------------------------------------- resuming
def checkpoint_dir(cfg: DictConfig, out: Path) -> Path:
    dirpath = OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath")
    return Path(dirpath) if dirpath else Path(out) / "checkpoints"


def _differences(old: Any, new: Any, prefix: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        diffs = []
        for key in sorted(set(old) | set(new), key=str):
            diffs += _differences(old.get(key), new.get(key), f"{prefix}.{key}")
        return diffs
    return [] if old == new else [f"{prefix}: {old!r} then, {new!r} now"]


def resume_path(cfg: DictConfig, out: Path) -> str | None:
    """The checkpoint ``trainer.fit`` starts from: ``ckpt_path`` when given; else, with ``auto_resume`` (default),
    this run directory's own newest ``last.ckpt`` / ``hpc_ckpt_*.ckpt`` (a requeued or re-run job); else None.

    A checkpoint left by a different run (another model, data or seed in the directory's
    ``config_resolved.yaml``) is refused with the differences, rather than silently continued.
    """
    if cfg.get("ckpt_path"):
        return cfg.ckpt_path
    if not cfg.get("train", True) or not cfg.get("auto_resume", True):
        return None
    out = Path(out)
    candidates = [checkpoint_dir(cfg, out) / "last.ckpt", *out.glob("hpc_ckpt_*.ckpt")]
    existing = [p for p in candidates if p.is_file()]
    if not existing:
        return None
    path = max(existing, key=lambda p: p.stat().st_mtime)
    saved = out / "config_resolved.yaml"
    if saved.is_file() and process_rank() == 0:  # rank 0 rewrites it next; the other ranks follow rank 0
        old = OmegaConf.to_container(OmegaConf.load(saved), resolve=False)
        diffs = []
        for key in _SAME_RUN_KEYS:
            new = OmegaConf.to_container(cfg[key], resolve=True) if isinstance(cfg.get(key), DictConfig) else cfg.get(key)
            diffs += _differences(old.get(key), new, key)
        if diffs:
            raise ConfigError(f"{out} holds {path.name} of another run ({'; '.join(diffs[:3])}"
                              f"{'; ...' if len(diffs) > 3 else ''}): use another hydra.run.dir, or resume it "
                              "explicitly with ckpt_path=, or auto_resume=false to start afresh there")
    if process_rank() == 0:
        print(f"resuming from {path} (this run directory's own checkpoint; auto_resume=false starts afresh)",
              file=sys.stderr, flush=True)
    return str(path)


# ---------------------------------------------------------------------------- W&B
def finish_wandb() -> None:
    """End this job's W&B run (one run per job, finished before the next job in the same process starts)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        try:
            wandb.finish()
        except Exception as e:  # noqa: BLE001 - the run's files are already written; never fail a job over it
            print(f"W&B run not finished cleanly: {e}", file=sys.stderr, flush=True)

