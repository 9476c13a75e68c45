"""Built-in HR clips rendered from still photographs that installed packages ship: no download, cached.

Each clip is one photo seen by a moving camera (translation from sub-pixel to about two LR pixels per
frame, zoom 1.0-1.1, rotation within +-3 degrees) with a slowly changing non-rigid warp on top (local
motion, like foliage or water), and one to three soft-edged cut-outs of other photos in front of it,
each on its own path and faster the nearer it is (parallax), so they occlude and disocclude the
background and each other: frame alignment is neither a single global shift nor always small. Frames
are sampled from the (antialiased) photo at a source-pixels-per-HR-pixel scale >= 1, so they are sharp
rather than upsampled. Train and test use disjoint photos; only still photographs are used (never a
real video). Only HR frames are written; LR frames come from the degradation at load time.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import struct
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from filelock import FileLock
from PIL import Image

__all__ = ["VERSION", "available_photos", "ensure_builtin", "render_clip"]

# Bump whenever the rendered bytes change, so stale caches are regenerated.
VERSION = 2
MANIFEST = "manifest.json"
SPLITS = ("train", "test")
_LOCK_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class _Photo:
    package: str  # installed top-level package whose wheel ships the file
    file: str  # path inside that package
    roi: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)  # top, left, bottom, right (fractions)


# Only files that the packages keep inside their wheels; anything they would fetch at run time is left out.
# scikit-image's `cat` is the same file as `chelsea`, so it is not listed twice.
_PHOTOS: dict[str, _Photo] = {
    # test photos (scikit-image)
    "astronaut": _Photo("skimage", "data/astronaut.png"),
    "chelsea": _Photo("skimage", "data/chelsea.png"),
    "coffee": _Photo("skimage", "data/coffee.png"),
    "rocket": _Photo("skimage", "data/rocket.jpg"),
    # train photos: natural colour photographs first
    "motorcycle": _Photo("skimage", "data/motorcycle_left.png"),
    "grace_hopper": _Photo("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    "china": _Photo("sklearn", "datasets/images/china.jpg"),
    "flower": _Photo("sklearn", "datasets/images/flower.jpg"),
    "camera": _Photo("skimage", "data/camera.png"),
    "hubble_deep_field": _Photo("skimage", "data/hubble_deep_field.jpg"),
    # ... and textures, which only ever appear as moving cut-outs (foreground layers)
    "immunohistochemistry": _Photo("skimage", "data/ihc.png"),
    "gravel": _Photo("skimage", "data/gravel.png"),
    "brick": _Photo("skimage", "data/brick.png"),
    "grass": _Photo("skimage", "data/grass.png"),
}
# Disjoint pools, in order of preference: backgrounds are photographs, cut-outs may be any photo.
_POOLS: dict[str, dict[str, tuple[str, ...]]] = {
    "test": {
        "background": ("astronaut", "chelsea", "coffee", "rocket"),
        "foreground": ("astronaut", "chelsea", "coffee", "rocket"),
    },
    "train": {
        "background": ("motorcycle", "grace_hopper", "china", "flower", "camera", "hubble_deep_field"),
        "foreground": (
            "motorcycle",
            "grace_hopper",
            "china",
            "flower",
            "camera",
            "hubble_deep_field",
            "immunohistochemistry",
            "gravel",
            "brick",
            "grass",
        ),
    },
}
_MAX_LAYERS = 3  # foreground cut-outs per clip: 1 to 3


@dataclass(frozen=True)
class _SplitSpec:
    clips: int
    frames: int
    height: int
    width: int


def _split_specs(small: bool) -> dict[str, _SplitSpec]:
    if small:
        return {"train": _SplitSpec(3, 9, 64, 80), "test": _SplitSpec(2, 9, 64, 80)}
    return {"train": _SplitSpec(24, 16, 256, 320), "test": _SplitSpec(4, 16, 192, 256)}


def _photo_path(name: str) -> Path:
    photo = _PHOTOS[name]
    # find_spec locates a top-level package without importing it (scikit-learn's import takes seconds).
    spec = importlib.util.find_spec(photo.package)
    if spec is None or not spec.submodule_search_locations:
        return Path(f"<{photo.package} is not installed>") / photo.file
    return Path(list(spec.submodule_search_locations)[0]) / photo.file


def available_photos() -> list[str]:
    """Names of the known photos whose files the installed packages ship (no network needed)."""
    return [name for name in _PHOTOS if _photo_path(name).is_file()]


def _load_photo(name: str) -> torch.Tensor:
    """Photo cropped to its region of interest: 3 x H x W float32 in [0, 1] (grey replicated)."""
    path = _photo_path(name)
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    top, left, bottom, right = _PHOTOS[name].roi
    h, w = arr.shape[:2]
    arr = arr[round(top * h) : round(bottom * h), round(left * w) : round(right * w)]
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)


def _downscale(img: torch.Tensor, factor: float) -> torch.Tensor:
    """Antialiased downscale of 3 x H x W by `factor` <= 1 (identity at 1)."""
    if factor >= 1.0:
        return img
    size = (max(8, round(img.shape[1] * factor)), max(8, round(img.shape[2] * factor)))
    out = F.interpolate(img[None], size=size, mode="bicubic", antialias=True, align_corners=False)
    return out[0].clamp(0.0, 1.0)


def _sample(img: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bicubic lookup of 3 x Hs x Ws at pixel coordinates x, y (T x H x W, centres at integers) -> T x 3 x H x W."""
    hs, ws = img.shape[-2:]
    grid = torch.stack(((2 * x + 1) / ws - 1, (2 * y + 1) / hs - 1), dim=-1)
    src = img[None].expand(x.shape[0], -1, -1, -1)
    out = F.grid_sample(src, grid, mode="bicubic", padding_mode="border", align_corners=False)
    return out.clamp(0.0, 1.0)


def _slow_sine(
    rng: np.random.Generator, t: np.ndarray, amp: float, periods: tuple[float, float]
) -> np.ndarray:
    """amp * sin over t with a random phase and a period of `periods` (in clip lengths) drawn at random."""
    omega = 2 * math.pi / (rng.uniform(*periods) * len(t))
    return amp * np.sin(omega * t + rng.uniform(0, 2 * math.pi))


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """A value between lo and hi, uniform in log scale: slow motion is as common as fast motion."""
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def _drift(rng: np.random.Generator, t: np.ndarray, speed: tuple[float, float], wobble: tuple[float, float]):
    """A straight path at a random speed (log-uniform) and direction plus a slow wobble per axis -> (path, velocity)."""
    angle = rng.uniform(0, 2 * math.pi)
    velocity = _log_uniform(rng, *speed) * np.array([math.cos(angle), math.sin(angle)])
    path = np.stack(
        [velocity[i] * t + _slow_sine(rng, t, rng.uniform(*wobble), (1.5, 3.0)) for i in range(2)], 1
    )
    return path, velocity


def _warp_field(
    rng: np.random.Generator, t: np.ndarray, u: torch.Tensor, v: torch.Tensor, amplitude: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth non-rigid displacement (T x h x w each, HR pixels): three travelling waves, 48-160 px long."""
    du = torch.zeros(len(t), *u.shape[1:])
    dv = torch.zeros_like(du)
    tt = _column(t)
    for _ in range(3):
        k, angle = 2 * math.pi / rng.uniform(48.0, 160.0), rng.uniform(0, 2 * math.pi)
        omega, phase = rng.uniform(0.1, 0.45), rng.uniform(0, 2 * math.pi)  # radians per frame
        amp, direction = amplitude * rng.uniform(0.3, 1.0) / math.sqrt(3), rng.uniform(0, 2 * math.pi)
        wave = torch.sin(k * (math.cos(angle) * u + math.sin(angle) * v) + omega * tt + phase)
        du += amp * math.cos(direction) * wave
        dv += amp * math.sin(direction) * wave
    return du, dv


def _column(a: np.ndarray) -> torch.Tensor:
    """Per-frame values (T,) -> T x 1 x 1 float32, to broadcast over a frame."""
    return torch.from_numpy(np.asarray(a, dtype=np.float32))[:, None, None]


def _background_layer(
    photo: torch.Tensor, t: np.ndarray, u: torch.Tensor, v: torch.Tensor, rng: np.random.Generator
) -> tuple[torch.Tensor, np.ndarray]:
    """Camera moving over `photo` (3 x H x W) at pixel offsets u, v (1 x h x w) -> (T x 3 x h x w, velocity)."""
    height, width = u.shape[1:]
    # Source pixels per HR pixel at zoom 1; zoom <= 1.1 keeps it >= 1, so frames are never upsampled.
    s0 = 1.12
    scale = s0 / (1.05 + _slow_sine(rng, t, 0.05, (2.0, 4.0)))
    theta = _slow_sine(rng, t, np.deg2rad(rng.uniform(1.0, 3.0)), (2.0, 4.0))
    shift, velocity = _drift(rng, t, (0.25, 8.0), (0.3, 1.5))  # HR pixels per frame: 1/16 to 2 LR pixels
    warp_u, warp_v = _warp_field(rng, t, u, v, rng.uniform(0.0, 2.0))
    cos, sin = np.cos(theta)[:, None], np.sin(theta)[:, None]
    hx, hy = width / 2 + 2, height / 2 + 2  # the warp moves a sample by at most 2 px
    cx, cy = np.array([-hx, hx, -hx, hx]), np.array([-hy, -hy, hy, hy])

    def extent(k: float) -> tuple[np.ndarray, np.ndarray]:
        """Bounding box, in source pixels around the path's middle, of every frame's corners."""
        x = k * s0 * shift[:, :1] + scale[:, None] * (cos * cx - sin * cy)
        y = k * s0 * shift[:, 1:] + scale[:, None] * (sin * cx + cos * cy)
        return np.array([x.min(), y.min()]), np.array([x.max(), y.max()])

    lo, hi = extent(1.0)
    roi_h, roi_w = photo.shape[1:]
    # Show a good part of the photo, at its native resolution at most, with room for the whole path.
    need = max(
        1.08 * (hi[1] - lo[1] + 4) / roi_h,
        1.08 * (hi[0] - lo[0] + 4) / roi_w,
        s0 * height / (0.6 * min(roi_h, roi_w)),
    )
    src = _downscale(photo, min(1.0, need))
    src_h, src_w = src.shape[1:]
    # Bicubic needs a pixel each side; a photo too small for the path gets a shorter path.
    k = 1.0
    while True:
        lo, hi = extent(k)
        room = np.array([src_w - 3, src_h - 3]) - (hi - lo)
        if (room >= 0).all():
            break
        if k < 1e-3:
            raise ValueError(
                f"render_clip: background of {src_h} x {src_w} px is too small for a {height} x {width} frame"
            )
        k *= 0.8
    centre = (1 - lo + rng.uniform(0, 1, 2) * room)[None] + k * s0 * shift
    c, s, sc = _column(cos[:, 0]), _column(sin[:, 0]), _column(scale)
    uu, vv = u + warp_u, v + warp_v
    x = _column(centre[:, 0]) + sc * (c * uu - s * vv)
    y = _column(centre[:, 1]) + sc * (s * uu + c * vv)
    return _sample(src, x, y), k * velocity


def _foreground_layer(
    photo: torch.Tensor,
    t: np.ndarray,
    u: torch.Tensor,
    v: torch.Tensor,
    rng: np.random.Generator,
    camera_velocity: np.ndarray,
    depth: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft cut-out of `photo` moving on its own path -> (colour T x 3 x h x w, alpha T x 1 x h x w).

    Layer `depth` 0 is the farthest cut-out; nearer layers are smaller-to-larger and move faster (parallax).
    """
    height, width = u.shape[1:]
    s0 = 1.1  # as for the background: never upsampled
    radius = rng.uniform(0.12, 0.24) * min(height, width)
    aspect = rng.uniform(0.75, 1.33)
    a, b = radius * s0 * math.sqrt(aspect), radius * s0 / math.sqrt(aspect)  # half-axes in source pixels
    src = _downscale(photo, min(1.0, 2 * max(a, b) / (0.45 * min(photo.shape[1:]))))
    src_h, src_w = src.shape[1:]
    a, b = min(a, src_w / 2 - 3), min(b, src_h / 2 - 3)
    cut = np.array([rng.uniform(a + 2, src_w - a - 3), rng.uniform(b + 2, src_h - b - 3)])
    scale = s0 / (1.04 + _slow_sine(rng, t, 0.04, (1.5, 3.0)))
    phi = _slow_sine(rng, t, np.deg2rad(rng.uniform(2.0, 6.0)), (1.5, 3.0))
    # On screen the background moves by -camera_velocity; the object must not ride along with it,
    # or aligning the frames would be one global motion.
    parallax = 1.0 + 0.5 * depth
    for _ in range(32):
        path, velocity = _drift(rng, t, (0.5 * parallax, 8.0 * parallax), (0.5, 2.5))
        if np.linalg.norm(velocity + camera_velocity) >= 0.5:
            break
    # Keep its centre inside the frame, at least half its size from the border where the path allows.
    limit = np.array([width / 2, height / 2]) - 0.5 * np.array([a, b]) / s0
    lo, hi = -limit - path.min(0), limit - path.max(0)
    start = np.where(
        lo <= hi, lo + rng.uniform(0, 1, 2) * np.maximum(hi - lo, 0), -(path.min(0) + path.max(0)) / 2
    )
    pos = start[None] + path
    # Some objects deform as they move (cloth, a face turning): a gentle warp of their own.
    warp_u, warp_v = _warp_field(rng, t, u, v, rng.uniform(0.0, 1.5))

    c, s, sc = _column(np.cos(phi)), _column(np.sin(phi)), _column(scale)
    du, dv = u + warp_u - _column(pos[:, 0]), v + warp_v - _column(pos[:, 1])
    lx = sc * (c * du + s * dv)  # rotated by -phi into the cut-out's own frame, in source pixels
    ly = sc * (-s * du + c * dv)
    # Rounded (superellipse) mask with a smoothstep edge about 3 source pixels wide.
    r = ((lx.abs() / a) ** 2.5 + (ly.abs() / b) ** 2.5) ** (1 / 2.5)
    alpha = ((1 - r) * min(a, b) / 3.0).clamp(0, 1)
    alpha = alpha * alpha * (3 - 2 * alpha)
    # Sample colour only inside the box the cut-out ever covers: most of the frame has alpha = 0.
    rows = torch.nonzero(alpha.amax(dim=(0, 2)) > 0)
    cols = torch.nonzero(alpha.amax(dim=(0, 1)) > 0)
    if len(rows) == 0:
        return torch.zeros(len(t), 3, height, width), alpha[:, None]
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    colour = torch.zeros(len(t), 3, height, width)
    box = (slice(None), slice(r0, r1), slice(c0, c1))
    colour[:, :, r0:r1, c0:c1] = _sample(src, lx[box] + float(cut[0]), ly[box] + float(cut[1]))
    return colour, alpha[:, None]


def render_clip(
    background: torch.Tensor,
    foreground: torch.Tensor | list[torch.Tensor],
    *,
    frames: int,
    height: int,
    width: int,
    rng: np.random.Generator,
) -> torch.Tensor:
    """Render one clip from photos (3 x H x W in [0, 1]) -> frames x height x width x 3 uint8.

    `foreground` is one photo or a list (far to near) of photos, one cut-out layer each.
    """
    if frames < 2 or height < 8 or width < 8:
        raise ValueError(
            f"render_clip: expected frames >= 2 and a frame of at least 8 x 8, got {frames} x {height} x {width}"
        )
    layers = [foreground] if isinstance(foreground, torch.Tensor) else list(foreground)
    t = np.arange(frames, dtype=np.float64) - (frames - 1) / 2  # centred: paths are placed by their middle
    v, u = torch.meshgrid(
        torch.arange(height, dtype=torch.float32) - (height - 1) / 2,
        torch.arange(width, dtype=torch.float32) - (width - 1) / 2,
        indexing="ij",
    )
    u, v = u[None], v[None]
    out, camera_velocity = _background_layer(background, t, u, v, rng)
    for depth, photo in enumerate(layers):
        colour, alpha = _foreground_layer(photo, t, u, v, rng, camera_velocity, depth)
        out = alpha * colour + (1 - alpha) * out
    return (out.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _png_bytes(frame: np.ndarray) -> bytes:
    """Encode an H x W x 3 uint8 frame as an 8-bit RGB PNG (Up filter, fast zlib level)."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"_png_bytes: expected an H x W x 3 uint8 array, got {frame.dtype} {frame.shape}")
    h, w, _ = frame.shape
    rows = frame.reshape(h, w * 3)
    # Up filter (type 2): Pillow's adaptive filtering is ~3x slower for about the same size on photos.
    up = np.empty_like(rows)
    up[0] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=up[1:])
    raw = np.concatenate([np.full((h, 1), 2, np.uint8), up], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit truecolour, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 3))
        + chunk(b"IEND", b"")
    )


def _write_png(path: Path, frame: np.ndarray) -> None:
    path.write_bytes(_png_bytes(frame))


def _plan(split: str, spec: _SplitSpec, photos: list[str]) -> list[dict]:
    """Clip names with their background and foreground photos, all from the split's own pools.

    Backgrounds cycle through the split's photographs; each clip gets 1 to 3 cut-outs (drawn from a
    generator seeded by the split and clip only, so the plan is the same on every machine) of photos other
    than its background.
    """
    pools = {k: [n for n in names if n in photos] for k, names in _POOLS[split].items()}
    if not pools["background"] or len(pools["foreground"]) < 2:
        wanted = sorted(set(_POOLS[split]["background"]) | set(_POOLS[split]["foreground"]))
        raise FileNotFoundError(
            f"ensure_builtin: too few of the {split} photos {wanted} are shipped by the installed packages "
            f"(found {sorted(set(pools['background']) | set(pools['foreground']))}; "
            "scikit-image, matplotlib and scikit-learn ship them)"
        )
    backgrounds = pools["background"]
    clips = []
    for i in range(spec.clips):
        bg = backgrounds[i % len(backgrounds)]
        rng = np.random.default_rng([SPLITS.index(split), i, 7])
        others = [n for n in pools["foreground"] if n != bg]
        count = int(rng.integers(1, min(_MAX_LAYERS, len(others)) + 1))
        fgs = [others[j] for j in rng.choice(len(others), size=count, replace=False)]
        name = bg if i < len(backgrounds) else f"{bg}_{i // len(backgrounds) + 1}"  # another view of it
        clips.append({"name": name, "background": bg, "foreground": fgs[0], "foregrounds": fgs})
    return clips


def _params(seed: int, small: bool) -> dict:
    return {
        "version": VERSION,
        "seed": seed,
        "small": small,
        "photos": available_photos(),
        "splits": {split: asdict(spec) for split, spec in _split_specs(small).items()},
    }


def _read_manifest(root: Path) -> dict | None:
    try:
        return json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _is_complete(root: Path, params: dict) -> bool:
    """True when the manifest matches `params` and every clip it lists has all its frames."""
    manifest = _read_manifest(root)
    if manifest is None or manifest.get("params") != params:
        return False
    for split in SPLITS:
        spec = params["splits"][split]
        clips = manifest.get("clips", {}).get(split, [])
        if len(clips) != spec["clips"]:
            return False
        for clip in clips:
            clip_dir = root / split / clip["name"]
            if not all((clip_dir / f"{i:03d}.png").is_file() for i in range(spec["frames"])):
                return False
    return True


def _render_split(tmp: Path, split: str, split_idx: int, seed: int, small: bool, pool: ThreadPoolExecutor):
    """Render one split's clips into `tmp/<split>/<clip>/`, queueing the PNG writes on `pool`."""
    spec = _split_specs(small)[split]
    clips = _plan(split, spec, available_photos())
    loaded = {name: _load_photo(name) for name in {n for c in clips for n in [c["background"], *c["foregrounds"]]}}
    writes = []
    for clip_idx, clip in enumerate(clips):
        video = render_clip(
            loaded[clip["background"]],
            [loaded[n] for n in clip["foregrounds"]],
            frames=spec.frames,
            height=spec.height,
            width=spec.width,
            rng=np.random.default_rng([seed, split_idx, clip_idx]),
        ).numpy()
        clip_dir = tmp / split / clip["name"]
        clip_dir.mkdir(parents=True)
        writes += [pool.submit(_write_png, clip_dir / f"{i:03d}.png", f) for i, f in enumerate(video)]
    return clips, writes


def _generate(tmp: Path, params: dict, seed: int, small: bool) -> dict:
    """Render every clip into `tmp/<split>/<clip>/` and return the manifest."""
    # One torch thread renders while zlib (which releases the GIL) encodes in the pool: this keeps
    # 2 cores busy and, unlike OpenMP threads, does not collapse when other processes share the cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            clips, writes = {}, []
            for split_idx, split in enumerate(SPLITS):
                clips[split], queued = _render_split(tmp, split, split_idx, seed, small, pool)
                writes += queued
            for write in writes:
                write.result()  # re-raise the first write error, if any
    finally:
        torch.set_num_threads(threads)
    return {"params": params, "clips": clips}


def ensure_builtin(root: str | Path, *, seed: int = 0, small: bool = False) -> dict[str, Path]:
    """Render the built-in clips into `root` unless an identical set is there; return the split folders."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"ensure_builtin: seed must be a non-negative int, got {seed!r}")
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"ensure_builtin: root {root} exists and is not a directory")
    out = {split: root / split for split in SPLITS}
    params = _params(seed, bool(small))
    if _is_complete(root, params):
        return out

    root.mkdir(parents=True, exist_ok=True)
    # The lock serialises writers (DDP ranks, joblib jobs); the manifest, renamed into place last,
    # is what marks a set complete, so a killed run leaves nothing that passes `_is_complete`.
    with FileLock(str(root / ".builtin.lock"), timeout=_LOCK_TIMEOUT_S):
        if _is_complete(root, params):  # another process finished while we waited
            return out
        for stale in root.glob(".tmp-*"):  # left behind by killed runs; no writer is active now
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            manifest = _generate(tmp, params, seed, bool(small))
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            (root / MANIFEST).unlink(missing_ok=True)
            old = tmp / "old"
            old.mkdir()
            for split in SPLITS:
                if out[split].exists():
                    os.replace(out[split], old / split)
                os.replace(tmp / split, out[split])
            os.replace(tmp / MANIFEST, root / MANIFEST)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out
