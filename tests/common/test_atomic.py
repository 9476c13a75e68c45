"""Published files get the umask's usual permissions (temp files start as 0600) and replace atomically."""

from __future__ import annotations

import os
import stat

import torch

from lgfn.checkpoints.lightning_io import atomic_torch_save
from lgfn.common.atomic import publish


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_checkpoint_and_folder_permissions_follow_the_umask(tmp_path):
    path = tmp_path / "a.pt"
    atomic_torch_save({"x": torch.ones(2)}, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left
    folder = tmp_path / ".tmpdir"
    folder.mkdir(mode=0o700)
    publish(folder, tmp_path / "out")
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o777 & ~_umask()
