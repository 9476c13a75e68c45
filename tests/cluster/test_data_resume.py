"""Data across resumes and ranks (issue 21, items 8 and 9): the sampler's position is global, so a resume on another
number of ranks continues the epoch without repeating or skipping a sample; data=folder validates on clips held
out of training, not on its test clips."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import write_frames

from lgfn.data.datamodule import VSRDataModule
from lgfn.data.datasets import ResumableSampler


class _Range(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


def _batches(sampler: ResumableSampler, batch: int) -> list[list[int]]:
    indices = [i for i, _ in sampler]
    return [indices[k : k + batch] for k in range(0, len(indices), batch)]


@pytest.mark.parametrize("n,world,batch,done,new_world,new_batch", [
    (23, 2, 3, 2, 1, 3),   # 2 ranks -> 1 (the case)
    (23, 1, 2, 4, 2, 2),   # 1 -> 2
    (40, 4, 2, 3, 3, 1),   # 4 -> 3, another per-rank batch (same global batch would be a multiple)
])
def test_resume_on_another_world_size_neither_repeats_nor_skips(n, world, batch, done, new_world, new_batch):
    ds = _Range(n)
    # Before: `world` ranks each used `done` batches of `batch` (what the data module saves: the global position).
    before = [i for r in range(world) for b in _batches(ResumableSampler(ds, seed=5, num_replicas=world, rank=r,
                                                                         epoch=1), batch)[:done] for i in b]
    consumed = done * batch * world
    after, lengths = [], []
    for r in range(new_world):
        s = ResumableSampler(ds, seed=5, num_replicas=new_world, rank=r, epoch=1)
        s.load_state_dict({"epoch": 1, "consumed": consumed, "len_offset": done * new_batch})
        s.set_epoch(1)  # Lightning calls it on the resumed epoch: the position holds
        got = [i for i, _ in s]
        after.append(got)
        lengths.append(math.ceil(len(s) / new_batch))  # Lightning's num_training_batches
    full = ResumableSampler(ds, seed=5, num_replicas=1, rank=0, epoch=1)._permutation(1)
    assert sorted(before) == sorted(full[:consumed])  # the global position is the permutation's prefix
    # After the resume: exactly the rest of the permutation, once (plus, as DistributedSampler pads every epoch,
    # the permutation's first samples again so that every rank gets as many).
    pad = math.ceil((n - consumed) / new_world) * new_world - (n - consumed)
    assert sorted(i for got in after for i in got) == sorted(full[consumed:] + full[:pad])
    assert len({len(got) for got in after}) == 1
    # Lightning counts `done` batches as done: the epoch then ends exactly where this rank's samples do.
    assert all(length == done + math.ceil(len(got) / new_batch) for length, got in zip(lengths, after, strict=True))
    # A new epoch starts afresh on the new world size.
    s = ResumableSampler(ds, seed=5, num_replicas=new_world, rank=0, epoch=1)
    s.load_state_dict({"epoch": 1, "consumed": consumed, "len_offset": done * new_batch})
    s.set_epoch(2)
    assert [i for i, _ in s] == s.order(2) and len(s) == math.ceil(n / new_world)


def test_same_world_size_resume_is_unchanged():
    ds = _Range(23)
    for r in range(2):
        old = ResumableSampler(ds, seed=3, num_replicas=2, rank=r, epoch=0, start=6)
        new = ResumableSampler(ds, seed=3, num_replicas=2, rank=r, epoch=0, consumed=12, len_offset=6)
        assert list(old) == list(new) and len(old) == len(new)


def test_datamodule_saves_the_global_position():
    dm = VSRDataModule("builtin", "/unused", batch_size=3)
    dm.data_train, dm._train_sampler = _Range(50), object()
    progress = SimpleNamespace(current=SimpleNamespace(processed=4))
    dm.trainer = SimpleNamespace(state=SimpleNamespace(fn="fit"), current_epoch=2, world_size=2, num_training_batches=9,
                                 accumulate_grad_batches=1, is_global_zero=True,
                                 fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)))
    state = dm.state_dict()["train_sampler"]
    assert state["epoch"] == 2 and state["consumed"] == 4 * 3 * 2 and state["batches"] == 4


# ----------------------------------------------------------------------------- data=folder validation
@pytest.fixture()
def split_folder(tmp_path) -> Path:
    for i in range(4):
        write_frames(tmp_path / "train" / f"t{i}", 3, seed=i)
    for i in range(2):
        write_frames(tmp_path / "test" / f"x{i}", 3, seed=10 + i)
    return tmp_path


def _clip_names(dataset) -> set[str]:
    return {Path(str(c.name if hasattr(c, "name") else c)).name for c in dataset.clips}


def test_folder_validates_on_held_out_training_clips_by_default(split_folder, tmp_path):
    from omegaconf import OmegaConf

    conf = OmegaConf.load(Path(__file__).resolve().parents[2] / "conf" / "data" / "folder.yaml")
    assert conf.val_holdout == 1  # the default holds a training clip out
    dm = VSRDataModule("folder", str(split_folder), num_frames=3, patch_size=16, val_holdout=conf.val_holdout,
                       manifest=False)
    dm.setup("fit")
    val, train, test = _clip_names(dm.data_val), _clip_names(dm.data_train), _clip_names(dm.data_test)
    assert len(val) == 1 and val <= {"t0", "t1", "t2", "t3"}  # a training clip...
    assert not val & train and not val & test  # ...held out of training, never a test clip
    assert len(train) == 3


def test_folder_says_loudly_when_it_validates_on_the_test_clips(split_folder, caplog):
    dm = VSRDataModule("folder", str(split_folder), num_frames=3, patch_size=16, val_holdout=None, manifest=False)
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert _clip_names(dm.data_val) <= {"x0", "x1"}
    assert "validates on its TEST clips" in caplog.text


def test_folder_too_small_to_hold_out_falls_back_loudly(tmp_path, caplog):
    write_frames(tmp_path / "only", 3)
    dm = VSRDataModule("folder", str(tmp_path), num_frames=3, patch_size=16, val_holdout=1, manifest=False)
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert len(dm.data_train) > 0 and len(dm.data_val) > 0
    assert "validating on the TEST clips instead" in caplog.text
