"""The training and evaluation entry points, run for real with tiny overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from entry import CONF, ROOT, compose_cfg, run_script, tiny

import eval as eval_entry
import train as train_entry
from lgfn.app import config
from lgfn.common.errors import ConfigError

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """One built-in data cache for the whole module (generated once, seconds)."""
    return tmp_path_factory.mktemp("data")


def _train(cfg_overrides: list[str], out: Path):
    cfg = compose_cfg("train", cfg_overrides, out)
    return cfg, train_entry.train(cfg)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment, tmp_path):
    cfg = compose_cfg("train", [f"experiment={experiment}"], tmp_path)
    config.validate_config(cfg)
    assert cfg.experiment_name == experiment
    assert cfg.model.net.num_frames == cfg.data.num_frames


@pytest.mark.parametrize(
    "experiment,missing",
    [("full", None), ("ablation_no_dmdcu", "dmdcu"), ("ablation_lfm", "global_fusion"), ("ablation_gfm", "local_fusion")],
)
def test_ablation_sets_only_its_toggle(experiment, missing, tmp_path):
    base = compose_cfg("train", [], tmp_path)
    cfg = compose_cfg("train", [f"experiment={experiment}"], tmp_path)
    diff = {k for k in ("use_dmdcu", "use_lfm", "use_gfm") if cfg.model.net[k] != base.model.net[k]}
    assert len(diff) == (0 if missing is None else 1)
    # Composes with another model choice and keeps the rest of that model.
    big = compose_cfg("train", [f"experiment={experiment}", "model=lgfn"], tmp_path)
    assert big.model.net.num_feat == 64


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["quickstart", "ablation_no_dmdcu", "ablation_lfm", "ablation_gfm", "lgfn"])
def test_fit_and_test_each_experiment(experiment, data_dir, tmp_path):
    extra = ["data=builtin"] if experiment == "lgfn" else []
    cfg, metric = _train(tiny(data_dir, f"experiment={experiment}", *extra), tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["dataset"] == "builtin"
    assert metrics["clips"] and all(v["frames"] > 0 for v in metrics["clips"].values())
    assert 5 < metrics["average"]["psnr"] < 60 and 0 < metrics["average"]["ssim"] <= 1
    assert metrics["bicubic"]["average"]["psnr"] > 15
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "config_resolved.yaml").is_file()
    assert metric is not None and metric == pytest.approx(metric)  # a real number, not NaN


@pytest.mark.slow
def test_resume_continues_step_count(data_dir, tmp_path):
    first = tmp_path / "first"
    # periodic_last and the best-PSNR checkpoint both write last.ckpt: one file, never last-v1.ckpt.
    _train(tiny(data_dir, "test=false", "callbacks.periodic_last.every_n_train_steps=1", steps=2), first)
    last = first / "checkpoints" / "last.ckpt"
    assert sorted(p.name for p in last.parent.glob("last*")) == ["last.ckpt"]
    state = torch.load(last, weights_only=True)
    assert state["global_step"] == 2
    second = tmp_path / "second"
    _train(tiny(data_dir, "test=false", f"ckpt_path={last}", steps=4), second)
    resumed = torch.load(second / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 4
    # Optimizer and scheduler state came along: Adam's step counter went on from 2.
    adam_steps = [s["step"] for s in resumed["optimizer_states"][0]["state"].values()]
    assert all(int(s) == 4 for s in adam_steps)
    assert resumed["lr_schedulers"][0]["last_epoch"] == 4


@pytest.mark.slow
def test_eval_bicubic_subprocess_writes_metrics(data_dir, tmp_path):
    out = tmp_path / "run"
    proc = run_script("eval.py", ["model=bicubic", f"paths.data_dir={data_dir}", "data.num_frames=3", "data.builtin_small=true", "data.num_workers=0",
                                  "trainer=cpu", f"hydra.run.dir={out}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    # The model *is* bicubic: both columns agree exactly.
    assert metrics["average"]["psnr"] == pytest.approx(metrics["bicubic"]["average"]["psnr"])
    assert "Average" in proc.stdout and "Bicubic" in proc.stdout


@pytest.mark.slow
def test_eval_checkpoint_matches_training_test(data_dir, tmp_path):
    run = tmp_path / "train"
    _train(tiny(data_dir, "test_ckpt=last", steps=2), run)
    trained = json.loads((run / "metrics.json").read_text())
    cfg = compose_cfg("eval", [o for o in tiny(data_dir) if not o.startswith(("trainer.max", "trainer.val",
                                                                              "trainer.check", "~callbacks"))]
                      + [f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"], tmp_path / "eval")
    results = eval_entry.evaluate(cfg)
    assert results["builtin"]["average"]["psnr"] == pytest.approx(trained["average"]["psnr"], abs=1e-6)
    assert results["builtin"]["average"]["tof"] == pytest.approx(trained["average"]["tof"], abs=1e-6)
    assert (run / "report.html").is_file() and (tmp_path / "eval" / "report.html").is_file()


@pytest.mark.slow
def test_wandb_offline_run_written(data_dir, tmp_path):
    _train(tiny(data_dir, "logger=wandb", "test=false", steps=1), tmp_path)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert runs and any(runs[0].rglob("*.wandb"))


def test_config_typo_is_a_clear_error(tmp_path):
    cfg = compose_cfg("train", ["+model.net.num_fet=3"], tmp_path)
    with pytest.raises(ConfigError, match=r"model\.net\.num_fet.*did you mean model\.net\.num_feat"):
        config.validate_config(cfg)


def test_config_wrong_type_is_a_clear_error(tmp_path):
    cfg = compose_cfg("train", ["model.net.num_feat=wide"], tmp_path)
    with pytest.raises(ConfigError, match=r"model\.net\.num_feat='wide': expected int"):
        config.validate_config(cfg)


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["model.net.use_lfm=false", "model.net.use_gfm=false"], "cannot both be false"),
        (["data.patch_size=30"], r"data\.patch_size=30 must be divisible"),
        (["model.net.num_frames=5"], "differs from data.num_frames"),
    ],
)
def test_impossible_combinations_fail_before_work(overrides, match, tmp_path):
    cfg = compose_cfg("train", overrides, tmp_path)
    with pytest.raises(ConfigError, match=match):
        config.validate_config(cfg)


@pytest.mark.slow
def test_bad_config_exits_with_one_line(tmp_path):
    proc = run_script("train.py", ["model.net.num_feat=wide", f"hydra.run.dir={tmp_path}"])
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert lines[-1].startswith("error: config key model.net.num_feat"), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_entry_points_are_thin():
    for script in ("train.py", "eval.py"):
        assert len((ROOT / script).read_text().splitlines()) < 60


def test_unknown_trainer_and_callback_keys_are_clear_errors(tmp_path):
    cfg = compose_cfg("train", ["+trainer.max_step=3"], tmp_path)
    with pytest.raises(ConfigError, match=r"trainer\.max_step.*did you mean trainer\.max_steps"):
        config.validate_config(cfg)
    cfg = compose_cfg("train", ["+callbacks.periodic_last.every_n_step=3"], tmp_path)
    with pytest.raises(ConfigError, match=r"callbacks\.periodic_last\.every_n_step"):
        config.validate_config(cfg)
