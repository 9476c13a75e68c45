"""Metric protocol vs independent references (skimage, torchmetrics, hand values)."""

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torchmetrics.functional.image import structural_similarity_index_measure
from torchmetrics.image import PeakSignalNoiseRatio

from lgfn.metrics import PSNR_CAP_DB, average_per_clip, psnr_y, rgb_to_y, ssim_y


def _y_numpy(img01: torch.Tensor) -> np.ndarray:
    """Release formula on 8-bit RGB: Y = 16 + (65.738 R + 129.057 G + 25.064 B) / 256, R in 0..255."""
    u8 = (img01.clamp(0, 1) * 255).round().double().numpy()
    return 16 + (65.738 * u8[0] + 129.057 * u8[1] + 25.064 * u8[2]) / 256


def _pair(seed=0, b=2, h=40, w=36):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(b, 3, h, w, generator=g)
    sr = (gt + 0.08 * torch.randn(b, 3, h, w, generator=g)).clamp(-0.1, 1.1)  # out of range on purpose
    return sr, gt


def test_rgb_to_y_values():
    assert torch.allclose(rgb_to_y(torch.zeros(3, 1, 1)), torch.tensor(16.0))
    assert torch.allclose(rgb_to_y(torch.ones(3, 1, 1)), torch.tensor(235.0), atol=1e-4)
    x = torch.rand(3, 5, 5, dtype=torch.float64)
    x8 = (x * 255).round() / 255
    np.testing.assert_allclose(rgb_to_y(x8).numpy(), _y_numpy(x8), atol=0.02)  # /256 form, 4-digit coeffs


def test_psnr_matches_skimage_and_torchmetrics():
    sr, gt = _pair()
    got = psnr_y(sr, gt)
    assert got.shape == (2,) and got.dtype == torch.float64
    tm = PeakSignalNoiseRatio(data_range=255.0)
    for i in range(2):
        ys, yg = _y_numpy(sr[i]), _y_numpy(gt[i])
        ref = peak_signal_noise_ratio(yg, ys, data_range=255)
        assert got[i].item() == pytest.approx(ref, abs=2e-3)
        tm.reset()
        assert got[i].item() == pytest.approx(
            tm(torch.from_numpy(ys)[None, None], torch.from_numpy(yg)[None, None]).item(), abs=2e-3
        )
    # Border crop changes the region: compare with skimage on the cropped planes.
    c = psnr_y(sr, gt, crop_border=4)[0].item()
    assert c == pytest.approx(
        peak_signal_noise_ratio(_y_numpy(gt[0])[4:-4, 4:-4], _y_numpy(sr[0])[4:-4, 4:-4], data_range=255),
        abs=2e-3,
    )


def test_ssim_matches_skimage_and_torchmetrics():
    sr, gt = _pair(1)
    got = ssim_y(sr, gt)
    for i in range(2):
        ys, yg = _y_numpy(sr[i]), _y_numpy(gt[i])
        ref = structural_similarity(
            yg, ys, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
        )
        assert got[i].item() == pytest.approx(ref, abs=2e-4)
        # torchmetrics averages its reflect-padded map; the protocol's 'valid' region is its interior.
        _, full = structural_similarity_index_measure(
            torch.from_numpy(ys)[None, None],
            torch.from_numpy(yg)[None, None],
            gaussian_kernel=True,
            sigma=1.5,
            kernel_size=11,
            data_range=255.0,
            return_full_image=True,
        )
        assert got[i].item() == pytest.approx(full[..., 5:-5, 5:-5].mean().item(), abs=1e-6)
    assert torch.allclose(ssim_y(gt, gt), torch.ones(2, dtype=torch.float64))


def test_rounding_to_8_bits_and_identical_cap():
    gt = (torch.rand(1, 3, 16, 16) * 255).round() / 255
    nudged = gt + 0.4 / 255  # rounds back to gt
    assert psnr_y(nudged, gt).item() == pytest.approx(PSNR_CAP_DB)
    assert math.isfinite(PSNR_CAP_DB) and 160 < PSNR_CAP_DB < 170
    # One blue step in one pixel: a finite PSNR far below the cap.
    one = gt.clone()
    one[0, 2, 0, 0] = 1.0 if gt[0, 2, 0, 0] < 0.5 else 0.0
    assert psnr_y(one, gt).item() < 100


def test_shape_errors():
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        psnr_y(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))
    with pytest.raises(ValueError, match="crop_border"):
        psnr_y(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), crop_border=4)


def test_average_per_clip_modes():
    vals = {"a": {0: 10.0, 1: 20.0}, "b": {5: 40.0}}
    per, avg = average_per_clip(vals, "clip")
    assert per == {"a": 15.0, "b": 40.0} and avg == pytest.approx(27.5)
    per, avg = average_per_clip(vals, "frame")
    assert avg == pytest.approx(70.0 / 3)
    with pytest.raises(ValueError, match="data.average"):
        average_per_clip(vals, "mean")
