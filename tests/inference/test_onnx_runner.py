"""lgfn-upscale --onnx: an exported model upscales a clip through ONNX Runtime like PyTorch does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lgfn.checkpoints.weights_file import save_weights
from lgfn.inference import upscale
from lgfn.inference.export import export_onnx
from lgfn.models import LGFN

pytestmark = pytest.mark.slow


def test_upscale_with_onnx_matches_pytorch(tmp_path):
    torch.manual_seed(0)
    net = LGFN(num_frames=3, num_feat=8, num_extract_blocks=1, num_align_stages=1, deformable_groups=2,
               num_lfm=1, num_gfm=1, gfm_slice_channels=2, num_rcab=1).eval()
    ckpt = tmp_path / "tiny.pt"
    save_weights(net, ckpt, meta={"padding": "reflection_circle"})
    onnx_path = export_onnx(net, tmp_path / "tiny.onnx", num_frames=3, dynamic=True, height=16, width=16)
    frames = tmp_path / "in"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (12, 14, 3), dtype=np.uint8)).save(frames / f"{i:03d}.png")
    assert upscale.main([str(frames), str(tmp_path / "torch"), "--ckpt", str(ckpt)]) == 0
    assert upscale.main([str(frames), str(tmp_path / "onnx"), "--onnx", str(onnx_path)]) == 0
    for i in range(4):
        a = np.asarray(Image.open(tmp_path / "torch" / f"{i:03d}.png"), dtype=np.int16)
        b = np.asarray(Image.open(tmp_path / "onnx" / f"{i:03d}.png"), dtype=np.int16)
        assert a.shape == (48, 56, 3)
        assert np.abs(a - b).max() <= 1  # 8-bit rounding of outputs equal to ~1e-6
