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


class PoisonBatch(L.Callback):
    """Fill the LR batch of rank ``rank`` with NaN at training batch ``batch`` (counted over the whole run, so one
    micro-batch of an accumulation window can be poisoned)."""

    def __init__(self, rank: int = 0, batch: int = 2) -> None:
        self.rank, self.batch, self.seen = rank, batch, -1

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self.seen += 1
        if trainer.global_rank == self.rank and self.seen == self.batch:
            batch["lr"].fill_(float("nan"))


class SignalSelf(L.Callback):
    """Send signal ``signum`` to this process (rank ``rank``) at the end of training batch ``batch`` (counted over
    the run), as a user's Ctrl-C (SIGINT) or a scheduler's SIGTERM would arrive mid-training."""

    def __init__(self, signum: int = 2, batch: int = 2, rank: int = 0, times: int = 1) -> None:
        self.signum, self.batch, self.rank, self.times, self.seen = signum, batch, rank, times, -1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        import os

        self.seen += 1
        if trainer.global_rank == self.rank and self.seen == self.batch:
            for _ in range(self.times):
                os.kill(os.getpid(), self.signum)


class FailBeforeInit(L.Callback):
    """Raise ``RuntimeError(message)`` when built in DDP rank ``rank`` (a child Lightning started: LOCAL_RANK), i.e.
    before that rank reaches ``init_process_group``; with ``exit_code`` set, end the process that way instead."""

    def __init__(self, rank: int = 1, message: str = "injected failure before init", exit_code: int | None = None):
        import os

        if int(os.environ.get("LOCAL_RANK", 0) or 0) == rank:
            if exit_code is not None:
                os._exit(exit_code)
            raise RuntimeError(message)
