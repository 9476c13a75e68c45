"""lgfn-upscale as a new user runs it: outputs that would destroy inputs, existing outputs, usage errors, tiling
that does not pay, and static ONNX exports on larger frames."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from test_upscale import read_video, smooth_frames, tiny_net, write_folder, write_video

import lgfn.inference.tiling
import lgfn.inference.upscale
from lgfn.checkpoints.weights_file import save_weights
from lgfn.inference import upscale
from lgfn.inference.tiling import default_overlap, tiling_pays
from lgfn.inference.upscale import main


@pytest.fixture
def weights(tmp_path):
    path = tmp_path / "tiny.pt"
    save_weights(tiny_net(), path, meta={"padding": "reflection_circle"})
    return path


def digest(path: Path) -> str:
    """Content hash of a file, or of every file of a folder (names and bytes)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("lgfn-upscale: error:")]
    assert len(lines) == 1, err
    return lines[0]


# --------------------------------------------------------------------------- OUTPUT is INPUT
def test_output_that_is_the_input_video_is_refused_under_every_spelling(tmp_path, weights, capsys):
    clip = tmp_path / "clip.mp4"
    write_video(clip, smooth_frames(3, 16, 16))
    before = digest(clip)
    (tmp_path / "link.mp4").symlink_to(clip)
    (tmp_path / "sub").mkdir()
    os.link(clip, tmp_path / "hard.mp4")
    spellings = [clip, tmp_path / "link.mp4", tmp_path / "sub" / ".." / "clip.mp4", tmp_path / "hard.mp4"]
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        spellings.append(Path("clip.mp4"))  # relative, against an absolute INPUT
        for out in spellings:
            for extra in ([], ["--overwrite"]):
                assert main([str(clip), str(out), "--ckpt", str(weights), *extra]) == 2
                assert "is the input" in error_line(capsys.readouterr().err)
    finally:
        os.chdir(cwd)
    assert digest(clip) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "hard.mp4", "link.mp4", "sub", "tiny.pt"]


def test_output_folder_that_is_or_holds_the_input_is_refused(tmp_path, weights, capsys):
    frames = tmp_path / "frames"
    write_folder(frames, smooth_frames(3, 12, 12))
    before = digest(frames)
    for extra in ([], ["--overwrite"]):
        assert main([str(frames), str(frames), "--ckpt", str(weights), *extra]) == 2
        assert "is the input" in error_line(capsys.readouterr().err)
        assert main([str(frames), str(tmp_path / "frames" / "."), "--ckpt", str(weights), *extra]) == 2
        capsys.readouterr()
    assert digest(frames) == before
    # --overwrite would replace a folder that holds the input video: refused too.
    box = tmp_path / "box"
    box.mkdir()
    write_video(box / "in.mp4", smooth_frames(3, 16, 16))
    kept = digest(box)
    assert main([str(box / "in.mp4"), str(box), "--ckpt", str(weights), "--overwrite"]) == 2
    assert "holds the input" in error_line(capsys.readouterr().err)
    assert digest(box) == kept


# --------------------------------------------------------------------------- one rule for existing outputs
def test_existing_output_video_needs_overwrite(tmp_path, weights, capsys):
    write_folder(tmp_path / "in", smooth_frames(3, 12, 16))
    out = tmp_path / "out.mp4"
    out.write_bytes(b"an older video")
    assert main([str(tmp_path / "in"), str(out), "--ckpt", str(weights)]) == 2
    assert "exists: pass --overwrite" in error_line(capsys.readouterr().err)
    assert out.read_bytes() == b"an older video"
    assert main([str(tmp_path / "in"), str(out), "--ckpt", str(weights), "--overwrite"]) == 0
    frames, _ = read_video(out)
    assert len(frames) == 3 and frames[0].shape == (48, 64, 3)


def test_existing_frame_folder_needs_overwrite_and_is_replaced_whole(tmp_path, weights, capsys):
    write_folder(tmp_path / "in", smooth_frames(3, 12, 16))
    out = tmp_path / "out"
    out.mkdir()
    for name in ("f0.png", "f9.png"):  # an earlier, longer run's frames
        Image.new("RGB", (4, 4)).save(out / name)
    before = digest(out)
    assert main([str(tmp_path / "in"), str(out), "--ckpt", str(weights)]) == 2
    assert "exists and is not empty: pass --overwrite" in error_line(capsys.readouterr().err)
    assert digest(out) == before
    assert main([str(tmp_path / "in"), str(out), "--ckpt", str(weights), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["f0.png", "f1.png", "f2.png"]  # f9 gone: not a mix of runs
    assert Image.open(out / "f0.png").size == (64, 48)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out", "tiny.pt"]  # no temp folders left


def test_overwrite_never_replaces_a_folder_holding_more_than_frames(tmp_path, weights, capsys):
    write_folder(tmp_path / "in", smooth_frames(3, 12, 16))
    out = tmp_path / "work"
    (out / "src").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    before = digest(out)
    assert main([str(tmp_path / "in"), str(out), "--ckpt", str(weights), "--overwrite"]) == 2
    assert "not replacing it, even with --overwrite" in error_line(capsys.readouterr().err)
    assert digest(out) == before


def test_existing_compare_png_needs_overwrite(tmp_path, weights, capsys):
    write_folder(tmp_path / "in", smooth_frames(3, 12, 16))
    cmp = tmp_path / "cmp.png"
    cmp.write_bytes(b"old")
    args = [str(tmp_path / "in"), str(tmp_path / "o"), "--ckpt", str(weights), "--compare", "1", "--compare-out", str(cmp)]
    assert main(args) == 2
    assert "--compare-out" in error_line(capsys.readouterr().err)
    assert cmp.read_bytes() == b"old" and not (tmp_path / "o").exists()
    assert main([*args, "--overwrite"]) == 0
    assert Image.open(cmp).size == (128, 48)
    # Never into the input's own folder, where it could replace a frame.
    frame = tmp_path / "in" / "f0.png"
    before = digest(frame)
    assert main([*args[:-1], str(frame), "--overwrite"]) == 2
    assert "into the input" in error_line(capsys.readouterr().err)
    assert digest(frame) == before


# --------------------------------------------------------------------------- usage errors: exit 2, the flag named
@pytest.mark.parametrize(
    "extra,output,match",
    [
        (["--padding", "zeros"], "out", r"--padding zeros: expected one of replicate, reflection, reflection_circle"),
        ([], "out.gif", r"OUTPUT .*out\.gif: unsupported extension '\.gif'"),
        (["--onnx", "model.onnx"], "out", r"--ckpt and --onnx exclude each other"),
    ],
)
def test_usage_errors_exit_2_and_name_the_flag(tmp_path, weights, capsys, extra, output, match):
    write_folder(tmp_path / "in", smooth_frames(2, 8, 8))
    code = main([str(tmp_path / "in"), str(tmp_path / output), "--ckpt", str(weights), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("usage: lgfn-upscale")
    assert re.search(match, error_line(err)), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "tiny.pt"]


# --------------------------------------------------------------------------- tiling that does not pay
def test_tiling_pays_only_when_tiles_are_smaller_than_the_frame():
    assert not tiling_pays(64, 96, tile=16, overlap=108)  # the case: every tile is the whole frame
    assert not tiling_pays(64, 96, tile=32, overlap=40)
    assert tiling_pays(300, 300, tile=64, overlap=36)
    # Edge tiles are clamped: 100 px with tile 60, overlap 10 has inputs of 70 and 50 px, both < 100.
    assert tiling_pays(100, 100, tile=60, overlap=10)
    assert not tiling_pays(100, 100, tile=60, overlap=40)


def test_small_tile_runs_untiled_with_one_note(tmp_path, weights, capsys, monkeypatch):
    frames = smooth_frames(3, 24, 32)
    write_folder(tmp_path / "in", frames)
    assert main([str(tmp_path / "in"), str(tmp_path / "plain"), "--ckpt", str(weights)]) == 0
    capsys.readouterr()
    tiles = []
    real = lgfn.inference.tiling.upscale_window

    def spy(net, window, tile=None, overlap=None, **kw):
        tiles.append((tile, overlap))
        return real(net, window, tile=tile, overlap=overlap, **kw)

    monkeypatch.setattr(lgfn.inference.upscale, "upscale_window", spy)  # the name upscale.py calls
    assert main([str(tmp_path / "in"), str(tmp_path / "tiled"), "--ckpt", str(weights), "--tile", "16"]) == 0
    err = capsys.readouterr().err
    notes = [ln for ln in err.splitlines() if "tiling does not pay" in ln]
    assert len(notes) == 1 and "--tile 16" in notes[0] and "36 px overlap" in notes[0] and "32x24" in notes[0]
    assert tiles == [(None, default_overlap(tiny_net()))] * 3  # the network ran on whole frames
    for i in range(3):
        assert digest(tmp_path / "tiled" / f"f{i}.png") == digest(tmp_path / "plain" / f"f{i}.png")


def test_tile_below_the_overlap_on_a_large_frame_is_kept_with_a_note(capsys):
    net = tiny_net()
    info = SimpleNamespace(height=300, width=300)
    assert upscale.plan_tiles(net, info, 16, None) == (16, 36)
    err = capsys.readouterr().err
    assert "smaller than the 36 px overlap" in err and err.count("\n") == 1
    assert upscale.plan_tiles(net, info, 64, None) == (64, 36)
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------- ONNX
class _FakeOnnx:
    """What plan_tiles reads from an OnnxNet: a static or dynamic export of the tiny net."""

    def __init__(self, fixed_hw):
        self.fixed_hw = fixed_hw
        self.path = Path("tiny.onnx")
        self.runner = object()
        self.net_class = "LGFN"
        self.config = dict(tiny_net().config)


def test_onnx_static_export_on_larger_frames_is_refused_with_the_reason():
    with pytest.raises(upscale.UsageError) as e:
        upscale.plan_tiles(_FakeOnnx((16, 16)), SimpleNamespace(height=24, width=20), None, None)
    msg = str(e.value)
    assert "exported for 16x16 LR frames only and the input is 20x24" in msg
    assert "36 px of context" in msg and "--dynamic" in msg and "\n" not in msg


def test_onnx_overlap_comes_from_the_exported_network(capsys):
    # The sidecar's net config gives the receptive radius: the same overlap as the PyTorch network, not 16.
    tile, overlap = upscale.plan_tiles(_FakeOnnx(None), SimpleNamespace(height=300, width=300), 64, None)
    assert (tile, overlap) == (64, default_overlap(tiny_net())) and overlap == 36
    assert "approximate" in capsys.readouterr().err
    # A static export that holds the frame ignores --tile (every call runs at the fixed size anyway).
    assert upscale.plan_tiles(_FakeOnnx((32, 32)), SimpleNamespace(height=24, width=20), 8, None) == (None, 36)
    assert "--tile 8 ignored" in capsys.readouterr().err


@pytest.mark.slow
def test_static_onnx_export_on_larger_frames_exits_2_without_output(tmp_path, weights, capsys):
    from lgfn.inference.export import export_onnx

    onnx_path = export_onnx(tiny_net(), tmp_path / "static.onnx", num_frames=3, dynamic=False, height=16, width=16)
    write_folder(tmp_path / "in", smooth_frames(3, 24, 20))
    assert main([str(tmp_path / "in"), str(tmp_path / "out"), "--onnx", str(onnx_path)]) == 2
    assert "exported for 16x16 LR frames only and the input is 20x24" in error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()
    # Frames that fit the export still run.
    write_folder(tmp_path / "small", smooth_frames(3, 16, 16))
    assert main([str(tmp_path / "small"), str(tmp_path / "out2"), "--onnx", str(onnx_path)]) == 0
    assert main([str(tmp_path / "small"), str(tmp_path / "ref"), "--ckpt", str(weights)]) == 0
    for i in range(3):
        got = np.asarray(Image.open(tmp_path / "out2" / f"f{i}.png"), dtype=np.int16)
        ref = np.asarray(Image.open(tmp_path / "ref" / f"f{i}.png"), dtype=np.int16)
        assert got.shape == (64, 64, 3) and np.abs(got - ref).max() <= 1


# --------------------------------------------------------------------------- honest input, plain errors (issue 24)
def _truncated_mkv(tmp_path: Path) -> Path:
    whole = tmp_path / "pan_whole.mkv"
    write_video(whole, smooth_frames(20, 16, 16))
    data = whole.read_bytes()
    cut = tmp_path / "pan.mkv"
    cut.write_bytes(data[: int(len(data) * 0.84)])
    whole.unlink()
    return cut


def test_a_truncated_video_says_so_and_fails_with_strict(tmp_path, weights, capsys):
    cut = _truncated_mkv(tmp_path)
    assert main([str(cut), str(tmp_path / "strict.mp4"), "--ckpt", str(weights), "--strict"]) == 1
    line = error_line(capsys.readouterr().err)
    m = re.fullmatch(rf"lgfn-upscale: error: {re.escape(str(cut))}: (\d+) frames could be decoded but its container "
                     r"declares 20 \(the file looks truncated or damaged\); --strict stops here .*", line)
    assert m and 0 < int(m[1]) < 20, line
    assert not (tmp_path / "strict.mp4").exists() and not list(tmp_path.glob(".*"))
    # without --strict: the frames that decode, with a note and the count in the last line; exit 0
    assert main([str(cut), str(tmp_path / "out.mp4"), "--ckpt", str(weights)]) == 0
    err = capsys.readouterr().err
    n = int(m[1])
    assert (f"lgfn-upscale: note: {cut}: {n} frames could be decoded but its container declares 20 (the file looks "
            f"truncated or damaged): upscaling those {n}; --strict makes this an error") in err
    assert f"wrote {n} frames (its container declares 20) of 64x64" in err
    assert len(read_video(tmp_path / "out.mp4")[0]) == n
    # a whole video: no note, and --strict passes
    write_video(tmp_path / "whole.mkv", smooth_frames(6, 16, 16))
    assert main([str(tmp_path / "whole.mkv"), str(tmp_path / "w.mp4"), "--ckpt", str(weights), "--strict"]) == 0
    assert "note" not in capsys.readouterr().err


def test_input_that_is_not_a_video_is_one_sentence_without_errno(tmp_path, weights, capsys):
    junk = tmp_path / "pan.mp4"
    junk.write_bytes(b"\0" * 3000)
    assert main([str(junk), str(tmp_path / "out.mp4"), "--ckpt", str(weights)]) == 1
    assert error_line(capsys.readouterr().err) == (
        f"lgfn-upscale: error: cannot read video {junk}: it is not a video FFmpeg can decode, or it is damaged "
        "(invalid data)")


def test_an_output_under_a_file_names_the_file(tmp_path, weights, capsys):
    write_video(tmp_path / "pan.mp4", smooth_frames(3, 16, 16))
    (tmp_path / "pan.mkv").write_bytes(b"a video")
    out = tmp_path / "pan.mkv" / "out.mp4"
    assert main([str(tmp_path / "pan.mp4"), str(out), "--ckpt", str(weights)]) == 2
    assert error_line(capsys.readouterr().err) == (
        f"lgfn-upscale: error: OUTPUT {out}: {tmp_path / 'pan.mkv'} is a file, not a folder, so nothing can be "
        "written under it; choose another OUTPUT")
    page = tmp_path / "pan.mkv" / "c.html"  # the page too, before any work
    assert main([str(tmp_path / "pan.mp4"), str(tmp_path / "o.mp4"), "--ckpt", str(weights), "--compare", "1",
                 "--compare-out", str(page)]) == 2
    assert "is a file, not a folder" in error_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pan.mkv", "pan.mp4", "tiny.pt"]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_an_output_in_a_folder_that_takes_no_files_names_no_temp_file(tmp_path, weights, capsys):
    write_video(tmp_path / "pan.mp4", smooth_frames(3, 16, 16))
    for out in ("/proc/out.mp4", "/proc/frames"):
        assert main([str(tmp_path / "pan.mp4"), out, "--ckpt", str(weights)]) == 1
        line = error_line(capsys.readouterr().err)
        assert line.startswith(f"lgfn-upscale: error: OUTPUT {out}: ") and "/proc/." not in line, line


def test_compare_page_path_is_printed_and_exists(tmp_path, weights, capsys):
    write_video(tmp_path / "pan.mp4", smooth_frames(3, 16, 16))
    page = tmp_path / "pages" / "pan.html"
    assert main([str(tmp_path / "pan.mp4"), str(tmp_path / "o.mp4"), "--ckpt", str(weights), "--compare", "1",
                 "--compare-out", str(page)]) == 0
    printed = re.search(r"comparison page .* to (\S+)$", capsys.readouterr().err, re.M)
    assert printed and Path(printed[1]) == page and page.is_file()


def test_export_prints_the_sidecars_full_path(tmp_path, monkeypatch, capsys):
    import lgfn.checkpoints.reader
    import lgfn.inference.export as export

    monkeypatch.setattr(lgfn.checkpoints.reader, "load_network", lambda *a, **k: (None, {"num_frames": 3}))

    def fake_export(net, out, **kwargs):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_bytes(b"pt2")
        Path(f"{out}.json").write_text("{}")
        return Path(out)

    monkeypatch.setattr(export, "export_torch", fake_export)
    monkeypatch.chdir(tmp_path)
    assert export.main(["--ckpt", "w.pt", "--format", "torch_export", "--out", "nodir4/m.pt2"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(r"wrote nodir4/m\.pt2 and nodir4/m\.pt2\.json \(\d+\.\d s\)", line), line
    assert Path("nodir4/m.pt2.json").is_file()
