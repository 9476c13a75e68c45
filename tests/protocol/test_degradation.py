"""Degradation vs independent references: hand-computed MATLAB values, a loop port, PIL, scipy."""

import math

import numpy as np
import pytest
import scipy.ndimage
import skimage.data
import torch
import torch.nn.functional as F
from PIL import Image

from lgfn.protocol.degradation import bd_degrade, degrade, imresize, resize_matrix


def _matlab_resize_1d(v: np.ndarray, scale: float) -> np.ndarray:
    """Straight per-output loop of MATLAB's imresize contributions() (1-based, as in imresize.m)."""
    n = len(v)
    out_len = math.ceil(n * scale)
    kw = 4 / scale if scale < 1 else 4

    def cubic(x):
        x = abs(x)
        if x <= 1:
            return 1.5 * x**3 - 2.5 * x**2 + 1
        if x <= 2:
            return -0.5 * x**3 + 2.5 * x**2 - 4 * x + 2
        return 0.0

    aux = list(range(1, n + 1)) + list(range(n, 0, -1))
    out = np.zeros(out_len)
    for x in range(1, out_len + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - kw / 2)
        ws, js = [], []
        for k in range(math.ceil(kw) + 2):
            j = left + k
            ws.append(scale * cubic(scale * (u - j)) if scale < 1 else cubic(u - j))
            js.append(aux[(j - 1) % (2 * n)] - 1)
        ws = np.array(ws) / sum(ws)
        out[x - 1] = sum(w * v[j] for w, j in zip(ws, js, strict=True))
    return out


def test_imresize_hand_computed_matlab_values():
    # Worked by hand from MATLAB's algorithm (cubic a=-0.5, symmetric border, u = x/s + (1-1/s)/2).
    up = imresize(torch.tensor([[0.0, 1.0]], dtype=torch.float64), 2.0)
    assert torch.allclose(up, torch.tensor([[-0.09375, 0.203125, 0.796875, 1.09375]], dtype=torch.float64))
    down = imresize(torch.tensor([[0.0, 1.0, 2.0, 3.0]], dtype=torch.float64), 0.5)
    assert torch.allclose(down, torch.tensor([[0.4609375, 2.5390625]], dtype=torch.float64))


@pytest.mark.parametrize("n,scale", [(32, 0.25), (30, 0.25), (9, 0.5), (8, 4.0), (7, 3.0)])
def test_imresize_matches_loop_port(n, scale):
    v = np.random.default_rng(n).random(n)
    ref = _matlab_resize_1d(v, scale)
    got = imresize(torch.from_numpy(v)[None], scale)[0].numpy()
    np.testing.assert_allclose(got, ref, atol=1e-12)


def test_imresize_separable_batched_and_dtype():
    x = torch.rand(2, 3, 3, 16, 20)
    y = imresize(x, 0.25)
    assert y.shape == (2, 3, 3, 4, 5) and y.dtype == torch.float32
    # Separable: 2-D result equals the two 1-D passes of the reference loop.
    v = x[1, 2, 0].double().numpy()
    rows = np.stack([_matlab_resize_1d(r, 0.25) for r in v])
    ref = np.stack([_matlab_resize_1d(c, 0.25) for c in rows.T]).T
    np.testing.assert_allclose(y[1, 2, 0].double().numpy(), ref, atol=1e-5)
    # Constants survive.
    assert torch.allclose(imresize(torch.full((1, 3, 12, 12), 0.3), 0.25), torch.full((1, 3, 3, 3), 0.3))
    assert resize_matrix(30, 1 / 3).shape == (10, 30)


def test_imresize_against_pil_on_a_photo():
    img = skimage.data.astronaut()[100:356, 32:480]  # 256 x 448, bundled with skimage
    pil = np.asarray(Image.fromarray(img).resize((112, 64), Image.BICUBIC)).astype(np.float64)
    t = torch.from_numpy(img).double().permute(2, 0, 1)
    ours = (imresize(t / 255, 0.25).clamp(0, 1) * 255).round().permute(1, 2, 0).numpy()
    d = np.abs(ours - pil)
    assert d[2:-2, 2:-2].max() <= 3 and d[2:-2, 2:-2].mean() < 0.15  # interior: PIL's uint8 passes
    assert d.max() > 3  # borders differ (PIL does not mirror)
    # Reproducing PIL's per-pass clamp+round closes the interior gap to rounding.
    mh, mw = resize_matrix(256, 0.25, dtype=torch.float64), resize_matrix(448, 0.25, dtype=torch.float64)
    a = torch.einsum("chw,jw->chj", t, mw).clamp(0, 255).round()
    b = torch.einsum("ih,chj->cij", mh, a).clamp(0, 255).round().permute(1, 2, 0).numpy()
    assert np.abs(b - pil)[2:-2, 2:-2].max() <= 1


def test_bd_matches_scipy_and_basicsr_pipeline():
    x = torch.rand(2, 3, 32, 28, dtype=torch.float64)
    got = bd_degrade(x)
    assert got.shape == (2, 3, 8, 7)
    # scipy: truncate 4 * 1.6 -> radius 6 (13 taps); 'mirror' is torch's 'reflect'.
    ref = scipy.ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, 1.6, 1.6), mode="mirror", truncate=4.0)
    np.testing.assert_allclose(got.numpy(), ref[..., ::4, ::4], atol=1e-12)
    # BasicSR duf_downsample: pad 13//2 + 2*4, strided conv, drop 2 on each side.
    g = scipy.ndimage.gaussian_filter(_delta(13), 1.6)  # BasicSR's generate_gaussian_kernel
    k = torch.from_numpy(g)[None, None]
    y = F.pad(x.reshape(-1, 1, 32, 28), (14, 14, 14, 14), mode="reflect")
    y = F.conv2d(y, k, stride=4)[:, :, 2:-2, 2:-2].reshape(2, 3, 8, 7)
    assert torch.allclose(got, y, atol=1e-12)


def _delta(n):
    d = np.zeros((n, n))
    d[n // 2, n // 2] = 1
    return d


def test_degrade_crops_to_multiple_and_validates():
    hr = torch.rand(3, 30, 31)
    for kind in ("bi", "bd"):
        lr = degrade(hr, kind)
        assert lr.shape == (3, 7, 7)
        assert torch.equal(lr, degrade(hr[:, :28, :28], kind))
    assert torch.allclose(degrade(hr, "bi"), imresize(hr[:, :28, :28], 0.25))
    with pytest.raises(ValueError, match=r"data\.degradation.*'bi'.*'bd'"):
        degrade(hr, "bicubic")
