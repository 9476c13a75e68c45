"""Image reading and cheap integrity checks (PIL; RGB float32 tensors 3 x H x W in [0, 1])."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_END = b"\xff\xd9"


def natural_key(name: str) -> list:
    """Sort key so ``frame2`` comes before ``frame10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, in natural order."""
    files = [p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: natural_key(p.name))


def read_u8(path: str | Path) -> torch.Tensor:
    """Read an image as RGB (grey/RGBA/palette converted): ``3 x H x W`` uint8.

    PNGs are decoded by torchvision's libpng decoder (about 15% faster than PIL here, same pixels: PNG
    is lossless), anything else and any PNG it refuses by PIL; a path inside a ``*.lmdb`` store
    (``lgfn.data.lmdb_store.frame_path``) is read from the store.
    """
    from lgfn.data import lmdb_store

    where = lmdb_store.split_path(path)
    if where is not None:
        return lmdb_store.read_u8(*where)
    if str(path).lower().endswith(".png"):
        import torchvision.io as tio

        try:
            img = tio.decode_png(tio.read_file(str(path)), tio.ImageReadMode.RGB)
            if img.dtype == torch.uint8 and img.shape[0] == 3:
                return img
        except (RuntimeError, OSError, ValueError):
            pass  # missing, truncated or unusual: PIL's path below raises the project's messages
    return _read_pil(path)


def read_image(path: str | Path) -> torch.Tensor:
    """Read an image as RGB (grey/RGBA/palette converted): ``3 x H x W`` float32 in [0, 1]."""
    return read_u8(path).float().div_(255.0)


def _read_pil(path: str | Path) -> torch.Tensor:
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            rgb = img.convert("RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise ValueError(f"unreadable or truncated image {path}: {e}") from None
    arr = np.asarray(rgb, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def image_size(path: str | Path) -> tuple[int, int]:
    """``(H, W)`` from the header, plus a truncation check on the file's end marker (PNG/JPEG).

    Decoding every frame of a large set up front is too slow; a truncated PNG lacks its final
    ``IEND`` chunk and a truncated JPEG its ``FFD9`` marker, which reading the last kilobyte detects.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            w, h = img.size
            fmt = img.format
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise ValueError(f"unreadable image {path}: {e}") from None
    end = {"PNG": _PNG_END, "JPEG": _JPEG_END}.get(fmt or "")
    if end is not None:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 1024))  # tolerate a little trailing junk after the marker
            tail = f.read()
        if end not in tail:
            raise ValueError(f"truncated image {path}: missing the {fmt} end marker")
    return h, w
