"""Loggers: Lightning's, minus the noise a user cannot act on."""

from __future__ import annotations

import functools

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
            from lgfn.jobs import wandb_run_id

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
