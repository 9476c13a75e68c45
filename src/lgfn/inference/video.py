"""Video and frame-folder I/O for ``lgfn-upscale``: streamed reading, atomic writing.

Frames are ``H x W x 3`` uint8 RGB numpy arrays. Readers are generators (never the whole clip in
memory). Grey, 16-bit and alpha frames are converted to RGB with a one-time note on the ``lgfn.inference.video``
logger. Writers write to a temporary name in the destination's directory and rename on success, so a
failed run leaves no partial output. One rule for existing outputs (``check_output``): a video file or a
non-empty frame folder that exists is replaced only with ``overwrite``, and never when it is, or holds,
the input.

Overlap (``lgfn-upscale`` without ``--sequential``): ``read_frames(info, ahead=n)`` decodes up to ``n``
frames ahead in a background thread, ``FrameWriter(..., behind=n)`` encodes and writes in one; both queues
are bounded, an error in either thread is raised in the caller's thread as the same exception (so the same
one-line message), and closing, aborting or an error stops and joins the threads. The bytes written are
the same as without them: the same frames reach the same encoder in the same order.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from lgfn.common.atomic import publish
from lgfn.data.io import IMAGE_EXTENSIONS, list_images

log = logging.getLogger("lgfn.inference.video")

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov")
DEFAULT_FPS = Fraction(25)
_POLL_S = 0.1  # how often a pipeline thread blocked on a queue checks whether it should stop


@dataclass
class VideoInfo:
    """What is known about an input before decoding it."""

    path: Path
    kind: str  # "video" | "folder"
    fps: Fraction | None
    num_frames: int
    height: int
    width: int
    names: list[str] = field(default_factory=list)  # frame stems (folder input)
    # What the container says it holds (its frame count, else its duration x fps); None: it does not say (folders).
    declared_frames: int | None = None
    declared_exact: bool = False  # the count is the container's own (not estimated from its duration)

    def shortfall(self) -> str | None:
        """A sentence when the frames that can be decoded are not what the container declares, else None.

        An estimate from the duration may be off by one frame (rounding); a declared count must match exactly.
        """
        if self.declared_frames is None:
            return None
        if abs(self.declared_frames - self.num_frames) <= (0 if self.declared_exact else 1):
            return None
        damaged = " (the file looks truncated or damaged)" if self.num_frames < self.declared_frames else ""
        return (f"{self.path}: {self.num_frames} frames could be decoded but its container declares "
                f"{self.declared_frames}{damaged}")


def _note_once(notes: set, key: str, message: str) -> None:
    if key not in notes:
        notes.add(key)
        log.warning(message)


def _to_rgb(arr: np.ndarray, mode: str, source: str, notes: set) -> np.ndarray:
    """Any PIL-mode array -> H x W x 3 uint8."""
    if arr.dtype != np.uint8:
        # 16-bit (or 32-bit integer) images: keep the top 8 bits of a 16-bit range.
        _note_once(notes, "depth", f"note: {source} has {arr.dtype} samples; converted to 8-bit")
        arr = np.clip(arr.astype(np.float64) / 257.0 if arr.max() > 255 else arr, 0, 255).round().astype(np.uint8)
    if arr.ndim == 2:
        _note_once(notes, "grey", f"note: {source} has grayscale frames; converted to RGB")
        return np.repeat(arr[..., None], 3, axis=2)
    if arr.shape[2] == 2:  # LA
        _note_once(notes, "grey", f"note: {source} has grayscale+alpha frames; alpha dropped, converted to RGB")
        return np.repeat(arr[..., :1], 3, axis=2)
    if arr.shape[2] == 4:
        _note_once(notes, "alpha", f"note: {source} has RGBA frames; alpha dropped")
        return np.ascontiguousarray(arr[..., :3])
    return arr


def _read_image(path: Path, notes: set) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            elif mode in ("CMYK", "YCbCr", "1"):
                img = img.convert("RGB")
            arr = np.asarray(img)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise ValueError(f"unreadable image {path}: {e}") from None
    return _to_rgb(arr, img.mode, str(path.parent), notes)


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as img:
            w, h = img.size
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise ValueError(f"unreadable image {path}: {e}") from None
    return h, w


def av_reason(e: BaseException) -> str:
    """What went wrong, in words, from a PyAV / FFmpeg error: without its ``[Errno N]`` and the file name it adds."""
    import re

    text = getattr(e, "strerror", None) or (str(e).strip().splitlines() or [""])[0] or type(e).__name__
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(text))
    text = re.sub(r"""(: '[^']*'|: "[^"]*")+$""", "", text)  # ": 'clip.mp4'": the path is named by the caller
    if text.lower().startswith("invalid data found"):
        return "it is not a video FFmpeg can decode, or it is damaged (invalid data)"
    return text[:1].lower() + text[1:]


def _open_video(path: Path):
    import av

    try:
        container = av.open(str(path))
    except Exception as e:  # PyAV raises many error types (InvalidDataError, FFmpegError, ...)
        raise ValueError(f"cannot read video {path}: {av_reason(e)}") from None
    if not container.streams.video:
        container.close()
        raise ValueError(f"{path} has no video stream")
    return container


def probe(path: str | os.PathLike) -> VideoInfo:
    """Metadata of a video file or frame folder; errors name the path. The frame count is exact."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path}")
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise ValueError(f"no frames ({'/'.join(IMAGE_EXTENSIONS)}) in folder {path}")
        h, w = _image_size(files[0])
        return VideoInfo(path, "folder", None, len(files), h, w, [f.stem for f in files])
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise ValueError(
            f"unsupported input {path}: expected a folder of frames or a video ({', '.join(VIDEO_EXTENSIONS)})"
        )
    container = _open_video(path)
    try:
        stream = container.streams.video[0]
        fps = stream.average_rate or stream.guessed_rate or stream.base_rate
        h, w = stream.codec_context.height, stream.codec_context.width
        # Containers' frame counts are often missing or approximate: count packets (demux only, no decode).
        count = 0
        try:
            for packet in container.demux(stream):
                if packet.size:
                    count += 1
        except Exception as e:
            raise ValueError(f"corrupt video {path}: {av_reason(e)}") from None
        declared, exact = _declared_frames(container, stream, fps)
    finally:
        container.close()
    if count == 0 or not h or not w:
        raise ValueError(f"video {path} has no frames")
    return VideoInfo(path, "video", Fraction(fps) if fps else None, count, h, w, declared_frames=declared,
                     declared_exact=exact)


def _declared_frames(container, stream, fps) -> tuple[int | None, bool]:
    """The container's frame count (mp4, mov: exact), else its duration x fps (mkv, avi: an estimate), else None."""
    if stream.frames:
        return int(stream.frames), True
    seconds = None
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration:
        seconds = container.duration / 1_000_000  # AV_TIME_BASE
    if not seconds or not fps:
        return None, False
    return round(seconds * float(fps)), False


def read_frames(info: VideoInfo, ahead: int = 0) -> Iterator[np.ndarray]:
    """Stream the frames of ``info`` as H x W x 3 uint8 arrays; size changes and decode errors raise.

    ``ahead`` > 0: decoded in a background thread up to ``ahead`` frames ahead of the caller (``ReadAhead``;
    call its ``close()`` when stopping early). The frames and errors are the same either way.
    """
    frames = _decode_frames(info)
    return ReadAhead(frames, ahead) if ahead > 0 else frames


def _decode_frames(info: VideoInfo) -> Iterator[np.ndarray]:
    notes: set = set()
    if info.kind == "folder":
        for f in list_images(info.path):
            arr = _read_image(f, notes)
            if arr.shape[:2] != (info.height, info.width):
                raise ValueError(
                    f"frame {f} is {arr.shape[1]}x{arr.shape[0]}, expected {info.width}x{info.height} like the first"
                )
            yield arr
        return
    container = _open_video(info.path)
    try:
        stream = container.streams.video[0]
        fmt = stream.codec_context.pix_fmt or ""
        if fmt.startswith(("gray", "ya")) or fmt in ("monob", "monow"):
            _note_once(notes, "grey", f"note: {info.path} has grayscale frames ({fmt}); converted to RGB")
        elif fmt.startswith(("rgba", "bgra", "argb", "abgr", "yuva", "gbrap")):
            _note_once(notes, "alpha", f"note: {info.path} has frames with alpha ({fmt}); alpha dropped")
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
        except Exception as e:
            if isinstance(e, GeneratorExit):
                raise
            raise ValueError(f"corrupt video {info.path}: {av_reason(e)}") from None
    finally:
        container.close()


class ReadAhead:
    """Iterate ``source`` in a background thread, at most ``depth`` items ahead (a bounded queue).

    The source's exception is raised by ``next`` in the caller's thread, after the items before it.
    ``close()`` (also on exhaustion, an error, or leaving a ``with`` block) stops the thread between two
    items, closes the source in that thread and joins it.
    """

    _END = object()

    def __init__(self, source: Iterator, depth: int) -> None:
        if depth < 1:
            raise ValueError(f"ReadAhead needs a depth of at least 1, got {depth}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, args=(source,), name="lgfn-read-ahead", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                pass
        return False

    def _run(self, source: Iterator) -> None:
        try:
            for item in source:
                if not self._put((item, None)):
                    return
            self._put((self._END, None))
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread, raised there
            self._put((self._END, e))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> ReadAhead:
        return self

    def __next__(self) -> object:
        if self._done:
            raise StopIteration
        while True:
            try:
                item, error = self._queue.get(timeout=_POLL_S)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():  # stopped by close()
                    self._done = True
                    raise StopIteration from None
        if item is not self._END:
            return item
        self.close()
        if error is not None:
            raise error
        raise StopIteration

    def close(self) -> None:
        self._done = True
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        while not self._queue.empty():  # free the frames
            self._queue.get_nowait()

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------- writing
def is_video_path(path: str | os.PathLike) -> bool:
    """OUTPUT is a video when it has a video suffix and is not an existing directory."""
    path = Path(path)
    return not path.is_dir() and path.suffix.lower() in VIDEO_EXTENSIONS


def same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name one file or folder: through symlinks, ``..``, hard links."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _inside(path: Path, folder: Path) -> bool:
    """True when ``path`` lies somewhere under ``folder`` (both resolved)."""
    return path.resolve().is_relative_to(folder.resolve())


def check_output(path: str | os.PathLike, inputs: tuple[str | os.PathLike, ...] = (), overwrite: bool = False,
                 label: str = "OUTPUT") -> None:
    """The rule for what an output may replace; ValueError (one line naming ``label`` and the path) if not.

    - a video suffix (``VIDEO_EXTENSIONS``) writes a video; no suffix, or an existing folder, writes PNG frames;
      any other suffix is refused;
    - an output that is one of ``inputs`` (or a folder holding one) is refused, also with ``overwrite``;
    - an existing video file or non-empty folder is refused unless ``overwrite``; a folder is replaced only
      when it holds nothing but frame images (an earlier run's output), never other files or folders.
    """
    path = Path(path)
    blocker = file_in_the_way(path)
    if blocker is not None:
        raise ValueError(f"{label} {path}: {blocker} is a file, not a folder, so nothing can be written under it; "
                         f"choose another {label}")
    video = is_video_path(path)
    if not video and path.suffix and not path.is_dir():
        raise ValueError(
            f"{label} {path}: unsupported extension {path.suffix!r}: use a folder (no extension) for PNG frames "
            f"or a video ({', '.join(VIDEO_EXTENSIONS)})"
        )
    for src in inputs:
        if same_path(path, src) or (path.is_dir() and _inside(Path(src), path)):
            what = "is" if same_path(path, src) else "holds"
            raise ValueError(f"{label} {path} {what} the input {src}: writing it would destroy the input; "
                             f"choose another {label}")
    if video:
        if path.exists() and not overwrite:
            raise ValueError(f"{label} {path} exists: pass --overwrite to replace it")
        return
    if path.exists() and not path.is_dir():
        raise ValueError(f"{label} {path} exists and is a file, not a folder for PNG frames")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise ValueError(f"{label} folder {path} exists and is not empty: pass --overwrite to replace it")
        other = sorted(p.name for p in path.iterdir() if not (p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS))
        if other:
            raise ValueError(f"{label} folder {path} holds more than frames ({', '.join(other[:3])}"
                             f"{', ...' if len(other) > 3 else ''}): not replacing it, even with --overwrite")


def file_in_the_way(path: str | os.PathLike) -> Path | None:
    """The first folder of ``path`` (one of its parents) that exists as something other than a folder, or None."""
    for parent in reversed(Path(path).parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def unwritable_reason(e: OSError, folder: Path) -> str:
    """Why nothing could be written in ``folder``, in words, without the temporary name that was tried."""
    import errno

    if e.errno in (errno.EACCES, errno.EPERM):
        return f"no permission to write in {folder}"
    if e.errno == errno.EROFS:
        return f"{folder} is on a read-only file system"
    if e.errno == errno.ENOSPC:
        return f"no space left on the device of {folder}"
    if e.errno == errno.ENOENT and folder.is_dir():  # /proc, /sys: folders that take no new files
        return f"{folder} does not accept new files"
    return f"cannot write in {folder} ({(e.strerror or type(e).__name__).lower()})"


class FrameWriter:
    """Write H x W x 3 uint8 frames to a video (libx264, yuv420p) or a PNG folder; ``commit`` publishes.

    ``behind`` > 0: ``write`` queues the frame (at most ``behind`` waiting) for a background thread that
    encodes and writes it; that thread's error is raised by the next ``write`` or by ``commit``, and
    ``abort`` stops and joins it before removing the temporary output. The frames must not be changed
    after ``write``.
    """

    def __init__(self, path: str | os.PathLike, fps: Fraction | float | None = None, names: list[str] | None = None,
                 crf: int = 18, overwrite: bool = False, inputs: tuple[str | os.PathLike, ...] = (),
                 behind: int = 0) -> None:
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001 * 1000) if fps else DEFAULT_FPS
        self.names = names
        self.count = 0
        check_output(self.path, inputs, overwrite)
        self.video = is_video_path(self.path)
        self._container = None
        self._stream = None
        self._crf = crf
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.video:
                fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=self.path.suffix, dir=self.path.parent)
                os.close(fd)
                self.tmp = Path(tmp)
            else:
                self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent))
        except OSError as e:  # the temporary name is ours, not the user's: name their OUTPUT and its folder
            raise ValueError(f"OUTPUT {self.path}: {unwritable_reason(e, self.path.parent)}") from None
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        if behind > 0:
            self._queue = queue.Queue(maxsize=behind)
            self._thread = threading.Thread(target=self._drain, name="lgfn-write-behind", daemon=True)
            self._thread.start()

    def _open(self, h: int, w: int) -> None:
        import av

        self._container = av.open(str(self.tmp), mode="w")
        stream = self._container.add_stream("libx264", rate=self.fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(self._crf)}
        self._stream = stream

    def write(self, frame: np.ndarray) -> None:
        """Append one H x W x 3 uint8 frame (with ``behind``: queue it; raises the writer thread's error)."""
        if self._queue is None:
            self._write(frame)
            return
        self._enqueue(frame)

    def _enqueue(self, item: np.ndarray | None) -> None:
        while True:
            if self._failure is not None:
                raise self._failure
            if not self._thread.is_alive():
                raise RuntimeError(f"the writer thread of {self.path} has stopped")
            try:
                self._queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                pass

    def _drain(self) -> None:
        """The writer thread: write queued frames until the end marker (None), a stop or an error."""
        while not self._stop.is_set():
            try:
                frame = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if frame is None or self._stop.is_set():
                return
            try:
                self._write(frame)
            except BaseException as e:  # noqa: BLE001 - raised in the caller's thread by write/commit
                self._failure = e
                return

    def _join(self) -> None:
        """Stop the writer thread (if any) and wait for it; frames still queued are dropped."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            while not self._queue.empty():
                self._queue.get_nowait()

    def _write(self, frame: np.ndarray) -> None:
        if self.video:
            import av

            h, w = frame.shape[:2]
            if self._container is None:
                if h % 2 or w % 2:
                    raise ValueError(f"{self.path}: yuv420p needs even sizes, got {w}x{h}")
                self._open(h, w)
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = self.count
            vf.time_base = 1 / self.fps
            for packet in self._stream.encode(vf):
                self._container.mux(packet)
        else:
            name = self.names[self.count] if self.names and self.count < len(self.names) else f"{self.count:08d}"
            Image.fromarray(frame).save(self.tmp / f"{name}.png")
        self.count += 1

    def commit(self) -> None:
        """Flush and move the finished output into place."""
        if self._thread is not None:
            self._enqueue(None)  # after every queued frame
            self._thread.join()
            self._thread = None
            if self._failure is not None:
                raise self._failure
        if self.count == 0:
            raise ValueError(f"no frames were written to {self.path}")
        if self.video:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None
            publish(self.tmp, self.path)
        elif self.path.is_dir():
            # Empty, or (--overwrite) an earlier run's frames: set it aside, put the new folder in place, drop it.
            old = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".old", dir=self.path.parent))
            os.replace(self.path, old / self.path.name)
            publish(self.tmp, self.path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            publish(self.tmp, self.path)

    def abort(self) -> None:
        """Remove every trace of an unfinished output."""
        self._join()
        if self._container is not None:
            try:
                self._container.close()
            except Exception:
                pass
            self._container = None
        if self.tmp.is_dir():
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
            return
        try:
            self.commit()
        except BaseException:
            self.abort()
            raise


__all__ = ["DEFAULT_FPS", "VIDEO_EXTENSIONS", "FrameWriter", "ReadAhead", "VideoInfo", "av_reason", "check_output",
           "file_in_the_way", "is_video_path", "probe", "read_frames", "same_path", "unwritable_reason"]
