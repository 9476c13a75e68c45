"""LGFN: Local-Global Fusion Network for 4x video super-resolution.

`lgfn.models.LGFN` is the network (plain PyTorch); `lgfn.LitLGFN` wraps it for Lightning.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lightning is imported only when the LightningModule is asked for, so `import lgfn.models` stays light.
    if name == "LitLGFN":
        from lgfn.lit_module import LitLGFN

        return LitLGFN
    raise AttributeError(f"module 'lgfn' has no attribute {name!r}")
