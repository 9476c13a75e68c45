"""lgfn-upscale --model basicvsr [--weights NAME]: BasicVSR's released weights as the upscaler, tiled and streamed."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from lgfn.checkpoints import basicvsr_weights as bw
from lgfn.checkpoints.weights_file import save_weights
from lgfn.inference import upscale
from lgfn.inference.tiling import default_overlap, radius_from_config, upscale_window
from lgfn.models import BasicVSR
from lgfn.protocol.windows import window_indices


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory) -> Path:
    """3 LR frames of 16 x 24 cut from skimage's astronaut (downscaled 4x), moving 1 LR px per frame."""
    root = tmp_path_factory.mktemp("lr_frames")
    img = np.asarray(Image.fromarray(skimage.data.astronaut()).resize((128, 128), Image.BICUBIC))
    for t in range(3):
        Image.fromarray(np.ascontiguousarray(img[40 + t : 56 + t, 50:74])).save(root / f"f{t:02d}.png")
    return root


# Small convolutions run several times faster on one thread than on two busy cores (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _read(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))]


def test_weight_names_match_the_released_files():
    assert upscale.BASICVSR_WEIGHT_NAMES == tuple(bw.BASICVSR_WEIGHTS)


def test_upscale_with_basicvsr_matches_the_network(weights_installed, frames_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert upscale.main([str(frames_dir), str(out), "--model", "basicvsr", "--device", "cpu", "--sequential"]) == 0
    written = _read(out)
    assert len(written) == 3 and written[0].shape == (64, 96, 3)
    assert "wrote 3 frames" in capsys.readouterr().err
    # Frame 2 is BasicVSR's centre output of its 7-frame window (reflection_circle padding, folded for a clip
    # shorter than the window), as eval.py scores it.
    lr = torch.from_numpy(np.stack(_read(frames_dir))).permute(0, 3, 1, 2).float() / 255
    net = bw.pretrained_basicvsr("vimeo_bi", num_frames=7)
    with torch.no_grad():
        want = net(lr[window_indices(2, 7, 3, "reflection_circle")][None])[0]
    want = want.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    assert np.abs(written[2].astype(int) - want.astype(int)).max() <= 1


def test_tiled_basicvsr_is_close_and_reports_its_weights(weights_installed, frames_dir, tmp_path, capsys):
    whole, tiled = tmp_path / "whole", tmp_path / "tiled"
    page = tmp_path / "page.html"
    base = [str(frames_dir), "--model", "basicvsr", "--weights", "vimeo_bd", "--device", "cpu"]
    assert upscale.main([base[0], str(whole), *base[1:]]) == 0
    assert upscale.main([base[0], str(tiled), *base[1:], "--tile", "12", "--overlap", "4", "--compare", "1",
                         "--compare-out", str(page)]) == 0
    # SPyNet sees each tile instead of the frame, so tiles are close, not identical (tiling.py docstring).
    diff = [np.abs(a.astype(float) - b.astype(float)).mean() for a, b in zip(_read(whole), _read(tiled), strict=True)]
    assert max(diff) < 3.0, diff
    assert "vimeo_bd" in page.read_text()
    capsys.readouterr()


@pytest.mark.parametrize("argv, match", [
    (["--model", "basicvsr", "--ckpt", "x.pt"], "--model basicvsr .* excludes --ckpt"),
    (["--model", "basicvsr", "--onnx", "x.onnx"], "--model basicvsr .* excludes --onnx"),
    (["--weights", "reds"], "--weights reds .* add --model basicvsr"),
])
def test_bad_flag_combinations_are_one_line_usage_errors(frames_dir, tmp_path, capsys, argv, match):
    assert upscale.main([str(frames_dir), str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert re.search(match, err[-1]) and err[-1].startswith("lgfn-upscale: error"), err


def test_unknown_weights_name_is_refused_by_the_parser(frames_dir, tmp_path, capsys):
    assert upscale.main([str(frames_dir), str(tmp_path / "o"), "--model", "basicvsr", "--weights", "vimeo"]) == 2
    assert "vimeo_bi" in capsys.readouterr().err


def test_missing_extra_is_one_line(frames_dir, tmp_path, capsys, monkeypatch):
    import importlib.metadata

    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    assert upscale.main([str(frames_dir), str(tmp_path / "o"), "--model", "basicvsr"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install" in err[0] and "baselines" in err[0], err


def test_basicvsr_weights_file_runs_with_ckpt(frames_dir, tmp_path):
    # A BasicVSR saved as a weights file (lgfn-export of a model=basicvsr run) rebuilds through --ckpt.
    torch.manual_seed(0)
    net = BasicVSR(num_feat=8, num_block=1, num_frames=3).eval()
    save_weights(net, tmp_path / "bv.pt")
    out = tmp_path / "out"
    assert upscale.main([str(frames_dir), str(out), "--ckpt", str(tmp_path / "bv.pt"), "--device", "cpu"]) == 0
    frames = torch.from_numpy(np.stack(_read(frames_dir))).permute(0, 3, 1, 2).float() / 255
    want = upscale_window(net, frames[window_indices(0, 3, 3, "reflection_circle")])
    want = want.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    assert np.abs(_read(out)[0].astype(int) - want.astype(int)).max() <= 1


def test_receptive_radius_rule():
    assert radius_from_config("BasicVSR", {"num_frames": 7, "num_block": 30}) == 4 * 61 + 6
    assert default_overlap(BasicVSR(num_feat=8, num_block=1, num_frames=3)) == 12  # 2 * 3 + 6, rounded up to 4
