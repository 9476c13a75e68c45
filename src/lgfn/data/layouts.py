"""Finding clips on disk, per dataset layout, and checking them before any training starts.

Layouts (LGFN_REFERENCE.md "On-disk layouts to accept"):
- Vimeo-90K: ``<root>/sequences/<seq>/<clip>/im1..im7.png`` + ``sep_trainlist.txt`` /
  ``sep_testlist.txt`` (or BasicSR's ``meta_info_Vimeo90K_{train,test}_GT.txt``), optional
  slow/medium/fast lists (any ``*.txt`` in root whose name holds the word), optional pre-made LR in
  ``sequences_BIx4`` / ``bicubic_LR`` / ``BIx4`` (bi) or ``sequences_BDx4`` / ``BDx4`` (bd); and
  mmagic's ``<root>/GT/<seq>/<clip>`` beside ``BIx4`` / ``BDx4``.
- Vid4 / SPMCS (mmagic): ``<root>/GT/<clip>/*.png`` (or ``HR/``) with optional ``BIx4`` /
  ``bicubic_LR`` (bi) or ``BDx4`` (bd); SPMCS original: ``<root>/<clip>/truth/*.png``.
- Any folder: ``<root>/<clip>/*.png|jpg`` (or images directly in ``<root>``: one clip).
- BasicSR's Vimeo-90K LMDBs: ``vimeo90k_train_GT_only4th.lmdb`` and ``vimeo90k_train_LR7frames.lmdb``
  beside ``sep_trainlist.txt``: the train split (BI) reads them (``lgfn.data.lmdb_store``); test clips
  still come from ``sequences/``.
Pre-made LR frames are paired with HR frames by sorted order; without them LR is made on the fly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from lgfn.data import lmdb_store
from lgfn.data.io import image_size, list_images, natural_key

log = logging.getLogger(__name__)

VIMEO_FRAMES = [f"im{i}.png" for i in range(1, 8)]
VIMEO_CENTRE = 3  # im4
_GROUP_WORDS = ("slow", "medium", "fast")

VIMEO_LAYOUT = (
    "<root>/sequences/<seq>/<clip>/im1..im7.png with sep_trainlist.txt and sep_testlist.txt "
    "(or mmagic's <root>/GT/<seq>/<clip>/im*.png)"
)
PAIRED_LAYOUT = (
    "<root>/GT/<clip>/*.png (or <root>/HR/<clip>) with optional <root>/BIx4|BDx4|bicubic_LR/<clip>, "
    "or <root>/<clip>/truth/*.png"
)
FOLDER_LAYOUT = "<root>/<clip>/<frames>.png|jpg"


@dataclass
class Clip:
    """One clip: HR frame paths, optional pre-made LR paths (same order), optional fixed target."""

    name: str
    hr: list[Path]
    lr: list[Path] | None = None
    centre: int | None = None  # Vimeo-90K: only im4 is a target
    size: tuple[int, int] | None = None  # HR (H, W), filled by validate_clips

    def __len__(self) -> int:
        return len(self.hr)


@dataclass
class ClipSet:
    clips: list[Clip]  # or a lgfn.data.table.ClipTable (from the manifest): same len / [i] / [a:b] / iteration
    lr_dir: Path | None = None  # where pre-made LR came from (None: degrade on the fly)
    groups: dict[str, list[str]] = field(default_factory=dict)


def require_root(root: str | Path, layout: str) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data.root {root} does not exist or is not a folder; expected {layout}")
    return root


def _lr_candidates(degradation: str, scale: int) -> list[str]:
    if degradation == "bi":
        return [f"sequences_BIx{scale}", f"BIx{scale}", "bicubic_LR", f"LR_bicubic_x{scale}"]
    return [f"sequences_BDx{scale}", f"BDx{scale}"]


def check_relative_entry(entry: str, where: str) -> str:
    """A list entry must stay inside the dataset root: relative, no ``..``, no ``~``, no backslashes."""
    parts = PurePosixPath(entry).parts
    if entry.startswith(("/", "~", "\\")) or "\\" in entry or ".." in parts or PureWindowsPath(entry).drive:
        raise ValueError(
            f"{where}: entry {entry!r} must be a clip path relative to the dataset root (no '..', no absolute path)"
        )
    return entry


def read_clip_list(path: str | Path) -> list[str]:
    """Clip names, one per line (first whitespace token; blank lines and ``#`` comments skipped)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"data.clip_list file {path} does not exist")
    names = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(check_relative_entry(line.split()[0], f"{path}:{number}"))
    if not names:
        raise ValueError(f"clip list {path} names no clips")
    return names


# --------------------------------------------------------------------------- Vimeo-90K


def _vimeo_list_file(root: Path, split: str) -> Path | None:
    names = {
        "train": ["sep_trainlist.txt", "meta_info_Vimeo90K_train_GT.txt"],
        "test": ["sep_testlist.txt", "meta_info_Vimeo90K_test_GT.txt"],
    }[split]
    for n in names:
        if (root / n).is_file():
            return root / n
    return None


def vimeo_group_lists(root: Path) -> dict[str, Path]:
    """Slow/medium/fast test lists found in ``root`` (e.g. ``sep_testlist_slow.txt``, ``slow_testset.txt``)."""
    found: dict[str, Path] = {}
    files = sorted((p for p in root.glob("*.txt") if p.is_file()), key=lambda p: natural_key(p.name))
    for word in _GROUP_WORDS:
        hits = [p for p in files if word in p.name.lower() and "train" not in p.name.lower()]
        # Prefer names that also say "test" when several match.
        hits.sort(key=lambda p: "test" not in p.name.lower())
        if hits:
            found[word] = hits[0]
    return found


def _vimeo_lmdb(root: Path, names: list[str], source: Path, degradation: str, scale: int) -> ClipSet | None:
    """Train clips from BasicSR's two LMDBs beside the list, or None when they are not there."""
    gt, lr = root / lmdb_store.VIMEO_GT, root / lmdb_store.VIMEO_LR
    if not (gt.is_dir() and lr.is_dir()):
        return None
    if degradation != "bi" or scale != 4:
        if any((root / d).is_dir() for d in ("sequences", "GT")):
            log.info("%s holds BI x4 frames; data.degradation=%s x%d reads the PNG clips", lr, degradation, scale)
            return None
        raise FileNotFoundError(
            f"{lr} holds BasicSR's MATLAB-bicubic (BI) x4 frames; data.degradation={degradation} x{scale} needs "
            f"the HR clips in {root / 'sequences'} (or LR frames made by `lgfn-prepare vimeo90k {root}`)"
        )
    gt_meta, lr_meta = lmdb_store.read_meta_info(gt), lmdb_store.read_meta_info(lr)
    clips = []
    for name in names:
        key = f"{name}/im{VIMEO_CENTRE + 1}"
        if key not in gt_meta:
            raise FileNotFoundError(f"clip {name!r} listed in {source} is missing from {gt} (no key {key!r})")
        h, w, _ = gt_meta[key]
        for i in range(1, 8):
            k = f"{name}/im{i}"
            if k not in lr_meta:
                raise FileNotFoundError(f"clip {name!r} listed in {source} is missing from {lr} (no key {k!r})")
            if lr_meta[k][:2] != (h // scale, w // scale):
                raise ValueError(
                    f"LR frame {k!r} in {lr} is {lr_meta[k][0]}x{lr_meta[k][1]}, expected {h // scale}x{w // scale} "
                    f"(HR {h}x{w} in {gt} / {scale})"
                )
        # Only im4 is stored in HR; the other six stand in for the window's length (never read).
        hr = [lmdb_store.frame_path(gt, f"{name}/{f[:-4]}") for f in VIMEO_FRAMES]
        lr_paths = [lmdb_store.frame_path(lr, f"{name}/{f[:-4]}") for f in VIMEO_FRAMES]
        clips.append(Clip(name=name, hr=hr, lr=lr_paths, centre=VIMEO_CENTRE, size=(h, w)))
    return ClipSet(clips=clips, lr_dir=lr)


def discover_vimeo90k(
    root: str | Path, split: str, degradation: str = "bi", scale: int = 4, clip_list: str | None = None
) -> ClipSet:
    """Vimeo-90K clips of ``split`` ("train" | "test"); test clips carry their slow/medium/fast groups."""
    root = require_root(root, VIMEO_LAYOUT)
    if split == "train":
        list_file = _vimeo_list_file(root, split)
        if list_file is not None and (root / lmdb_store.VIMEO_GT).is_dir():
            found = _vimeo_lmdb(root, read_clip_list(list_file), list_file, degradation, scale)
            if found is not None:
                return found
    hr_root = next((root / d for d in ("sequences", "GT") if (root / d).is_dir()), None)
    if hr_root is None:
        raise FileNotFoundError(f"no {root / 'sequences'} (or {root / 'GT'}) folder; expected {VIMEO_LAYOUT}")
    lr_root = next((root / d for d in _lr_candidates(degradation, scale) if (root / d).is_dir()), None)

    groups: dict[str, list[str]] = {}
    if split == "test":
        for word, path in vimeo_group_lists(root).items():
            groups[word] = read_clip_list(path)
    if clip_list is not None and split == "test":
        names, source = read_clip_list(clip_list), Path(clip_list)
    else:
        list_file = _vimeo_list_file(root, split)
        if list_file is not None:
            names, source = read_clip_list(list_file), list_file
        elif split == "test" and groups:
            names = sorted({n for g in groups.values() for n in g}, key=natural_key)
            source = root
        else:
            want = "sep_trainlist.txt" if split == "train" else "sep_testlist.txt"
            raise FileNotFoundError(
                f"Vimeo-90K {split} list {root / want} not found; expected {VIMEO_LAYOUT}"
            )

    clips = []
    for name in names:
        d = hr_root / name
        if not d.is_dir():
            raise FileNotFoundError(f"clip {name!r} listed in {source} is missing: {d} does not exist")
        hr = [d / f for f in VIMEO_FRAMES]
        # Frames beyond im7 would be ignored; missing ones are reported now, not mid-epoch.
        for p in hr:
            if not p.is_file():
                raise FileNotFoundError(
                    f"clip {name!r}: frame {p} is missing (Vimeo-90K clips hold im1..im7.png)"
                )
        lr = None
        if lr_root is not None:
            lr = [lr_root / name / f for f in VIMEO_FRAMES]
            for p in lr:
                if not p.is_file():
                    raise FileNotFoundError(
                        f"clip {name!r}: pre-made LR frame {p} is missing (from {lr_root})"
                    )
        clips.append(Clip(name=name, hr=hr, lr=lr, centre=VIMEO_CENTRE))
    known = {c.name for c in clips}
    groups = {g: [n for n in ns if n in known] for g, ns in groups.items()}
    return ClipSet(clips=clips, lr_dir=lr_root, groups={g: ns for g, ns in groups.items() if ns})


# --------------------------------------------------------------------------- Vid4 / SPMCS / folder


def clip_dirs(parent: Path) -> list[Path]:
    dirs = [p for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return sorted(dirs, key=lambda p: natural_key(p.name))


def _select(clips: dict[str, Path], clip_list: str | None, where: Path) -> list[str]:
    if clip_list is None:
        return list(clips)
    names = read_clip_list(clip_list)
    for n in names:
        if n not in clips:
            raise FileNotFoundError(
                f"clip {n!r} listed in {clip_list} is missing: {where / n} does not exist"
            )
    return names


def frame_files(folder: Path) -> list[Path]:
    frames = list_images(folder)
    if not frames:
        raise FileNotFoundError(f"clip folder {folder} holds no images (.png/.jpg/...)")
    return frames


def discover_paired(
    root: str | Path, degradation: str = "bi", scale: int = 4, clip_list: str | None = None
) -> ClipSet:
    """Vid4/SPMCS-style sets: GT (or HR) clips, optional pre-made LR; or SPMCS ``<clip>/truth``."""
    root = require_root(root, PAIRED_LAYOUT)
    hr_root = next((root / d for d in ("GT", "HR") if (root / d).is_dir()), None)
    if hr_root is not None:
        hr_dirs = {p.name: p for p in clip_dirs(hr_root)}
        where = hr_root
    else:  # SPMCS as released: <root>/<clip>/truth/
        hr_dirs = {p.name: p / "truth" for p in clip_dirs(root) if (p / "truth").is_dir()}
        where = root
    if not hr_dirs:
        raise FileNotFoundError(f"no clips found under {root}; expected {PAIRED_LAYOUT}")
    lr_root = next((root / d for d in _lr_candidates(degradation, scale) if (root / d).is_dir()), None)

    clips = []
    for name in _select(hr_dirs, clip_list, where):
        hr = frame_files(hr_dirs[name])
        lr = None
        if lr_root is not None:
            lr_dir = lr_root / name
            if not lr_dir.is_dir():
                raise FileNotFoundError(f"clip {name!r}: pre-made LR folder {lr_dir} is missing")
            lr = frame_files(lr_dir)
            if len(lr) != len(hr):
                raise ValueError(
                    f"clip {name!r}: {len(lr)} LR frames in {lr_dir} but {len(hr)} HR frames in {hr_dirs[name]}"
                )
        clips.append(Clip(name=name, hr=hr, lr=lr))
    return ClipSet(clips=clips, lr_dir=lr_root)


def discover_folder(root: str | Path, clip_list: str | None = None) -> ClipSet:
    """Any ``<root>/<clip>/<frames>``; LR is always made on the fly."""
    root = require_root(root, FOLDER_LAYOUT)
    dirs = {p.name: p for p in clip_dirs(root) if list_images(p)}
    if not dirs:
        if list_images(root):
            dirs = {root.name: root}
        else:
            raise FileNotFoundError(f"no clips with images found under {root}; expected {FOLDER_LAYOUT}")
    return ClipSet(clips=[Clip(name=n, hr=frame_files(dirs[n])) for n in _select(dirs, clip_list, root)])


# --------------------------------------------------------------------------- checks


def validate_clips(clips: list[Clip], scale: int, max_images: int = 60_000) -> None:
    """Header + truncation check of the frames; equal HR sizes per clip; LR = HR // scale.

    Every image is checked when there are at most ``max_images`` of them; beyond that, an evenly
    spaced subset of clips is checked whole (the others were already checked for existence).
    """
    total = sum(len(c.hr) + (len(c.lr) if c.lr else 0) for c in clips)
    chosen = clips
    if total > max_images:
        per_clip = max(1, total // max(1, len(clips)))
        n = max(1, max_images // per_clip)
        step = len(clips) / n
        chosen = [clips[int(i * step)] for i in range(n)]
        log.info("checking %d of %d clips' images (%d images in total)", len(chosen), len(clips), total)
    for clip in chosen:
        if clip.size is not None and lmdb_store.split_path(clip.hr[0]) is not None:
            continue  # an LMDB's clips: sizes and presence were checked against its meta_info.txt
        sizes = [image_size(p) for p in clip.hr]
        if len(set(sizes)) > 1:
            odd = next(p for p, s in zip(clip.hr, sizes, strict=True) if s != sizes[0])
            raise ValueError(
                f"clip {clip.name!r}: frames differ in size ({sizes[0][0]}x{sizes[0][1]} vs "
                f"{image_size(odd)[0]}x{image_size(odd)[1]} in {odd})"
            )
        h, w = sizes[0]
        if h < scale or w < scale:
            raise ValueError(
                f"clip {clip.name!r}: frame {clip.hr[0]} ({h}x{w}) is smaller than the scale {scale}"
            )
        clip.size = (h, w)
        if clip.lr:
            want = (h // scale, w // scale)
            for p in clip.lr:
                got = image_size(p)
                if got != want:
                    raise ValueError(
                        f"pre-made LR frame {p} is {got[0]}x{got[1]}, expected {want[0]}x{want[1]} "
                        f"(HR {h}x{w} / {scale})"
                    )
