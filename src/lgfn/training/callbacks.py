"""Training callbacks: a checkpoint on SIGTERM or submitit's pre-emption signal (then requeued), last.ckpt by steps
and by wall time, the console's progress bar and model summary."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, RichModelSummary, RichProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.model_summary.model_summary import (
    get_formatted_model_size,
    get_human_readable_count,
)

from lgfn.models.complexity import gflops_per_frame


def at_step_boundary(trainer: L.Trainer) -> bool:
    """Whether the training batch that just ended (``on_train_batch_end``) completed an optimiser step: always
    without gradient accumulation; with ``accumulate_grad_batches=k`` only after the k-th micro-batch of a window
    (or the epoch's last batch). A checkpoint, an EMA update or a stop belongs only there: mid-window the
    accumulated gradient is in no checkpoint, and a resume from there would lose it."""
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    should_accumulate = getattr(loop, "_should_accumulate", None)
    if should_accumulate is None:
        return True
    try:
        return not should_accumulate()
    except Exception:  # noqa: BLE001 - another Lightning layout: every batch is a step
        return True


# How the entry point resumes a run from a checkpoint (the exact command line): registered by lgfn.app.task, since
# the training package knows no entry point. Without one: the ckpt_path= override alone.
_resume_command: list[Callable[[Path | str], str]] = []


def set_resume_command(fn: Callable[[Path | str], str]) -> None:
    _resume_command[:] = [fn]


def resume_command(path: Path | str) -> str:
    """The command that resumes this run from ``path`` (see :func:`set_resume_command`)."""
    for fn in _resume_command:
        with contextlib.suppress(Exception):
            return fn(path)
    return f"ckpt_path={path}"


def _global_rank(trainer: L.Trainer | None = None) -> int:
    """This process's global rank: the trainer's, else the launcher's environment (torchrun, srun, Lightning)."""
    if trainer is not None:
        with contextlib.suppress(Exception):
            return int(trainer.global_rank)
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"])
    if "SLURM_PROCID" in env and env.get("SLURM_STEP_ID", env.get("SLURM_STEPID")) not in (None, "batch", "extern"):
        return int(env["SLURM_PROCID"])
    return int(env.get("LOCAL_RANK", 0) or 0) if "WORLD_SIZE" in env else 0


class SaveOnSignal(L.Callback):
    """Save ``last.ckpt`` at the next optimiser-step boundary after a stop signal: SIGTERM (exit 128 + 15), Ctrl-C
    (SIGINT, exit 128 + 2; a second Ctrl-C aborts at once, saving nothing), or the pre-emption / time-out signal
    of a submitit job (USR2; submitit then requeues the job, which resumes from that file).

    **SIGTERM and Ctrl-C.** During ``fit`` the signal only sets a flag here. At the end of the next batch that
    completes an optimiser step (:func:`at_step_boundary`: with ``accumulate_grad_batches=k`` the k-th
    micro-batch of the window, so the checkpoint never misses part of a window's gradient), every rank agrees
    (any rank that saw a signal counts), Lightning's loop stops (``SIGTERMException``), ``last.ckpt`` is saved, and
    rank 0 prints the exact command that resumes the run (:func:`resume_command`: this run's overrides,
    ``ckpt_path=`` and the same run directory).

    **submitit** (``hydra/launcher=submitit_slurm`` / ``submitit_local``). submitit's own handler for its signal
    would requeue at once, mid-step, and with nothing saved the requeued job would start again from step 0.
    During ``fit`` the signal only sets a flag here; at the next step boundary every rank agrees, ``last.ckpt`` is
    saved, and rank 0 hands over to submitit's handler, which requeues the same job. The requeued job runs in the
    same directory and resumes from its own ``last.ckpt`` (``lgfn.cluster.job_dir.resume_path``), logging to the
    same W&B run (``lgfn.training.loggers.wandb_run_id``).

    The file is written through the trainer's checkpoint I/O, atomically with ``AtomicCheckpointIO``.
    """

    INTERRUPT_EXIT_CODE = 128 + signal.SIGINT

    def __init__(self, filename: str | None = None, exit_code: int = 128 + signal.SIGTERM) -> None:
        super().__init__()
        self.filename = filename
        self.exit_code = exit_code
        self.saved_path: Path | None = None
        self._preempt_signal: int | None = None  # the submitit signal, once received
        self._submitit_handler: Any = None
        self._stop_signal: int | None = None  # SIGTERM or SIGINT received during fit
        self._requeue_signal: int | None = None  # SLURM's requeue signal (SIGUSR1), where this callback handles it
        self._handlers: dict[int, Any] = {}  # the handlers replaced during fit
        self._trainer: L.Trainer | None = None

    def checkpoint_path(self, trainer: L.Trainer) -> Path:
        """Where the checkpoint goes: ModelCheckpoint's dirpath/last.ckpt, else <default_root_dir>/checkpoints."""
        cb = trainer.checkpoint_callback
        if isinstance(cb, ModelCheckpoint) and cb.dirpath:
            name = self.filename or cb.CHECKPOINT_NAME_LAST + cb.FILE_EXTENSION
            return Path(cb.dirpath) / name
        return Path(trainer.default_root_dir) / "checkpoints" / (self.filename or "last.ckpt")

    @staticmethod
    def submitit_signal() -> int | None:
        """submitit's pre-emption signal when this process belongs to a submitit job, else None."""
        if not os.environ.get("SUBMITIT_EXECUTOR"):
            return None
        name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
        return int(getattr(signal, name if name.startswith("SIG") else f"SIG{name}"))

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop_signal, self._preempt_signal, self._requeue_signal = None, None, None
        self._trainer = trainer
        if threading.current_thread() is not threading.main_thread():
            return
        # Lightning restores every handler it found at the start of the run when it ends (teardown); so does this.
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._handlers[signum] = signal.getsignal(signum)
            signal.signal(signum, self._note_stop)
        requeue = getattr(trainer.strategy, "slurm_requeue_signal", None)
        if requeue is not None:
            # trainer=ddp in an sbatch script without srun: Lightning starts the ranks, and its own SLURM requeue
            # handler is not installed; the same requeue (hpc checkpoint, scontrol requeue) at a step boundary.
            self._handlers[requeue] = signal.getsignal(requeue)
            signal.signal(requeue, self._note_requeue)
        signum = self.submitit_signal()
        if signum is None:
            return
        self._submitit_handler = signal.getsignal(signum)
        signal.signal(signum, self._note_preemption)

    def _note_stop(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self._stop_signal == signal.SIGINT:  # the second Ctrl-C: at once
            print(f"rank {_global_rank(self._trainer)}: second Ctrl-C: aborted without saving", file=sys.stderr,
                  flush=True)
            os._exit(self.INTERRUPT_EXIT_CODE)
        if self._stop_signal != signal.SIGINT:
            self._stop_signal = signum
        if _global_rank(self._trainer) == 0:
            name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            again = " (Ctrl-C again aborts at once)" if signum == signal.SIGINT else ""
            print(f"{name}: saving last.ckpt at the end of this optimiser step, then stopping{again}",
                  file=sys.stderr, flush=True)

    def _note_requeue(self, signum: int, frame: Any) -> None:
        self._requeue_signal = signum
        print(f"rank {_global_rank(self._trainer)}: {signal.Signals(signum).name}: saving an hpc checkpoint at the "
              "end of this optimiser step, then requeueing the SLURM job", file=sys.stderr, flush=True)

    def _slurm_requeue(self, trainer: L.Trainer) -> None:
        """Lightning's SLURM auto-requeue, at a step boundary and on every rank together: ``hpc_ckpt_<n>.ckpt`` in
        the run directory (the requeued job resumes from it, ``lgfn.cluster.job_dir.resume_path``), then rank 0
        calls ``scontrol requeue``; the ranks stop once it succeeded, and train on if it did not."""
        import subprocess

        path = trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir)
        trainer.save_checkpoint(path, weights_only=False)
        self.saved_path = Path(path)
        requeued = True
        if trainer.is_global_zero:
            job = os.environ.get("SLURM_JOB_ID", "")
            if os.environ.get("SLURM_ARRAY_JOB_ID"):
                job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
            try:
                requeued = subprocess.call(["scontrol", "requeue", job]) == 0
            except OSError as e:
                print(f"scontrol requeue {job} failed: {e}", file=sys.stderr, flush=True)
                requeued = False
            print(f"SLURM requeue: saved {path} at step {trainer.global_step}; "
                  + (f"requeued job {job}" if requeued else "requeue failed, training goes on"),
                  file=sys.stderr, flush=True)
        if trainer.world_size > 1:
            requeued = trainer.strategy.reduce_boolean_decision(requeued, all=True)
        self._requeue_signal = None
        if requeued:
            raise SystemExit(0)

    def _note_preemption(self, signum: int, frame: Any) -> None:
        self._preempt_signal = signum
        print(f"rank {_global_rank(self._trainer)}: {signal.Signals(signum).name}: saving last.ckpt at the end "
              "of this optimiser step, then requeueing", file=sys.stderr, flush=True)

    def _restore_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in self._handlers.items():
                with contextlib.suppress(Exception):
                    if signal.getsignal(signum) in (self._note_stop, self._note_requeue):
                        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._handlers = {}

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_handlers()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        connector = getattr(trainer, "_signal_connector", None)
        if not at_step_boundary(trainer):
            # Mid-accumulation: a stop now would save without the window's gradient. Hold Lightning's own SIGTERM
            # flag (set where its handler is still installed) until the boundary.
            if connector is not None and connector.received_sigterm:
                connector.received_sigterm = False
                self._stop_signal = self._stop_signal or signal.SIGTERM
            return
        stop = self._stop_signal is not None or bool(connector is not None and connector.received_sigterm)
        submitit = self.submitit_signal() is not None
        preempted = self._preempt_signal is not None
        if trainer.world_size > 1:  # every rank takes the same decision (any rank's signal counts)
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
            if submitit:
                preempted = trainer.strategy.reduce_boolean_decision(preempted, all=False)
        if stop and connector is not None:
            connector.received_sigterm = True  # Lightning's loop stops after this batch; on_exception saves
            self._stop_signal = self._stop_signal or signal.SIGTERM
            return
        if getattr(trainer.strategy, "slurm_requeue_signal", None) is not None:
            requeue = self._requeue_signal is not None
            if trainer.world_size > 1:
                requeue = trainer.strategy.reduce_boolean_decision(requeue, all=False)
            if requeue:
                self._slurm_requeue(trainer)
        if not (submitit and preempted):
            return
        path = self.checkpoint_path(trainer)
        trainer.save_checkpoint(path, weights_only=False)
        self.saved_path = path
        if not trainer.is_global_zero:
            raise SystemExit(0)  # rank 0 requeues the job; this rank just stops
        print(f"pre-empted: saved {path} at step {trainer.global_step}; the requeued job resumes from it",
              file=sys.stderr, flush=True)
        signum = self._preempt_signal or self.submitit_signal()
        handler = self._submitit_handler
        if callable(handler):
            handler(signum, None)  # submitit: dump the job, requeue it, exit
        raise SystemExit(self.exit_code)  # no submitit handler to requeue: stop like SIGTERM

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit":
            return
        path = self.checkpoint_path(trainer)
        trainer.save_checkpoint(path, weights_only=False)
        self.saved_path = path
        interrupted = self._stop_signal == signal.SIGINT
        if trainer.is_global_zero:
            name = "Ctrl-C" if interrupted else "SIGTERM"
            print(f"{name}: saved {path} at step {trainer.global_step}; resume with:\n  {resume_command(path)}",
                  file=sys.stderr, flush=True)
        # SIGTERMException exits with status 0, which a scheduler would read as success.
        exception.code = self.INTERRUPT_EXIT_CODE if interrupted else self.exit_code
        self._restore_handlers()


class PeriodicLastCheckpoint(L.Callback):
    """Write ``last.ckpt`` every ``every_n_train_steps`` optimiser steps and every ``every_n_minutes`` of wall time,
    whichever comes first, so a SIGKILL loses at most that much.

    The best-PSNR ModelCheckpoint writes only when validation runs; this keeps ``last.ckpt`` fresh in between
    (atomically, through the trainer's checkpoint I/O). Steps suit the CPU (200 steps of lgfn_small are minutes);
    on GPUs steps are seconds, and the wall-time interval bounds the loss instead (15 min by default). Under DDP
    every rank takes part in a save, so the ranks agree on the time (any rank's clock may trigger it). 0 turns
    either off.
    """

    def __init__(self, every_n_train_steps: int = 200, every_n_minutes: float = 15.0) -> None:
        super().__init__()
        if every_n_train_steps < 0:
            raise ValueError(f"callbacks.periodic_last.every_n_train_steps must be >= 0, got {every_n_train_steps}")
        if every_n_minutes < 0:
            raise ValueError(f"callbacks.periodic_last.every_n_minutes must be >= 0, got {every_n_minutes}")
        self.every = every_n_train_steps
        self.every_s = 60.0 * every_n_minutes
        self._last_save = time.monotonic()
        self._saved_step = -1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_save = time.monotonic()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        # Only where an optimiser step completed (gradient accumulation), and once per step.
        if trainer.sanity_checking or not at_step_boundary(trainer) or trainer.global_step == self._saved_step:
            return
        step = trainer.global_step
        due = bool(self.every) and step > 0 and step % self.every == 0
        if self.every_s:
            late = time.monotonic() - self._last_save >= self.every_s
            due = due or (trainer.strategy.reduce_boolean_decision(late, all=False) if trainer.world_size > 1
                          else late)
        if due:
            trainer.save_checkpoint(SaveOnSignal(None).checkpoint_path(trainer), weights_only=False)
            self._last_save = time.monotonic()
            self._saved_step = step


class StepProgressBar(RichProgressBar):
    """Lightning's rich progress bar, counting optimiser steps out of ``max_steps`` when steps bound the run.

    Lightning's bar counts the batches of each epoch and titles it "Epoch e/max_epochs-1", which reads
    "Epoch 31/-2" with ``max_epochs=-1``. Here, with ``trainer.max_steps > 0``, the bar runs from 0 to
    ``max_steps`` across epochs ("Epoch 31, step  120/500"); epoch-bounded runs keep Lightning's bar. The
    logger's version (``v_num``) is not a metric and is not shown.
    """

    @staticmethod
    def _by_steps(trainer: L.Trainer) -> bool:
        return trainer.max_steps is not None and trainer.max_steps > 0

    @property
    def total_train_batches(self) -> int | float:
        if self._by_steps(self.trainer):
            return self.trainer.max_steps
        return super().total_train_batches

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        if not self._by_steps(trainer) and trainer.max_epochs is not None and trainer.max_epochs > 0:
            return super()._get_train_description(current_epoch)
        text = f"Epoch {current_epoch}"
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            text += f"/{trainer.max_epochs}"
        if self._by_steps(trainer):
            text += ", step"
        return f"{text:{len(self.validation_description)}}"

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._by_steps(trainer) or self._leave or self.is_disabled:
            super().on_train_epoch_start(trainer, pl_module)
            return
        # Lightning resets the bar to 0 each epoch; a step bar goes on: only its title changes.
        description = self._get_train_description(trainer.current_epoch)
        if self.progress is not None:
            if self.train_progress_bar_id is None:
                self.train_progress_bar_id = self._add_task(self.total_train_batches, description)
                self.progress.update(self.train_progress_bar_id, completed=trainer.global_step)
            else:
                styled = f"[{self.theme.description}]{description}" if self.theme.description else description
                self.progress.update(self.train_progress_bar_id, description=styled, visible=True)
        self.refresh()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self._by_steps(trainer):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        if not self.is_disabled and self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()  # resumed mid-epoch
        self._update(self.train_progress_bar_id, trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items

    # Not a terminal (a log file, a pipe): rich draws each bar once, at its end, 80 columns wide, and wraps the
    # metrics over several lines. There a bar is one line of up to this many characters (its natural width).
    LOG_WIDTH = 1000

    def _init_progress(self, trainer: L.Trainer) -> None:
        super()._init_progress(trainer)
        console = getattr(self, "_console", None)
        if console is not None and not console.is_terminal and not console.is_jupyter:
            if getattr(self, "_width_before", None) is None:
                self._width_before = console.width
            console.width = max(console.width, self.LOG_WIDTH)

    def _stop_progress(self) -> None:
        super()._stop_progress()
        console, width = getattr(self, "_console", None), getattr(self, "_width_before", None)
        if console is not None and width is not None:  # the shared console: others' tables keep its own width
            console.width = width
            self._width_before = None


class ModelSummary(RichModelSummary):
    """Lightning's rich model summary without its FLOPs column and total, which are 0 unless the module has an
    ``example_input_array``; instead one line with the network's real cost per output frame at LR 64 x 64
    (``lgfn.models.complexity.gflops_per_frame``, counted on the meta device: no compute), or nothing if the
    network cannot be counted that way.
    """

    LR_SIZE = (64, 64)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._max_depth or not trainer.is_global_zero:
            return
        summary = self._summary(trainer, pl_module)
        data = summary._get_summary_data()
        flops = getattr(summary, "total_flops", 0)
        if flops:
            cost = f"Total FLOPs: {get_human_readable_count(flops)}"
        else:
            data = [col for col in data if col[0] != "FLOPs"]
            gflops = self.net_gflops(pl_module)
            cost = (None if gflops is None else
                    f"FLOPs per output frame: {gflops:.3g} G at LR {self.LR_SIZE[0]}x{self.LR_SIZE[1]}")
        self.print_summary(data, summary.total_parameters, summary.trainable_parameters, summary.model_size,
                           summary.total_training_modes, cost, **self._summarize_kwargs)

    def net_gflops(self, pl_module: L.LightningModule) -> float | None:
        net = getattr(pl_module, "net", None)
        if net is None or not any(True for _ in net.parameters()):
            return None
        try:
            gflops = gflops_per_frame(net, self.LR_SIZE)
        except Exception:  # noqa: BLE001 - a network this counter does not understand: show nothing
            return None
        return gflops if gflops > 0 else None

    @staticmethod
    def print_summary(summary_data: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                      model_size: float, total_training_modes: dict[str, int], cost: str | None,
                      **summarize_kwargs: Any) -> None:
        """RichModelSummary.summarize's table and totals, with ``cost`` (or nothing) as the last line."""
        from rich import get_console
        from rich.table import Table

        console = get_console()
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        styles = {" ": "dim", "In sizes": "white", "Out sizes": "white"}
        for name, _ in summary_data:
            right = name in ("Params", "Params per Device", "FLOPs", "In sizes", "Out sizes")
            table.add_column(name, justify="right" if right else "left", no_wrap=name == "Name",
                             style=styles.get(name))
        for row in zip(*(values for _, values in summary_data), strict=True):
            table.add_row(*row)
        console.print(table)
        grid = Table.grid(expand=True)
        grid.add_column()
        rows = [
            ("Trainable params", get_human_readable_count(int(trainable_parameters))),
            ("Non-trainable params", get_human_readable_count(int(total_parameters - trainable_parameters))),
            ("Total params", get_human_readable_count(int(total_parameters))),
            ("Total estimated model params size (MB)", get_formatted_model_size(model_size)),
            ("Modules in train mode", total_training_modes["train"]),
            ("Modules in eval mode", total_training_modes["eval"]),
        ]
        for label, value in rows:
            grid.add_row(f"[bold]{label}[/]: {value}")
        if cost:
            label, value = cost.split(": ", 1)
            grid.add_row(f"[bold]{label}[/]: {value}")
        console.print(grid)
