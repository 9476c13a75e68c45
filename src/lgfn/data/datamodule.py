"""``VSRDataModule``: one LightningDataModule for builtin, Vimeo-90K, Vid4, SPMCS and any folder of clips."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader

from lgfn.data.cpus import auto_workers, ranks_on_node, usable_cpus
from lgfn.data.datasets import ResumableSampler, VSRTestDataset, VSRTrainDataset, mix_seed
from lgfn.data.layouts import (
    FOLDER_LAYOUT,
    PAIRED_LAYOUT,
    VIMEO_LAYOUT,
    ClipSet,
    discover_folder,
    discover_paired,
    discover_vimeo90k,
    require_root,
    validate_clips,
)
from lgfn.data.manifest import load_or_scan
from lgfn.metrics import AVERAGE_MODES
from lgfn.protocol.degradation import DEGRADATIONS
from lgfn.protocol.windows import canonical_padding, check_num_frames

log = logging.getLogger(__name__)
# The train loader resumes through VSRDataModule.state_dict (the sampler's position), which Lightning's
# "dataloader is not resumable" check cannot see.
warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended")

DATASETS = ("builtin", "vimeo90k", "vid4", "spmcs", "folder")
_TEST_NAMES = {
    "builtin": "builtin",
    "vimeo90k": "vimeo90k_t",
    "vid4": "vid4",
    "spmcs": "spmcs",
    "folder": "folder",
}
_TEST_ONLY = ("vid4", "spmcs")


def _single_thread_worker(worker_id: int) -> None:
    # A worker's degradation is small per call; threads of its own would only fight the training step for cores.
    torch.set_num_threads(1)


class VSRDataModule(LightningDataModule):
    """Train/val/test loaders; test batches hold lr ``1 x N x 3 x h x w``, hr ``1 x 3 x 4h x 4w``, clip, frame."""

    def __init__(
        self,
        name: str,
        root: str,
        degradation: str = "bi",
        num_frames: int = 7,
        patch_size: int = 192,
        batch_size: int = 8,
        num_workers: int | None = 4,
        padding: str = "reflection_circle",
        scale: int = 4,
        augment: bool = True,
        temporal_reverse: bool = False,
        skip_edge_frames: bool | None = None,
        average: str | None = None,
        val_max_clips: int | None = None,
        val_holdout: int | None = None,
        clip_list: str | None = None,
        pin_memory: bool | None = None,
        builtin_small: bool = False,
        seed: int = 0,
        train_repeat: int = 1,
        cache_frames: bool | None = None,
        centre_only: bool = False,
        manifest: bool = True,
        manifest_dir: str | None = None,
        global_batch_size: int | None = None,
    ):
        super().__init__()
        # Cheap argument checks at construction, so a bad config fails before any disk access.
        if name not in DATASETS:
            raise ValueError(f"data.name must be one of {list(DATASETS)}, got {name!r}")
        if degradation not in DEGRADATIONS:
            raise ValueError(f"data.degradation must be one of {list(DEGRADATIONS)}, got {degradation!r}")
        check_num_frames(num_frames)
        canonical_padding(padding)
        if average is not None and average not in AVERAGE_MODES:
            raise ValueError(f"data.average must be one of {list(AVERAGE_MODES)} or null, got {average!r}")
        if not isinstance(scale, int) or scale < 1:
            raise ValueError(f"data.scale must be a positive integer, got {scale!r}")
        if not isinstance(patch_size, int) or patch_size < scale or patch_size % scale:
            raise ValueError(
                f"data.patch_size must be a positive multiple of data.scale={scale} (HR pixels), got {patch_size!r}"
            )
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"data.batch_size must be a positive integer, got {batch_size!r}")
        if global_batch_size is not None and (not isinstance(global_batch_size, int) or global_batch_size < 1):
            raise ValueError(f"data.global_batch_size must be a positive integer or null, got {global_batch_size!r}")
        if num_workers is not None and (not isinstance(num_workers, int) or num_workers < 0):
            raise ValueError(f"data.num_workers must be an integer >= 0 or null (from the CPUs), got {num_workers!r}")
        if val_max_clips is not None and val_max_clips < 1:
            raise ValueError(f"data.val_max_clips must be >= 1 or null, got {val_max_clips!r}")
        if val_holdout is not None and (not isinstance(val_holdout, int) or val_holdout < 1):
            raise ValueError(f"data.val_holdout must be a positive integer or null, got {val_holdout!r}")
        # Validation (and test_ckpt=best) on a fixed slice of the training clips, held out of training, so
        # model selection never sees the test set; null: the first val_max_clips test clips (test-only sets).
        self.val_holdout = val_holdout
        self.save_hyperparameters(logger=False)
        self.name, self.root = name, str(root)
        self.degradation, self.num_frames, self.patch_size = degradation, num_frames, patch_size
        self.batch_size, self.num_workers, self.padding, self.scale = batch_size, num_workers, padding, scale
        self.global_batch_size = global_batch_size
        self.augment, self.temporal_reverse, self.train_repeat = augment, temporal_reverse, train_repeat
        self.skip_edge_frames = name in _TEST_ONLY if skip_edge_frames is None else bool(skip_edge_frames)
        self.val_max_clips, self.clip_list, self.builtin_small, self.seed = (
            val_max_clips,
            clip_list,
            builtin_small,
            seed,
        )
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        # Every window is the centre frame repeated (train and test): the single-frame ablation.
        self.centre_only = bool(centre_only)
        # Small sets are kept in memory (8-bit) after the first read, so degradation runs once per frame.
        self.cache_frames = name == "builtin" if cache_frames is None else bool(cache_frames)
        # Scan once, read the clips from a manifest afterwards (lgfn.data.manifest); the built-in set is tiny.
        self.manifest, self.manifest_dir = bool(manifest) and name != "builtin", manifest_dir
        # Attributes the LightningModule reads.
        self.test_name: str = _TEST_NAMES[name]
        self.average: str = average or ("frame" if name == "spmcs" else "clip")
        self.test_groups: dict[str, list[str]] = {}
        self.data_train: VSRTrainDataset | None = None
        self.data_val: VSRTestDataset | None = None
        self.data_test: VSRTestDataset | None = None
        self._roots: dict[str, Path] | None = None
        self._test_clips: list = []
        self._train_sampler: ResumableSampler | None = None
        self._sampler_state: dict | None = None  # from a checkpoint, applied by train_dataloader()

    # ------------------------------------------------------------------ discovery

    def _split_roots(self) -> dict[str, Path]:
        """Folders holding the train and test clips of builtin/folder sets."""
        if self._roots is None:
            if self.name == "builtin":
                from lgfn.data.builtin import ensure_builtin

                self._roots = {
                    k: Path(v)
                    for k, v in ensure_builtin(self.root, seed=self.seed, small=self.builtin_small).items()
                }
            else:
                root = Path(self.root).expanduser()
                # A folder with train/ and test/ subfolders of clips splits itself; otherwise all clips serve both.
                if (root / "train").is_dir() and (root / "test").is_dir():
                    self._roots = {"train": root / "train", "test": root / "test"}
                else:
                    self._roots = {"train": root, "test": root}
        return self._roots

    def _clips(self, split: str) -> ClipSet:
        """The split's checked clips: from the manifest when it is current, else scanned (and saved)."""
        if not self.manifest:
            return self._scan(split)
        root = self.root if self.name in ("vimeo90k", *_TEST_ONLY) else self._split_roots()[split]
        clip_list = self.clip_list if (self.name != "folder" or split == "test") else None
        key = {"layout": self.name, "split": split, "degradation": self.degradation, "scale": self.scale,
               "clip_list": None if clip_list is None else str(Path(clip_list).expanduser().resolve())}
        watch = [clip_list] if clip_list else []
        return load_or_scan(root, key, lambda: self._scan(split), folder=self.manifest_dir, watch=watch)

    def _scan(self, split: str) -> ClipSet:
        if self.name == "vimeo90k":
            cs = discover_vimeo90k(self.root, split, self.degradation, self.scale, self.clip_list)
        elif self.name in _TEST_ONLY:
            cs = discover_paired(self.root, self.degradation, self.scale, self.clip_list)
        else:
            clip_list = self.clip_list if split == "test" else None
            cs = discover_folder(self._split_roots()[split], clip_list)
        validate_clips(cs.clips, self.scale)
        return cs

    def _no_train_split(self) -> RuntimeError:
        return RuntimeError(
            f"data={self.name} has no training split; train with data=vimeo90k or data=builtin"
        )

    def _test_dataset(self, cs: ClipSet) -> VSRTestDataset:
        return VSRTestDataset(
            cs.clips,
            num_frames=self.num_frames,
            padding=self.padding,
            degradation=self.degradation,
            scale=self.scale,
            skip_edge_frames=self.skip_edge_frames,
            cache_frames=self.cache_frames,
            centre_only=self.centre_only,
        )

    def prepare_data(self) -> None:
        """Only that ``data.root`` exists (Lightning calls this before it starts the loggers: a missing root then
        ends the run with its one error line before a W&B run is made); the clips are checked in ``setup``."""
        if self.name == "builtin":
            return
        require_root(self.root, {"folder": FOLDER_LAYOUT, "vimeo90k": VIMEO_LAYOUT}.get(self.name, PAIRED_LAYOUT))

    def setup(self, stage: str | None = None) -> None:
        """Discover and check every clip of the needed splits (missing files, sizes, window length)."""
        if stage == "fit" and self.name in _TEST_ONLY:
            raise self._no_train_split()
        if self.data_test is None:
            test = self._clips("test")
            self.test_groups = test.groups
            self.data_test = self._test_dataset(test)
            self._test_clips = test.clips
            if not self._holds_out():
                self._validate_on_test_clips()
            log.info(
                "%s test set: %d clips, %d targets, LR %s",
                self.test_name,
                len(test.clips),
                len(self.data_test),
                f"from {test.lr_dir}" if test.lr_dir else f"made on the fly ({self.degradation})",
            )
        needs_train = stage in ("fit", None) or (stage == "validate" and self._holds_out())
        if needs_train and self.name not in _TEST_ONLY and self.data_train is None:
            train = self._clips("train")
            train_clips = train.clips
            if self._holds_out() and self.name == "folder" and self.val_holdout >= len(train_clips):
                # A folder too small to hold clips out: say so, and validate on the test clips.
                log.warning("data=folder has %d training clip(s), too few to hold data.val_holdout=%d out for "
                            "validation: validating on the TEST clips instead, so test_ckpt=best selects on the test "
                            "set (add clips, or set test_ckpt=last)", len(train_clips), self.val_holdout)
                self._validate_on_test_clips(warn=False)
            elif self._holds_out():
                train_clips, held = self._split_holdout(train_clips)
                held = held[: self.val_max_clips] if self.val_max_clips else held
                self.data_val = self._test_dataset(ClipSet(clips=held))
            self.data_train = VSRTrainDataset(
                train_clips,
                num_frames=self.num_frames,
                padding=self.padding,
                degradation=self.degradation,
                scale=self.scale,
                patch_size=self.patch_size,
                augment=self.augment,
                temporal_reverse=self.temporal_reverse,
                repeat=self.train_repeat,
                cache_frames=self.cache_frames,
                centre_only=self.centre_only,
            )

    def _validate_on_test_clips(self, warn: bool = True) -> None:
        """Validation on the first ``val_max_clips`` test clips (``val_holdout: null``); for data=folder with its own
        train/ and test/ clips that is model selection on the test set, which is said loudly."""
        clips = self._test_clips
        self.data_val = self._test_dataset(ClipSet(clips=clips[: self.val_max_clips] if self.val_max_clips else clips))
        split = self.name == "folder" and self._split_roots()["train"] != self._split_roots()["test"]
        if warn and split:
            log.warning("data=folder validates on its TEST clips (data.val_holdout=null): val/psnr and test_ckpt=best "
                        "then select on the test set; set data.val_holdout=N to validate on N training clips held "
                        "out of training")

    def _holds_out(self) -> bool:
        return self.val_holdout is not None and self.name not in _TEST_ONLY

    def _split_holdout(self, clips):
        """(training clips, held-out validation clips): every k-th clip, evenly spread, always the same ones."""
        n = len(clips)
        if self.val_holdout >= n:
            raise ValueError(
                f"data.val_holdout={self.val_holdout} leaves no training clip of {n}; use fewer, or null"
            )
        step = n / self.val_holdout
        held_idx = sorted({min(n - 1, int(step * (i + 0.5))) for i in range(self.val_holdout)})
        keep = sorted(set(range(n)) - set(held_idx))
        if hasattr(clips, "select"):  # a ClipTable
            held = clips.select(np.array(held_idx))
            return clips.select(np.array(keep)), [held[i] for i in range(len(held))]
        return [clips[i] for i in keep], [clips[i] for i in held_idx]

    # ------------------------------------------------------------------ loaders

    def loader_workers(self) -> int:
        """``data.num_workers``, or (null) this rank's share of the CPUs the job really has (lgfn.data.cpus)."""
        trainer = getattr(self, "trainer", None)
        if self.num_workers is None:
            return auto_workers(trainer)
        share = usable_cpus() // ranks_on_node(trainer)
        if self.num_workers > share and not getattr(self, "_warned_workers", False):
            self._warned_workers = True
            log.warning("data.num_workers=%d is more than this rank's %d usable CPUs (os.sched_getaffinity); "
                        "data.num_workers=null picks %d", self.num_workers, share, max(0, share - 1))
        return self.num_workers

    def _loader(self, dataset, *, batch_size: int, sampler=None) -> DataLoader:
        workers = self.loader_workers()
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            pin_memory=self.pin_memory,
            persistent_workers=workers > 0,
            worker_init_fn=_single_thread_worker if workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        if self.name in _TEST_ONLY:
            raise self._no_train_split()
        if self.data_train is None:
            self.setup("fit")
        self._train_sampler = ResumableSampler(self.data_train, seed=self.sampler_seed)
        batch_size = self.train_batch_size(report=True)
        if self._sampler_state is not None:
            state = dict(self._sampler_state)
            if state.get("consumed") is not None:  # the global position: the rest is dealt over this run's ranks
                state["len_offset"] = int(state.get("batches", 0)) * batch_size
            self._train_sampler.load_state_dict(state)
            self._sampler_state = None
        return self._loader(self.data_train, batch_size=batch_size, sampler=self._train_sampler)

    def train_batch_size(self, report: bool = False) -> int:
        """The per-rank training batch: ``data.batch_size``, or ``data.global_batch_size`` split over the ranks and
        ``trainer.accumulate_grad_batches`` (then the optimiser sees the same batch, so the same schedule, on
        any number of GPUs). With ``report``, rank 0 logs the global batch under DDP, with a warning when only the per-rank
        batch is set."""
        trainer = self.trainer
        ranks = trainer.world_size if trainer is not None else 1
        accumulate = trainer.accumulate_grad_batches if trainer is not None else 1
        if self.global_batch_size is None:
            if report and ranks * accumulate > 1 and trainer.is_global_zero:
                log.warning("global batch %d = data.batch_size %d x %d ranks x %d accumulated: the lr and the epoch "
                            "schedule were set for a batch of %d; set data.global_batch_size to keep them",
                            self.batch_size * ranks * accumulate, self.batch_size, ranks, accumulate, self.batch_size)
            return self.batch_size
        per_rank, rest = divmod(self.global_batch_size, ranks * accumulate)
        if rest or per_rank < 1:
            raise ValueError(f"data.global_batch_size={self.global_batch_size} is not a multiple of {ranks} ranks x "
                             f"{accumulate} accumulated batches")
        if report and ranks * accumulate > 1 and trainer.is_global_zero:
            # the recipe's batch, kept: nothing for the user to act on (debug, not a warning)
            log.debug("global batch %d = %d per rank x %d ranks x %d accumulated (data.global_batch_size)",
                      self.global_batch_size, per_rank, ranks, accumulate)
        return per_rank

    def val_dataloader(self) -> DataLoader:
        if self.data_val is None:
            self.setup("validate")
        return self._loader(self.data_val, batch_size=1)

    def test_dataloader(self) -> DataLoader:
        if self.data_test is None:
            self.setup("test")
        return self._loader(self.data_test, batch_size=1)

    # ------------------------------------------------------------------ resumption

    @property
    def sampler_seed(self) -> int:
        """Training order and augmentation follow the run's seed (``seed=``, via seed_everything) and data.seed."""
        return mix_seed(int(os.environ.get("PL_GLOBAL_SEED", 0)), self.seed)

    def state_dict(self) -> dict:
        """The train sampler's position at a checkpoint: the epoch, and the samples of its permutation that all ranks
        together already used (``consumed``: restored on any number of ranks), with this rank's own count.

        Read from the trainer's loop counters, not from the sampler: loaders prefetch ahead of training.
        """
        trainer = self.trainer
        if trainer is None or self._train_sampler is None or trainer.state.fn != "fit":
            return {}
        fit = trainer.fit_loop
        epoch, done = trainer.current_epoch, fit.epoch_loop.batch_progress.current.processed
        if done >= trainer.num_training_batches:  # saved at the end of an epoch: the next one starts afresh
            epoch, done = epoch + 1, 0
        # The epoch's global position (samples of its permutation all ranks used: rank r takes r, r + W, ...), so
        # a resume on any number of ranks continues it; "start" (this rank's) for checkpoints of older versions.
        batch = self.train_batch_size()
        consumed = min(len(self.data_train), done * batch * trainer.world_size) if self.data_train is not None else 0
        return {"train_sampler": {"epoch": epoch, "start": done * batch, "consumed": consumed, "batches": done,
                                  "world_size": trainer.world_size}}

    def load_state_dict(self, state_dict: dict) -> None:
        self._sampler_state = state_dict.get("train_sampler")
