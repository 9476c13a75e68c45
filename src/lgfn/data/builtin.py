"""Built-in HR clips rendered from the photographs scikit-image ships: no download, cached on disk.

Each clip is one photo seen by a smoothly moving camera (translation, zoom 1.0-1.1, rotation within
+-3 degrees) with a soft-edged cut-out of another photo moving on its own path in front of it, so
frame alignment is not a single global shift. Frames are sampled from the (antialiased) photo at a
source-pixels-per-HR-pixel scale >= 1, so they are sharp rather than upsampled. Train and test use
disjoint photos. Only HR frames are written; LR frames come from the degradation at load time.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from filelock import FileLock
from PIL import Image

__all__ = ["VERSION", "available_photos", "ensure_builtin", "render_clip"]

# Bump whenever the rendered bytes change, so stale caches are regenerated.
VERSION = 1
MANIFEST = "manifest.json"
SPLITS = ("train", "test")
_LOCK_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class _Photo:
    file: str  # file name inside the installed `skimage.data` package
    roi: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)  # top, left, bottom, right (fractions)


# Only files that scikit-image keeps inside its wheel; anything it would fetch with pooch is left out.
# `cat` is the same file as `chelsea`, so it is not listed twice.
_PHOTOS: dict[str, _Photo] = {
    "astronaut": _Photo("astronaut.png"),
    "chelsea": _Photo("chelsea.png"),
    "coffee": _Photo("coffee.png"),
    "rocket": _Photo("rocket.jpg"),
    "hubble_deep_field": _Photo("hubble_deep_field.jpg"),
    "immunohistochemistry": _Photo("ihc.png"),
    "motorcycle": _Photo("motorcycle_left.png"),
    # The fundus is a disc on black: keep the square inscribed in it.
    "retina": _Photo("retina.jpg", (0.18, 0.18, 0.82, 0.82)),
    "camera": _Photo("camera.png"),
    "gravel": _Photo("gravel.png"),
    "brick": _Photo("brick.png"),
    "moon": _Photo("moon.png"),
    "grass": _Photo("grass.png"),
}
# Disjoint pools, in order of preference (colour photos first).
_POOLS: dict[str, tuple[str, ...]] = {
    "test": ("astronaut", "chelsea", "coffee", "rocket"),
    "train": (
        "hubble_deep_field",
        "immunohistochemistry",
        "motorcycle",
        "retina",
        "camera",
        "gravel",
        "brick",
        "moon",
        "grass",
    ),
}


@dataclass(frozen=True)
class _SplitSpec:
    clips: int
    frames: int
    height: int
    width: int


def _split_specs(small: bool) -> dict[str, _SplitSpec]:
    if small:
        return {"train": _SplitSpec(2, 9, 64, 80), "test": _SplitSpec(2, 9, 64, 80)}
    return {"train": _SplitSpec(8, 16, 256, 320), "test": _SplitSpec(4, 16, 192, 256)}


def _photo_path(name: str) -> Path:
    return Path(str(resources.files("skimage.data").joinpath(_PHOTOS[name].file)))


def available_photos() -> list[str]:
    """Names of the known photos whose files the installed scikit-image ships (no network needed)."""
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


def _wobble(rng: np.random.Generator, t: np.ndarray, amp: tuple[float, float], frames: int) -> np.ndarray:
    """Slow sinusoid with random amplitude, phase and a period of 1.5-3 clip lengths."""
    omega = 2 * math.pi / (rng.uniform(1.5, 3.0) * frames)
    return rng.uniform(*amp) * np.sin(omega * t + rng.uniform(0, 2 * math.pi))


def _random_velocity(rng: np.random.Generator, speed: tuple[float, float]) -> np.ndarray:
    angle = rng.uniform(0, 2 * math.pi)
    return rng.uniform(*speed) * np.array([math.cos(angle), math.sin(angle)])


def render_clip(
    background: torch.Tensor,
    foreground: torch.Tensor,
    *,
    frames: int,
    height: int,
    width: int,
    rng: np.random.Generator,
) -> torch.Tensor:
    """Render one clip from two photos (3 x H x W in [0, 1]) -> frames x height x width x 3 uint8."""
    if frames < 2 or height < 8 or width < 8:
        raise ValueError(f"render_clip: expected frames >= 2 and a frame of at least 8 x 8, got {frames} x {height} x {width}")
    t = np.arange(frames, dtype=np.float64) - (frames - 1) / 2  # centred so the path's middle is c0

    # --- camera over the background: all in HR pixels, converted to source pixels below
    s0 = 1.12  # source pixels per HR pixel at zoom 1; zoom <= 1.1 keeps it >= 1
    zoom = 1.05 + 0.05 * np.sin(2 * math.pi / (rng.uniform(2.0, 4.0) * frames) * t + rng.uniform(0, 2 * math.pi))
    theta = np.deg2rad(rng.uniform(1.0, 3.0)) * np.sin(
        2 * math.pi / (rng.uniform(2.0, 4.0) * frames) * t + rng.uniform(0, 2 * math.pi)
    )
    v_bg = _random_velocity(rng, (1.0, 3.0))
    shift = np.stack([v_bg[i] * t + _wobble(rng, t, (0.5, 2.0), frames) for i in range(2)], axis=1)  # T x 2
    scale = s0 / zoom

    # corners of the frame relative to its centre, mapped into source offsets for every frame
    hx, hy = (width - 1) / 2 + 0.5, (height - 1) / 2 + 0.5
    corners = np.array([[-hx, -hy], [hx, -hy], [-hx, hy], [hx, hy]])
    cos, sin = np.cos(theta), np.sin(theta)

    def extents(k: float) -> tuple[np.ndarray, np.ndarray]:
        cx = k * s0 * shift[:, None, 0] + scale[:, None] * (cos[:, None] * corners[:, 0] - sin[:, None] * corners[:, 1])
        cy = k * s0 * shift[:, None, 1] + scale[:, None] * (sin[:, None] * corners[:, 0] + cos[:, None] * corners[:, 1])
        return np.array([cx.min(), cy.min()]), np.array([cx.max(), cy.max()])

    lo, hi = extents(1.0)
    roi_h, roi_w = background.shape[1:]
    # Show a good part of the photo, at the native resolution at most, with room for the whole path.
    need = max(1.08 * (hi[1] - lo[1] + 4) / roi_h, 1.08 * (hi[0] - lo[0] + 4) / roi_w, s0 * height / (0.6 * min(roi_h, roi_w)))
    bg = _downscale(background, min(1.0, need))
    src_h, src_w = bg.shape[1:]
    # Bicubic needs one pixel each side; shrink the translation if the photo is too small for the path.
    k = 1.0
    while True:
        lo, hi = extents(k)
        room = np.array([src_w - 3, src_h - 3]) - (hi - lo)
        if (room >= 0).all():
            break
        if k < 1e-3:
            raise ValueError(f"render_clip: background of {src_h} x {src_w} px is too small for a {height} x {width} frame")
        k *= 0.8
    c0 = 1 - lo + rng.uniform(0, 1, 2) * room  # random placement inside the feasible range

    v, u = torch.meshgrid(
        torch.arange(height, dtype=torch.float64) - (height - 1) / 2,
        torch.arange(width, dtype=torch.float64) - (width - 1) / 2,
        indexing="ij",
    )
    u, v = u[None], v[None]

    def col(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(a, dtype=np.float64))[:, None, None]

    centre = c0[None] + k * s0 * shift
    cs, sn, sc = col(cos), col(sin), col(scale)
    x = col(centre[:, 0]) + sc * (cs * u - sn * v)
    y = col(centre[:, 1]) + sc * (sn * u + cs * v)
    out = _sample(bg, x.float(), y.float())

    # --- foreground cut-out: its own pose (HR pixels relative to the frame centre), zoom and rotation
    sf0 = 1.1
    radius_hr = rng.uniform(0.17, 0.24) * min(height, width)
    aspect = rng.uniform(0.75, 1.33)
    a, b = radius_hr * sf0 * math.sqrt(aspect), radius_hr * sf0 / math.sqrt(aspect)  # half-axes in fg pixels
    fg = _downscale(foreground, min(1.0, 2 * max(a, b) / (0.45 * min(foreground.shape[1:]))))
    fg_h, fg_w = fg.shape[1:]
    a, b = min(a, fg_w / 2 - 3), min(b, fg_h / 2 - 3)
    fc = np.array([rng.uniform(a + 2, fg_w - a - 3), rng.uniform(b + 2, fg_h - b - 3)])
    fzoom = 1.04 + 0.04 * np.sin(2 * math.pi / (rng.uniform(1.5, 3.0) * frames) * t + rng.uniform(0, 2 * math.pi))
    fscale = sf0 / fzoom
    phi = np.deg2rad(rng.uniform(2.0, 6.0)) * np.sin(
        2 * math.pi / (rng.uniform(1.5, 3.0) * frames) * t + rng.uniform(0, 2 * math.pi)
    )
    # The object must not ride along with the camera, or alignment would be one global motion.
    v_fg = _random_velocity(rng, (1.5, 3.5))
    for _ in range(32):
        if np.linalg.norm(v_fg + v_bg) >= 1.5:  # on screen the background moves by -v_bg
            break
        v_fg = _random_velocity(rng, (1.5, 3.5))
    path = np.stack([v_fg[i] * t + _wobble(rng, t, (0.5, 2.5), frames) for i in range(2)], axis=1)
    # keep the centre inside the frame, away from the border by half the object's size
    limit = np.array([width / 2, height / 2]) - 0.5 * np.array([a, b]) / sf0
    pmin, pmax = -limit - path.min(0), limit - path.max(0)
    p0 = np.where(pmin <= pmax, pmin + rng.uniform(0, 1, 2) * np.maximum(pmax - pmin, 0), -(path.min(0) + path.max(0)) / 2)
    pos = p0[None] + path

    cf, sf, fs = col(np.cos(phi)), col(np.sin(phi)), col(fscale)
    du, dv = u - col(pos[:, 0]), v - col(pos[:, 1])
    lx = fs * (cf * du + sf * dv)  # rotate by -phi into the object's frame, in fg pixels
    ly = fs * (-sf * du + cf * dv)
    # Soft superellipse mask, edge about 3 fg pixels wide.
    r = ((lx.abs() / a) ** 2.5 + (ly.abs() / b) ** 2.5) ** (1 / 2.5)
    alpha = ((1 - r) * min(a, b) / 3.0).clamp(0, 1)
    alpha = (alpha * alpha * (3 - 2 * alpha)).float()[:, None]
    colour = _sample(fg, (lx + fc[0]).float(), (ly + fc[1]).float())
    out = alpha * colour + (1 - alpha) * out

    return (out.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _plan(split: str, spec: _SplitSpec, photos: list[str]) -> list[dict[str, str]]:
    """Clip names with their background and foreground photos, all from the split's own pool."""
    pool = [name for name in _POOLS[split] if name in photos]
    if not pool:
        raise FileNotFoundError(
            f"ensure_builtin: none of the {split} photos {list(_POOLS[split])} is shipped by the installed "
            f"scikit-image (looked in {_photo_path(_POOLS[split][0]).parent})"
        )
    clips = []
    for i in range(spec.clips):
        bg = pool[i % len(pool)]
        fg = pool[(i + 1 + i // len(pool)) % len(pool)]
        if fg == bg and len(pool) > 1:
            fg = pool[(i + 1) % len(pool)]
        name = bg if i < len(pool) else f"{bg}_{i // len(pool) + 1}"  # a reused photo gets another view
        clips.append({"name": name, "background": bg, "foreground": fg})
    return clips


def _params(seed: int, small: bool) -> dict:
    return {
        "version": VERSION,
        "seed": seed,
        "small": small,
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
        frames = params["splits"][split]["frames"]
        for clip in manifest.get("clips", {}).get(split, []):
            clip_dir = root / split / clip["name"]
            if not all((clip_dir / f"{i:03d}.png").is_file() for i in range(frames)):
                return False
    return True


def _generate(tmp: Path, params: dict, seed: int, small: bool) -> dict:
    photos = available_photos()
    loaded: dict[str, torch.Tensor] = {}
    clips: dict[str, list[dict[str, str]]] = {}
    for split_idx, (split, spec) in enumerate(_split_specs(small).items()):
        clips[split] = _plan(split, spec, photos)
        for clip_idx, clip in enumerate(clips[split]):
            for name in (clip["background"], clip["foreground"]):
                if name not in loaded:
                    loaded[name] = _load_photo(name)
            rng = np.random.default_rng([seed, split_idx, clip_idx])
            video = render_clip(
                loaded[clip["background"]],
                loaded[clip["foreground"]],
                frames=spec.frames,
                height=spec.height,
                width=spec.width,
                rng=rng,
            ).numpy()
            clip_dir = tmp / split / clip["name"]
            clip_dir.mkdir(parents=True)
            for i, frame in enumerate(video):
                Image.fromarray(frame).save(clip_dir / f"{i:03d}.png")
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
