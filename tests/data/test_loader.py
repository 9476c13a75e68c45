"""Issue 16's data path: crop-then-degrade, the LMDB reader, the scan-once manifest, lgfn-prepare, workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lgfn.protocol.degradation import crop_margin, degrade, degrade_crop, quantize_8bit


def _photo_frames(n: int = 3, h: int = 256, w: int = 448) -> torch.Tensor:
    """8-bit-valued frames with real image structure (skimage's astronaut, shifted per frame)."""
    import skimage.data

    img = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1).float().div(255)
    return torch.stack([img[:, 5 * i : 5 * i + h, 3 * i : 3 * i + w] for i in range(n)])


@pytest.mark.parametrize("kind", ["bi", "bd"])
def test_crop_then_degrade_equals_degrade_then_crop(kind):
    hr = _photo_frames()
    full = degrade(hr, kind, 4)
    q_full = quantize_8bit(full)
    h, w = full.shape[-2:]
    gen = torch.Generator().manual_seed(0)
    # Random crops plus the four corners (the regions that reach the frame border).
    crops = [(0, 0), (h - 12, w - 12), (0, w - 12), (h - 12, 0)]
    crops += [(int(torch.randint(0, h - 12, (), generator=gen)), int(torch.randint(0, w - 12, (), generator=gen)))
              for _ in range(40)]
    worst, flips, total = 0.0, 0, 0
    for top, left in crops:
        got = degrade_crop(hr, kind, 4, top, left, 12, 12)
        want = full[..., top : top + 12, left : left + 12]
        worst = max(worst, float((got - want).abs().max()))
        q_got, q_want = quantize_8bit(got), q_full[..., top : top + 12, left : left + 12]
        flips += int((q_got != q_want).sum())
        total += q_want.numel()
        # An 8-bit value may only differ where the float lies within rounding of a .5 boundary.
        near = ((want * 255 - (want * 255).floor() - 0.5).abs() < 1e-4) | ((got - want).abs() > 0)
        assert bool(near[q_got != q_want].all())
    assert worst <= 4e-7  # float32 summation order only: a few ulps of values in [0, 1]
    assert flips == 0, f"{flips} of {total} 8-bit LR values differ"


@pytest.mark.parametrize("kind", ["bi", "bd"])
def test_a_margin_one_pixel_short_is_visibly_wrong(kind, monkeypatch):
    # The test can fail: with one LR pixel less context the crop's edge rows use mirrored pixels.
    import lgfn.protocol.degradation as deg

    hr = _photo_frames(1, 128, 128)
    full = degrade(hr, kind, 4)
    m = crop_margin(kind, 4)
    assert m == 2
    monkeypatch.setattr(deg, "crop_margin", lambda kind, scale: m - 1)
    got = deg.degrade_crop(hr, kind, 4, 10, 10, 8, 8)
    # Far beyond float rounding (<= 4e-7): BI's cubic lobes 1e-3 and more, BD's Gaussian tails ~4e-4.
    assert float((got - full[..., 10:18, 10:18]).abs().max()) > (1e-3 if kind == "bi" else 1e-4)


def test_degrade_crop_rejects_crops_outside_the_frame():
    with pytest.raises(ValueError, match="outside the 8x8 LR frame"):
        degrade_crop(torch.rand(3, 32, 32), "bi", 4, 4, 4, 8, 8)


# --------------------------------------------------------------------------- training patches
def _reference_patch(ds, key):
    """What VSRTrainDataset returned before crop-first loading: whole frames, then the crop and flips."""
    from lgfn.data.datasets import _window, load_window

    index, seed = key
    gen = torch.Generator().manual_seed(seed)
    ci, t = (int(v) for v in ds.items[index % len(ds.items)])
    clip = ds.clips.clip(ci)
    lr, hr = load_window(clip, _window(ds, t, len(clip)), ds.degradation, ds.scale)
    lp, s = ds.patch_size // ds.scale, ds.scale
    h, w = lr.shape[-2:]
    top = int(torch.randint(0, h - lp + 1, (), generator=gen))
    left = int(torch.randint(0, w - lp + 1, (), generator=gen))
    lr, hr = lr[..., top : top + lp, left : left + lp], hr[..., top * s : (top + lp) * s, left * s : (left + lp) * s]
    if torch.rand((), generator=gen) < 0.5:
        lr, hr = lr.flip(-1), hr.flip(-1)
    if torch.rand((), generator=gen) < 0.5:
        lr, hr = lr.flip(-2), hr.flip(-2)
    if torch.rand((), generator=gen) < 0.5:
        lr, hr = lr.transpose(-1, -2), hr.transpose(-1, -2)
    return lr, hr


@pytest.mark.parametrize("kind", ["bi", "bd"])
def test_train_patches_equal_whole_frame_degradation_then_crop(tmp_path, kind):
    from conftest import write_frames

    from lgfn.data.datasets import VSRTrainDataset
    from lgfn.data.layouts import discover_folder

    for k in range(2):
        write_frames(tmp_path / f"c{k}", 5, 64, 96, seed=k)
    ds = VSRTrainDataset(discover_folder(tmp_path).clips, num_frames=3, degradation=kind, patch_size=24)
    for key in [(i, 1000 + i) for i in range(len(ds))]:
        lr, hr = _reference_patch(ds, key)
        got = ds[key]
        assert torch.equal(got["lr"], lr) and torch.equal(got["hr"], hr)


def test_train_patches_from_premade_lr_are_crops_of_the_files(tiny_vimeo90k_premade_lr):
    from lgfn.data.datasets import VSRTrainDataset
    from lgfn.data.layouts import discover_vimeo90k

    ds = VSRTrainDataset(discover_vimeo90k(tiny_vimeo90k_premade_lr, "train").clips, patch_size=16)
    for key in [(0, 5), (2, 9)]:
        lr, hr = _reference_patch(ds, key)
        got = ds[key]
        assert torch.equal(got["lr"], lr) and torch.equal(got["hr"], hr)
        assert bool((got["lr"] == 77 / 255).all())  # the pre-made grey frames, not degraded HR


# --------------------------------------------------------------------------- BasicSR's LMDBs
def _basicsr_lmdb(path, frames: dict, compress_level: int = 1) -> None:
    """An LMDB as BasicSR's make_lmdb_from_imgs writes it: cv2.imencode PNG of BGR arrays, meta_info.txt."""
    cv2 = pytest.importorskip("cv2")
    lmdb = pytest.importorskip("lmdb")
    env = lmdb.open(str(path), map_size=1 << 26)
    lines = []
    with env.begin(write=True) as txn:
        for key, rgb in frames.items():
            ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, compress_level])
            assert ok
            txn.put(key.encode("ascii"), buf.tobytes())
            h, w, c = rgb.shape
            lines.append(f"{key}.png ({h},{w},{c}) {compress_level}\n")
    env.close()
    (path / "meta_info.txt").write_text("".join(lines))


@pytest.fixture
def vimeo_lmdb(tmp_path):
    """BasicSR's two Vimeo-90K LMDBs beside sep_trainlist.txt (HR 32x48), plus PNG test clips."""
    from conftest import write_frames

    rng = np.random.default_rng(0)
    train = ["00001/0001", "00001/0002", "00002/0001"]
    hr = {f"{c}/im4": rng.integers(0, 256, (32, 48, 3), dtype=np.uint8) for c in train}
    lr = {f"{c}/im{i}": rng.integers(0, 256, (8, 12, 3), dtype=np.uint8) for c in train for i in range(1, 8)}
    _basicsr_lmdb(tmp_path / "vimeo90k_train_GT_only4th.lmdb", hr)
    _basicsr_lmdb(tmp_path / "vimeo90k_train_LR7frames.lmdb", lr)
    (tmp_path / "sep_trainlist.txt").write_text("\n".join(train) + "\n")
    (tmp_path / "sep_testlist.txt").write_text("00003/0001\n")
    write_frames(tmp_path / "sequences" / "00003" / "0001", 7, names=[f"im{i}.png" for i in range(1, 8)])
    return tmp_path, hr, lr


def test_lmdb_reader_reads_basicsr_stores(vimeo_lmdb):
    from lgfn.data import lmdb_store
    from lgfn.data.io import read_u8

    root, hr, lr = vimeo_lmdb
    store = root / "vimeo90k_train_LR7frames.lmdb"
    assert lmdb_store.read_meta_info(store)["00001/0002/im7"] == (8, 12, 3)
    got = read_u8(lmdb_store.frame_path(store, "00001/0002/im7"))
    assert got.dtype == torch.uint8 and torch.equal(got, torch.from_numpy(lr["00001/0002/im7"]).permute(2, 0, 1))
    with pytest.raises(FileNotFoundError, match="not in the LMDB store"):
        read_u8(lmdb_store.frame_path(store, "09999/0001/im1"))


def test_vimeo_training_reads_the_lmdbs(vimeo_lmdb):
    from lgfn.data.datamodule import VSRDataModule
    from lgfn.data.layouts import discover_vimeo90k

    root, hr, lr = vimeo_lmdb
    cs = discover_vimeo90k(root, "train")
    assert cs.lr_dir.name == "vimeo90k_train_LR7frames.lmdb" and cs.clips[0].size == (32, 48)
    dm = VSRDataModule("vimeo90k", str(root), patch_size=16, batch_size=2, num_workers=0, val_max_clips=1)
    dm.setup("fit")
    ds = dm.data_train
    sample = ds[(1, 123)]
    lr_crop, hr_crop = _reference_patch(ds, (1, 123))  # whole stored frames, then the same crop and flips
    assert torch.equal(sample["lr"], lr_crop) and torch.equal(sample["hr"], hr_crop)
    whole = torch.stack([torch.from_numpy(lr[f"00001/0002/im{i}"]).permute(2, 0, 1) for i in range(1, 8)])
    assert sample["lr"].shape == (7, 3, 4, 4) and bool(torch.isin(sample["lr"].mul(255).round(), whole.float()).all())
    assert len(dm.data_test) == 1  # the test clip still comes from sequences/


def test_lmdb_is_bi_only(vimeo_lmdb):
    import shutil

    from lgfn.data.layouts import discover_vimeo90k

    root, _, _ = vimeo_lmdb
    shutil.rmtree(root / "sequences")
    with pytest.raises(FileNotFoundError, match=r"MATLAB-bicubic \(BI\).*lgfn-prepare vimeo90k"):
        discover_vimeo90k(root, "train", degradation="bd")


def test_lmdb_list_entry_missing_from_the_store_is_named(vimeo_lmdb):
    from lgfn.data.layouts import discover_vimeo90k

    root, _, _ = vimeo_lmdb
    (root / "sep_trainlist.txt").write_text("00001/0001\n00007/0007\n")
    with pytest.raises(FileNotFoundError, match="00007/0007.*vimeo90k_train_GT_only4th.lmdb"):
        discover_vimeo90k(root, "train")


# --------------------------------------------------------------------------- manifest
def test_manifest_is_read_on_the_next_run_and_rebuilt_when_a_clip_is_added(tmp_path, monkeypatch):
    from conftest import write_frames

    from lgfn.data.datamodule import VSRDataModule
    from lgfn.data.table import ClipTable

    root = tmp_path / "clips"
    for k in range(2):
        write_frames(root / f"c{k}", 5, seed=k)
    scans = []
    real = VSRDataModule._scan

    def counting(self, split):
        scans.append(split)
        return real(self, split)

    monkeypatch.setattr(VSRDataModule, "_scan", counting)
    kw = dict(num_frames=3, patch_size=16, num_workers=0, manifest_dir=str(tmp_path / "m"))

    def clips():
        dm = VSRDataModule("folder", str(root), **kw)
        dm.setup("fit")
        return dm

    first = clips()
    assert scans == ["test", "train"] and len(list((tmp_path / "m").glob("*.npz"))) == 2
    second = clips()
    assert scans == ["test", "train"]  # read from the manifest: no scan
    assert isinstance(second.data_train.clips, ClipTable)
    assert [c.name for c in second.data_train.clips] == ["c0", "c1"]
    assert torch.equal(first.data_train[(3, 7)]["lr"], second.data_train[(3, 7)]["lr"])
    write_frames(root / "c2", 5, seed=2)  # a clip is added
    third = clips()
    assert scans == ["test", "train"] * 2 and [c.name for c in third.data_train.clips] == ["c0", "c1", "c2"]
    write_frames(root / "c2", 6, seed=2)  # a frame is added to a clip
    assert clips().data_train.clips.length(2) == 6 and len(scans) == 6


def test_manifest_of_a_64k_clip_list_loads_in_well_under_a_second(tmp_path):
    import time

    from lgfn.data import manifest
    from lgfn.data.layouts import Clip, ClipSet
    from lgfn.data.table import ClipTable

    names = [f"{s:05d}/{c:04d}" for s in range(1, 97) for c in range(1, 675)][:64_612]
    clips = [Clip(name=n, hr=[tmp_path / "sequences" / n / f"im{i}.png" for i in range(1, 8)], centre=3, size=(256, 448))
             for n in names]
    path = tmp_path / "m.npz"
    manifest.save(path, ClipSet(clips=clips), {"k": 1}, "stamp")
    start = time.perf_counter()
    cs = manifest.load(path, {"k": 1}, "stamp")
    seconds = time.perf_counter() - start
    assert isinstance(cs.clips, ClipTable) and len(cs.clips) == 64_612 and seconds < 1.0
    assert cs.clips[64_611].hr[3] == clips[-1].hr[3] and cs.clips[5].size == (256, 448)
    assert cs.clips.nbytes() < 20 * 2**20  # vs ~200 MiB of Clip objects
    assert manifest.load(path, {"k": 1}, "other stamp") is None and manifest.load(path, {"k": 2}, "stamp") is None


def test_clip_table_round_trip_and_slices(tiny_vimeo90k_premade_lr, tiny_folder):
    from lgfn.data.layouts import discover_folder, discover_vimeo90k
    from lgfn.data.table import ClipTable

    for clips in (discover_vimeo90k(tiny_vimeo90k_premade_lr, "test").clips, discover_folder(tiny_folder).clips):
        table = ClipTable.from_clips(clips)
        assert list(table) == clips and table[1:].names.tolist() == [c.name for c in clips[1:]]
        assert table[-1] == clips[-1]


# --------------------------------------------------------------------------- workers
def test_loader_workers_follow_the_cpus_the_job_has(monkeypatch, tiny_vid4):
    from lgfn.data import cpus
    from lgfn.data.datamodule import VSRDataModule

    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
    monkeypatch.setattr(cpus.Path, "read_text", lambda self: "max 100000")
    assert cpus.usable_cpus() == 10
    monkeypatch.setattr(cpus.Path, "read_text", lambda self: "400000 100000")  # a 4-CPU container quota
    assert cpus.usable_cpus() == 4
    monkeypatch.setattr(cpus.Path, "read_text", lambda self: "max 100000")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    dm = VSRDataModule("vid4", str(tiny_vid4), num_frames=5, num_workers=None)
    assert dm.loader_workers() == 4  # 10 CPUs / 2 ranks, less the rank's own process
    assert VSRDataModule("vid4", str(tiny_vid4), num_workers=3).loader_workers() == 3


# --------------------------------------------------------------------------- lgfn-prepare
def test_prepare_writes_what_the_loader_would_make(tiny_vimeo90k, tmp_path):
    import shutil

    from lgfn.data.datasets import VSRTestDataset
    from lgfn.data.layouts import discover_vimeo90k
    from lgfn.data.prepare import main

    root = tmp_path / "v"
    shutil.copytree(tiny_vimeo90k, root)
    assert main(["vimeo90k", str(root), "--degradation", "both", "--workers", "2"]) == 0
    for kind in ("bi", "bd"):
        assert (root / f"sequences_{kind.upper()}x4" / "00001" / "0001" / "im7.png").is_file()
        made = discover_vimeo90k(root, "test", degradation=kind)
        assert made.lr_dir.name == f"sequences_{kind.upper()}x4"
        fly = discover_vimeo90k(tiny_vimeo90k, "test", degradation=kind)
        a, b = VSRTestDataset(made.clips, degradation=kind)[1], VSRTestDataset(fly.clips, degradation=kind)[1]
        assert torch.equal(a["lr"], b["lr"]) and torch.equal(a["hr"], b["hr"])
    assert not list(root.glob("*.partial"))
    assert main(["vimeo90k", str(root)]) == 0  # already there: kept
    assert main(["vid4", str(tmp_path / "nowhere")]) == 1 and main(["vid4", str(root), "--workers", "0"]) == 2


def test_prepare_vid4_and_spmcs_layouts(tiny_vid4_hr_only, tiny_spmcs, tmp_path):
    import shutil

    from lgfn.data.layouts import discover_paired
    from lgfn.data.prepare import prepare

    for src in (tiny_vid4_hr_only, tiny_spmcs):
        root = tmp_path / src.name
        shutil.copytree(src, root)
        (out,) = prepare("spmcs" if src is tiny_spmcs else "vid4", root, workers=1, log=lambda m: None)
        cs = discover_paired(root)
        assert cs.lr_dir == out and all(len(c.lr) == len(c.hr) for c in cs.clips)


def test_manifest_under_ddp_rank0_scans_the_others_read(tmp_path, monkeypatch):
    from lgfn.data import manifest
    from lgfn.data.layouts import Clip, ClipSet

    (tmp_path / "root").mkdir()
    barriers, scans = [], []

    def scan():
        scans.append(1)
        return ClipSet(clips=[Clip(name="a", hr=[tmp_path / "root" / "a" / "0.png"])])

    monkeypatch.setattr(manifest, "_barrier", lambda: barriers.append(1))
    kw = dict(folder=tmp_path / "m")
    monkeypatch.setattr(manifest, "_dist", lambda: (0, 2))
    assert len(manifest.load_or_scan(tmp_path / "root", {"k": 1}, scan, **kw).clips) == 1
    monkeypatch.setattr(manifest, "_dist", lambda: (1, 2))
    assert manifest.load_or_scan(tmp_path / "root", {"k": 1}, scan, **kw).clips.name(0) == "a"
    assert scans == [1] and barriers == [1, 1]  # rank 1 read rank 0's manifest after the barrier

    def broken():
        raise FileNotFoundError("clip 'x' is missing")

    monkeypatch.setattr(manifest, "_dist", lambda: (0, 2))
    with pytest.raises(FileNotFoundError, match="missing"):
        manifest.load_or_scan(tmp_path / "root", {"k": 2}, broken, **kw)
    assert barriers == [1, 1, 1]  # rank 0 still joined the barrier before raising: no rank hangs


def test_lmdb_training_through_dataloader_workers(vimeo_lmdb):
    # Each worker opens the stores itself after the fork (lgfn.data.lmdb_store keys its handles by pid).
    from torch.utils.data import DataLoader

    from lgfn.data.datasets import ResumableSampler, VSRTrainDataset
    from lgfn.data.layouts import discover_vimeo90k
    from lgfn.data.lmdb_store import _envs

    root, _, _ = vimeo_lmdb
    ds = VSRTrainDataset(discover_vimeo90k(root, "train").clips, patch_size=16)
    ds[(0, 1)]  # the parent opens the stores first
    assert _envs
    loader = DataLoader(ds, batch_size=3, sampler=ResumableSampler(ds, seed=0, num_replicas=1, rank=0), num_workers=1)
    (batch,) = list(loader)
    want = torch.stack([ds[k]["lr"] for k in ResumableSampler(ds, seed=0, num_replicas=1, rank=0)])
    assert torch.equal(batch["lr"], want)
