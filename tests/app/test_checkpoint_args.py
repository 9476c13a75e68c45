"""What train.py and eval.py do with a checkpoint path (lgfn.app.checkpoint_args): every file any entry point
accepts, every entry point accepts; a file that cannot serve gets one line naming the file, what it is and the
override that would work."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from entry import TINY_NET, compose_cfg, tiny
from hydra.utils import instantiate

import eval as eval_entry
import train as train_entry
from lgfn.app import checkpoint_args, task
from lgfn.checkpoints.weights_file import save_weights
from lgfn.models import LGFN

EVAL = ["data.num_workers=0", "data.builtin_small=true", "logger=csv", *TINY_NET]
NET = {k.split(".")[-1]: int(v) for k, v in (o.split("=") for o in TINY_NET)}


def lightning_ckpt(path: Path, **toggles) -> tuple[Path, LGFN]:
    """A whole LitLGFN-style Lightning checkpoint of a tiny LGFN (3 frames) with the given toggles."""
    torch.manual_seed(3)
    net = LGFN(num_frames=3, **NET, **toggles)
    torch.save({"pytorch-lightning_version": "2.5.0", "epoch": 0, "global_step": 2,
                "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "net_config": dict(net.config)},
               path)
    return path, net


def error_line(capsys) -> str:
    lines = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.strip()]
    return lines[-1]


def test_train_resume_from_an_ablation_checkpoint_with_the_default_model_is_one_line(tmp_path, capsys):
    ckpt, _ = lightning_ckpt(tmp_path / "gfm.ckpt", use_lfm=False)
    cfg = compose_cfg("train", tiny(tmp_path, f"ckpt_path={ckpt}"), tmp_path / "run")
    with pytest.raises(SystemExit) as e:
        task.run_task(train_entry.train, cfg)
    assert e.value.code == 1
    line = error_line(capsys)
    assert line.startswith(f"error: ckpt_path={ckpt} (a Lightning checkpoint of LGFN(") and "use_lfm=False" in line
    assert "does not fit model.net (" in line and line.endswith("use model.net.use_lfm=false")


def test_train_resume_from_a_weights_file_names_model_init_from(tmp_path, capsys):
    torch.manual_seed(0)
    save_weights(LGFN(num_frames=3, **NET), tmp_path / "w.pt")
    cfg = compose_cfg("train", tiny(tmp_path, f"ckpt_path={tmp_path / 'w.pt'}"), tmp_path / "run")
    with pytest.raises(SystemExit) as e:
        task.run_task(train_entry.train, cfg)
    assert e.value.code == 1
    line = error_line(capsys)
    assert line.startswith(f"error: ckpt_path={tmp_path / 'w.pt'} (an lgfn weights-only file of LGFN(")
    assert line.endswith(f"is not a Lightning checkpoint to resume (train.py ckpt_path= continues a run from its "
                         f"last.ckpt); to start training from these weights use model.init_from={tmp_path / 'w.pt'}")
    assert not (tmp_path / "run").exists()  # nothing left behind by a run that failed before its first step


def test_eval_adopts_the_sizes_an_ablation_checkpoint_was_saved_with(tmp_path, capsys):
    ckpt, net = lightning_ckpt(tmp_path / "gfm.ckpt", use_lfm=False)
    cfg = compose_cfg("eval", [*EVAL, f"paths.data_dir={tmp_path}", "data.num_frames=3", f"ckpt_path={ckpt}"],
                      tmp_path / "eval")
    assert cfg.model.net.use_lfm is True  # the default model
    nf = checkpoint_args.adopt_checkpoint_sizes(cfg)
    assert cfg.model.net.use_lfm is False and "use_lfm=False" in capsys.readouterr().err
    model = instantiate(cfg.model)
    assert checkpoint_args.load_net_weights(model, nf) == "lightning"
    for k, v in net.state_dict().items():
        assert torch.equal(model.net.state_dict()[k], v), k


def test_eval_refuses_a_checkpoint_for_another_frame_count_in_one_line(tmp_path, capsys):
    ckpt, _ = lightning_ckpt(tmp_path / "three.ckpt")
    cfg = compose_cfg("eval", [*EVAL, f"paths.data_dir={tmp_path}", "data.num_frames=5", f"ckpt_path={ckpt}"],
                      tmp_path / "eval")
    with pytest.raises(SystemExit) as e:
        task.run_task(eval_entry.evaluate, cfg)
    assert e.value.code == 1
    assert error_line(capsys) == (f"error: ckpt_path={ckpt} (a Lightning checkpoint of LGFN("
                                  + ", ".join(f"{k}={v}" for k, v in LGFN(num_frames=3, **NET).config.items())
                                  + ")) is an LGFN for 3 frames: data.num_frames=5 cannot use it "
                                  "(set data.num_frames=3)")
