"""Streaming windows for inference: output t sees the window ``lgfn.protocol.windows.window_indices(t, N, length,
padding)`` while frames are decoded lazily into a small ring buffer (``length`` is needed up front: windows near the
end reach past t). Clips shorter than the window use the same padding rule, folded (``short_clip_indices``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from lgfn.protocol.windows import window_indices


def stream_windows(
    frames: Iterable[np.ndarray | torch.Tensor], length: int, num_frames: int, padding: str
) -> Iterator[tuple[int, list]]:
    """Yield (t, [frame for each index of t's window]) for t = 0..length-1, reading ``frames`` lazily.

    At most the frames within 2 * (num_frames // 2) of t stay buffered. Raises ValueError if the
    source ends before ``length`` frames.
    """
    if length < 1:
        raise ValueError("no frames to upscale (length 0)")
    it = iter(frames)
    buffer: dict[int, Any] = {}
    next_read = 0
    reach = 2 * (num_frames // 2)
    for t in range(length):
        idx = window_indices(t, num_frames, length, padding)
        need = max(idx)
        while next_read <= need:
            try:
                buffer[next_read] = next(it)
            except StopIteration:
                raise ValueError(f"the input ended after {next_read} frames, expected {length}") from None
            next_read += 1
        yield t, [buffer[i] for i in idx]
        for i in [i for i in buffer if i < t + 1 - reach and length >= num_frames]:
            del buffer[i]
