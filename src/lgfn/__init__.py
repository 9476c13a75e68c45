"""LGFN: Local-Global Fusion Network for 4x video super-resolution.

`lgfn.models.LGFN` is the network (plain PyTorch); `lgfn.LitLGFN` wraps it for Lightning.
"""

import os as _os

# OpenMP threads that spin while waiting stall badly when another process (a data-loader worker, a second
# DDP rank, a parallel sweep job) shares the cores: measured 1.2 s vs 14-30 s per lgfn_small training step
# on 2 cores. Passive waiting costs little when the cores are free. Takes effect if torch is not loaded yet.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lightning is imported only when the LightningModule is asked for, so `import lgfn.models` stays light.
    if name == "LitLGFN":
        from lgfn.training.lit_module import LitLGFN

        return LitLGFN
    raise AttributeError(f"module 'lgfn' has no attribute {name!r}")
