"""What a training run prints: the progress bar, the model summary, the kernels' build note, and no third-party
noise (while real warnings and logs still show)."""

from __future__ import annotations

import io
import logging
import os
import time
import warnings

import lightning as L
import pytest
import rich
import torch
from entry import compose_cfg
from hydra.utils import instantiate
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import CSVLogger
from rich.console import Console
from torch.utils.data import DataLoader, TensorDataset

from lgfn.app import config
from lgfn.common.errors import ConfigError
from lgfn.models import LGFN
from lgfn.models.complexity import gflops_per_frame
from lgfn.ops import cpu_kernels
from lgfn.training import loggers
from lgfn.training.callbacks import ModelSummary, StepProgressBar

TINY = dict(num_frames=3, num_feat=8, num_extract_blocks=1, num_align_stages=1, deformable_groups=2,
            num_lfm=1, num_gfm=1, gfm_slice_channels=2, num_rcab=1)


class Linear(L.LightningModule):
    """Four samples, two batches an epoch: a run of 5 steps spans 3 epochs."""

    def __init__(self, net: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        if net is not None:
            self.net = net

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.layer.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=2)


def fit(tmp_path, callbacks, **trainer_kwargs) -> L.Trainer:
    trainer = L.Trainer(callbacks=callbacks, logger=CSVLogger(tmp_path), enable_checkpointing=False,
                        accelerator="cpu", log_every_n_steps=1, **trainer_kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Linear())
    return trainer


def bar_text(bar_cls, tmp_path, **trainer_kwargs) -> str:
    buf = io.StringIO()
    bar = bar_cls(console_kwargs=dict(file=buf, force_terminal=True, width=120, color_system=None))
    fit(tmp_path, [bar], enable_model_summary=False, **trainer_kwargs)
    return buf.getvalue().split("\r")[-1]  # the bar's last state


# ----------------------------------------------------------------------------- progress bar
def test_step_bounded_run_shows_steps_out_of_max_steps(tmp_path):
    lightning_bar = bar_text(RichProgressBar, tmp_path / "a", max_steps=5, max_epochs=-1)
    assert "Epoch 2/-2" in lightning_bar and "v_num" in lightning_bar  # what users saw
    ours = bar_text(StepProgressBar, tmp_path / "b", max_steps=5, max_epochs=-1)
    assert "Epoch 2, step" in ours and "5/5" in ours
    assert "-2" not in ours and "v_num" not in ours and "train/loss" in ours


def test_epoch_bounded_run_keeps_lightnings_epoch_bar(tmp_path):
    ours = bar_text(StepProgressBar, tmp_path, max_epochs=2)
    assert "Epoch 1/1" in ours and "2/2" in ours and "v_num" not in ours


def test_the_default_callbacks_use_these_classes(tmp_path):
    cfg = compose_cfg("train", [], tmp_path)
    assert isinstance(instantiate(cfg.callbacks.progress_bar), StepProgressBar)
    assert isinstance(instantiate(cfg.callbacks.model_summary), ModelSummary)


# ----------------------------------------------------------------------------- model summary
def summary_text(monkeypatch, module: L.LightningModule, tmp_path) -> str:
    buf = io.StringIO()
    monkeypatch.setattr(rich, "get_console", lambda: Console(file=buf, width=120, color_system=None))
    trainer = L.Trainer(max_steps=1, callbacks=[ModelSummary()], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, accelerator="cpu", default_root_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module)
    return buf.getvalue()


def test_model_summary_shows_the_networks_real_flops(monkeypatch, tmp_path):
    net = LGFN(**TINY)
    text = summary_text(monkeypatch, Linear(net), tmp_path)
    expected = gflops_per_frame(LGFN(**TINY), (64, 64))
    assert expected > 0.1
    assert f"FLOPs per output frame: {expected:.3g} G at LR 64x64" in text
    assert "Total FLOPs: 0" not in text and "FLOPs ┃" not in text  # no column of zeros
    assert "Total params" in text and "LGFN" in text


def test_model_summary_without_a_countable_network_shows_no_flops(monkeypatch, tmp_path):
    text = summary_text(monkeypatch, Linear(), tmp_path)
    assert "FLOPs" not in text and "Total params" in text


# ----------------------------------------------------------------------------- C++ kernels
def test_needs_compile_follows_the_build_folder(tmp_path):
    assert cpu_kernels.needs_compile(tmp_path)  # nothing built
    library = tmp_path / f"{cpu_kernels._NAME}.so"
    (tmp_path / "build.ninja").write_text("")
    library.write_bytes(b"")
    assert not cpu_kernels.needs_compile(tmp_path)  # newer than every source: ninja has nothing to do
    old = min(p.stat().st_mtime for p in cpu_kernels._SOURCE_DIR.iterdir()) - 10
    os.utime(library, (old, old))
    assert cpu_kernels.needs_compile(tmp_path)  # a source changed since the build


def test_this_machines_cached_build_needs_no_compile():
    assert cpu_kernels.available()
    assert not cpu_kernels.needs_compile()


@pytest.mark.parametrize("built", [True, False])
def test_build_note_only_when_it_really_compiles(monkeypatch, tmp_path, caplog, built):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    folder = cpu_kernels.build_directory()
    if built:
        folder.mkdir(parents=True)
        (folder / "build.ninja").write_text("")
        (folder / f"{cpu_kernels._NAME}.so").write_bytes(b"")
        now = time.time() + 5
        os.utime(folder / f"{cpu_kernels._NAME}.so", (now, now))
    monkeypatch.setattr(cpu_kernels, "_state", {})
    monkeypatch.setattr(cpu_kernels, "build", lambda verbose=False: None)
    monkeypatch.setattr(torch.ops, "lgfn_dcn", object(), raising=False)  # pretend nothing is loaded yet
    with caplog.at_level(logging.INFO, logger=cpu_kernels.__name__):
        assert cpu_kernels.available()
    notes = [r.getMessage() for r in caplog.records if "deformable-conv kernels" in r.getMessage()]
    assert notes == ([] if built else ["compiling the C++ deformable-conv kernels (once per torch version, about 15 s)"])


# ----------------------------------------------------------------------------- third-party noise
class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def rank_zero_messages():
    """Every record Lightning's rank-zero loggers let through (after their filters)."""
    handler = _Records()
    names = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
    for name in names:
        logging.getLogger(name).addHandler(handler)
    yield handler.messages
    for name in names:
        logging.getLogger(name).removeHandler(handler)


def test_lightning_adverts_are_dropped_and_its_other_messages_kept(tmp_path, rank_zero_messages, monkeypatch):
    L.Trainer(logger=CSVLogger(tmp_path), accelerator="cpu", enable_progress_bar=False)
    assert not [m for m in rank_zero_messages if "litlogger" in m or "litmodels" in m]
    assert any(m.startswith("GPU available") for m in rank_zero_messages)  # real information still shows
    # The filter is what removes the tip: without it, Lightning prints it.
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        monkeypatch.setattr(logging.getLogger(name), "filters", [])
    L.Trainer(logger=CSVLogger(tmp_path), accelerator="cpu", enable_progress_bar=False)
    assert any("litlogger" in m for m in rank_zero_messages)


def test_only_the_named_warnings_are_silenced():
    from torch.utils._pytree import LeafSpec

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loggers.quiet_third_party()  # what importing lgfn.training.loggers does in train.py / eval.py
        LeafSpec()
        warnings.warn("a real problem", UserWarning, stacklevel=1)
        warnings.warn("something is deprecated", FutureWarning, stacklevel=1)
        for key in ("val/psnr", "vid4/temporal_gain", "vid4/slow/ssim", "val/my_metric"):
            # Lightning's advice under DDP, as its logger connector words it
            warnings.warn(f"It is recommended to use `self.log('{key}', ..., sync_dist=True)` when logging on "
                          "epoch level in distributed setting to accumulate the metric across devices.", stacklevel=1)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "LeafSpec" in m]
    assert "a real problem" in messages and "something is deprecated" in messages
    # LitLGFN's metrics are gathered before logging: the advice is dropped for them, kept for anyone else's.
    advice = [m for m in messages if m.startswith("It is recommended")]
    assert len(advice) == 1 and "'val/my_metric'" in advice[0]
    with warnings.catch_warnings(record=True) as caught:  # the control: without the filter, it shows
        warnings.simplefilter("always")
        LeafSpec()
    assert [w for w in caught if "LeafSpec" in str(w.message)]


def test_wandb_logger_does_not_pass_the_anonymous_setting(tmp_path):
    from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger

    from lgfn.training.loggers import WandbLogger

    assert "anonymous" in LightningWandbLogger(save_dir=str(tmp_path), offline=True)._wandb_init
    ours = WandbLogger(save_dir=str(tmp_path), offline=True, project="p")
    assert "anonymous" not in ours._wandb_init and ours._wandb_init["project"] == "p"
    assert WandbLogger(save_dir=str(tmp_path), anonymous=True)._wandb_init["anonymous"] == "allow"
    cfg = compose_cfg("train", ["logger=wandb"], tmp_path)
    assert cfg.logger.wandb._target_ == "lgfn.training.loggers.WandbLogger"
    config.validate_config(cfg)
    # Lightning's signature is what the config check reads (wraps keeps it): a wrong type is still caught.
    bad = compose_cfg("train", ["logger=wandb", "+logger.wandb.offline=maybe"], tmp_path)
    with pytest.raises(ConfigError, match=r"logger\.wandb\.offline='maybe': expected bool"):
        config.validate_config(bad)


@pytest.mark.slow
def test_wandb_run_prints_no_anonymous_warning(tmp_path):
    """A real offline W&B run with the project's logger, then (as the control) Lightning's in the same process."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from lgfn.training.loggers import WandbLogger\n"
        "from lightning.pytorch.loggers import WandbLogger as Lightning\n"
        f"run = WandbLogger(save_dir={str(tmp_path)!r}, offline=True, project='p').experiment\n"
        "run.finish()\n"
        "print('=== control', file=sys.stderr, flush=True)\n"
        f"run = Lightning(save_dir={str(tmp_path)!r}, offline=True, project='p').experiment\n"
        "run.finish()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "false"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    ours, control = proc.stderr.split("=== control")
    assert "anonymous setting" not in ours
    assert "anonymous setting" in control


# ----------------------------------------------------------------------------- quiet normal runs (issue 24)
def test_in_a_log_file_the_bar_is_one_line_and_the_consoles_width_is_restored(tmp_path):
    buf = io.StringIO()
    bar = StepProgressBar(console_kwargs=dict(file=buf, force_terminal=False, width=40, color_system=None))
    fit(tmp_path, [bar], enable_model_summary=False, max_steps=5, max_epochs=-1)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    assert len(lines) == 1 and "5/5" in lines[0] and "train/loss" in lines[0], lines
    assert rich.get_console().width == 40  # others' tables keep the console's own width


def test_ddp_test_sampler_and_pre_validation_checkpoint_warnings_are_silenced():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loggers.quiet_third_party()
        for fn in ("test", "validate"):
            warnings.warn(f"Using `DistributedSampler` with the dataloaders. During `trainer.{fn}()`, it is "
                          "recommended to use `Trainer(devices=1, num_nodes=1)` ...", stacklevel=1)
        warnings.warn("`ModelCheckpoint(monitor='val/psnr')` could not find the monitored key in the returned "
                      "metrics: ['train/loss']. HINT: ...", stacklevel=1)
        warnings.warn("`ModelCheckpoint(monitor='val/loss')` could not find the monitored key in the returned "
                      "metrics: ['train/loss']. HINT: ...", stacklevel=1)  # someone else's monitor: kept
    assert [str(w.message)[:37] for w in caught] == ["`ModelCheckpoint(monitor='val/loss')`"]
