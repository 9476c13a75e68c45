"""BasicSR's LMDB frame stores, read as they are (``scripts/data_preparation/create_lmdb.py``).

A store is a folder ``NAME.lmdb`` holding ``data.mdb``, ``lock.mdb`` and ``meta_info.txt``. Values
are PNG files' bytes as OpenCV's ``imencode`` wrote them from BGR arrays (a PNG stores RGB, so any
PNG decoder gives RGB); keys are ASCII, one line of ``meta_info.txt`` per key:
``{key}.png ({h},{w},{c}) {compress_level}``. For Vimeo-90K:

- ``vimeo90k_train_GT_only4th.lmdb``: keys ``00001/0001/im4`` (the HR centre frame only);
- ``vimeo90k_train_LR7frames.lmdb``: keys ``00001/0001/im1`` .. ``im7`` (MATLAB-bicubic LR, i.e. BI).

The project addresses a stored frame by a path ``<store>.lmdb/<key>.png`` (``frame_path``), so a
``Clip`` of an LMDB looks like one of files; ``lgfn.data.io.read_u8`` sends such paths here. Stores
are opened read-only, without locks or readahead (as BasicSR does), once per process: a DataLoader
worker opens its own after the fork, never the parent's handle.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import torch

SUFFIX = ".lmdb"
VIMEO_GT = "vimeo90k_train_GT_only4th.lmdb"
VIMEO_LR = "vimeo90k_train_LR7frames.lmdb"
_META_LINE = re.compile(r"^(?P<key>\S+?)(?:\.png)?\s+\((?P<h>\d+),\s*(?P<w>\d+),\s*(?P<c>\d+)\)(?:\s+(?P<level>\d+))?\s*$")
_envs: dict[str, object] = {}
_env_pid: int | None = None


def frame_path(store: str | Path, key: str) -> Path:
    """The path that stands for ``key`` of ``store`` (``<store>/<key>.png``)."""
    return Path(store) / f"{key}.png"


def split_path(path: str | os.PathLike) -> tuple[str, str] | None:
    """``(store folder, key)`` of a ``frame_path``, or None for an ordinary file."""
    s = os.fspath(path)
    marker = SUFFIX + os.sep
    i = s.rfind(marker)
    if i < 0:
        return None
    key = s[i + len(marker) :].replace(os.sep, "/")
    return s[: i + len(SUFFIX)], key[:-4] if key.lower().endswith(".png") else key


def read_meta_info(store: str | Path) -> dict[str, tuple[int, int, int]]:
    """``{key: (h, w, c)}`` from the store's ``meta_info.txt``."""
    meta = Path(store) / "meta_info.txt"
    if not meta.is_file():
        raise FileNotFoundError(f"LMDB store {store} has no meta_info.txt (BasicSR's create_lmdb.py writes one)")
    out: dict[str, tuple[int, int, int]] = {}
    for number, line in enumerate(meta.read_text().splitlines(), 1):
        if not line.strip():
            continue
        m = _META_LINE.match(line.strip())
        if m is None:
            raise ValueError(f"{meta}:{number}: expected '{{key}}.png (h,w,c) level', got {line!r}")
        out[m["key"]] = (int(m["h"]), int(m["w"]), int(m["c"]))
    return out


def _env(store: str):
    global _env_pid
    if _env_pid != os.getpid():  # a forked worker must not use its parent's handles
        _envs.clear()
        _env_pid = os.getpid()
    env = _envs.get(store)
    if env is None:
        try:
            import lmdb
        except ImportError:  # pragma: no cover - a declared dependency
            raise ImportError("reading an LMDB store needs the lmdb package: pip install lmdb") from None
        if not Path(store, "data.mdb").is_file():
            raise FileNotFoundError(f"LMDB store {store} has no data.mdb")
        env = lmdb.open(store, readonly=True, lock=False, readahead=False, meminit=False, max_readers=2048)
        _envs[store] = env
    return env


def read_bytes(store: str | Path, key: str) -> bytes:
    """The stored value of ``key`` (PNG bytes)."""
    with _env(os.fspath(store)).begin(write=False) as txn:
        value = txn.get(key.encode("ascii"))
    if value is None:
        raise FileNotFoundError(f"key {key!r} is not in the LMDB store {store}")
    return bytes(value)


def decode_png_u8(data: bytes, where: str) -> torch.Tensor:
    """PNG bytes -> ``3 x H x W`` uint8 RGB."""
    import torchvision.io as tio

    try:
        img = tio.decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8), tio.ImageReadMode.RGB)
    except RuntimeError as e:
        raise ValueError(f"unreadable PNG {where}: {e}") from None
    if img.dtype != torch.uint8:  # 16-bit PNG: keep the high byte, as PIL's RGB conversion does
        img = (img.to(torch.int32) >> 8).to(torch.uint8)
    return img


def read_u8(store: str | Path, key: str) -> torch.Tensor:
    """Frame ``key`` of ``store``: ``3 x H x W`` uint8 RGB."""
    return decode_png_u8(read_bytes(store, key), f"{key!r} in {store}")


def write_store(store: str | Path, frames: dict[str, np.ndarray], compress_level: int = 1) -> None:
    """Write ``{key: H x W x 3 uint8 RGB}`` as BasicSR does (PNG values, ``meta_info.txt``); for tests and tools."""
    import lmdb
    from PIL import Image

    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    total = sum(a.nbytes for a in frames.values())
    env = lmdb.open(str(store), map_size=max(1 << 20, total * 10))
    lines = []
    with env.begin(write=True) as txn:
        for key, arr in frames.items():
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="PNG", compress_level=compress_level)
            txn.put(key.encode("ascii"), buf.getvalue())
            h, w, c = arr.shape
            lines.append(f"{key}.png ({h},{w},{c}) {compress_level}\n")
    env.close()
    (store / "meta_info.txt").write_text("".join(lines))
