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
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)


__all__ = ["WandbLogger"]
