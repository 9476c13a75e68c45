"""Every finished file is published in one step: written to a temp name beside its target, then renamed over it.

``atomic_path(target)`` is the one mechanism: it yields a private temp path in the target's folder (same
suffix, so writers that look at the extension accept it), and on success gives it the permissions of a
normal file under the umask and renames it onto the target; on any error (or Ctrl-C) the temp is removed
and the target is untouched. ``write_text_atomic``, ``write_json_atomic`` are the everyday
writers built on it (``lgfn.checkpoints.lightning_io.atomic_torch_save`` too). Readers therefore see the old file or the whole new one, never a part.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def publish(tmp: str | os.PathLike, target: str | os.PathLike) -> None:
    """Give `tmp` the permissions a normal file (or folder) gets under the umask, then rename it onto `target`.

    mkstemp/mkdtemp create 0600/0700 entries; outputs and checkpoints should read like any other file.
    """
    umask = os.umask(0)
    os.umask(umask)
    tmp = Path(tmp)
    tmp.chmod((0o777 if tmp.is_dir() else 0o666) & ~umask)
    os.replace(tmp, target)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield a temp file (or, with ``directory``, an empty temp folder) beside ``target``; publish it on success.

    The temp name is unique to this writer (``mkstemp``), so concurrent writers of one target never share it.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        publish(tmp, target)
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def write_text_atomic(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` (UTF-8) to ``path`` in one step."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def json_safe(obj: Any) -> Any:
    """Non-finite floats as JSON can hold them: NaN -> null, inf -> "inf" / "-inf" (recursively)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_json_atomic(obj: Any, path: str | os.PathLike, sort_keys: bool = False) -> Path:
    """JSON (indent 2, non-finite floats made safe) written in one step."""
    return write_text_atomic(json.dumps(json_safe(obj), indent=2, sort_keys=sort_keys) + "\n", path)
