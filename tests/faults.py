"""Faults injected into one DDP rank (``+callbacks.NAME._target_=faults.Class``; the tests put this folder on
PYTHONPATH, so every rank imports it)."""

from __future__ import annotations

import lightning as L


class PoisonOnRank(L.Callback):
    """Fill the LR batch of rank ``rank`` with NaN at optimiser step ``step``: a non-finite loss there only."""

    def __init__(self, rank: int = 1, step: int = 1) -> None:
        self.rank, self.step = rank, step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            batch["lr"].fill_(float("nan"))


class FailOnRank(L.Callback):
    """Raise ``RuntimeError(message)`` on rank ``rank`` at optimiser step ``step`` (the other ranks carry on into
    the step's collectives)."""

    def __init__(self, rank: int = 1, step: int = 1, message: str = "injected failure") -> None:
        self.rank, self.step, self.message = rank, step, message

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            raise RuntimeError(self.message)
