"""lgfn.inference.video: what the container declares against what decodes, and errors in the user's words."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pytest
from test_upscale import smooth_frames, write_video

from lgfn.inference.video import (
    FrameWriter,
    av_reason,
    check_output,
    file_in_the_way,
    probe,
    unwritable_reason,
)


def truncated(tmp_path: Path, suffix: str = ".mkv", keep: float = 0.84, frames: int = 20) -> Path:
    whole = tmp_path / f"whole{suffix}"
    write_video(whole, smooth_frames(frames, 16, 16))
    cut = tmp_path / f"cut{suffix}"
    data = whole.read_bytes()
    cut.write_bytes(data[: int(len(data) * keep)])
    return cut


def test_a_whole_video_decodes_what_its_container_declares(tmp_path):
    for suffix in (".mkv", ".mp4"):
        write_video(tmp_path / f"v{suffix}", smooth_frames(20, 16, 16))
        info = probe(tmp_path / f"v{suffix}")
        assert (info.num_frames, info.declared_frames) == (20, 20)
        assert info.declared_exact == (suffix == ".mp4")  # mp4 counts its frames; mkv has a duration
        assert info.shortfall() is None


def test_a_truncated_mkv_says_decoded_against_declared(tmp_path):
    info = probe(truncated(tmp_path))
    assert info.declared_frames == 20 and 0 < info.num_frames < 20
    message = info.shortfall()
    assert message == (f"{info.path}: {info.num_frames} frames could be decoded but its container declares 20 "
                       "(the file looks truncated or damaged)")


def test_pyav_errors_lose_their_errno_and_name_the_users_path(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\0" * 3000)
    with pytest.raises(ValueError) as e:
        probe(junk)
    assert str(e.value) == f"cannot read video {junk}: it is not a video FFmpeg can decode, or it is damaged " \
                           "(invalid data)"
    assert "Errno" not in str(e.value)
    assert av_reason(OSError(errno.EIO, "Input/output error", "x.mp4")) == "input/output error"


def test_a_file_where_a_folder_should_be_is_named(tmp_path):
    (tmp_path / "pan.mkv").write_bytes(b"x")
    out = tmp_path / "pan.mkv" / "out.mp4"
    assert file_in_the_way(out) == tmp_path / "pan.mkv"
    assert file_in_the_way(tmp_path / "a" / "b.mp4") is None
    with pytest.raises(ValueError) as e:
        check_output(out)
    assert str(e.value) == (f"OUTPUT {out}: {tmp_path / 'pan.mkv'} is a file, not a folder, so nothing can be "
                            "written under it; choose another OUTPUT")


@pytest.mark.parametrize("name", ["out.mp4", "frames"])
def test_an_output_folder_that_takes_no_files_names_the_output_not_a_temp_file(tmp_path, monkeypatch, name):
    def refused(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / f".{name}.abc123.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    monkeypatch.setattr(tempfile, "mkdtemp", refused)
    with pytest.raises(ValueError) as e:
        FrameWriter(tmp_path / name)
    assert str(e.value) == f"OUTPUT {tmp_path / name}: no permission to write in {tmp_path}"
    assert unwritable_reason(OSError(errno.EROFS, "Read-only file system"), Path("/mnt")) == \
        "/mnt is on a read-only file system"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_an_output_under_proc_is_one_sentence():
    with pytest.raises(ValueError) as e:
        FrameWriter("/proc/out.mp4")
    assert str(e.value) in ("OUTPUT /proc/out.mp4: /proc does not accept new files",
                            "OUTPUT /proc/out.mp4: no permission to write in /proc")
