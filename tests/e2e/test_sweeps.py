"""Scale: multirun sweeps (joblib, submitit_local), a failing job in a sweep, and DDP on 2 CPU processes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from entry import run_script, tiny

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


def _sweep(data_dir: Path, sweep_dir: Path, launcher: str, experiments: str, *extra: str):
    return run_script("train.py", ["-m", f"hydra/launcher={launcher}", f"experiment={experiments}",
                                   *tiny(data_dir, "trainer.fast_dev_run=true"), f"hydra.sweep.dir={sweep_dir}",
                                   *extra], timeout=900)


def _summary(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "summary.csv") as f:
        return list(csv.DictReader(f))


def test_joblib_multirun_two_jobs(data_dir, tmp_path):
    proc = _sweep(data_dir, tmp_path, "joblib", "ablation_lfm,ablation_gfm")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _summary(tmp_path)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert {"experiment=ablation_lfm", "experiment=ablation_gfm"} <= {
        o for r in rows for o in r["overrides"].split()}
    # Each job in its own directory, named after its overrides (not its number).
    assert sorted(r["job"].rsplit("-", 1)[0] for r in rows) == ["ablation_gfm", "ablation_lfm"]
    for r in rows:
        assert (tmp_path / r["job"] / "metrics.json").is_file()
    assert all(float(r["psnr"]) > 5 for r in rows)


def test_submitit_local_multirun_two_jobs(data_dir, tmp_path):
    proc = _sweep(data_dir, tmp_path, "submitit_local", "full,ablation_no_dmdcu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _summary(tmp_path)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert any((tmp_path / ".submitit").iterdir())


def test_failing_job_does_not_stop_the_sweep(data_dir, tmp_path):
    # Job 1 asks for an impossible model (no fusion branch): it fails, job 0 finishes, the summary says so.
    proc = _sweep(data_dir, tmp_path, "joblib", "ablation_lfm", "model.net.use_lfm=true,false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {next(o for o in r["overrides"].split() if o.startswith("model.net.use_lfm=")).lower(): r
            for r in _summary(tmp_path)}
    assert rows["model.net.use_lfm=true"]["status"] == "ok" and float(rows["model.net.use_lfm=true"]["psnr"]) > 5
    failed = rows["model.net.use_lfm=false"]
    assert failed["status"] == "failed" and "cannot both be false" in failed["error"]
    assert "1 of 2 job(s) failed" in proc.stdout


def test_ddp_sim_matches_single_process(data_dir, tmp_path):
    # Same weights (test of a fresh seeded model, no fit), one process vs two: identical per-clip metrics,
    # every test frame counted once although the distributed sampler pads the last batch.
    extra = ["train=false", "data.val_max_clips=null", "data.skip_edge_frames=false"]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    p1 = run_script("train.py", [*tiny(data_dir, *extra), f"hydra.run.dir={single}"])
    assert p1.returncode == 0, p1.stderr[-3000:]
    p2 = run_script("train.py", [*tiny(data_dir, *extra, trainer="ddp_sim"), f"hydra.run.dir={ddp}"])
    assert p2.returncode == 0, p2.stderr[-3000:]
    m1 = json.loads((single / "metrics.json").read_text())
    m2 = json.loads((ddp / "metrics.json").read_text())
    assert m1["clips"].keys() == m2["clips"].keys()
    for clip, v in m1["clips"].items():
        assert m2["clips"][clip]["frames"] == v["frames"]
        assert m2["clips"][clip]["psnr"] == pytest.approx(v["psnr"], abs=1e-6)
        # tOF pairs consecutive frames, which the distributed sampler deals to different ranks
        assert m2["clips"][clip]["tof"] == pytest.approx(v["tof"], abs=1e-6)
    assert m2["average"]["psnr"] == pytest.approx(m1["average"]["psnr"], abs=1e-6)


def test_ddp_sim_fit_writes_one_checkpoint_dir(data_dir, tmp_path):
    proc = run_script("train.py", [*tiny(data_dir, trainer="ddp_sim"), f"hydra.run.dir={tmp_path}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert json.loads((tmp_path / "metrics.json").read_text())["average"]["psnr"] > 5


def test_optuna_search_runs_trials_and_reports_best(data_dir, tmp_path):
    proc = run_script("train.py", ["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2",
                                   "hydra.sweeper.sampler.n_startup_trials=2",
                                   *tiny(data_dir, "trainer.fast_dev_run=true"), f"hydra.sweep.dir={tmp_path}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "Best parameters: {'model.lr':" in out and "Best value:" in out
    lrs = [float(o.split("=")[1]) for r in _summary(tmp_path) for o in r["overrides"].split() if o.startswith("model.lr=")]
    assert len(lrs) == 2 and all(1e-4 <= lr <= 1e-3 for lr in lrs)


def test_default_sweep_dir_resolves(data_dir, tmp_path):
    # No hydra.sweep.dir override: the default must resolve when the sweeper starts (before any job runs).
    proc = run_script("train.py", ["-m", "experiment=full", *tiny(data_dir, "trainer.fast_dev_run=true")], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweeps = list((tmp_path / "logs" / "train" / "multirun").iterdir())
    assert len(sweeps) == 1 and (sweeps[0] / "summary.csv").is_file()
