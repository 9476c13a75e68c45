"""The frame window: which frames of a clip feed the network for a given centre frame.

Padding names follow BasicSR's ``generate_frame_indices`` (mmagic alike). For centre 0 of a
5-frame window: ``replicate`` [0,0,0,1,2], ``reflection`` [2,1,0,1,2], ``reflection_circle``
[4,3,0,1,2] (the LGFN release; ``mirror`` is an alias), ``circle`` [3,4,0,1,2]; the clip end is
symmetric.

``centre_only`` windows hold the centre frame ``num_frames`` times: the same network, the same
compute, none of the neighbours' information (``experiment=ablation_single_frame``; the
temporal-gain metric runs every evaluated window this way too).
"""

from __future__ import annotations

PADDINGS = ("replicate", "reflection", "reflection_circle", "circle")
PADDING_ALIASES = {"mirror": "reflection_circle"}


def canonical_padding(padding: str) -> str:
    """Resolve aliases (``mirror``) and reject unknown names with an error naming ``data.padding``."""
    name = PADDING_ALIASES.get(padding, padding)
    if name not in PADDINGS:
        allowed = list(PADDINGS) + list(PADDING_ALIASES)
        raise ValueError(f"data.padding must be one of {allowed}, got {padding!r}")
    return name


def check_num_frames(num_frames: int) -> None:
    """Windows are centred, so the length must be a positive odd integer."""
    if not isinstance(num_frames, int) or num_frames < 1 or num_frames % 2 == 0:
        raise ValueError(f"data.num_frames must be a positive odd integer, got {num_frames!r}")


def frame_indices(center: int, num_frames: int, length: int, padding: str) -> list[int]:
    """Indices (len ``num_frames``) of the window around ``center`` in a clip of ``length`` frames."""
    padding = canonical_padding(padding)
    check_num_frames(num_frames)
    if length < num_frames:
        raise ValueError(f"clip of {length} frames is shorter than the window (data.num_frames={num_frames})")
    if not 0 <= center < length:
        raise ValueError(f"frame_indices: center {center} outside a clip of {length} frames")
    half = num_frames // 2
    last = length - 1
    out = []
    for i in range(center - half, center + half + 1):
        if i < 0:
            j = {
                "replicate": 0,
                "reflection": -i,
                "reflection_circle": center + half - i,
                "circle": num_frames + i,
            }[padding]
        elif i > last:
            j = {
                "replicate": last,
                "reflection": 2 * last - i,
                "reflection_circle": (center - half) - (i - last),
                "circle": i - num_frames,
            }[padding]
        else:
            j = i
        out.append(j)
    return out


def short_clip_indices(center: int, num_frames: int, length: int, padding: str) -> list[int]:
    """Window for a clip shorter than the window: the padding rule, folded until inside [0, length)."""
    padding = canonical_padding(padding)
    check_num_frames(num_frames)
    if length >= num_frames:
        return frame_indices(center, num_frames, length, padding)
    half, last = num_frames // 2, length - 1
    out = []
    for i in range(center - half, center + half + 1):
        if padding == "replicate":
            j = min(max(i, 0), last)
        elif padding == "circle":
            j = i % length
        else:
            # reflection / reflection_circle: mirror about the ends, repeatedly (no edge repeat).
            period = 2 * last if last > 0 else 1
            j = abs(i) % period if last > 0 else 0
            j = period - j if j > last else j
        out.append(j)
    return out


def window_indices(center: int, num_frames: int, length: int, padding: str) -> list[int]:
    """``frame_indices`` (the project's rule) with the short-clip fallback."""
    if length < num_frames:
        return short_clip_indices(center, num_frames, length, padding)
    return frame_indices(center, num_frames, length, padding)


def centre_only_indices(center: int, num_frames: int) -> list[int]:
    """The window of ``centre_only`` data: the centre frame repeated ``num_frames`` times."""
    check_num_frames(num_frames)
    return [center] * num_frames
