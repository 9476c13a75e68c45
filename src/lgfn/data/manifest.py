"""Scan a dataset once: the discovered and checked clips saved as a ``ClipTable`` that later runs and other ranks read.

Discovery stats every frame and reads a header per image (``lgfn.data.layouts.validate_clips``):
seconds for Vimeo-90K on a local disk, minutes on a cluster file system with 8 ranks at once. The
manifest is an ``.npz`` of the table's arrays plus the ``ClipSet``'s groups and LR folder, keyed by
what was asked (layout, root, split, degradation, scale, clip list) and stamped with a fingerprint of
the folder: the names of the root's entries, the size and modification time of its files (lists, the
LMDBs' ``meta_info.txt`` / ``data.mdb``) and the modification times of the folders one and two
levels down (``sequences/<seq>``, ``GT/<clip>``, ``<clip>/truth``). Adding, removing or renaming a
clip or a frame, or editing a list, changes the fingerprint and the next run scans again; a frame
rewritten in place under the same name does not (delete the manifest, or ``data.manifest=false``).

Under DDP rank 0 scans (or loads) and writes, the others wait at a barrier and then read; a rank
that cannot read it (a cache folder not shared between nodes) scans for itself. Manifests live in
``data.manifest_dir``, else ``$LGFN_MANIFEST_DIR``, else ``$XDG_CACHE_HOME/lgfn/manifests`` (default
``~/.cache/lgfn/manifests``): never inside the dataset, which may be read-only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lgfn.common.atomic import atomic_path
from lgfn.data.layouts import ClipSet
from lgfn.data.table import ClipTable

log = logging.getLogger(__name__)
VERSION = 1


def manifest_dir(override: str | os.PathLike | None = None) -> Path:
    if override:
        return Path(override).expanduser()
    if os.environ.get("LGFN_MANIFEST_DIR"):
        return Path(os.environ["LGFN_MANIFEST_DIR"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "lgfn" / "manifests"


def fingerprint(root: str | os.PathLike) -> str:
    """A digest of the folder's structure two levels deep (see the module docstring); cheap: no frame is opened."""
    root = Path(root)
    h = hashlib.sha256()
    try:
        top = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as e:
        return f"unreadable:{e}"
    for entry in top:
        if entry.name.startswith("."):
            continue
        st = entry.stat()
        h.update(f"{entry.name}|{entry.is_dir()}|{st.st_mtime_ns}|{0 if entry.is_dir() else st.st_size}\n".encode())
        if entry.is_dir():
            try:
                subs = sorted(os.scandir(entry.path), key=lambda e: e.name)
            except OSError:
                continue
            for sub in subs:
                if sub.is_dir():
                    h.update(f"  {sub.name}|{sub.stat().st_mtime_ns}\n".encode())
                elif entry.name.endswith(".lmdb"):
                    st2 = sub.stat()
                    h.update(f"  {sub.name}|{st2.st_mtime_ns}|{st2.st_size}\n".encode())
    return h.hexdigest()


def _key_path(key: dict, folder: Path) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return folder / f"{key.get('layout', 'clips')}-{key.get('split', '')}-{digest}.npz"


def save(path: Path, cs: ClipSet, key: dict, stamp: str) -> None:
    table = ClipTable.from_clips(cs.clips)
    meta = {"version": VERSION, "key": key, "fingerprint": stamp, "hr_root": table.hr_root,
            "lr_root": table.lr_root, "lr_dir": None if cs.lr_dir is None else str(cs.lr_dir), "groups": cs.groups}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # readers see the old file or the whole new one
        np.savez(f, meta=np.array(json.dumps(meta)), **table.arrays())


def load(path: Path, key: dict, stamp: str) -> ClipSet | None:
    """The manifest at ``path`` if it is for ``key`` and the folder still has ``stamp``; else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("version") != VERSION or meta.get("key") != key or meta.get("fingerprint") != stamp:
                return None
            arrays = {k: z[k] for k in ClipTable.ARRAYS}
    except (OSError, ValueError, KeyError) as e:
        log.warning("ignoring unreadable manifest %s: %s", path, e)
        return None
    table = ClipTable(hr_root=meta["hr_root"], lr_root=meta["lr_root"], **arrays)
    lr_dir = None if meta["lr_dir"] is None else Path(meta["lr_dir"])
    return ClipSet(clips=table, lr_dir=lr_dir, groups={g: list(v) for g, v in meta["groups"].items()})


def _dist() -> tuple[int, int]:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except Exception:  # noqa: BLE001 - no usable process group: behave as one process
        pass
    return 0, 1


def _barrier() -> None:
    import torch.distributed as dist

    dist.barrier()


def _stat(path: str | os.PathLike) -> str:
    try:
        st = os.stat(path)
        return f"{os.fspath(path)}|{st.st_mtime_ns}|{st.st_size}"
    except OSError:
        return f"{os.fspath(path)}|missing"


def load_or_scan(root: str | os.PathLike, key: dict, scan: Callable[[], ClipSet],
                 folder: str | os.PathLike | None = None, watch: list | tuple = ()) -> ClipSet:
    """The ``ClipSet`` of ``key`` from its manifest, or ``scan()`` (then saved) when it is missing or stale.

    ``watch``: files outside ``root`` whose change also invalidates it (a clip list given by path).
    """
    root = Path(root).expanduser().resolve()
    key = {**key, "root": str(root)}
    path = _key_path(key, manifest_dir(folder))
    rank, world = _dist()
    stamp = fingerprint(root) + "".join(f";{_stat(p)}" for p in watch)
    result: ClipSet | None = None
    error: BaseException | None = None
    if rank == 0:
        start = time.perf_counter()
        result = load(path, key, stamp)
        if result is not None:
            log.info("clips of %s (%s) from the manifest %s in %.2f s", root, key.get("split"), path,
                     time.perf_counter() - start)
        else:
            try:
                result = scan()
                result = ClipSet(clips=ClipTable.from_clips(result.clips), lr_dir=result.lr_dir,
                                 groups=result.groups)
                try:
                    save(path, result, key, stamp)
                    log.info("scanned %s (%s): %d clips in %.1f s; manifest %s", root, key.get("split"),
                             len(result.clips), time.perf_counter() - start, path)
                except OSError as e:
                    log.warning("could not write the manifest %s (%s); later runs scan again", path, e)
            except BaseException as e:  # noqa: BLE001 - join the barrier first, so other ranks do not hang
                error = e
    if world > 1:
        _barrier()
    if error is not None:
        raise error
    if rank != 0:
        result = load(path, key, stamp) or scan()
    return result
