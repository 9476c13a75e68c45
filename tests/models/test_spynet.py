"""SpyNet and flow_warp (lgfn.models.spynet) with BasicVSR's released SPyNet weights.

Sign convention under test: ``flow = SpyNet()(ref, supp)`` is in pixels (x, y), and if ``supp`` shows
``ref``'s content moved by (dx, dy) the flow is (dx, dy), so ``flow_warp(supp, flow)`` ~ ``ref``.
"""

from __future__ import annotations

import pytest
import skimage.data
import torch
import torch.nn.functional as F

from lgfn.checkpoints.basicvsr_weights import BaselineWeightsMissing, load_spynet_state, pretrained_spynet
from lgfn.models import SpyNet
from lgfn.models.spynet import flow_warp

# Median end-point error over the interior, measured 0.02-0.14 px (integer motion, three crops, all three
# weight files) and 0.02-0.07 px (fractional motion); the bound leaves a 2x margin. A sign error would be
# off by 2 |motion| (> 5 px).
MAX_MEDIAN_EPE = 0.3
BORDER = 16  # pixels near the edges see content that left the frame; they are not scored


@pytest.fixture(scope="module")
def spynet() -> SpyNet:
    try:
        return pretrained_spynet("vimeo_bi")
    except BaselineWeightsMissing as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def astronaut() -> torch.Tensor:
    """skimage's astronaut, 1 x 3 x 512 x 512 in [0, 1]."""
    return torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1).float().div(255)[None]


def _moved(img: torch.Tensor, y: int, x: int, h: int, w: int, dx: int, dy: int):
    """(ref, supp) crops of img: supp shows ref's content moved by (dx, dy) pixels."""
    ref = img[..., y : y + h, x : x + w]
    supp = img[..., y - dy : y - dy + h, x - dx : x - dx + w]
    return ref, supp


def _median_epe(flow: torch.Tensor, dx: float, dy: float, border: int) -> float:
    inner = flow[..., border:-border, border:-border]
    truth = torch.tensor([dx, dy]).view(1, 2, 1, 1)
    return (inner - truth).norm(dim=1).median().item()


def test_flow_warp_integer_shift_and_zero_padding():
    x = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).view(2, 3, 5, 6)
    flow = torch.zeros(2, 2, 5, 6)
    flow[:, 0], flow[:, 1] = 2.0, -1.0  # sample 2 px to the right, 1 px up
    out = flow_warp(x, flow)
    assert torch.allclose(out[..., 1:, :-2], x[..., :-1, 2:])
    assert out[..., 0, :].abs().max() == 0 and out[..., -2:].abs().max() == 0  # outside: zeros
    assert torch.allclose(flow_warp(x, torch.zeros(2, 2, 5, 6)), x, atol=1e-4)
    with pytest.raises(ValueError, match="flow_warp"):
        flow_warp(x, flow.permute(0, 2, 3, 1))


def test_spynet_any_size_random_init():
    net = SpyNet().eval()
    for h, w in [(16, 20), (37, 53), (64, 96)]:
        with torch.no_grad():
            assert net(torch.rand(2, 3, h, w), torch.rand(2, 3, h, w)).shape == (2, 2, h, w)
    with pytest.raises(ValueError, match="SpyNet"):
        net(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 33))


def test_spynet_state_loads_alone():
    try:
        state = load_spynet_state("vimeo_bi")
    except BaselineWeightsMissing as err:
        pytest.skip(str(err))
    assert {"mean", "std"} <= state.keys() and not any(k.startswith("spynet.") for k in state)
    SpyNet().load_state_dict(state, strict=True)


@pytest.mark.parametrize("size", [(128, 128), (120, 150)], ids=["128x128", "120x150-resized"])
def test_pretrained_spynet_integer_translation(spynet, astronaut, size):
    h, w = size
    dx, dy = 3, -2
    ref, supp = _moved(astronaut, 200, 200, h, w, dx, dy)
    with torch.no_grad():
        flow = spynet(ref, supp)
    assert _median_epe(flow, dx, dy, BORDER) < MAX_MEDIAN_EPE
    # The convention: warping supp by the flow brings it back onto ref.
    inner = (..., slice(BORDER, -BORDER), slice(BORDER, -BORDER))
    aligned_err = (flow_warp(supp, flow) - ref)[inner].abs().mean()
    assert aligned_err < 0.2 * (supp - ref)[inner].abs().mean()


def test_pretrained_spynet_fractional_translation(spynet, astronaut):
    # Move 256 x 256 crops by (6, -10) px, then shrink 4x (antialiased bicubic): a (1.5, -2.5) px motion
    # between two natural-looking 64 x 64 frames, made without flow_warp.
    ref, supp = _moved(astronaut, 120, 110, 256, 256, 6, -10)
    ref, supp = (F.interpolate(t, scale_factor=0.25, mode="bicubic", antialias=True) for t in (ref, supp))
    with torch.no_grad():
        flow = spynet(ref, supp)
    assert _median_epe(flow, 1.5, -2.5, 8) < MAX_MEDIAN_EPE
