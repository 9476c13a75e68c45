"""The W&B / TensorBoard pictures: one order (LR | bicubic | model | GT), a label burnt above each panel, PSNRs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from lgfn.training import media
from lgfn.training.lit_module import LitLGFN


def _panels(h: int = 24, w: int = 40) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {k: rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for k in media.KINDS}


def _check_strip(image: np.ndarray, panels: dict[str, np.ndarray], psnr: dict, model_label: str | None = None):
    """Each panel lies under the banner that names it, pixel for pixel."""
    h, w = next(iter(panels.values())).shape[:2]
    assert image.shape == (media.BANNER + h, len(media.KINDS) * w, 3)
    banners = {}
    for i, kind in enumerate(media.KINDS):
        column = image[:, i * w : (i + 1) * w]
        np.testing.assert_array_equal(column[media.BANNER :], panels[kind])  # the picture, unchanged
        texts = media.panel_texts(kind, psnr.get(kind), model_label)
        np.testing.assert_array_equal(column[: media.BANNER], media.banner(texts, w))  # its own label
        assert (column[: media.BANNER] != media.BANNER_COLOUR).any()  # text was drawn
        banners[kind] = column[: media.BANNER]
    # the labels differ, so a panel under another's label would fail above
    assert len({b.tobytes() for b in banners.values()}) == len(media.KINDS)


def test_strip_panels_are_in_order_under_their_labels_with_psnr():
    panels = _panels()
    psnr = {"bicubic": 24.0123, "sr": 25.3}
    image = media.labelled_strip(panels, psnr)
    _check_strip(image, panels, psnr)
    assert media.panel_texts("bicubic", psnr["bicubic"]) == ("Bicubic", "PSNR-Y 24.01 dB")
    assert media.panel_texts("sr", psnr["sr"]) == ("LGFN", "PSNR-Y 25.30 dB")
    assert media.panel_texts("lr") == ("LR (nearest)", "") and media.panel_texts("gt") == ("GT", "")
    assert media.caption(psnr) == "LR (nearest) | Bicubic 24.01 dB | LGFN 25.30 dB | GT"
    # a long model name on a narrow panel still fits its banner (smaller font, then an ellipsis)
    narrow = _panels(16, 16)
    _check_strip(media.labelled_strip(narrow, psnr, "LGFN (quickstart, a long name)"), narrow, psnr,
                 "LGFN (quickstart, a long name)")


def test_test_strip_takes_the_frames_psnr_from_the_results():
    result = {"per_frame": {"clip": {"frame": [3, 4], "psnr": [30.0, 31.5], "psnr_bicubic": [27.0, 28.25]}}}
    assert media.frame_psnr(result, "clip", 4) == {"bicubic": 28.25, "sr": 31.5}
    assert media.frame_psnr(result, "clip", 9) == {"bicubic": None, "sr": None}
    sample = {"frame": 4, **_panels()}
    _check_strip(media.strip(sample, media.frame_psnr(result, "clip", 4)), _panels(), {"bicubic": 28.25, "sr": 31.5})


class TensorBoardLogger:  # the name is what the media code dispatches on
    def __init__(self) -> None:
        self.images = []
        self.experiment = SimpleNamespace(add_image=lambda key, img, step, dataformats: self.images.append(
            (key, img, step, dataformats)))


class WandbLogger:
    def __init__(self) -> None:
        self.images = []

    def log_image(self, key, images, caption, step):
        self.images.append((key, images, caption, step))


def test_validation_samples_use_the_test_strip_layout():
    tb, wb = TensorBoardLogger(), WandbLogger()
    module = LitLGFN(torch.nn.Identity(), log_images=1)
    module._trainer = SimpleNamespace(sanity_checking=False, is_global_zero=True, loggers=[tb, wb], global_step=7,
                                      fit_loop=None)
    g = torch.Generator().manual_seed(0)
    lr = torch.rand(3, 10, 12, generator=g)
    sr, bic, hr = (torch.rand(3, 40, 48, generator=g) for _ in range(3))
    psnr = {"bicubic": 21.5, "sr": 23.25}
    module._log_crops(lr, sr, bic, hr, "val/sample_0", size=32, psnr=psnr)
    # the centred 32 x 32 crop (on the x4 grid) of each, LR nearest-upscaled
    top, left = (40 - 32) // 2 // 4 * 4, (48 - 32) // 2 // 4 * 4
    up = lr.repeat_interleave(4, -2).repeat_interleave(4, -1)
    u8 = {k: v[:, top : top + 32, left : left + 32].mul(255).round().byte().permute(1, 2, 0).numpy()
          for k, v in {"lr": up, "bicubic": bic, "sr": sr, "gt": hr}.items()}
    (key, image, step, fmt), = tb.images
    assert (key, step, fmt) == ("val/sample_0", 7, "HWC")
    _check_strip(image, u8, psnr)
    (key, images, caption, step), = wb.images
    _check_strip(images[0], u8, psnr)
    assert caption == ["LR (nearest) | Bicubic 21.50 dB | LGFN 23.25 dB | GT"]
