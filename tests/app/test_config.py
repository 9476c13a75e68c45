"""Config mistakes through the real entry point (train.py's Hydra main): one line, exit 1, no run directory."""

from __future__ import annotations

import runpy
import sys

import pytest
from entry import ROOT, compose_cfg, run_script
from hydra.core.hydra_config import HydraConfig

from lgfn.app import task


def run_train_py(*overrides: str) -> None:
    """`python train.py OVERRIDES`, in this process: the script runs as __main__, as Hydra expects."""
    sys.argv = [str(ROOT / "train.py"), *overrides]
    runpy.run_path(str(ROOT / "train.py"), run_name="__main__")


def run_main(monkeypatch, capsys, *overrides: str) -> tuple[int, list[str]]:
    """train.py run with OVERRIDES; (exit code, stderr lines)."""
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # restored afterwards
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as e:
        run_train_py(*overrides)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    return e.value.code, err


@pytest.mark.parametrize(
    "key,value,line",
    [
        ("model.net.num_fet", "32", "error: unknown config key model.net.num_fet: lgfn.models.LGFN does not take "
                                    "'num_fet' (did you mean model.net.num_feat?)"),
        ("trainer.max_step", "5", "error: unknown config key trainer.max_step: lightning.pytorch.Trainer does not take "
                                  "'max_step' (did you mean trainer.max_steps?)"),
    ],
)
def test_typo_ends_in_the_same_line_for_every_spelling(monkeypatch, capsys, tmp_path, key, value, line):
    for spelling in (f"{key}={value}", f"+{key}={value}", f"++{key}={value}"):
        run_dir = tmp_path / spelling.lstrip("+").replace("=", "_")
        code, err = run_main(monkeypatch, capsys, spelling, "logger=csv", f"hydra.run.dir={run_dir}")
        assert code == 1, err
        assert err == [line], spelling  # the one line, and nothing else: no "To append ... use +" advice
        assert not run_dir.exists(), spelling  # the failed check left no run directory


@pytest.mark.parametrize(
    "override,line",
    [
        ("modle.net.num_feat=3", "error: unknown config key modle.net.num_feat (did you mean model.net.num_feat?)"),
        ("seeed=2", "error: unknown config key seeed (did you mean seed?)"),
        ("model=lgfn_smal", "error: unknown config choice model=lgfn_smal (did you mean model=lgfn_small? "
                            "choices: basicvsr, bicubic, lgfn, lgfn_small)"),
        ("~model.net.num_fet", "error: unknown config key model.net.num_fet: there is nothing to delete "
                               "(~model.net.num_fet)"),
    ],
)
def test_other_composition_mistakes_are_one_line(monkeypatch, capsys, tmp_path, override, line):
    code, err = run_main(monkeypatch, capsys, override, "logger=csv", f"hydra.run.dir={tmp_path / 'run'}")
    assert (code, err) == (1, [line])
    assert not (tmp_path / "run").exists()


def test_a_key_a_target_may_take_as_extra_argument_keeps_the_plus_advice(monkeypatch, capsys, tmp_path):
    # WandbLogger passes unknown keyword arguments on to wandb.init: adding one with + is legitimate.
    code, err = run_main(monkeypatch, capsys, "logger.wandb.entity=me", f"hydra.run.dir={tmp_path / 'run'}")
    assert code == 1 and len(err) == 1
    assert err[0].startswith("error: unknown config key logger.wandb.entity: not in the config;")
    assert err[0].endswith("add it with +logger.wandb.entity=me")


def test_hydra_full_error_keeps_hydras_report(monkeypatch, tmp_path):
    from hydra.errors import ConfigCompositionException

    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigCompositionException, match="Could not override 'model.net.num_fet'"):
        run_train_py("model.net.num_fet=32", f"hydra.run.dir={tmp_path / 'run'}")


def test_failed_config_check_leaves_no_run_directory(monkeypatch, capsys, tmp_path):
    run_dir = tmp_path / "run"
    code, err = run_main(monkeypatch, capsys, "model.net.num_feat=wide", "logger=csv", f"hydra.run.dir={run_dir}")
    assert code == 1 and err[-1] == "error: config key model.net.num_feat='wide': expected int, got str"
    assert not run_dir.exists()


def test_run_directory_is_removed_only_when_it_holds_hydras_bookkeeping_alone(tmp_path):
    def hydra_dir(name: str, *extra: str):
        out = tmp_path / name
        compose_cfg("train", [], out)  # HydraConfig now names out as the run directory
        (out / ".hydra").mkdir(parents=True)
        for f in ("config.yaml", "hydra.yaml", "overrides.yaml"):
            (out / ".hydra" / f).write_text("{}\n")
        (out / f"{HydraConfig.get().job.name}.log").write_text("")  # train.log when train.py runs
        for f in extra:
            (out / f).parent.mkdir(parents=True, exist_ok=True)
            (out / f).write_text("x")
        return out

    out = hydra_dir("bare")
    assert task.remove_unused_run_dir(out) and not out.exists()
    # What the set-up writes before the first step (issue 21): a run that failed there leaves nothing either.
    out = hydra_dir("setup", "config_resolved.yaml", "wandb/run_id", "csv/version_0/hparams.yaml")
    assert task.remove_unused_run_dir(out) and not out.exists()
    for extra in ("checkpoints/last.ckpt", ".hydra/notes.txt", "notes.txt", "metrics.json"):
        out = hydra_dir(extra.replace("/", "_"), extra)
        assert not task.remove_unused_run_dir(out) and (out / extra).is_file()
    # A directory Hydra did not set up (no .hydra): never touched, even if empty.
    plain = tmp_path / "plain"
    plain.mkdir()
    compose_cfg("train", [], plain)
    assert not task.remove_unused_run_dir(plain) and plain.is_dir()


@pytest.mark.slow
def test_typo_in_a_subprocess_is_one_line(tmp_path):
    proc = run_script("train.py", ["model.net.num_fet=32", "logger=csv", f"hydra.run.dir={tmp_path / 'run'}"])
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert lines == ["error: unknown config key model.net.num_fet: lgfn.models.LGFN does not take 'num_fet' "
                     "(did you mean model.net.num_feat?)"], proc.stderr[-2000:]
    assert not (tmp_path / "run").exists()
