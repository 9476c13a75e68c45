"""``ClipTable``: a dataset's clips as a few numpy arrays instead of one Python object per clip and frame.

64,612 Vimeo-90K clips as ``Clip`` objects are about a million ``Path`` objects (~200 MiB), and a
DataLoader worker that merely reads them touches their reference counts, so copy-on-write duplicates
those pages in every worker. A table holds the same facts in arrays that are never written after
construction: each clip's folder (relative to a shared root, HR and LR), its frame names as indices
into a pool of distinct names, its fixed target frame and its HR size. ``table.clip(i)`` rebuilds the
``Clip`` of one sample when it is loaded. Tables are what the scan-once manifest stores
(``lgfn.data.manifest``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from lgfn.data.layouts import Clip


def _str_array(values: Sequence[str]) -> np.ndarray:
    return np.asarray(list(values), dtype=str) if len(values) else np.zeros(0, dtype="<U1")


def _split_dirs(dirs: list[str]) -> tuple[str, np.ndarray]:
    """A common root and every folder relative to it ('' for the root itself)."""
    if not dirs:
        return "", _str_array([])
    root = os.path.commonpath(dirs) if len(set(dirs)) > 1 else os.path.dirname(dirs[0])
    rel = [os.path.relpath(d, root) for d in dirs]
    return root, _str_array(["" if r == "." else r for r in rel])


class ClipTable:
    """Clips as arrays; ``len``, ``[i]`` (a ``Clip``), ``[a:b]`` (a table) and iteration (``Clip``s) as a list."""

    ARRAYS = ("names", "hr_dirs", "lr_dirs", "pool", "lr_pool", "frames", "lr_frames", "offsets", "centres",
              "sizes")

    def __init__(self, *, hr_root: str, lr_root: str, names, hr_dirs, lr_dirs, pool, lr_pool, frames, lr_frames,
                 offsets, centres, sizes) -> None:
        self.hr_root, self.lr_root = str(hr_root), str(lr_root)
        self.names, self.hr_dirs, self.lr_dirs = names, hr_dirs, lr_dirs
        self.pool, self.lr_pool = pool, lr_pool
        self.frames, self.lr_frames, self.offsets = frames, lr_frames, offsets
        self.centres, self.sizes = centres, sizes

    # ------------------------------------------------------------------ building
    @classmethod
    def from_clips(cls, clips: Sequence[Clip] | ClipTable) -> ClipTable:
        if isinstance(clips, ClipTable):
            return clips
        clips = list(clips)
        for c in clips:
            for paths, what in ((c.hr, "HR"), (c.lr or [], "LR")):
                if len({os.fspath(Path(p).parent) for p in paths}) > 1:
                    raise ValueError(f"clip {c.name!r}: its {what} frames are not in one folder")
        hr_root, hr_dirs = _split_dirs([os.fspath(Path(c.hr[0]).parent) for c in clips])
        with_lr = [c for c in clips if c.lr]
        if with_lr and len(with_lr) != len(clips):
            raise ValueError("a table's clips either all have pre-made LR frames or none do")
        lr_root, lr_dirs = _split_dirs([os.fspath(Path(c.lr[0]).parent) for c in with_lr])
        counts = np.array([len(c.hr) for c in clips], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        pool, frames = np.unique(_str_array([Path(p).name for c in clips for p in c.hr]), return_inverse=True)
        if with_lr:
            lr_pool, lr_frames = np.unique(_str_array([Path(p).name for c in clips for p in c.lr]),
                                           return_inverse=True)
        else:
            lr_pool, lr_frames = _str_array([]), np.zeros(0, dtype=np.int32)
        return cls(
            hr_root=hr_root, lr_root=lr_root, names=_str_array([c.name for c in clips]), hr_dirs=hr_dirs,
            lr_dirs=lr_dirs, pool=pool, lr_pool=lr_pool, frames=frames.astype(np.int32),
            lr_frames=lr_frames.astype(np.int32), offsets=offsets,
            centres=np.array([-1 if c.centre is None else c.centre for c in clips], dtype=np.int16),
            sizes=np.array([c.size or (0, 0) for c in clips], dtype=np.int32).reshape(len(clips), 2),
        )

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in self.ARRAYS}

    # ------------------------------------------------------------------ access
    @property
    def has_lr(self) -> bool:
        return len(self.lr_frames) > 0

    def counts(self) -> np.ndarray:
        """Frames per clip."""
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.names)

    def length(self, i: int) -> int:
        return int(self.offsets[i + 1] - self.offsets[i])

    def name(self, i: int) -> str:
        return str(self.names[i])

    def centre(self, i: int) -> int | None:
        c = int(self.centres[i])
        return None if c < 0 else c

    def size(self, i: int) -> tuple[int, int] | None:
        h, w = (int(v) for v in self.sizes[i])
        return (h, w) if h > 0 else None

    def clip(self, i: int) -> Clip:
        """The ``Clip`` of row ``i`` (paths rebuilt from the arrays)."""
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        hr_dir = os.path.join(self.hr_root, str(self.hr_dirs[i]))
        hr = [Path(hr_dir, str(self.pool[k])) for k in self.frames[a:b]]
        lr = None
        if self.has_lr:
            lr_dir = os.path.join(self.lr_root, str(self.lr_dirs[i]))
            lr = [Path(lr_dir, str(self.lr_pool[k])) for k in self.lr_frames[a:b]]
        return Clip(name=self.name(i), hr=hr, lr=lr, centre=self.centre(i), size=self.size(i))

    def __getitem__(self, key: int | slice) -> Clip | ClipTable:
        if isinstance(key, slice):
            return self.select(np.arange(len(self))[key])
        i = int(key)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"clip index {key} out of range for {len(self)} clips")
        return self.clip(i)

    def __iter__(self) -> Iterator[Clip]:
        for i in range(len(self)):
            yield self.clip(i)

    def select(self, rows: np.ndarray) -> ClipTable:
        """The clips of ``rows`` (indices), in that order."""
        rows = np.asarray(rows, dtype=np.int64)
        counts = self.counts()[rows]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        take = np.concatenate([np.arange(self.offsets[r], self.offsets[r + 1]) for r in rows]) if len(rows) else \
            np.zeros(0, dtype=np.int64)
        return ClipTable(
            hr_root=self.hr_root, lr_root=self.lr_root, names=self.names[rows], hr_dirs=self.hr_dirs[rows],
            lr_dirs=self.lr_dirs[rows] if self.has_lr else self.lr_dirs, pool=self.pool, lr_pool=self.lr_pool,
            frames=self.frames[take], lr_frames=self.lr_frames[take] if self.has_lr else self.lr_frames,
            offsets=offsets, centres=self.centres[rows], sizes=self.sizes[rows],
        )

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays().values())


def as_table(clips: Sequence[Clip] | ClipTable) -> ClipTable:
    """``clips`` as a ``ClipTable`` (a table is returned as it is)."""
    return ClipTable.from_clips(clips)
