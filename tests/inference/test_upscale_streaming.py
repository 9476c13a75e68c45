"""lgfn-upscale's overlapped pipeline (reader and writer threads) against ``--sequential``: the same bytes,
the same one-line errors and exit codes, no partial output, no thread left running; ReadAhead and
FrameWriter(behind=) on their own."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from test_upscale import read_video, smooth_frames, tiny_net, write_folder, write_video

import lgfn.inference.tiling
import lgfn.inference.upscale
from lgfn.checkpoints.weights_file import save_weights
from lgfn.inference.upscale import main
from lgfn.inference.video import FrameWriter, ReadAhead


@pytest.fixture
def weights(tmp_path):
    path = tmp_path / "tiny.pt"
    save_weights(tiny_net(), path, meta={"padding": "reflection_circle"})
    return path


def pipeline_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("lgfn-")]


def run_both(src: Path, out_dir: Path, weights: Path, name: str, capsys, *extra: str) -> dict[str, tuple[int, str]]:
    """Run overlapped and --sequential into out_dir/{overlap,sequential}/name: {mode: (exit code, stderr)}."""
    results = {}
    for mode, flags in (("overlap", ()), ("sequential", ("--sequential",))):
        (out_dir / mode).mkdir(parents=True)
        code = main([str(src), str(out_dir / mode / name), "--ckpt", str(weights), *flags, *extra])
        results[mode] = (code, capsys.readouterr().err)
        assert pipeline_threads() == []
    return results


def error_lines(err: str) -> list[str]:
    return [ln for ln in err.strip().splitlines() if ln.startswith("lgfn-upscale: error:")]


# --------------------------------------------------------------------------- same output
def test_png_folder_bytes_equal_sequential(tmp_path, weights, capsys):
    write_folder(tmp_path / "in", smooth_frames(11, 18, 22))
    res = run_both(tmp_path / "in", tmp_path, weights, "sr", capsys, "--tile", "12", "--overlap", "8")
    assert res["overlap"][0] == res["sequential"][0] == 0
    a, b = tmp_path / "overlap" / "sr", tmp_path / "sequential" / "sr"
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir()) and len(names) == 11 and "f10.png" in names
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes(), n
    assert sorted(p.name for p in (tmp_path / "overlap").iterdir()) == ["sr"]  # no temp folder left


def test_video_in_video_out_equal_sequential(tmp_path, weights, capsys):
    write_video(tmp_path / "in.mp4", smooth_frames(9, 24, 32))
    res = run_both(tmp_path / "in.mp4", tmp_path, weights, "sr.mp4", capsys, "--padding", "replicate")
    assert res["overlap"][0] == res["sequential"][0] == 0
    a, b = tmp_path / "overlap" / "sr.mp4", tmp_path / "sequential" / "sr.mp4"
    assert a.read_bytes() == b.read_bytes()  # mp4 carries no run-specific header field
    fa, fb = read_video(a)[0], read_video(b)[0]
    assert len(fa) == 9 and all(np.array_equal(x, y) for x, y in zip(fa, fb, strict=True))


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("name", ["sr", "sr.mp4"])
def test_corrupt_input_frame_same_error_and_no_output(tmp_path, weights, capsys, name):
    write_folder(tmp_path / "in", smooth_frames(10, 12, 14))
    bad = tmp_path / "in" / "f6.png"  # after the first windows: the reader thread meets it mid-run
    bad.write_bytes(bad.read_bytes()[:60])
    res = run_both(tmp_path / "in", tmp_path, weights, name, capsys)
    assert res["overlap"][0] == res["sequential"][0] == 1
    lines = {mode: error_lines(err) for mode, (_, err) in res.items()}
    assert len(lines["overlap"]) == 1 and lines["overlap"] == lines["sequential"]
    assert "f6.png" in lines["overlap"][0] and "Traceback" not in res["overlap"][1]
    for mode in res:
        assert list((tmp_path / mode).iterdir()) == []  # neither the output nor a temp file


@pytest.mark.parametrize("name", ["sr", "sr.mp4"])
@pytest.mark.parametrize("fail_at", [2, 7])  # mid-run, and the last frame (raised by commit)
def test_write_failure_same_error_and_no_output(tmp_path, weights, capsys, monkeypatch, name, fail_at):
    write_folder(tmp_path / "in", smooth_frames(8, 12, 14))
    real = FrameWriter._write

    def failing(self, frame):
        if self.count == fail_at:
            raise OSError(f"[Errno 28] No space left on device: {self.tmp}")
        real(self, frame)

    monkeypatch.setattr(FrameWriter, "_write", failing)
    res = run_both(tmp_path / "in", tmp_path, weights, name, capsys)
    assert res["overlap"][0] == res["sequential"][0] == 1
    lines = {mode: error_lines(err) for mode, (_, err) in res.items()}
    assert len(lines["overlap"]) == 1 and "No space left on device" in lines["overlap"][0]
    # The same message but for the temp name, which differs per run.
    assert [ln.split(": /")[0] for ln in lines["overlap"]] == [ln.split(": /")[0] for ln in lines["sequential"]]
    for mode in res:
        assert list((tmp_path / mode).iterdir()) == []


@pytest.mark.parametrize("error,code", [(KeyboardInterrupt, 130), (RuntimeError("the network broke"), 1)])
def test_interrupt_or_network_error_stops_the_threads(tmp_path, weights, capsys, monkeypatch, error, code):
    write_folder(tmp_path / "in", smooth_frames(12, 12, 14))
    real = lgfn.inference.tiling.upscale_window
    calls = []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 4:
            raise error
        return real(*a, **k)

    monkeypatch.setattr(lgfn.inference.upscale, "upscale_window", interrupted)  # the name upscale.py calls
    for name in ("sr", "sr.mp4"):
        calls.clear()
        assert main([str(tmp_path / "in"), str(tmp_path / name), "--ckpt", str(weights)]) == code
        assert pipeline_threads() == []
        assert len(calls) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "tiny.pt"]
    assert "Traceback" not in capsys.readouterr().err


# --------------------------------------------------------------------------- the pieces
def test_read_ahead_is_bounded_keeps_order_and_raises_after_the_items():
    produced = []

    def source():
        for i in range(50):
            produced.append(i)
            yield i
        raise ValueError("frame 50 is corrupt")

    got = []
    with ReadAhead(source(), depth=3) as it:
        for _ in range(5):
            got.append(next(it))
            threading.Event().wait(0.05)  # let the thread fill the queue
            # queued (3) + the one it holds while waiting for space; never the whole source
            assert len(produced) <= len(got) + 3 + 1
        got += list(_until_error(it))
    assert got == list(range(50))
    assert pipeline_threads() == []


def _until_error(it):
    with pytest.raises(ValueError, match="frame 50 is corrupt"):
        yield from it


def test_read_ahead_close_stops_and_closes_the_source():
    closed = threading.Event()

    def source():
        try:
            yield from range(10**9)
        finally:
            closed.set()

    it = ReadAhead(source(), depth=2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()
    assert closed.is_set() and pipeline_threads() == []
    with pytest.raises(StopIteration):
        next(it)
    with pytest.raises(ValueError, match="depth"):
        ReadAhead(iter(()), depth=0)


def test_frame_writer_behind_writes_in_order_and_abort_leaves_nothing(tmp_path):
    frames = [np.full((4, 6, 3), v, np.uint8) for v in range(7)]
    with FrameWriter(tmp_path / "out", names=[f"n{i}" for i in range(7)], behind=2) as w:
        for f in frames:
            w.write(f)
    assert w.count == 7
    from PIL import Image

    assert [np.asarray(Image.open(tmp_path / "out" / f"n{i}.png"))[0, 0, 0] for i in range(7)] == list(range(7))
    w = FrameWriter(tmp_path / "v.mp4", behind=2)
    for f in frames:
        w.write(np.repeat(np.repeat(f, 2, 0), 2, 1))
    w.abort()
    assert pipeline_threads() == [] and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
