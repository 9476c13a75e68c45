"""LitLGFN pieces that the end-to-end runs do not pin down: losses, schedules, EMA, the per-clip summary."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from lgfn.models import LGFN
from lgfn.training.lit_module import LitLGFN, charbonnier_loss

TINY = dict(num_frames=3, num_feat=8, num_extract_blocks=1, num_align_stages=1, deformable_groups=2,
            num_lfm=1, num_gfm=1, gfm_slice_channels=2, num_rcab=1)


def test_charbonnier_matches_its_formula():
    a, b = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    expected = torch.sqrt((a - b) ** 2 + 1e-6).mean()
    assert charbonnier_loss(a, b).item() == pytest.approx(expected.item(), rel=1e-6)
    assert charbonnier_loss(a, a).item() == pytest.approx(1e-3, rel=1e-6)


@pytest.mark.parametrize("key,value", [("loss", "l2"), ("scheduler", "step"), ("nan_policy", "ignore")])
def test_bad_choices_name_the_key(key, value):
    with pytest.raises(ValueError, match=rf"model\.{key}='{value}': expected one of"):
        LitLGFN(LGFN(**TINY), **{key: value})


def _with_trainer(module: LitLGFN, **trainer) -> LitLGFN:
    defaults = dict(estimated_stepping_batches=100, max_epochs=10)
    object.__setattr__(module, "_trainer", SimpleNamespace(**{**defaults, **trainer}))
    return module


def test_multistep_schedule_and_offset_lr_group():
    module = _with_trainer(LitLGFN(LGFN(**TINY), lr=1e-3, offset_lr_mult=0.1, milestones=[2, 4], gamma=0.5))
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3, 1e-4])
    offset_params = {id(p) for n, p in module.net.named_parameters() if "offset" in n}
    assert offset_params and {id(p) for p in opt.param_groups[1]["params"]} == offset_params
    for _ in range(4):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.25)


def test_cosine_schedule_spans_the_run():
    module = _with_trainer(LitLGFN(LGFN(**TINY), lr=1e-3, scheduler="cosine", scheduler_interval="step"),
                           estimated_stepping_batches=10)
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    for _ in range(10):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5)  # eta_min = lr / 100 at the end


def test_ema_follows_the_weights_and_is_what_evaluation_uses():
    torch.manual_seed(0)
    module = LitLGFN(LGFN(**TINY), ema_decay=0.5)
    assert module.eval_net is module.ema.module
    before = [p.detach().clone() for p in module.ema.module.parameters()]
    with torch.no_grad():
        for p in module.net.parameters():
            p.add_(1.0)
    optimizer = SimpleNamespace(step=lambda closure=None: None)
    module.optimizer_step(0, 0, optimizer)  # first optimiser step: the EMA copies the weights
    module.optimizer_step(0, 1, optimizer)  # then halfway to them
    for b, e, p in zip(before, module.ema.module.parameters(), module.net.parameters(), strict=True):
        assert torch.allclose(e, p)  # copies, then averages two equal values
        assert not torch.equal(e, b)
    assert any(k.startswith("ema.module.") for k in module.state_dict())


def test_eval_with_ema_scores_the_loaded_weights(tmp_path):
    from lgfn.app.checkpoint_args import load_net_weights
    from lgfn.checkpoints.weights_file import save_weights

    torch.manual_seed(0)
    trained = LGFN(**TINY)
    save_weights(trained, tmp_path / "w.pt")
    module = LitLGFN(LGFN(**TINY), ema_decay=0.999)  # eval.py with model.ema_decay set
    load_net_weights(module, tmp_path / "w.pt")
    lr = torch.rand(1, 3, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(module.eval_net.eval()(lr), trained.eval()(lr))


def test_summary_counts_each_sample_once_and_averages_per_clip():
    module = LitLGFN(LGFN(**TINY))
    dm = SimpleNamespace(average="clip", test_name="toy", test_groups={"slow": ["a"]})
    object.__setattr__(module, "_trainer", SimpleNamespace(datamodule=dm))
    # index, clip, frame, psnr, ssim, psnr_bicubic, ssim_bicubic, temporal_gain; index 2 repeated as a
    # padded sampler would
    module._records["test"] = [(0, "a", 0, 30.0, 0.9, 28.0, 0.8, 0.5), (1, "a", 1, 32.0, 0.8, 28.0, 0.8, 0.25),
                               (2, "b", 0, 20.0, 0.5, 19.0, 0.4, -0.1), (2, "b", 0, 20.0, 0.5, 19.0, 0.4, -0.1)]
    res = module._summarise("test")
    assert res["clips"]["a"] == {"psnr": 31.0, "ssim": pytest.approx(0.85), "frames": 2,
                                 "temporal_gain": pytest.approx(0.375)}
    assert res["average"]["temporal_gain"] == pytest.approx((0.375 - 0.1) / 2)
    assert res["groups"]["slow"]["temporal_gain"] == pytest.approx(0.375)
    assert res["clips"]["b"]["frames"] == 1
    assert res["average"]["psnr"] == pytest.approx((31.0 + 20.0) / 2)
    assert res["bicubic"]["average"]["psnr"] == pytest.approx((28.0 + 19.0) / 2)
    assert res["groups"]["slow"]["psnr"] == pytest.approx(31.0)
    dm.average = "frame"
    assert module._summarise("test")["average"]["psnr"] == pytest.approx((30 + 32 + 20) / 3)
    assert not math.isnan(res["average"]["ssim"])
