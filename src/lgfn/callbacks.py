"""Training callbacks: a checkpoint on SIGTERM (pre-emption outside SLURM's requeue)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException


class SaveOnSignal(L.Callback):
    """On SIGTERM, save ``last.ckpt`` at the batch boundary where Lightning stops, then exit with 128 + 15.

    Lightning's own SIGTERM handler only sets a flag; its loops raise ``SIGTERMException`` (a ``SystemExit``
    with status 0) once the current training batch is done, so the state saved here is a consistent one
    (no half-applied optimizer step). The file is written through the trainer's checkpoint I/O, atomically
    with ``AtomicCheckpointIO``. Resume with ``ckpt_path=<that file>``. Under SLURM, Lightning's
    ``SLURMEnvironment`` also saves ``hpc_ckpt_*.ckpt`` and requeues the job on ``SIGUSR1``.
    """

    def __init__(self, filename: str | None = None, exit_code: int = 128 + signal.SIGTERM) -> None:
        super().__init__()
        self.filename = filename
        self.exit_code = exit_code
        self.saved_path: Path | None = None

    def checkpoint_path(self, trainer: L.Trainer) -> Path:
        """Where the checkpoint goes: ModelCheckpoint's dirpath/last.ckpt, else <default_root_dir>/checkpoints."""
        cb = trainer.checkpoint_callback
        if isinstance(cb, ModelCheckpoint) and cb.dirpath:
            name = self.filename or cb.CHECKPOINT_NAME_LAST + cb.FILE_EXTENSION
            return Path(cb.dirpath) / name
        return Path(trainer.default_root_dir) / "checkpoints" / (self.filename or "last.ckpt")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit":
            return
        path = self.checkpoint_path(trainer)
        trainer.save_checkpoint(path, weights_only=False)
        self.saved_path = path
        if trainer.is_global_zero:
            print(f"SIGTERM: saved {path} at step {trainer.global_step}; resume with ckpt_path={path}",
                  file=sys.stderr, flush=True)
        # SIGTERMException exits with status 0, which a scheduler would read as success.
        exception.code = self.exit_code


class PeriodicLastCheckpoint(L.Callback):
    """Write ``last.ckpt`` every ``every_n_train_steps`` optimiser steps, so a SIGKILL loses at most that many.

    The best-PSNR ModelCheckpoint writes only when validation runs; this keeps ``last.ckpt`` fresh in between
    (atomically, through the trainer's checkpoint I/O). 0 turns it off.
    """

    def __init__(self, every_n_train_steps: int = 200) -> None:
        super().__init__()
        if every_n_train_steps < 0:
            raise ValueError(f"callbacks.periodic_last.every_n_train_steps must be >= 0, got {every_n_train_steps}")
        self.every = every_n_train_steps

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every and step > 0 and step % self.every == 0 and not trainer.sanity_checking:
            trainer.save_checkpoint(SaveOnSignal(None).checkpoint_path(trainer), weights_only=False)
