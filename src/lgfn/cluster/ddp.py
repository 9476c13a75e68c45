"""DDP as this project runs it: who starts the processes, what each child runs, one failing rank stopping all.

``trainer=ddp`` / ``ddp_sim`` / ``multinode`` use :class:`DDPStrategy`, Lightning's DDP with three changes:

- **Which processes exist** (:func:`launch_decision`). Lightning takes any process that sees ``SLURM_NTASKS``
  for an ``srun`` task and then never starts processes of its own: ``python train.py trainer=ddp`` in an
  ``sbatch`` script or ``salloc`` shell trains on one GPU (or fails "devices vs ntasks"). Here SLURM starts the
  ranks only inside an ``srun`` step with one task per device; otherwise Lightning starts them on this node.
- **What a child process runs** (:func:`child_command`). Lightning restarts ``sys.argv``; in a multirun
  (``-m``) that is the whole sweep again, in every rank, and in a joblib worker it is not even train.py. Here a
  child runs the entry script with this job's own overrides, in this job's directory, as a single run.
- **One failing rank stops every rank, with the reason** (:class:`_Watchdog`). A rank that raises writes
  ``rank R: Error: message`` into the process group's store; every rank polls it. Other ranks print the reason
  and exit at once (instead of waiting 30 min in a collective); rank 0 stops its own collective, records the
  reason (``status.json`` in a sweep) and carries on with the next job. Lightning's own child observer, which
  SIGKILLs rank 0 (and so a joblib worker, and the whole sweep) when a child dies, is not started.

:func:`end_of_job` (called by ``lgfn.app.task.run_task``) waits for the children, destroys the process group and
restores the environment, so the next job in the same worker process starts its own DDP from scratch.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.environments import LightningEnvironment, SLURMEnvironment
from lightning.pytorch.strategies import DDPStrategy as _LightningDDPStrategy
from lightning.pytorch.strategies.launchers import subprocess_script as _lightning_launcher
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

from lgfn.cluster.slurm import launch_decision, slurm_tasks_per_node, srun_master_port, srun_step

FAILURE_KEY = "lgfn/failure"
# Environment variables the launcher sets in the parent process (restored by end_of_job).
_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "LGFN_DDP_RENDEZVOUS")
# A folder the ranks this process starts report to before they join the process group: ``rank<R>.ready``, or
# ``rank<R>.failed`` holding the reason a rank failed before it could join (see _Launcher.wait_for_children).
RENDEZVOUS_ENV = "LGFN_DDP_RENDEZVOUS"
# The MASTER_PORT this process was started with (a batch script's export), the base of each srun job's own port.
_STARTING_MASTER_PORT = os.environ.get("MASTER_PORT")
# Hydra overrides a child must not inherit: it is one run in the job's own directory, not a sweep.
_SWEEP_ONLY = ("hydra.sweep", "hydra.run", "hydra/launcher", "hydra.launcher", "hydra/sweeper", "hydra.sweeper",
               "hydra.mode", "hydra.job.name", "hydra.job.num", "hydra.job.id", "hydra.output_subdir",
               "hydra.callbacks")


# ---------------------------------------------------------------------------- the running job
class _Job:
    """What the watchdog needs to record a failure when the main thread cannot (set by lgfn.app.task.run_task)."""

    script: str | None = None
    out: Path | None = None
    record_failure: Callable[[str], None] | None = None
    remote_failure: str | None = None
    launchers: list[_Launcher] = []
    watchdogs: list[_Watchdog] = []
    saved_env: dict[str, str | None] = {}  # variables this job set outside a launcher (srun's MASTER_PORT)


def set_job(script: str | None, out: Path | None, record_failure: Callable[[str], None] | None) -> None:
    _Job.script, _Job.out, _Job.record_failure, _Job.remote_failure = script, out, record_failure, None


def remote_failure() -> str | None:
    """``rank R: Error: message`` when another rank's failure ended this job, else None."""
    return _Job.remote_failure


def process_rank(env: Mapping[str, str] | None = None) -> int:
    """This process's global rank: the process group's, else the launcher's environment (srun, torchrun,
    submitit's local tasks, Lightning's children), else 0."""
    import torch.distributed as dist

    if env is None:
        env = os.environ
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank()
    if "RANK" in env:
        return int(env["RANK"])
    if srun_step(env):
        return int(env.get("SLURM_PROCID", 0))
    if "SUBMITIT_LOCAL_GLOBALID" in env:
        return int(env["SUBMITIT_LOCAL_GLOBALID"])
    if "LOCAL_RANK" in env and "WORLD_SIZE" in env:  # started by Lightning's launcher: 0 only on node 0
        local, node = int(env["LOCAL_RANK"]), int(env.get("NODE_RANK") or 0)
        return local if node == 0 else node * int(env["WORLD_SIZE"]) + local
    return 0


# ---------------------------------------------------------------------------- the children's command
def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def child_command(local_rank: int) -> tuple[list[str], str]:
    """The command line and cwd of DDP rank ``local_rank`` (> 0) on this node: the entry script with this job's
    own overrides (never ``-m`` or the sweep's others), as a single run in this job's directory."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    script = _Job.script or os.path.abspath(sys.argv[0])
    command = [sys.executable, script]
    if hc.job.config_name:
        command.append(f"--config-name={hc.job.config_name}")
    for source in hc.runtime.config_sources or []:
        if source.get("provider") == "command-line" and str(source.get("path", "")).startswith("file://"):
            command.append(f"--config-dir={source['path'][len('file://'):]}")
    command += [o for o in hc.overrides.hydra if not o.lstrip("+~").startswith(_SWEEP_ONLY)]
    command += list(hc.overrides.task)
    command += [f"hydra.run.dir={_quoted(str(hc.runtime.output_dir))}",
                f"hydra.job.name={hc.job.name}_ddp_rank{local_rank}", "hydra.output_subdir=null"]
    return command, str(hc.runtime.cwd)


class _Launcher(_SubprocessScriptLauncher):
    """Lightning's launcher with :func:`child_command`, and the watchdog instead of Lightning's child observer."""

    def launch(self, function: Callable, *args: Any, trainer: Any = None, **kwargs: Any) -> Any:
        self.cluster_environment.validate_settings(num_devices=self.num_processes, num_nodes=self.num_nodes)
        if not self.cluster_environment.creates_processes_externally:
            self.saved_env = {k: os.environ.get(k) for k in _LAUNCH_ENV}
            self.rendezvous = tempfile.mkdtemp(prefix="lgfn-ddp-")
            os.environ[RENDEZVOUS_ENV] = self.rendezvous  # the children inherit it
            _Job.launchers.append(self)
            with _patched(_lightning_launcher, "_hydra_subprocess_cmd", child_command):
                self._call_children_scripts()
        from lightning.fabric.utilities.distributed import _set_num_threads_if_needed

        _set_num_threads_if_needed(num_processes=self.num_processes)
        return function(*args, **kwargs)

    def wait_for_children(self, poll_s: float = 0.2) -> None:
        """Block until every child rank is about to join the process group; raise with the child's reason if one
        failed (or exited) before. Without this, rank 0 would wait in ``init_process_group`` for a rank that is
        gone (for the 30-minute timeout), and the watchdog, which needs the process group's store, never starts."""
        folder = Path(getattr(self, "rendezvous", "") or ".")
        pending = dict(enumerate(self.procs, start=1))
        while pending:
            for rank, proc in list(pending.items()):
                failed = folder / f"rank{rank}.failed"
                if failed.is_file() or proc.poll() is not None:
                    with contextlib.suppress(Exception):
                        proc.wait(5)  # the reason file is written before the child exits
                    reason = failed.read_text().strip() if failed.is_file() else ""
                    reason = reason or (f"rank {rank}: exited with status {proc.returncode} before it joined the "
                                        "process group")
                    _Job.remote_failure = reason  # the job's reason is the child's, as the watchdog reports it
                    print(f"rank 0: stopping this job: {reason}", file=sys.stderr, flush=True)
                    raise RuntimeError(reason)
                if (folder / f"rank{rank}.ready").is_file():
                    del pending[rank]
            if pending:
                time.sleep(poll_s)

    def finish(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the children, kill what is left, restore the parent's environment."""
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            with contextlib.suppress(Exception):
                proc.wait(max(0.1, deadline - time.monotonic()))
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(Exception):
                    proc.kill()
                    proc.wait(10)
        for key, value in getattr(self, "saved_env", {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if getattr(self, "rendezvous", None):
            shutil.rmtree(self.rendezvous, ignore_errors=True)


@contextlib.contextmanager
def _patched(module: Any, name: str, value: Any):
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


# ---------------------------------------------------------------------------- one failing rank stops all
class _Watchdog(threading.Thread):
    """Polls the process group's store (and, on rank 0, the children's exit codes) for another rank's failure."""

    PERIOD_S = 0.5
    # Rank 0 waits this long for its main thread to leave the collective and record the failure itself.
    GRACE_S = 30.0
    # A store unreachable this long means rank 0 is gone (briefly: it may be ending a finished job).
    STORE_GONE_S = 10.0

    def __init__(self, rank: int, address: str, port: int, children: list) -> None:
        super().__init__(daemon=True, name="lgfn-rank-watchdog")
        self.rank, self.address, self.port, self.children = rank, address, port, children
        self.stopped = threading.Event()
        self.handled = threading.Event()  # the main thread saw the failure (strategy.on_exception)

    def store(self):
        from torch.distributed import TCPStore

        return TCPStore(self.address, self.port, is_master=False, timeout=timedelta(seconds=30),
                        wait_for_workers=False)

    def run(self) -> None:
        try:
            store = self.store()
        except Exception:  # noqa: BLE001 - no store to watch: Lightning's own error handling remains
            return
        unreachable_since = None
        while not self.stopped.wait(self.PERIOD_S):
            try:
                reason = store.get(FAILURE_KEY).decode() if store.check([FAILURE_KEY]) else None
                unreachable_since = None
            except Exception as e:  # noqa: BLE001 - rank 0 (the store's host) is gone, or finishing
                if self.stopped.is_set():
                    return
                unreachable_since = unreachable_since or time.monotonic()
                gone = self.rank != 0 and time.monotonic() - unreachable_since > self.STORE_GONE_S
                reason = f"rank 0: its process is gone ({type(e).__name__})" if gone else None
            if reason is None and self.rank == 0:
                # 130 / 143: a rank that stopped on Ctrl-C / SIGTERM, which every rank does together (SaveOnSignal).
                reason = next((f"rank {i + 1}: exited with status {p.returncode}"
                               for i, p in enumerate(self.children) if p.poll() not in (None, 0, 130, 143)), None)
            if reason and not reason.startswith(f"rank {self.rank}:"):
                self.stop_job(reason)
                return

    def stop_job(self, reason: str) -> None:
        _Job.remote_failure = reason
        print(f"rank {self.rank}: stopping this job: {reason}", file=sys.stderr, flush=True)
        if self.rank != 0:
            os._exit(1)
        # Rank 0 leaves its collective: the children's sockets close (gloo raises), NCCL is aborted.
        for proc in self.children:
            with contextlib.suppress(Exception):
                proc.send_signal(signal.SIGKILL)
        with contextlib.suppress(Exception):
            from torch.distributed.distributed_c10d import _abort_process_group

            _abort_process_group()
        if self.handled.wait(self.GRACE_S):
            return
        print(f"rank 0: still blocked {self.GRACE_S:.0f} s after {reason}; exiting", file=sys.stderr, flush=True)
        if _Job.record_failure is not None:
            with contextlib.suppress(Exception):
                _Job.record_failure(reason)
        os._exit(1)


def _child_rendezvous(env: Mapping[str, str] | None = None) -> Path | None:
    """The rendezvous folder when this process is a child rank Lightning's launcher started here, else None."""
    env = os.environ if env is None else env
    folder = env.get(RENDEZVOUS_ENV)
    if not folder or int(env.get("LOCAL_RANK", 0) or 0) == 0:
        return None
    return Path(folder)


def publish_failure(exception: BaseException) -> None:
    """Tell every rank that this one failed (first failure wins). Outside a process group, a child rank that fails
    before joining it tells rank 0 through the rendezvous folder (``_Launcher.wait_for_children``)."""
    import torch.distributed as dist

    if not isinstance(exception, Exception):
        return
    if not (dist.is_available() and dist.is_initialized()):
        folder = _child_rendezvous()
        if folder is not None:
            rank = int(os.environ["LOCAL_RANK"])
            reason = f"rank {rank}: {type(exception).__name__}: {exception}".splitlines()[0][:2000]
            with contextlib.suppress(OSError):
                tmp = folder / f".rank{rank}.failed.{os.getpid()}"
                tmp.write_text(reason)
                os.replace(tmp, folder / f"rank{rank}.failed")
        return
    if dist.get_world_size() < 2 or _Job.remote_failure:
        return
    reason = f"rank {dist.get_rank()}: {type(exception).__name__}: {exception}".splitlines()[0][:2000]
    with contextlib.suppress(Exception):
        from torch.distributed import TCPStore

        store = TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                         timeout=timedelta(seconds=5), wait_for_workers=False)
        # compare_set: only the first failing rank's reason is kept.
        first = store.compare_set(FAILURE_KEY, "", reason).decode()
        # Another rank's failure, unless it is the same error (a decision every rank took together).
        if first.split(": ", 1)[-1] != reason.split(": ", 1)[-1]:
            _Job.remote_failure = first


class DDPStrategy(_LightningDDPStrategy):
    """Lightning's DDP (``strategy=ddp``), with this module's launch decision, child command and watchdog."""

    strategy_name = "lgfn_ddp"

    def set_world_ranks(self) -> None:
        if self.cluster_environment is not None and self.parallel_devices is not None:
            decision, why = launch_decision(os.environ, len(self.parallel_devices), self.num_nodes)
            if decision == "spawn" and isinstance(self.cluster_environment, SLURMEnvironment):
                # Lightning starts the ranks here; its SLURM requeue on SIGUSR1 (which follows the environment)
                # is then taken over by lgfn.training.callbacks.SaveOnSignal (slurm_requeue_signal).
                self.slurm_requeue_signal = self.cluster_environment.requeue_signal if \
                    self.cluster_environment.auto_requeue else None
                self.cluster_environment = LightningEnvironment()
            self.launch_reason = why
        super().set_world_ranks()

    def _configure_launcher(self) -> None:
        if self._start_method == "popen":
            self._launcher = _Launcher(self.cluster_environment, self.num_processes, self.num_nodes)
        else:
            super()._configure_launcher()

    def setup_environment(self) -> None:
        # Before joining the process group (super() calls init_process_group): a child rank says it is about to;
        # rank 0 waits for that from every child it started, and fails at once if one died on the way.
        if isinstance(self._launcher, _Launcher) and getattr(self._launcher, "procs", None):
            self._launcher.wait_for_children()
        folder = _child_rendezvous()
        if folder is not None:
            with contextlib.suppress(OSError):
                (folder / f"rank{os.environ['LOCAL_RANK']}.ready").touch()
        if isinstance(self.cluster_environment, SLURMEnvironment) and srun_step(os.environ):
            # srun started the ranks: a port of this job's own (every rank derives the same one), not the fixed
            # one every job of an srun sweep would share (a job after a failed one would hang on it).
            _Job.saved_env.setdefault("MASTER_PORT", os.environ.get("MASTER_PORT"))
            os.environ["MASTER_PORT"] = str(srun_master_port(os.environ, str(_Job.out or os.getcwd()),
                                                             _STARTING_MASTER_PORT and int(_STARTING_MASTER_PORT)))
        super().setup_environment()
        trainer = self.lightning_module.trainer if self.lightning_module is not None else None
        if trainer is not None:  # Lightning's SLURM requeue handler follows the environment actually used
            trainer._accelerator_connector.cluster_environment = self.cluster_environment
        if self.world_size > 1 and not any(w.is_alive() for w in _Job.watchdogs):
            children = list(getattr(self._launcher, "procs", []) or [])
            watchdog = _Watchdog(self.global_rank, os.environ.get("MASTER_ADDR", "127.0.0.1"),
                                 int(os.environ.get("MASTER_PORT", 0)), children)
            watchdog.start()
            _Job.watchdogs.append(watchdog)

    def on_exception(self, exception: BaseException) -> None:
        super().on_exception(exception)
        publish_failure(exception)
        for watchdog in _Job.watchdogs:
            watchdog.handled.set()


def end_of_job(timeout: float = 60.0) -> None:
    """After a job: stop the watchdogs, wait for (then kill) the children, destroy the process group, restore the
    environment, so that the next job in this process starts its own DDP."""
    import torch.distributed as dist

    for watchdog in _Job.watchdogs:
        watchdog.handled.set()
        watchdog.stopped.set()
    for launcher in _Job.launchers:
        launcher.finish(timeout)
    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
    for key, value in _Job.saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _Job.watchdogs, _Job.launchers, _Job.saved_env = [], [], {}


__all__ = ["DDPStrategy", "child_command", "end_of_job", "launch_decision", "process_rank", "publish_failure",
           "remote_failure", "set_job", "slurm_tasks_per_node", "srun_step"]
