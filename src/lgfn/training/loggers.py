"""Loggers: Lightning's, minus the noise a user cannot act on."""

from __future__ import annotations

import functools
import logging
import os
import secrets
import warnings
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger


class WandbLogger(_LightningWandbLogger):
    """Lightning's WandbLogger without its ``anonymous=None`` argument to ``wandb.init``.

    Lightning always passes ``anonymous`` (None unless asked for), and wandb (0.31) warns "The anonymous
    setting has no effect and will be removed in a future version" on every run for any value but unset.
    An explicit ``anonymous=true`` is still passed on. Same constructor (and so the same config-key check).
    """

    @functools.wraps(_LightningWandbLogger.__init__)
    def __init__(self, *args, **kwargs) -> None:
        if not args and kwargs.get("id") is None and kwargs.get("version") is None and kwargs.get("experiment") is None:
            # One W&B run per run directory: a requeued, resumed or re-run job logs to the same run.
            kwargs["id"] = wandb_run_id(kwargs.get("save_dir") or kwargs.get("dir") or ".")
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        """The whole config, plus what W&B's grouping and parallel-coordinates views need as top-level keys."""
        if isinstance(params, dict):
            params = {**run_keys(params), **params}
        super().log_hyperparams(params, *args, **kwargs)


def run_keys(cfg: dict) -> dict:
    """Top-level summary of a run's config: experiment, seed, ablation toggles and model size."""
    net = (cfg.get("model") or {}).get("net") or {}
    keys = {"experiment": cfg.get("experiment_name"), "seed": cfg.get("seed"),
            "use_dmdcu": net.get("use_dmdcu"), "use_lfm": net.get("use_lfm"), "use_gfm": net.get("use_gfm"),
            "centre_only": (cfg.get("data") or {}).get("centre_only"), "num_feat": net.get("num_feat")}
    try:
        from hydra.core.hydra_config import HydraConfig

        keys["model_size"] = HydraConfig.get().runtime.choices.get("model")
    except ValueError:
        pass
    return {k: v for k, v in keys.items() if v is not None}


__all__ = ["WandbLogger", "run_keys"]
# ---------------------------------------------------------------------------- third-party noise
class _DropLightningNoise(logging.Filter):
    """Lightning's "💡 Tip" adverts for its cloud packages (litlogger, litmodels), and its note that the
    configured ``lgfn.training.callbacks.ModelSummary`` replaces its default one; every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith("💡 Tip") and ("litlogger" in message or "litmodels" in message):
            return False
        return not message.startswith("Trainer already configured with model summary callbacks")


def quiet_third_party() -> None:
    """Silence messages a user cannot act on, each matched by its own text; other warnings and logs still show.

    (W&B's "anonymous setting" warning is avoided at its source, ``lgfn.training.loggers.WandbLogger``.)
    """
    # Lightning 2.6 on torch >= 2.10 builds torch's deprecated LeafSpec in its own code, at every fit and test.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
    # Under DDP Lightning advises sync_dist for every epoch-level metric; LitLGFN's evaluation metrics are
    # gathered from all ranks before they are logged (every rank logs the same value), so the advice does not apply
    # to them. Any other key (a user's own metric) still gets it.
    warnings.filterwarnings(
        "ignore",
        message=r"It is recommended to use `self\.log\('[^']+/(psnr|ssim|psnr_bicubic|ssim_bicubic|temporal_gain|"
                r"tof|tof_bicubic)', \.\.\., sync_dist=True\)`",
    )
    # Lightning advises one device for validate/test because its DistributedSampler pads the last batch with
    # repeated samples; LitLGFN keys every record by its sample index and gathers them from all ranks, so each
    # sample counts exactly once (LitLGFN._gather_records) and the advice does not apply.
    warnings.filterwarnings(
        "ignore", message=r"Using `DistributedSampler` with the dataloaders\. During `trainer\.(validate|test)\(\)`")
    # A run that stops (max_steps) before its first validation has no val/psnr yet: Lightning warns at the end of
    # the epoch and keeps last.ckpt only (train.py says which checkpoints there are). After a validation a missing
    # key is an error in Lightning itself, so a real misconfiguration still stops the run.
    warnings.filterwarnings(
        "ignore", message=r"`ModelCheckpoint\(monitor='val/psnr'\)` could not find the monitored key")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropLightningNoise) for f in log.filters):
            log.addFilter(_DropLightningNoise())


quiet_third_party()


def wandb_run_id(save_dir: str | os.PathLike) -> str:
    """A W&B run id kept in ``<save_dir>/wandb/run_id``: a requeued or resumed job logs to the same run."""
    folder = Path(save_dir) / "wandb"
    path = folder / "run_id"
    try:
        return path.read_text().strip()
    except OSError:
        pass
    folder.mkdir(parents=True, exist_ok=True)
    candidate = secrets.token_hex(4)
    tmp = folder / f".run_id.{os.getpid()}.{candidate}"
    tmp.write_text(candidate + "\n")
    try:
        os.link(tmp, path)  # atomic; the first writer wins when several ranks start together
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text().strip()
