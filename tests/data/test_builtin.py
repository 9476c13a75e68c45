"""The built-in clip generator: layout, motion, disjoint photos, cache, determinism, no network."""

import hashlib
import io
import json
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lgfn.data import builtin
from lgfn.data.builtin import available_photos, ensure_builtin, render_clip


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix in (".png", ".json")
    }


def _clip(root: Path, split: str, name: str) -> np.ndarray:
    frames = sorted((root / split / name).glob("*.png"))
    return np.stack([np.asarray(Image.open(f), dtype=np.float32) / 255 for f in frames])


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("builtin")
    ensure_builtin(root, seed=0, small=True)
    return root


def test_writes_hr_rgb_frames_and_manifest(small_set):
    out = ensure_builtin(small_set, seed=0, small=True)
    assert out == {"train": small_set / "train", "test": small_set / "test"}
    manifest = json.loads((small_set / "manifest.json").read_text())
    for split in ("train", "test"):
        names = sorted(p.name for p in out[split].iterdir())
        assert names == sorted(c["name"] for c in manifest["clips"][split])
        assert len(names) == builtin._split_specs(True)[split].clips  # 3 train (one held out for validation), 2 test
        for name in names:
            frames = sorted((out[split] / name).iterdir())
            assert [f.name for f in frames] == [f"{i:03d}.png" for i in range(9)]
            with Image.open(frames[0]) as im:
                assert (im.mode, im.size) == ("RGB", (80, 64))
    # test clips are named after their photo
    assert all(c["name"] == c["background"] for c in manifest["clips"]["test"])
    assert {c["name"] for c in manifest["clips"]["test"]} <= set(available_photos())


def test_motion_is_smooth_but_not_static(small_set):
    clips = {
        (s, p.name): _clip(small_set, s, p.name) for s in ("train", "test") for p in (small_set / s).iterdir()
    }
    videos = list(clips.values())
    for key, v in clips.items():
        step = np.abs(np.diff(v, axis=0)).mean(axis=(1, 2, 3))
        assert (step > 1 / 255).all(), key  # every frame moves
        # consecutive frames are far closer than unrelated images (another clip's frame)
        other = next(o for o in videos if o is not v)
        assert step.max() < 0.5 * np.abs(v[0] - other[0]).mean(), key
        # and motion accumulates: the ends of the clip differ more than neighbours do
        assert np.abs(v[0] - v[-1]).mean() > 1.5 * step.mean(), key


def test_foreground_is_a_soft_cutout_moving_over_the_background():
    # A grey background and a pure green foreground make the compositing weight readable: alpha = G - R.
    g = torch.linspace(0.2, 0.8, 200)
    background = (g[None, :, None] * 0.5 + g[None, None, :] * 0.5).expand(3, 200, 200).contiguous()
    foreground = torch.zeros(3, 150, 150)
    foreground[1] = 1.0
    video = render_clip(background, foreground, frames=9, height=64, width=80, rng=np.random.default_rng(3))
    assert video.shape == (9, 64, 80, 3) and video.dtype == torch.uint8
    v = video.double() / 255
    alpha = (v[..., 1] - v[..., 0]).clamp(0, 1)
    area = alpha.sum(dim=(1, 2))
    assert (area > 0.03 * 64 * 80).all() and (area < 0.6 * 64 * 80).all()
    soft = ((alpha > 0.05) & (alpha < 0.95)).sum(dim=(1, 2))
    assert (soft > 0).all()  # feathered edge, not a hard cut
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(80.0), indexing="ij")
    cx = (alpha * xs).sum(dim=(1, 2)) / area
    cy = (alpha * ys).sum(dim=(1, 2)) / area
    travel = torch.hypot(cx[-1] - cx[0], cy[-1] - cy[0])
    steps = torch.hypot(cx.diff(), cy.diff())
    assert travel > 2.0  # it moves on its own path ...
    assert steps.max() < 14.0  # ... smoothly (at most about 3 LR pixels per frame)


def test_train_and_test_use_disjoint_photos(small_set):
    manifest = json.loads((small_set / "manifest.json").read_text())

    def photos(clips):
        return {n for c in clips for n in [c["background"], c["foreground"], *c["foregrounds"]]}

    assert not photos(manifest["clips"]["train"]) & photos(manifest["clips"]["test"])
    # the default (large) plan too, without rendering it
    specs = builtin._split_specs(False)
    plans = {s: builtin._plan(s, specs[s], available_photos()) for s in ("train", "test")}
    assert not photos(plans["train"]) & photos(plans["test"])
    for split, plan in plans.items():
        assert len({c["name"] for c in plan}) == specs[split].clips
        for c in plan:  # 1 to 3 cut-outs, none of them the clip's own background
            assert 1 <= len(c["foregrounds"]) <= 3 and c["background"] not in c["foregrounds"]
    # natural colour photographs from three packages' wheels are in the training pool, none in the test pool
    assert {"motorcycle", "grace_hopper", "china", "flower"} <= photos(plans["train"])
    # different names must also be different pictures (skimage's `cat` is `chelsea`, for one)
    digests = [hashlib.sha256(builtin._photo_path(n).read_bytes()).hexdigest() for n in available_photos()]
    assert len(set(digests)) == len(digests)


def test_second_call_returns_without_rewriting(small_set):
    before = {p: p.stat().st_mtime_ns for p in small_set.rglob("*") if p.is_file()}
    ensure_builtin(small_set, seed=0, small=True)
    after = {p: p.stat().st_mtime_ns for p in small_set.rglob("*") if p.is_file()}
    assert before == after


def test_same_seed_same_bytes_other_seed_other_frames(tmp_path, small_set):
    ensure_builtin(tmp_path / "a", seed=0, small=True)
    assert _files(tmp_path / "a") == _files(small_set)
    ensure_builtin(tmp_path / "b", seed=1, small=True)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys()  # same clips ...
    assert all(a[k] != b[k] for k in a if k.endswith(".png"))  # ... other motion


def test_partial_or_stale_set_is_regenerated(tmp_path, small_set):
    root = tmp_path / "set"
    shutil.copytree(small_set, root)
    reference = _files(small_set)
    # killed mid-swap: manifest gone, a frame missing, a temp dir left behind
    (root / "manifest.json").unlink()
    next((root / "train").rglob("004.png")).unlink()
    (root / ".tmp-dead").mkdir()
    ensure_builtin(root, seed=0, small=True)
    assert _files(root) == reference
    assert not (root / ".tmp-dead").exists()
    # a manifest written by another version (or other parameters) is stale too
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["params"]["version"] = -1
    (root / "manifest.json").write_text(json.dumps(manifest))
    frame = next((root / "test").rglob("000.png"))
    frame.write_bytes(b"junk")
    ensure_builtin(root, seed=0, small=True)
    assert _files(root) == reference
    # a frame deleted behind a valid manifest is noticed as well
    frame.unlink()
    ensure_builtin(root, seed=0, small=True)
    assert frame.read_bytes() == reference[str(frame.relative_to(root))]


def test_generation_never_opens_a_socket(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access during builtin generation")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    threads = torch.get_num_threads()
    ensure_builtin(tmp_path, seed=0, small=True)
    assert (tmp_path / "manifest.json").is_file()
    assert torch.get_num_threads() == threads  # the generator's 1-thread setting is undone


def test_concurrent_callers_share_one_complete_set(tmp_path, small_set, monkeypatch):
    # Threads stand in for DDP ranks / joblib jobs: each FileLock opens its own descriptor, so flock
    # contends between them exactly as between processes.
    calls = []
    generate = builtin._generate

    def counting(*args, **kwargs):
        calls.append(1)
        return generate(*args, **kwargs)

    monkeypatch.setattr(builtin, "_generate", counting)
    start = threading.Barrier(3)
    results, errors = [], []

    def call():
        start.wait()
        try:
            results.append(ensure_builtin(tmp_path, seed=0, small=True))
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == 3
    assert len(calls) == 1  # the others waited, then found the finished set
    assert _files(tmp_path) == _files(small_set)
    assert not list(tmp_path.glob(".tmp-*"))


def test_png_writer_round_trips_through_pillow():
    frame = np.random.default_rng(0).integers(0, 256, size=(7, 5, 3), dtype=np.uint8)
    with Image.open(io.BytesIO(builtin._png_bytes(frame))) as im:
        assert im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), frame)
    with pytest.raises(ValueError, match="uint8"):
        builtin._png_bytes(frame.astype(np.float32))


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="seed"):
        ensure_builtin(tmp_path, seed=-1, small=True)
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(NotADirectoryError, match="file"):
        ensure_builtin(file, small=True)


def test_clips_have_layers_with_parallax_occlusion_and_speeds_from_subpixel_up():
    # Flat-coloured photos make each layer readable: background grey ramp, cut-outs pure R, G and B.
    g = torch.linspace(0.2, 0.8, 300)
    background = (g[None, :, None] * 0.5 + g[None, None, :] * 0.5).expand(3, 300, 300).contiguous()
    layers = []
    for ch in range(3):
        fg = torch.zeros(3, 150, 150)
        fg[ch] = 1.0
        layers.append(fg)
    seen_occlusion = False
    for seed in range(4):
        video = render_clip(background, layers, frames=9, height=96, width=128, rng=np.random.default_rng(seed))
        v = video.double() / 255
        grey = (v.amax(-1) - v.amin(-1)) < 0.02  # background pixels (r = g = b)
        assert grey.any(dim=(1, 2)).all()
        colour = ~grey
        assert colour.any(dim=(1, 2)).all()  # every frame shows at least one cut-out
        # a cut-out uncovers background that the previous frame hid (disocclusion)
        seen_occlusion |= bool((colour[:-1] & grey[1:]).any())
    assert seen_occlusion


def test_background_speeds_span_subpixel_to_several_pixels():
    rng = np.random.default_rng(0)
    t = np.arange(16.0) - 7.5
    speeds = [np.linalg.norm(builtin._drift(rng, t, (0.25, 8.0), (0.3, 1.5))[1]) for _ in range(400)]
    assert min(speeds) < 0.5 and max(speeds) > 6.0  # HR pixels per frame: 1/8 to 1.5 LR pixels and more
    assert 0.3 < np.mean(np.array(speeds) < 1.4) < 0.7  # log-uniform: slow motion as common as fast
