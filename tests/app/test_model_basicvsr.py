"""model=basicvsr: BasicVSR with its released weights (model.weights) under LitLGFN, eval.py without a checkpoint,
and BasicVSR weights files / Lightning checkpoints rebuilt by the one reader (lgfn-upscale --ckpt, lgfn-export)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_moving_clip
from entry import compose_cfg, run_script

import eval as eval_entry
from lgfn import LitLGFN
from lgfn.app import config
from lgfn.checkpoints import basicvsr_weights as bw
from lgfn.checkpoints.reader import load_network
from lgfn.checkpoints.weights_file import NET_CLASSES, save_weights
from lgfn.common.errors import ConfigError
from lgfn.models import BasicVSR

TINY = dict(num_feat=8, num_block=1)


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("basicvsr_folder")
    write_moving_clip(root / "astro")
    return root


def _eval_overrides(root: Path, *extra: str) -> list[str]:
    return ["model=basicvsr", "data=folder", f"data.root={root}", "data.num_frames=3", "data.num_workers=0",
            "trainer=cpu", "trainer.enable_progress_bar=false", *extra]


def test_config_composes_with_the_data_degradation(tmp_path):
    cfg = compose_cfg("eval", ["model=basicvsr", "data.num_frames=5"], tmp_path)
    config.validate_config(cfg)
    assert cfg.model.weights == "vimeo_bi" and cfg.model.net.num_frames == 5
    assert cfg.model.net._target_ == "lgfn.models.BasicVSR"
    cfg = compose_cfg("eval", ["model=basicvsr", "data.degradation=bd"], tmp_path)
    assert cfg.model.weights == "vimeo_bd"
    cfg = compose_cfg("eval", ["model=basicvsr", "model.weights=reds"], tmp_path)
    assert cfg.model.weights == "reds"


def test_weights_load_strictly_into_the_net(weights_installed):
    lit = LitLGFN(BasicVSR(num_frames=3), weights="vimeo_bi")
    ref = bw.load_basicvsr_state("vimeo_bi")
    assert all(torch.equal(v, ref[k]) for k, v in lit.net.state_dict().items())


@pytest.mark.parametrize("kwargs, match", [
    (dict(net=BasicVSR(**TINY, num_frames=3), weights="vimeo_bi"), r"model\.weights=vimeo_bi.*(missing|unexpected)"),
    (dict(net=BasicVSR(**TINY, num_frames=3), weights="vimeo"), r"model\.weights='vimeo'.*vimeo_bi, vimeo_bd, reds"),
    (dict(net=BasicVSR(**TINY, num_frames=3), weights="/nonexistent/w.pth"), r"model\.weights=.*no such file"),
])
def test_bad_weights_are_one_line_errors(weights_installed, kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        LitLGFN(**kwargs)
    assert "\n" not in str(err.value)


def test_weights_need_a_basicvsr_net():
    from lgfn.models import Bicubic

    with pytest.raises(ValueError, match=r"model\.weights=vimeo_bi.*lgfn\.models\.BasicVSR") as err:
        LitLGFN(Bicubic(num_frames=3), weights="vimeo_bi")
    assert "\n" not in str(err.value)


def test_eval_without_checkpoint_needs_weights(folder_root, tmp_path):
    cfg = compose_cfg("eval", _eval_overrides(folder_root, "model.weights=null", *[
        f"model.net.{k}={v}" for k, v in TINY.items()]), tmp_path)
    with pytest.raises(ConfigError, match="ckpt_path=PATH"):
        eval_entry.evaluate(cfg)


def test_eval_basicvsr_in_process(weights_installed, folder_root, tmp_path):
    cfg = compose_cfg("eval", _eval_overrides(folder_root), tmp_path)
    res = eval_entry.evaluate(cfg)["folder"]
    # 4 frames of 48 x 64 HR (12 x 16 LR) moving (2, 1) px per frame: BasicVSR beats bicubic, and both the
    # temporal gain and tOF are measured for it as for LGFN.
    assert res["clips"]["astro"]["frames"] == 4
    assert res["average"]["psnr"] > res["bicubic"]["average"]["psnr"] + 0.5
    assert np.isfinite(res["average"]["temporal_gain"]) and np.isfinite(res["average"]["tof"])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["average"]["psnr"] == pytest.approx(res["average"]["psnr"])


@pytest.mark.slow
def test_eval_basicvsr_subprocess(weights_installed, folder_root, tmp_path):
    out = tmp_path / "run"
    proc = run_script("eval.py", [*_eval_overrides(folder_root), f"hydra.run.dir={out}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["average"]["psnr"] > metrics["bicubic"]["average"]["psnr"]
    assert "temporal_gain" in metrics["average"] and "tof" in metrics["average"]
    assert "BasicVSR" in proc.stdout and (out / "report.html").is_file()


def test_basicvsr_files_rebuild(tmp_path):
    assert NET_CLASSES["BasicVSR"] is BasicVSR
    torch.manual_seed(0)
    lit = LitLGFN(BasicVSR(**TINY, num_frames=3))
    # A weights-only file (lgfn-export's output) and a Lightning checkpoint both name the class.
    save_weights(lit.net, tmp_path / "w.pt")
    ckpt = {"state_dict": lit.state_dict(), "pytorch-lightning_version": "2.4.0"}
    lit.on_save_checkpoint(ckpt)
    torch.save(ckpt, tmp_path / "last.ckpt")
    lr = torch.rand(1, 3, 3, 8, 8)
    with torch.no_grad():
        want = lit.net.eval()(lr)
        for name in ("w.pt", "last.ckpt"):
            net, meta = load_network(tmp_path / name)
            assert type(net) is BasicVSR and meta["num_frames"] == 3
            assert torch.equal(net(lr), want)


def test_lgfn_export_of_a_basicvsr_weights_file(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from lgfn.inference.export import main as export_main

    torch.manual_seed(0)
    save_weights(BasicVSR(**TINY, num_frames=3).eval(), tmp_path / "bv.pt")
    out = tmp_path / "bv.onnx"
    assert export_main(["--ckpt", str(tmp_path / "bv.pt"), "--format", "onnx", "--out", str(out),
                        "--height", "16", "--width", "16"]) == 0
    assert out.is_file() and "max |diff|" in capsys.readouterr().out
