"""Training callbacks: a checkpoint on SIGTERM (pre-emption outside SLURM's requeue), the console's progress bar
and model summary."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, RichModelSummary, RichProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.model_summary.model_summary import (
    get_formatted_model_size,
    get_human_readable_count,
)


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
            from lgfn.models.complexity import gflops_per_frame

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
