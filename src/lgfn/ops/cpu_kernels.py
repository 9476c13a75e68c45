"""The C++ sampling kernels of the CPU deformable convolution (csrc/), built on first use and cached.

`torch.utils.cpp_extension.load` compiles csrc/deform_conv_cpu.cpp once per source and torch version (about
15 s on 2 cores) into a folder under TORCH_EXTENSIONS_DIR (default ~/.cache/torch_extensions) and registers
`torch.ops.lgfn_dcn`. `make install` builds it up front (`python -m lgfn.ops`). When the build is impossible (no C++
compiler, no ninja) or LGFN_DCN_KERNELS=0, `available()` is False and `deform_conv2d` uses its pure-PyTorch
path, with one warning saying why.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from pathlib import Path

import torch

__all__ = ["ENV_SWITCH", "available", "build", "build_directory", "needs_compile", "ops"]

ENV_SWITCH = "LGFN_DCN_KERNELS"
_SOURCE_DIR = Path(__file__).resolve().parent / "csrc"
_NAME = "lgfn_dcn_cpu"
_log = logging.getLogger(__name__)
_lock = threading.Lock()
_state: dict[str, object] = {}


def _disabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off")


def _cpp_extension():
    """`torch.utils.cpp_extension`, imported without its "No CUDA runtime is found" note (irrelevant for a CPU op)."""
    cpp_log = logging.getLogger("torch.utils.cpp_extension")
    level = cpp_log.level
    cpp_log.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        cpp_log.setLevel(level)
    return cpp_extension


def build_directory() -> Path:
    """Where the build lives: one folder per torch version (torch's own cache key ignores it, and a
    library built against other torch headers would fail to load)."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or _cpp_extension().get_default_build_root()
    tag = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in torch.__version__)
    return Path(root).expanduser() / f"{_NAME}-torch{tag}"


def needs_compile(folder: Path | None = None) -> bool:
    """Whether `build` will compile: no built library in `folder` yet, or a source newer than it (ninja's rule)."""
    folder = build_directory() if folder is None else folder
    library = folder / f"{_NAME}.so"
    if not library.is_file() or not (folder / "build.ninja").is_file():
        return True
    built = library.stat().st_mtime
    return any(src.stat().st_mtime > built for src in _SOURCE_DIR.iterdir() if src.suffix in (".cpp", ".h"))


def build(verbose: bool = False) -> None:
    """Compile (or load the cached build of) the kernels; raises if that is impossible here."""
    load = _cpp_extension().load
    folder = build_directory()
    folder.mkdir(parents=True, exist_ok=True)  # torch serialises concurrent builds with an OS file lock
    load(
        name=_NAME,
        sources=[str(_SOURCE_DIR / "deform_conv_cpu.cpp")],
        extra_include_paths=[str(_SOURCE_DIR)],
        extra_cflags=["-O3", "-fopenmp"],
        extra_ldflags=["-fopenmp"],
        build_directory=str(folder),
        is_python_module=False,
        verbose=verbose,
    )


def available() -> bool:
    """True when `torch.ops.lgfn_dcn` is loaded (building it on the first call); never raises."""
    if "ok" in _state:
        return bool(_state["ok"])
    with _lock:
        if "ok" not in _state:
            _state["ok"] = _try_build()
    return bool(_state["ok"])


def _try_build() -> bool:
    if _disabled():
        return False
    if hasattr(torch.ops, "lgfn_dcn") and hasattr(torch.ops.lgfn_dcn, "columns"):
        return True
    if needs_compile():  # a cached build loads at once: nothing to announce
        _log.info("compiling the C++ deformable-conv kernels (once per torch version, about 15 s)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # cpp_extension's notes about CUDA_HOME and compiler versions
            build()
    except Exception as exc:  # noqa: BLE001 - any build failure means: use the pure-PyTorch path
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        warnings.warn(
            f"lgfn: could not build the C++ deformable-conv kernels ({reason}); using the slower pure-PyTorch "
            f"path. Set {ENV_SWITCH}=0 to skip the attempt.",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    return True


def ops():
    """`torch.ops.lgfn_dcn` (call `available()` first)."""
    return torch.ops.lgfn_dcn


def main() -> int:
    """`python -m lgfn.ops`: build now and say where; exit 1 with the reason if impossible."""
    if _disabled():
        print(f"{ENV_SWITCH}=0: kernels disabled, nothing built")
        return 0
    try:
        build(verbose=False)
    except Exception as exc:  # noqa: BLE001
        print(f"error: could not build the C++ deformable-conv kernels: {exc}", file=sys.stderr)
        return 1
    print(f"C++ deformable-conv kernels ready (torch.ops.lgfn_dcn, built in {build_directory()})")
    return 0
