"""The task wrapper of train.py and eval.py: output directory, one-line failures, sweep job status, Hydra entry."""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lgfn.app.config import composition_error_line
from lgfn.cluster import ddp as distributed
from lgfn.cluster import job_dir as jobs
from lgfn.training.loggers import quiet_third_party


# ---------------------------------------------------------------------------- building
def instantiate_list(node: DictConfig | None) -> list:
    """Instantiate every `_target_` entry of a config group (callbacks, loggers); null entries are skipped."""
    if not node:
        return []
    return [instantiate(v) for v in node.values() if isinstance(v, DictConfig) and "_target_" in v]


def output_dir() -> Path:
    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return Path.cwd()


def save_resolved_config(cfg: DictConfig, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out / "config_resolved.yaml", resolve=True)


# ---------------------------------------------------------------------------- failure handling
def run_task(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run a task; bad input ends it with a one-line error. In a sweep a failed job is recorded, not fatal.

    In a sweep (``lgfn.cluster.job_dir``): a job whose directory says ``ok`` is skipped; global rank 0 alone writes
    ``status.json``. Under DDP a failure on any rank is reported as ``rank R: Error: message`` (``lgfn.cluster.ddp``).
    Every job ends its W&B run and its DDP processes before the next one starts.
    """
    quiet_third_party()
    multirun = False
    try:
        multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        pass
    out = output_dir()
    if multirun and jobs.finished(out):
        print(f"job {out.name} finished before (its status.json says ok): skipped", flush=True)
        return (jobs.read_status(out) or {}).get("value")

    def record_failure(reason: str, trace: str = "") -> None:
        if multirun and distributed.process_rank() == 0:
            jobs.write_status(out, "failed", error=reason, traceback=trace)

    distributed.set_job(inspect.getsourcefile(task), out, record_failure)
    started = time.time()
    if multirun and distributed.process_rank() == 0:
        jobs.write_status(out, "running")
    try:
        value = task(cfg)
        if multirun and distributed.process_rank() == 0:
            jobs.write_status(out, "ok", value=value if isinstance(value, (int, float)) else None,
                              started=started, seconds=round(time.time() - started, 1))
        return value
    except Exception as e:
        if type(e).__name__ == "InstantiationException" and isinstance(e.__cause__, Exception):
            e = e.__cause__  # hydra wraps what a constructor raised: report the constructor's own error
        distributed.publish_failure(e)
        remote = distributed.remote_failure()  # another rank failed first: its reason, not this rank's echo
        error = remote or f"{type(e).__name__}: {e}"
        if not multirun:
            remove_unused_run_dir(out)
        if multirun:
            record_failure(error, traceback.format_exc())
            print(f"job failed (the sweep goes on): {error}", file=sys.stderr, flush=True)
            return float("nan")
        if remote:
            print(f"error: {remote}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or not isinstance(e, (ValueError, FileNotFoundError,
                                                                           FloatingPointError, OSError)):
            raise
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    finally:
        jobs.finish_wandb()
        distributed.end_of_job()


def remove_unused_run_dir(out: Path) -> bool:
    """Delete the run directory of a failed run when it holds only what Hydra wrote before the task started.

    That is the ``.hydra`` folder (config, hydra and overrides YAML) and the job's log; anything else (a
    resolved config, checkpoints, logger files) means the run got somewhere, and the directory stays.
    Returns whether it was removed.
    """
    try:
        hc = HydraConfig.get()
    except ValueError:
        return False
    subdir = hc.output_subdir
    if not subdir or not (out / subdir).is_dir():
        return False  # not a directory Hydra set up for this run
    bookkeeping = {"config.yaml", "hydra.yaml", "overrides.yaml"}
    if any(p.name not in bookkeeping or not p.is_file() for p in (out / subdir).iterdir()):
        return False
    if any(p.name not in (subdir, f"{hc.job.name}.log") for p in out.iterdir()):
        return False
    shutil.rmtree(out, ignore_errors=True)
    return not out.exists()


# ---------------------------------------------------------------------------- entry points
def hydra_main(config_name: str, config_path: str = "conf") -> Callable:
    """``@hydra.main(version_base="1.3", config_path=..., config_name=...)`` with config errors in one line.

    Hydra rejects an override of a key the config does not have (``model.net.num_fet=32``, a typo) while
    composing, with advice to write ``+model.net.num_fet=32`` (which would only add the typo). Here it ends
    like every other config error: one line ``error: unknown config key ... (did you mean ...?)`` and exit
    status 1; a mistyped group choice (``model=lgfn_smal``) names the choices. HYDRA_FULL_ERROR=1 keeps
    Hydra's own report.
    """
    import hydra

    def decorator(task_function: Callable) -> Callable:
        hydra_entry = hydra.main(version_base="1.3", config_path=config_path, config_name=config_name)(task_function)

        @functools.wraps(task_function)
        def main(cfg_passthrough: DictConfig | None = None) -> Any:
            if cfg_passthrough is not None:
                return hydra_entry(cfg_passthrough)
            with _one_line_composition_errors():
                return hydra_entry()

        return main

    return decorator


@contextlib.contextmanager
def _one_line_composition_errors() -> Iterator[None]:
    """Route Hydra's composition failures through ``composition_error_line`` while the entry point runs.

    Hydra reports them, and exits, in ``hydra._internal.utils.run_and_report``: the one place that sees them.
    """
    from hydra._internal import utils as hydra_utils

    original = getattr(hydra_utils, "run_and_report", None)
    if original is None:  # another Hydra layout: keep its report
        yield
        return

    def run_and_report(func: Callable) -> Any:
        def guarded() -> Any:
            try:
                return func()
            except Exception as e:
                line = None if os.environ.get("HYDRA_FULL_ERROR") == "1" else composition_error_line(e)
                if line is None:
                    raise
                print(f"error: {line}", file=sys.stderr, flush=True)
                raise SystemExit(1) from None

        return original(guarded)

    hydra_utils.run_and_report = run_and_report
    try:
        yield
    finally:
        hydra_utils.run_and_report = original


