"""lgfn-export: ONNX (checked in onnxruntime against eager PyTorch) and torch.export round trips."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from lgfn.checkpoints.weights_file import save_weights
from lgfn.inference.export import export_onnx, export_torch, main
from lgfn.inference.onnx_runner import OnnxUpscaler
from lgfn.models import LGFN, LGFN_SMALL, DCNv2Pack

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

# lgfn_small's block layout (7 frames, 2 align stages, 2 LFM, 2 GFM) with tiny widths, for speed.
SMALL_TINY = dict(LGFN_SMALL, num_feat=8, deformable_groups=2, gfm_slice_channels=2, num_rcab=1,
                  num_extract_blocks=1)
# Every block of the paper's model (DMDCU with 4 and 2 branches, 8 deformable groups, LFM, GFM, RCAB, x4).
FULL_TINY = dict(num_frames=5, num_feat=16, num_extract_blocks=1, num_align_stages=2, deformable_groups=8,
                 num_lfm=1, num_gfm=1, gfm_slice_channels=3, num_rcab=1, rcab_reduction=8)
TOL = 1e-4


def _net(config: dict, seed: int = 0) -> LGFN:
    """A random LGFN whose DCN offsets are non-zero (a few pixels), so bilinear sampling is exercised."""
    torch.manual_seed(seed)
    net = LGFN(**config).eval()
    for m in net.modules():
        if isinstance(m, DCNv2Pack):
            torch.nn.init.normal_(m.conv_offset.weight, std=0.05)
            torch.nn.init.normal_(m.conv_offset.bias, std=1.0)
    net.config = dict(config)
    return net


def _eager(net: torch.nn.Module, lr: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return net(torch.from_numpy(lr)).numpy()


def _inputs(frames: int, seed: int = 3) -> list[np.ndarray]:
    """Two different batch sizes and LR sizes (neither the traced one), odd sizes included."""
    rng = np.random.default_rng(seed)
    return [rng.random((1, frames, 3, 12, 20), dtype=np.float32),
            rng.random((2, frames, 3, 17, 9), dtype=np.float32)]


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory) -> tuple:
    net = _net(SMALL_TINY)
    path = tmp_path_factory.mktemp("ckpt") / "small.pt"
    save_weights(net, path, meta={"padding": "replicate"}, net_config=SMALL_TINY)
    return net, path


@pytest.mark.slow
def test_cli_onnx_dynamic_matches_eager_and_writes_sidecar(small_ckpt, tmp_path, capsys):
    net, ckpt = small_ckpt
    out = tmp_path / "m.onnx"
    assert main(["--ckpt", str(ckpt), "--format", "onnx", "--out", str(out), "--dynamic",
                 "--height", "16", "--width", "16"]) == 0
    assert "max |diff|" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.json"]  # no temp files left

    side = json.loads((tmp_path / "m.onnx.json").read_text())
    assert side["format"] == "onnx" and side["scale"] == 4 and side["num_frames"] == 7
    assert side["padding"] == "replicate"  # from the checkpoint's meta
    assert (side["input"], side["output"]) == ("lr", "sr")
    assert side["layout"] == "B x N x 3 x h x w RGB in [0,1]"
    assert side["dynamic"] is True and side["opset"] >= 16
    assert {k: side["net_config"][k] for k in SMALL_TINY} == SMALL_TINY

    import onnx

    model = onnx.load(str(out))
    assert "GridSample" in {n.op_type for n in model.graph.node}  # native op, no custom domain
    assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}
    assert [i.name for i in model.graph.input] == ["lr"] and [o.name for o in model.graph.output] == ["sr"]

    upscaler = OnnxUpscaler(out)
    for lr in _inputs(7):
        got, ref = upscaler(lr), _eager(net, lr)
        assert got.shape == (lr.shape[0], 3, 4 * lr.shape[3], 4 * lr.shape[4])
        assert np.abs(got - ref).max() < TOL
    with pytest.raises(ValueError, match="takes 7 frames"):
        upscaler(np.zeros((1, 5, 3, 8, 8), np.float32))


@pytest.mark.slow
def test_full_model_onnx_dynamic_matches_eager(tmp_path):
    net = _net(FULL_TINY, seed=1)
    net(torch.rand(1, 5, 3, 8, 8))
    stats_before = net.offset_stats()
    out = export_onnx(net, tmp_path / "full.onnx", dynamic=True, height=16, width=16)
    # Export must leave the eager module usable (DCNv2Pack keeps a tensor attribute from forward).
    assert net.offset_stats() == stats_before and not net.training

    # Run through onnxruntime directly, independent of OnnxUpscaler.
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for lr in _inputs(5, seed=4):
        got = session.run(["sr"], {"lr": lr})[0]
        assert np.abs(got - _eager(net, lr)).max() < TOL
    assert json.loads((tmp_path / "full.onnx.json").read_text())["num_frames"] == 5


def test_torch_export_round_trip(tmp_path):
    net = _net(FULL_TINY, seed=2)
    out = export_torch(net, tmp_path / "full.pt2", dynamic=True, height=16, width=16)
    side = json.loads((tmp_path / "full.pt2.json").read_text())
    assert side["format"] == "torch_export" and side["dynamic"] is True and side["opset"] is None
    loaded = torch.export.load(str(out)).module()
    for lr in _inputs(5, seed=5):
        with torch.inference_mode():
            got = loaded(torch.from_numpy(lr)).numpy()
        assert np.abs(got - _eager(net, lr)).max() < TOL


def test_static_onnx_refuses_other_sizes(tmp_path):
    cfg = dict(FULL_TINY, num_frames=3, num_align_stages=1, num_feat=8, deformable_groups=2, gfm_slice_channels=2)
    net = _net(cfg)
    out = export_onnx(net, tmp_path / "s.onnx", height=8, width=12)
    upscaler = OnnxUpscaler(out)
    lr = np.random.default_rng(0).random((1, 3, 3, 8, 12), dtype=np.float32)
    assert np.abs(upscaler(lr) - _eager(net, lr)).max() < TOL
    with pytest.raises(ValueError, match="--dynamic"):
        upscaler(np.zeros((1, 3, 3, 8, 13), np.float32))


def test_cli_frames_mismatch(small_ckpt, tmp_path, capsys):
    _, ckpt = small_ckpt
    out = tmp_path / "m.onnx"
    assert main(["--ckpt", str(ckpt), "--format", "onnx", "--out", str(out), "--frames", "5"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "lgfn-export: error: checkpoint was trained with 7 frames, --frames asked 5"
    assert not out.exists()


def test_cli_bad_format_missing_ckpt_and_missing_onnx(small_ckpt, tmp_path, capsys, monkeypatch):
    _, ckpt = small_ckpt
    assert main(["--ckpt", str(ckpt), "--format", "tflite", "--out", str(tmp_path / "m")]) == 1
    assert "--format must be one of onnx, torch_export, got 'tflite'" in capsys.readouterr().err
    assert main(["--ckpt", str(tmp_path / "nope.pt"), "--format", "torch_export",
                 "--out", str(tmp_path / "m.pt2")]) == 1
    assert "nope.pt" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError
    assert main(["--ckpt", str(ckpt), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert "'onnxruntime'" in err and "lgfn[export]" in err and len(err.strip().splitlines()) == 1


def test_export_module_imports_without_torch():
    code = "import sys, lgfn.inference.export; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
