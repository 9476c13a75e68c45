"""Data: windows, layouts, datasets and the datamodule on tiny on-disk fixtures (see conftest.py)."""

import shutil

import pytest
import torch

from lgfn.data import VSRDataModule, VSRTestDataset, VSRTrainDataset, frame_indices, read_image
from lgfn.data.layouts import discover_folder, discover_paired, discover_vimeo90k, validate_clips
from lgfn.protocol.degradation import degrade, quantize_8bit

# ----------------------------------------------------------------------------- windows


@pytest.mark.parametrize(
    "padding,start,end",
    [
        ("replicate", [0, 0, 0, 1, 2], [7, 8, 9, 9, 9]),
        ("reflection", [2, 1, 0, 1, 2], [7, 8, 9, 8, 7]),
        ("reflection_circle", [4, 3, 0, 1, 2], [7, 8, 9, 6, 5]),
        ("mirror", [4, 3, 0, 1, 2], [7, 8, 9, 6, 5]),
        ("circle", [3, 4, 0, 1, 2], [7, 8, 9, 5, 6]),
    ],
)
def test_frame_indices_both_ends(padding, start, end):
    assert frame_indices(0, 5, 10, padding) == start
    assert frame_indices(9, 5, 10, padding) == end
    assert frame_indices(5, 5, 10, padding) == [3, 4, 5, 6, 7]


def test_frame_indices_release_example_and_errors():
    assert frame_indices(1, 7, 7, "reflection_circle") == [6, 5, 0, 1, 2, 3, 4]
    assert frame_indices(5, 7, 7, "reflection_circle") == [2, 3, 4, 5, 6, 1, 0]
    with pytest.raises(ValueError, match="data.padding"):
        frame_indices(0, 5, 10, "zeros")
    with pytest.raises(ValueError, match=r"3 frames.*num_frames=5"):
        frame_indices(0, 5, 3, "replicate")
    with pytest.raises(ValueError, match="data.num_frames"):
        frame_indices(0, 4, 10, "replicate")


# ----------------------------------------------------------------------------- layouts


def test_vimeo_layout_lists_groups_and_lr(tiny_vimeo90k, tiny_vimeo90k_premade_lr, tiny_vimeo90k_mmagic):
    cs = discover_vimeo90k(tiny_vimeo90k, "test")
    assert [c.name for c in cs.clips] == ["00003/0001", "00003/0002", "00004/0001"]
    assert cs.groups == {"slow": ["00003/0001"], "medium": ["00003/0002"], "fast": ["00004/0001"]}
    assert cs.lr_dir is None and all(c.centre == 3 and len(c) == 7 for c in cs.clips)
    assert discover_vimeo90k(tiny_vimeo90k_premade_lr, "train").lr_dir.name == "sequences_BIx4"
    assert discover_vimeo90k(tiny_vimeo90k_premade_lr, "train", degradation="bd").lr_dir is None
    mm = discover_vimeo90k(tiny_vimeo90k_mmagic, "train", degradation="bd")
    assert mm.lr_dir.name == "BDx4" and len(mm.clips) == 3 and mm.clips[0].hr[0].parts[-4] == "GT"


def test_paired_and_folder_layouts(tiny_vid4, tiny_vid4_hr_only, tiny_spmcs, tiny_folder):
    v = discover_paired(tiny_vid4)
    assert [c.name for c in v.clips] == ["calendar", "city"] and v.lr_dir.name == "BIx4"
    assert discover_paired(tiny_vid4, degradation="bd").lr_dir is None
    assert discover_paired(tiny_vid4_hr_only).clips[1].name == "walk"
    s = discover_paired(tiny_spmcs, clip_list=str(tiny_spmcs / "subset.txt"))
    assert [c.name for c in s.clips] == ["hk004_001", "car05_001"] and s.clips[0].hr[0].parent.name == "truth"
    f = discover_folder(tiny_folder)
    assert [(c.name, len(c)) for c in f.clips] == [("a", 5), ("b", 7)]


def test_missing_root_and_listed_clip_errors(tmp_path, tiny_vimeo90k):
    with pytest.raises(FileNotFoundError, match=r"nowhere.*sequences"):
        discover_vimeo90k(tmp_path / "nowhere", "test")
    with pytest.raises(FileNotFoundError, match=r"nothing_here.*<clip>"):
        discover_folder(tmp_path / "nothing_here")
    root = tmp_path / "vimeo"
    shutil.copytree(tiny_vimeo90k, root)
    (root / "sep_testlist.txt").write_text("00003/0001\n00009/0009\n")
    with pytest.raises(FileNotFoundError, match=r"00009/0009.*sep_testlist.txt.*00009/0009"):
        discover_vimeo90k(root, "test")
    (root / "list.txt").write_text("nope\n")
    with pytest.raises(FileNotFoundError, match=r"'nope'.*list.txt"):
        discover_folder(root / "sequences" / "00003", clip_list=str(root / "list.txt"))


def test_bad_images_are_reported_at_validation(tmp_path, tiny_folder):
    root = tmp_path / "f"
    shutil.copytree(tiny_folder, root)
    frame = root / "a" / "003.png"
    frame.write_bytes(frame.read_bytes()[:-40])  # truncated
    with pytest.raises(ValueError, match=r"truncated.*a/003.png"):
        validate_clips(discover_folder(root).clips, 4)
    with pytest.raises(ValueError, match=r"a/003.png"):
        read_image(frame)
    frame.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"unreadable.*a/003.png"):
        validate_clips(discover_folder(root).clips, 4)
    from PIL import Image

    Image.new("RGB", (40, 32)).save(frame)  # wrong size within the clip
    with pytest.raises(ValueError, match=r"'a'.*differ in size.*a/003.png"):
        validate_clips(discover_folder(root).clips, 4)


def test_premade_lr_of_wrong_size_is_rejected(tmp_path, tiny_vid4):
    root = tmp_path / "v"
    shutil.copytree(tiny_vid4, root)
    from PIL import Image

    Image.new("RGB", (9, 8)).save(root / "BIx4" / "city" / "002.png")
    with pytest.raises(ValueError, match=r"BIx4/city/002.png.*expected 8x8"):
        validate_clips(discover_paired(root).clips, 4)


# ----------------------------------------------------------------------------- datasets


def test_test_dataset_on_the_fly_lr_equals_degradation(tiny_vid4_hr_only):
    clips = discover_paired(tiny_vid4_hr_only).clips
    for kind in ("bi", "bd"):
        ds = VSRTestDataset(clips, num_frames=3, padding="replicate", degradation=kind, skip_edge_frames=True)
        assert len(ds) == 3 + 3
        s = ds[0]
        assert (s["clip"], s["frame"], s["index"]) == ("calendar", 1, 0)
        assert (
            s["lr"].shape == (3, 3, 8, 8) and s["hr"].shape == (3, 32, 32) and s["lr"].dtype == torch.float32
        )
        hr = torch.stack([read_image(p) for p in clips[0].hr[0:3]])
        assert torch.equal(s["lr"], quantize_8bit(degrade(hr, kind)))
        assert torch.equal(s["hr"], hr[1])
    # Deterministic: the same item twice is bit-identical.
    assert torch.equal(ds[4]["lr"], ds[4]["lr"])
    assert [ds[i]["index"] for i in range(len(ds))] == list(range(len(ds)))


def test_test_dataset_uses_premade_lr_and_window(tiny_vid4):
    ds = VSRTestDataset(discover_paired(tiny_vid4).clips, num_frames=5, padding="reflection_circle")
    assert len(ds) == 6 + 5
    s = ds[0]
    assert torch.allclose(s["lr"], torch.full((5, 3, 8, 8), 77 / 255))
    assert s["frame"] == 0 and s["hr"].shape == (3, 32, 32)
    with pytest.raises(ValueError, match=r"'calendar' has 6 frames.*num_frames=7"):
        VSRTestDataset(discover_paired(tiny_vid4).clips, num_frames=7)


def test_vimeo_test_targets_centre_only(tiny_vimeo90k):
    clips = discover_vimeo90k(tiny_vimeo90k, "test").clips
    ds = VSRTestDataset(clips, num_frames=7)
    assert len(ds) == 3 and all(ds[i]["frame"] == 3 for i in range(3))
    hr = torch.stack([read_image(p) for p in clips[0].hr])
    assert torch.equal(ds[0]["lr"], quantize_8bit(degrade(hr, "bi")))


def test_train_augmentation_keeps_frames_and_lr_hr_aligned(tiny_folder):
    # Every sample must be one crop + one dihedral op of the full (unaugmented) window, the same
    # for all frames, and the HR patch the same op on the matching HR crop.
    clips = discover_folder(tiny_folder).clips[1:]  # 'b': 7 JPEG frames 36x40
    ds = VSRTrainDataset(clips, num_frames=3, padding="reflection", patch_size=16, augment=True)
    full = VSRTestDataset(clips, num_frames=3, padding="reflection")
    torch.manual_seed(0)
    ops_seen = set()
    for i in range(24):
        s = ds[i % len(ds)]
        assert s["lr"].shape == (3, 3, 4, 4) and s["hr"].shape == (3, 16, 16)
        ref = full[s["frame"]]
        # Find the crop and the dihedral op that map the full LR window to the sample, for all frames at once.
        match = _find_op(ref["lr"], s["lr"])
        assert match is not None, "frames were cropped or flipped differently"
        op, top, left = match
        ops_seen.add(op)
        hr_crop = ref["hr"][:, top * 4 : top * 4 + 16, left * 4 : left * 4 + 16]
        assert torch.equal(_apply(op, hr_crop), s["hr"]), "HR does not follow the LR crop/flip"
    assert len(ops_seen) > 2  # the flips really happen


def _apply(op, t):
    hflip, vflip, transpose = op
    if hflip:
        t = t.flip(-1)
    if vflip:
        t = t.flip(-2)
    if transpose:
        t = t.transpose(-1, -2)
    return t


def _find_op(full_lr, patch):
    h, w = full_lr.shape[-2:]
    for op in [(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)]:
        for top in range(h - 3):
            for left in range(w - 3):
                if torch.equal(_apply(op, full_lr[..., top : top + 4, left : left + 4]), patch):
                    return op, top, left
    return None


def test_train_dataset_validation_and_temporal_reverse(tiny_vimeo90k):
    clips = discover_vimeo90k(tiny_vimeo90k, "train").clips
    validate_clips(clips, 4)
    with pytest.raises(ValueError, match="data.patch_size"):
        VSRTrainDataset(clips, patch_size=18)
    with pytest.raises(ValueError, match=r"data.patch_size=64.*32x32"):
        VSRTrainDataset(clips, patch_size=64)
    ds = VSRTrainDataset(clips, num_frames=7, patch_size=32, augment=False, temporal_reverse=True, repeat=2)
    assert len(ds) == 6
    full = VSRTestDataset(clips, num_frames=7)[0]["lr"]
    torch.manual_seed(1)
    outs = [ds[0]["lr"] for _ in range(12)]
    rev = [torch.equal(o, full.flip(0)) for o in outs]
    fwd = [torch.equal(o, full) for o in outs]
    assert all(r or f for r, f in zip(rev, fwd, strict=True)) and any(rev) and any(fwd)


# ----------------------------------------------------------------------------- datamodule


def test_datamodule_vid4_is_test_only(tiny_vid4):
    dm = VSRDataModule("vid4", str(tiny_vid4), num_frames=5, num_workers=0)
    assert (dm.test_name, dm.average, dm.skip_edge_frames) == ("vid4", "clip", True)
    dm.setup("test")
    assert len(dm.data_test) == 4 + 3
    b = next(iter(dm.test_dataloader()))
    assert b["lr"].shape == (1, 5, 3, 8, 8) and b["clip"] == ["calendar"] and b["frame"].tolist() == [1]
    with pytest.raises(
        RuntimeError, match="data=vid4 has no training split; train with data=vimeo90k or data=builtin"
    ):
        dm.train_dataloader()
    with pytest.raises(RuntimeError, match="data=vid4 has no training split"):
        dm.setup("fit")


def test_datamodule_spmcs_defaults(tiny_spmcs):
    dm = VSRDataModule(
        "spmcs", str(tiny_spmcs), num_frames=3, num_workers=0, clip_list=str(tiny_spmcs / "subset.txt")
    )
    dm.setup("test")
    assert dm.average == "frame" and dm.test_name == "spmcs" and len(dm.data_test) == 2 * 3


def test_datamodule_vimeo_fit_and_groups(tiny_vimeo90k):
    dm = VSRDataModule(
        "vimeo90k", str(tiny_vimeo90k), patch_size=16, batch_size=2, num_workers=0, val_max_clips=2
    )
    dm.setup("fit")
    assert dm.test_name == "vimeo90k_t" and dm.test_groups["fast"] == ["00004/0001"]
    assert len(dm.data_val) == 2 and len(dm.data_test) == 3
    b = next(iter(dm.train_dataloader()))
    assert b["lr"].shape == (2, 7, 3, 4, 4) and b["hr"].shape == (2, 3, 16, 16)
    assert not dm.train_dataloader().pin_memory or torch.cuda.is_available()


def test_datamodule_builtin_and_folder(builtin_stub, tmp_path, tiny_folder):
    dm = VSRDataModule(
        "builtin", str(tmp_path / "b"), patch_size=16, batch_size=4, num_workers=0, train_repeat=3
    )
    dm.setup("fit")
    assert (dm.test_name, dm.average, dm.skip_edge_frames) == ("builtin", "clip", False)
    assert len(dm.data_train) == 2 * 7 * 3 and len(dm.data_test) == 2 * 7
    assert next(iter(dm.val_dataloader()))["lr"].shape == (1, 7, 3, 8, 8)
    f = VSRDataModule("folder", str(tiny_folder), num_frames=5, patch_size=16, num_workers=0)
    f.setup("fit")
    assert len(f.data_train) == 5 + 7 and len(f.data_test) == 5 + 7


def test_datamodule_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="data.degradation"):
        VSRDataModule("vid4", "x", degradation="gauss")
    with pytest.raises(ValueError, match="data.padding"):
        VSRDataModule("vid4", "x", padding="zero")
    with pytest.raises(ValueError, match="data.patch_size"):
        VSRDataModule("vimeo90k", "x", patch_size=50)
    with pytest.raises(ValueError, match="data.name"):
        VSRDataModule("reds", "x")
    dm = VSRDataModule("vid4", str(tmp_path / "missing_vid4"), num_workers=0)
    with pytest.raises(FileNotFoundError, match=r"missing_vid4.*GT/<clip>"):
        dm.setup("test")
