"""Publishing finished files: a temp file (or folder) beside the target, renamed over it in one step."""

from __future__ import annotations

import os
from pathlib import Path


def publish(tmp: str | os.PathLike, target: str | os.PathLike) -> None:
    """Give `tmp` the permissions a normal file (or folder) gets under the umask, then rename it onto `target`.

    mkstemp/mkdtemp create 0600/0700 entries; outputs and checkpoints should read like any other file.
    """
    umask = os.umask(0)
    os.umask(umask)
    tmp = Path(tmp)
    tmp.chmod((0o777 if tmp.is_dir() else 0o666) & ~umask)
    os.replace(tmp, target)
