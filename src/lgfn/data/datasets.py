"""Training and test datasets of frame windows (LR ``N x 3 x h x w``, HR ``3 x sH x sW``, in [0, 1])."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from lgfn.data.io import read_image, read_u8
from lgfn.data.layouts import Clip
from lgfn.data.table import ClipTable, as_table
from lgfn.protocol.degradation import DEGRADATIONS, crop_margin, crop_to_multiple, degrade, quantize_8bit
from lgfn.protocol.windows import canonical_padding, centre_only_indices, check_num_frames, frame_indices


def _check_common(clips: ClipTable, num_frames: int, padding: str, degradation: str, scale: int) -> str:
    check_num_frames(num_frames)
    padding = canonical_padding(padding)
    if degradation not in DEGRADATIONS:
        raise ValueError(f"data.degradation must be one of {list(DEGRADATIONS)}, got {degradation!r}")
    if not isinstance(scale, int) or scale < 1:
        raise ValueError(f"data.scale must be a positive integer, got {scale!r}")
    if not len(clips):
        raise ValueError("the dataset has no clips")
    short = np.flatnonzero(clips.counts() < num_frames)
    if len(short):
        # A fixed centre (Vimeo im4) still needs the whole window inside the clip.
        i = int(short[0])
        raise ValueError(
            f"clip {clips.name(i)!r} has {clips.length(i)} frames, shorter than the window (data.num_frames={num_frames})"
        )
    return padding


def load_window(
    clip: Clip, idxs: list[int], degradation: str, scale: int, cache: dict | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """LR window ``N x 3 x h x w`` for frame indices ``idxs`` and the HR centre ``3 x s*h x s*w``.

    Pre-made LR is read when the clip has it; otherwise HR frames are cropped to multiples of
    ``scale``, degraded and rounded to 8 bits, as if the LR had been saved as PNG. With ``cache``
    (a dict owned by the dataset), each frame is read and degraded once and kept as 8-bit.
    """
    centre = idxs[len(idxs) // 2]
    unique = list(dict.fromkeys(idxs))
    if cache is not None and all((clip.name, j) in cache for j in unique):
        lr_frames = {j: cache[clip.name, j][1].float().div_(255) for j in unique}
        hr = cache[clip.name, centre][0].float().div_(255)
        return torch.stack([lr_frames[j] for j in idxs]), hr
    if clip.lr is not None:
        lr_frames = {j: read_image(clip.lr[j]) for j in unique}
        h, w = lr_frames[centre].shape[-2:]
        hr_frames = {j: read_image(clip.hr[j])[:, : h * scale, : w * scale] for j in (unique if cache is not None else [centre])}
    else:
        hr_frames = {j: crop_to_multiple(read_image(clip.hr[j]), scale) for j in unique}
        lr_unique = quantize_8bit(degrade(torch.stack([hr_frames[j] for j in unique]), degradation, scale))
        lr_frames = dict(zip(unique, lr_unique, strict=True))
    if cache is not None:
        for j in unique:
            cache[clip.name, j] = (_to_u8(hr_frames[j]), _to_u8(lr_frames[j]))
    return torch.stack([lr_frames[j] for j in idxs]).contiguous(), hr_frames[centre]


def load_patch(
    clip: Clip, idxs: list[int], degradation: str, scale: int, lr_patch: int, choose
) -> tuple[torch.Tensor, torch.Tensor]:
    """A training patch without the whole frames: LR ``N x 3 x p x p`` and HR ``3 x s*p x s*p`` (p = ``lr_patch``).

    ``choose(h, w) -> (top, left)`` picks the LR crop once the frame size is known. Pre-made LR frames
    are read and cropped; otherwise only the HR crop plus ``crop_margin`` LR pixels per side is
    degraded (``lgfn.protocol.degradation.degrade_crop``: the whole frame's LR values on the crop). Frames stay
    8-bit until cropped. Same values as ``load_window`` followed by the crop.
    """
    centre = idxs[len(idxs) // 2]
    unique = list(dict.fromkeys(idxs))
    if clip.lr is not None:
        lr_u8 = {j: read_u8(clip.lr[j]) for j in unique}
        h, w = lr_u8[centre].shape[-2:]
        top, left = choose(h, w)
        lr = torch.stack([lr_u8[j][:, top : top + lr_patch, left : left + lr_patch] for j in idxs])
        hr = read_u8(clip.hr[centre])
        hr = hr[:, scale * top : scale * (top + lr_patch), scale * left : scale * (left + lr_patch)]
        return lr.float().div_(255), hr.float().div_(255)
    hr_u8 = {j: crop_to_multiple(read_u8(clip.hr[j]), scale) for j in unique}
    h, w = (n // scale for n in hr_u8[centre].shape[-2:])
    top, left = choose(h, w)
    m = crop_margin(degradation, scale)
    t0, t1 = max(0, top - m), min(h, top + lr_patch + m)
    l0, l1 = max(0, left - m), min(w, left + lr_patch + m)
    region = torch.stack([hr_u8[j][:, scale * t0 : scale * t1, scale * l0 : scale * l1] for j in unique])
    lr_unique = quantize_8bit(degrade(region.float().div_(255), degradation, scale))
    lr_unique = lr_unique[..., top - t0 : top - t0 + lr_patch, left - l0 : left - l0 + lr_patch]
    row = {j: k for k, j in enumerate(unique)}
    lr = lr_unique[[row[j] for j in idxs]]
    hr = hr_u8[centre][:, scale * top : scale * (top + lr_patch), scale * left : scale * (left + lr_patch)]
    return lr.contiguous(), hr.float().div_(255)


def _window(ds: VSRTestDataset | VSRTrainDataset, t: int, length: int) -> list[int]:
    """Frame indices of the window around ``t`` (``centre_only``: the centre repeated)."""
    if ds.centre_only:
        return centre_only_indices(t, ds.num_frames)
    return frame_indices(t, ds.num_frames, length, ds.padding)


def _to_u8(x: torch.Tensor) -> torch.Tensor:
    # Frames are 8-bit on disk (or rounded to 8 bits when degraded), so this is lossless.
    return x.mul(255).round_().to(torch.uint8)


class VSRTestDataset(Dataset):
    """Every frame (or a clip's fixed centre) as a target; sample: lr, hr, clip, frame, index."""

    def __init__(
        self,
        clips: list[Clip] | ClipTable,
        *,
        num_frames: int = 7,
        padding: str = "reflection_circle",
        degradation: str = "bi",
        scale: int = 4,
        skip_edge_frames: bool = False,
        cache_frames: bool = False,
        centre_only: bool = False,
    ):
        clips = as_table(clips)
        self.padding = _check_common(clips, num_frames, padding, degradation, scale)
        self.cache: dict | None = {} if cache_frames else None
        self.clips, self.num_frames, self.degradation, self.scale = clips, num_frames, degradation, scale
        self.centre_only = bool(centre_only)
        items = []
        for ci in range(len(clips)):
            n, centre = clips.length(ci), clips.centre(ci)
            if centre is not None:
                targets = [centre]
            elif skip_edge_frames:
                if n < 3:
                    raise ValueError(
                        f"clip {clips.name(ci)!r} has {n} frames; skip_edge_frames needs at least 3"
                    )
                targets = list(range(1, n - 1))
            else:
                targets = list(range(n))
            items.extend((ci, t) for t in targets)
        # (clip, target frame) rows as one array: workers share it without copy-on-write.
        self.items = np.array(items, dtype=np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        ci, t = (int(v) for v in self.items[index])
        clip = self.clips.clip(ci)
        lr, hr = load_window(clip, _window(self, t, len(clip)), self.degradation, self.scale, self.cache)
        return {"lr": lr, "hr": hr, "clip": clip.name, "frame": t, "index": index}


class VSRTrainDataset(Dataset):
    """Random aligned patches; sample: lr ``N x 3 x p/s x p/s``, hr ``3 x p x p``, clip, frame."""

    def __init__(
        self,
        clips: list[Clip] | ClipTable,
        *,
        num_frames: int = 7,
        padding: str = "reflection_circle",
        degradation: str = "bi",
        scale: int = 4,
        patch_size: int = 192,
        augment: bool = True,
        temporal_reverse: bool = False,
        repeat: int = 1,
        cache_frames: bool = False,
        centre_only: bool = False,
    ):
        clips = as_table(clips)
        self.padding = _check_common(clips, num_frames, padding, degradation, scale)
        self.cache: dict | None = {} if cache_frames else None
        self.centre_only = bool(centre_only)
        if not isinstance(patch_size, int) or patch_size < scale or patch_size % scale:
            raise ValueError(
                f"data.patch_size must be a positive multiple of the scale {scale} (HR pixels), got {patch_size!r}"
            )
        if not isinstance(repeat, int) or repeat < 1:
            raise ValueError(f"data.train_repeat must be a positive integer, got {repeat!r}")
        known = clips.sizes[:, 0] > 0
        usable = np.minimum(clips.sizes[:, 0] - clips.sizes[:, 0] % scale, clips.sizes[:, 1] - clips.sizes[:, 1] % scale)
        small = np.flatnonzero(known & (usable < patch_size))
        if len(small):
            c = clips.clip(int(small[0]))
            h, w = c.size
            raise ValueError(
                f"data.patch_size={patch_size} is larger than clip {c.name!r} ({h}x{w}, {c.hr[0]})"
            )
        self.clips, self.num_frames, self.degradation, self.scale = clips, num_frames, degradation, scale
        self.patch_size, self.augment, self.temporal_reverse, self.repeat = (
            patch_size,
            augment,
            temporal_reverse,
            repeat,
        )
        self.items = np.array(
            [(ci, t) for ci in range(len(clips))
             for t in ([clips.centre(ci)] if clips.centre(ci) is not None else range(clips.length(ci)))],
            dtype=np.int64,
        ).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.items) * self.repeat

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """``key``: an index (crops/flips from the global torch RNG) or ``(index, sample_seed)`` from
        ``ResumableSampler`` (from a generator seeded with ``sample_seed``: reproducible in any process)."""
        index, gen = key, None
        if isinstance(key, (tuple, list)):
            index, sample_seed = key
            gen = torch.Generator().manual_seed(int(sample_seed))
        ci, t = (int(v) for v in self.items[index % len(self.items)])
        clip = self.clips.clip(ci)
        s, lp = self.scale, self.patch_size // self.scale

        def choose(h: int, w: int) -> tuple[int, int]:
            if h < lp or w < lp:
                raise ValueError(
                    f"data.patch_size={self.patch_size} is larger than clip {clip.name!r} (LR {h}x{w})"
                )
            top = int(torch.randint(0, h - lp + 1, (), generator=gen))
            return top, int(torch.randint(0, w - lp + 1, (), generator=gen))

        idxs = _window(self, t, len(clip))
        if self.cache is not None:  # whole frames, kept in memory after the first read
            lr, hr = load_window(clip, idxs, self.degradation, self.scale, self.cache)
            top, left = choose(*lr.shape[-2:])
            lr = lr[..., top : top + lp, left : left + lp]
            hr = hr[..., top * s : (top + lp) * s, left * s : (left + lp) * s]
        else:
            lr, hr = load_patch(clip, idxs, self.degradation, s, lp, choose)
        if self.augment:
            if torch.rand((), generator=gen) < 0.5:
                lr, hr = lr.flip(-1), hr.flip(-1)
            if torch.rand((), generator=gen) < 0.5:
                lr, hr = lr.flip(-2), hr.flip(-2)
            if torch.rand((), generator=gen) < 0.5:
                lr, hr = lr.transpose(-1, -2), hr.transpose(-1, -2)
        if self.temporal_reverse and torch.rand((), generator=gen) < 0.5:
            lr = lr.flip(0)
        return {"lr": lr.contiguous(), "hr": hr.contiguous(), "clip": clip.name, "frame": t}


def mix_seed(*values: int) -> int:
    """A well-spread 63-bit seed from non-negative integers (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1, np.uint64)[0] >> np.uint64(1))


class ResumableSampler(DistributedSampler):
    """Shuffled training order that depends only on (seed, epoch) and can start part-way into an epoch.

    Yields ``(index, sample_seed)`` with ``sample_seed = mix_seed(seed, epoch, index)``, so a sample's crop and
    flips do not depend on the process, the worker or what ran before: a run resumed from a checkpoint sees
    exactly the batches an uninterrupted run would. Under DDP each rank takes every ``num_replicas``-th index
    of the padded permutation (as ``DistributedSampler``; being one, Lightning does not replace it).

    **Resuming.** ``start``: this rank's position in its own share (the same world size only). ``consumed``: the
    epoch's *global* position, the number of the permutation's samples all ranks together used (ranks take
    positions ``r, r + W, ...`` so ``k`` batches of ``b`` on ``W`` ranks used the first ``k * b * W``): the rest of
    the permutation is dealt over *this* run's ranks, whatever their number, so a resume on another world size
    neither repeats nor skips a sample. ``len()`` is ``len_offset`` (the batches Lightning counts as done, times
    the batch size) plus what is left, so the epoch ends where its samples do.
    """

    def __init__(self, dataset, seed: int = 0, num_replicas: int | None = None, rank: int | None = None,
                 epoch: int = 0, start: int = 0, consumed: int | None = None, len_offset: int = 0) -> None:
        if num_replicas is None or rank is None:
            dist = torch.distributed.is_available() and torch.distributed.is_initialized()
            num_replicas = torch.distributed.get_world_size() if dist else 1
            rank = torch.distributed.get_rank() if dist else 0
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        if start < 0 or (consumed is not None and consumed < 0):
            raise ValueError(f"ResumableSampler: start / consumed must be >= 0, got {start} / {consumed}")
        self.epoch, self.start = int(epoch), int(start)
        self.consumed = None if consumed is None else min(int(consumed), len(self.dataset))
        self.len_offset = int(len_offset)

    def set_epoch(self, epoch: int) -> None:
        # Lightning calls this after the resumed iterator was made; the skip holds until the epoch changes.
        if epoch != self.epoch:
            self.start, self.consumed, self.len_offset = 0, None, 0
        self.epoch = int(epoch)

    def _permutation(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        return torch.randperm(len(self.dataset), generator=g).tolist()

    def order(self, epoch: int) -> list[int]:
        """This rank's indices for ``epoch`` (padded like DistributedSampler so all ranks get equal shares)."""
        perm = self._permutation(epoch)
        while len(perm) < self.total_size:
            perm += perm[: self.total_size - len(perm)]
        return perm[self.rank : self.total_size : self.num_replicas]

    def _rest(self, epoch: int) -> list[int]:
        """This rank's share of what is left of ``epoch`` after ``consumed`` samples (padded from the permutation's
        start, as DistributedSampler pads, so every rank gets as many)."""
        perm = self._permutation(epoch)
        rest = perm[self.consumed:]
        size = -(-len(rest) // self.num_replicas) * self.num_replicas
        pad = perm[: size - len(rest)]
        while len(rest) + len(pad) < size:  # fewer samples than ranks
            pad += perm[: size - len(rest) - len(pad)]
        return (rest + pad)[self.rank : size : self.num_replicas]

    def _indices(self) -> list[int]:
        if self.consumed is not None:
            return self._rest(self.epoch)
        return self.order(self.epoch)[self.start:]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        for index in self._indices():
            yield index, mix_seed(self.seed, epoch, index)

    def __len__(self) -> int:
        if self.consumed is not None:
            return self.len_offset + len(self._indices())
        return super().__len__()  # the whole epoch's share (Lightning counts the skipped batches as done)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "start": self.start, "consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.start = int(state["epoch"]), int(state.get("start", 0))
        consumed = state.get("consumed")
        self.consumed = None if consumed is None else min(int(consumed), len(self.dataset))
        self.len_offset = int(state.get("len_offset", 0))
