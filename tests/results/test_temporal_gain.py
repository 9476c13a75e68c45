"""What the frames buy: the temporal-gain metric, the single-frame ablation, the alignment loss."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from entry import compose_cfg, tiny
from lightning import Trainer
from nets import strong_tiny_net
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

import train as train_entry
from lgfn.data.builtin import ensure_builtin
from lgfn.data.datasets import VSRTestDataset, VSRTrainDataset
from lgfn.data.layouts import discover_folder
from lgfn.metrics import psnr_y
from lgfn.models import LGFN
from lgfn.protocol.windows import centre_only_indices
from lgfn.training.lit_module import LitLGFN

TINY = dict(num_frames=3, num_feat=8, num_extract_blocks=1, num_align_stages=1, deformable_groups=2,
            num_lfm=1, num_gfm=1, gfm_slice_channels=2, num_rcab=1)


@pytest.fixture(scope="module")
def small_builtin(tmp_path_factory) -> dict[str, Path]:
    return ensure_builtin(tmp_path_factory.mktemp("builtin"), small=True)


class CentreOnly(nn.Module):
    """A x4 network that looks at the centre frame only (a conv and a pixel shuffle)."""

    def __init__(self, num_frames: int = 3) -> None:
        super().__init__()
        self.num_frames = num_frames
        self.body = nn.Sequential(nn.Conv2d(3, 48, 3, padding=1), nn.PixelShuffle(4))

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.body(lr[:, lr.shape[1] // 2]))


def _test(net: nn.Module, dataset: VSRTestDataset, **kwargs) -> dict:
    module = LitLGFN(net, log_images=0, **kwargs)
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(module, dataloaders=DataLoader(dataset, batch_size=1), verbose=False)
    return module.test_results["test"]


def _dataset(root: Path, **kwargs) -> VSRTestDataset:
    return VSRTestDataset(discover_folder(root).clips, num_frames=3, **kwargs)


def test_temporal_gain_equals_a_hand_computation(small_builtin):
    net = strong_tiny_net()
    dataset = _dataset(small_builtin["test"])
    result = _test(net, dataset)
    # By hand: per frame PSNR-Y of the real window minus that of the centre repeated, mean per clip.
    per_clip: dict[str, list[float]] = {}
    with torch.no_grad():
        for i in range(len(dataset)):
            s = dataset[i]
            lr, hr = s["lr"][None], s["hr"][None]
            repeated = lr[:, 1:2].repeat(1, 3, 1, 1, 1)
            real = psnr_y(net(lr).clamp(0, 1), hr).item()
            alone = psnr_y(net(repeated).clamp(0, 1), hr).item()
            per_clip.setdefault(s["clip"], []).append(real - alone)
    assert set(result["clips"]) == set(per_clip)
    for clip, gains in per_clip.items():
        assert result["clips"][clip]["temporal_gain"] == pytest.approx(np.mean(gains), abs=1e-5)
    assert result["average"]["temporal_gain"] == pytest.approx(np.mean([np.mean(g) for g in per_clip.values()]),
                                                               abs=1e-5)
    # the neighbours do change this network's output, so the check above is not about zeros
    assert max(abs(np.mean(g)) for g in per_clip.values()) > 1e-3


def test_a_network_that_ignores_its_neighbours_gains_exactly_zero(small_builtin):
    torch.manual_seed(0)
    result = _test(CentreOnly(), _dataset(small_builtin["test"]))
    assert all(v["temporal_gain"] == 0.0 for v in result["clips"].values())
    assert result["average"]["temporal_gain"] == 0.0


def test_temporal_gain_can_be_switched_off(small_builtin):
    result = _test(strong_tiny_net(), _dataset(small_builtin["test"]), temporal_gain=False)
    assert "temporal_gain" not in result["average"]
    assert all("temporal_gain" not in v for v in result["clips"].values())


def test_centre_only_windows_repeat_the_centre(small_builtin):
    clips = discover_folder(small_builtin["train"]).clips
    assert centre_only_indices(4, 5) == [4] * 5
    test = VSRTestDataset(clips, num_frames=3, centre_only=True)
    s = test[0]
    assert torch.equal(s["lr"][0], s["lr"][1]) and torch.equal(s["lr"][2], s["lr"][1])
    normal = VSRTestDataset(clips, num_frames=3)[0]
    assert torch.equal(normal["lr"][1], s["lr"][1]) and not torch.equal(normal["lr"][0], s["lr"][0])
    train = VSRTrainDataset(clips, num_frames=3, patch_size=32, centre_only=True)
    lr = train[(3, 11)]["lr"]
    assert torch.equal(lr[0], lr[1]) and torch.equal(lr[2], lr[1])


def test_align_loss_trains_the_offsets_through_its_head():
    torch.manual_seed(0)
    module = LitLGFN(LGFN(**TINY), align_loss_weight=0.5)
    lr = torch.rand(2, 3, 3, 12, 12)
    module.train()
    module.net(lr)
    loss = module._align_loss(lr)
    loss.backward()
    # The head rebuilds the centre from each aligned neighbour: its loss reaches the offset convs.
    offset = module.net.alignment.stages[0].dcn.conv_offset.weight
    assert offset.grad is not None and offset.grad.abs().sum() > 0
    assert module.align_head.weight.grad.abs().sum() > 0
    # By hand: L1 of the head on the aligned neighbours against the centre LR frame.
    with torch.no_grad():
        feat = module.net.extraction(lr)
        aligned = module.net.alignment(feat, 1)
        module._aligned = None
        want = sum((module.align_head(aligned[:, j]) - lr[:, 1]).abs().mean() for j in (0, 2)) / 2
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    # The head is not part of the network's weights.
    assert not any(k.startswith("align_head") for k in module.net.state_dict())
    with pytest.raises(ValueError, match="model.align_loss_weight"):
        LitLGFN(LGFN(**TINY), align_loss_weight=-1.0)


@pytest.mark.slow
def test_single_frame_ablation_runs_and_gains_nothing(tmp_path):
    data = tmp_path / "data"
    cfg = compose_cfg("train", tiny(data, "experiment=ablation_single_frame"), tmp_path / "run")
    assert cfg.data.centre_only is True and cfg.model.net.num_frames == cfg.data.num_frames == 3
    train_entry.train(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # every window it saw was the centre repeated, so the real window and the repeated one are the same
    assert metrics["average"]["temporal_gain"] == 0.0
    assert math.isfinite(metrics["average"]["psnr"])


@pytest.mark.slow
def test_logged_wandb_images_are_the_crops_times_255(tmp_path):
    data = tmp_path / "data"
    cfg = compose_cfg("train", tiny(data, "logger=wandb", "test=false", "model.log_images=1", steps=1),
                      tmp_path / "run")
    train_entry.train(cfg)
    pngs = list((tmp_path / "run" / "wandb").glob("offline-run-*/files/media/images/val/*.png"))
    assert pngs, list((tmp_path / "run").rglob("*.png"))
    img = np.asarray(Image.open(pngs[0]).convert("RGB"))
    assert img.max() > 100 and len(np.unique(img)) > 50  # a picture, not 0s and 1s


def test_validation_holds_out_training_clips_never_test_clips(tmp_path):
    from lgfn.data import VSRDataModule

    dm = VSRDataModule(name="builtin", root=str(tmp_path / "b"), builtin_small=True, patch_size=32, num_workers=0,
                       num_frames=3, val_holdout=2)
    dm.setup("fit")
    train = {c.name for c in dm.data_train.clips}
    val = {c.name for c in dm.data_val.clips}
    test = {c.name for c in dm.data_test.clips}
    assert len(val) == 2 and not val & train and not val & test
    assert train | val == {p.name for p in (tmp_path / "b" / "train").iterdir() if p.is_dir()}
    # the same clips every time
    again = VSRDataModule(name="builtin", root=str(tmp_path / "b"), builtin_small=True, patch_size=32, num_workers=0,
                          num_frames=3, val_holdout=2)
    again.setup("fit")
    assert {c.name for c in again.data_val.clips} == val
    with pytest.raises(ValueError, match="data.val_holdout=3 leaves no training clip of 3"):
        VSRDataModule(name="builtin", root=str(tmp_path / "b"), builtin_small=True, patch_size=32, num_workers=0,
                      num_frames=3, val_holdout=3).setup("fit")
