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

from lgfn.app.config import composition_error_line, forced_override_key
from lgfn.cluster import ddp as distributed
from lgfn.cluster import job_dir as jobs
from lgfn.training.callbacks import set_resume_command
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


def log_config_after_setup(trainer: Any, cfg: DictConfig) -> None:
    """Log ``cfg`` to the trainer's loggers once the data module is set up (``setup`` of a callback runs after the
    data module's), not before: a run whose data is missing then fails before W&B starts a run (no offline run
    directory, no W&B banners around the one error line)."""
    import lightning as L

    class _ConfigLogger(L.Callback):
        done = False

        def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
            if self.done:
                return
            self.done = True
            for logger in trainer.loggers:
                logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    trainer.callbacks.append(_ConfigLogger())


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

    distributed.set_job(entry_script(task), out, record_failure)
    started = time.time()
    if multirun and distributed.process_rank() == 0:
        jobs.write_status(out, "running")
    failed = True
    try:
        value = task(cfg)
        failed = False
        if multirun and distributed.process_rank() == 0:
            jobs.write_status(out, "ok", value=value if isinstance(value, (int, float)) else None,
                              started=started, seconds=round(time.time() - started, 1))
        return value
    except KeyboardInterrupt:  # Ctrl-C outside training's step loop (set-up, validation, test): nothing to save
        if not multirun:
            remove_unused_run_dir(out)
        print("interrupted (Ctrl-C)", file=sys.stderr, flush=True)
        raise SystemExit(130) from None
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
        # A failed job's other ranks are stopped (or stuck before the process group): no long wait for them.
        distributed.end_of_job(timeout=10.0 if failed else 60.0)


# The entry script (train.py / eval.py) of this process's Hydra app, set by ``hydra_main``'s wrapper in the process
# that runs a job (a joblib / submitit worker included: the wrapper travels with the pickled task function).
_ENTRY_SCRIPT: list[str] = []


def set_entry_script(path: str) -> None:
    _ENTRY_SCRIPT[:] = [path]


def _source_file(fn: Callable) -> str | None:
    """The real file that defines ``fn``, or None: cloudpickle'd functions (joblib, submitit) report
    ``<dynamic-code>``, which is no file; the module's ``__file__`` is tried next."""
    candidates = []
    with contextlib.suppress(TypeError, OSError):
        candidates.append(inspect.getsourcefile(inspect.unwrap(fn)))
    module = sys.modules.get(getattr(fn, "__module__", None) or "")
    candidates.append(getattr(module, "__file__", None))
    for path in candidates:
        if path and os.path.isfile(path):
            return os.path.abspath(path)
    return None


def entry_script(task: Callable | None = None) -> str:
    """The script a DDP child rank runs (``lgfn.cluster.ddp.child_command``): the entry script that ``hydra_main``
    recorded, else the file defining ``task``, else ``__main__``'s file, else ``sys.argv[0]``. Never a pseudo-file
    such as ``<dynamic-code>`` (a task function pickled by the joblib or submitit launcher)."""
    if _ENTRY_SCRIPT and os.path.isfile(_ENTRY_SCRIPT[-1]):
        return _ENTRY_SCRIPT[-1]
    found = _source_file(task) if task is not None else None
    if found:
        return found
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file and os.path.isfile(main_file):
        return os.path.abspath(main_file)
    return os.path.abspath(sys.argv[0])


def resume_command(path: Path | str) -> str:
    """The exact command that resumes this run from ``path``: the entry script with this run's (or this sweep
    job's) own overrides, ``ckpt_path=`` and the same run directory (same W&B run, same files). Printed by
    ``lgfn.training.callbacks.SaveOnSignal`` after SIGTERM / Ctrl-C."""
    import shlex

    script = entry_script()
    with contextlib.suppress(ValueError):
        script = os.path.relpath(script)
    parts = ["python", script]
    try:
        hc = HydraConfig.get()
    except ValueError:
        parts.append(f"ckpt_path={path}")
    else:
        sweep_only = distributed._SWEEP_ONLY
        parts += [o for o in hc.overrides.hydra if not o.lstrip("+~").startswith(sweep_only)]
        parts += [o for o in hc.overrides.task if not o.lstrip("+~").startswith("ckpt_path=")]
        parts += [f"ckpt_path={path}", f"hydra.run.dir={hc.runtime.output_dir}"]
    return " ".join(shlex.quote(str(p)) for p in parts)


set_resume_command(resume_command)


def remove_unused_run_dir(out: Path) -> bool:
    """Delete the run directory of a failed run when the run never got to train: it holds only what Hydra and the
    set-up wrote (``.hydra``, the job's log, ``config_resolved.yaml``, empty logger folders, a W&B run that
    logged nothing but the config). A checkpoint, a ``metrics.json``, a logged ``metrics.csv`` row or any other
    file means the run got somewhere, and the directory stays. Returns whether it was removed.
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
    setup_only = {subdir, f"{hc.job.name}.log", "config_resolved.yaml", "wandb", "csv", "tensorboard",
                  "lightning_logs"}
    if any(p.name not in setup_only for p in out.iterdir()):
        return False
    for p in out.rglob("*"):
        if p.suffix == ".ckpt" or p.name == "metrics.json":
            return False
        if p.name == "metrics.csv" and len(p.read_text(errors="replace").splitlines()) > 1:
            return False
        if p.suffix == ".wandb" and p.stat().st_size > 64 * 1024:  # a W&B run with more than its set-up
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
        # Resolved here, in the process that imported the entry script: a launcher that pickles the task function
        # (joblib, submitit) carries this path (a plain string in the closure) to its workers, where the pickled
        # function's own source file reads "<dynamic-code>".
        script = _source_file(task_function) or os.path.abspath(sys.argv[0])

        @functools.wraps(task_function)
        def with_entry_script(cfg: DictConfig) -> Any:
            set_entry_script(script)  # a module-level function: pickled by reference, sets the worker's own state
            return task_function(cfg)

        hydra_entry = hydra.main(version_base="1.3", config_path=config_path,
                                 config_name=config_name)(with_entry_script)

        @functools.wraps(task_function)
        def main(cfg_passthrough: DictConfig | None = None) -> Any:
            if cfg_passthrough is not None:
                return hydra_entry(cfg_passthrough)
            for _ in range(len(sys.argv) + 1):
                try:
                    with _one_line_composition_errors():
                        return hydra_entry()
                except _ForceOverride as force:  # a key the _target_ takes: again with ++key=value
                    sys.argv = force.argv
                    from hydra.core.global_hydra import GlobalHydra

                    GlobalHydra.instance().clear()
            raise SystemExit(1)

        return main

    return decorator


class _ForceOverride(BaseException):  # noqa: N818 - not an error: Hydra's run_and_report must let it through
    """Compose again with ``argv`` (an override of a key the config's ``_target_`` takes, spelled ``++``)."""

    def __init__(self, argv: list[str]) -> None:
        super().__init__(argv)
        self.argv = argv


def _forced_argv(argv: list[str], key: str) -> list[str] | None:
    """``argv`` with the override of ``key`` (``key=v`` or ``+key=v``) spelled ``++key=v``; None if none is."""
    out, changed = [], False
    for arg in argv:
        name, sep, value = arg.partition("=")
        if sep and not name.startswith("++") and name.lstrip("+") == key:
            arg, changed = f"++{key}={value}", True
        out.append(arg)
    return out if changed else None


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
                key = forced_override_key(e)
                argv = _forced_argv(sys.argv, key) if key else None
                if argv is not None:
                    raise _ForceOverride(argv) from None
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


