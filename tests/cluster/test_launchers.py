"""DDP under every launcher and SLURM set-up (issue 21, items 1, 2, 3, 5, 6, 7).

Real here: gloo DDP over 2 CPU processes (``trainer=ddp_sim``) started by Lightning under the joblib and
submitit_local launchers, two faked srun tasks (two train.py processes with SLURM's variables), real signals, a
fake ``scontrol`` on PATH. Not here: a SLURM controller, NCCL, GPUs.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from entry import CONF, ROOT, tiny
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from lgfn.app import task
from lgfn.cluster import ddp as distributed
from lgfn.cluster import job_dir as jobs
from lgfn.cluster.slurm import srun_master_port
from lgfn.results import sweep_summary
from lgfn.training.callbacks import SaveOnSignal

TESTS = Path(__file__).resolve().parents[1]  # tests/: entry.py and faults.py, imported by the child processes
# What an sbatch script sees (no srun step), and one task of a 2-task srun step on one node.
ALLOC = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train", "SLURM_NTASKS": "1", "SLURM_NNODES": "1",
         "SLURM_NODEID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODELIST": "localhost"}
SRUN2 = {**ALLOC, "SLURM_STEP_ID": "0", "SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "2", "SLURM_NTASKS_PER_NODE": "2",
         "SLURM_STEP_TASKS_PER_NODE": "2", "SLURM_TASKS_PER_NODE": "2", "SLURM_STEP_NUM_NODES": "1",
         "MASTER_ADDR": "127.0.0.1"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "SUBMITIT_")) and k not in ("MASTER_PORT", "MASTER_ADDR", "LOCAL_RANK",
                                                                     "WORLD_SIZE", "RANK", "NODE_RANK")}
    return {**env, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]), **extra}


def _train(args: list[str], env: dict | None = None, timeout: int = 400, cwd: Path = ROOT):
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env or _env(),
                          capture_output=True, text=True, timeout=timeout)


def _summary(sweep: Path) -> list[dict]:
    with open(sweep / "summary.csv") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- (1) the script a child rank runs
def test_entry_script_survives_a_pickled_task_function(tmp_path):
    # joblib / submitit pickle the task function by value: its code then names no real file ("<dynamic-code>").
    def train(cfg):
        return cfg

    train.__code__ = train.__code__.replace(co_filename="<dynamic-code>")
    train.__module__ = "__main__"
    task.set_entry_script(str(ROOT / "train.py"))
    try:
        assert task.entry_script(train) == str(ROOT / "train.py")
    finally:
        task._ENTRY_SCRIPT.clear()
    assert task.entry_script(train) != "<dynamic-code>" and os.path.isfile(task.entry_script(train))
    # hydra_main resolves the real file when the entry script is imported, and the wrapper carries it along.
    import cloudpickle

    main = task.hydra_main("train", str(CONF))(lambda cfg: task.entry_script())
    wrapped = main.__wrapped__ if hasattr(main, "__wrapped__") else main
    assert callable(wrapped)
    assert cloudpickle.loads(cloudpickle.dumps(task.set_entry_script)) is task.set_entry_script  # by reference


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_ddp_sim_sweep_under_a_pickling_launcher(data_dir, tmp_path, launcher):
    # Before: rank 1 ran "python <dynamic-code>" and rank 0 waited in "Initializing distributed" for ever.
    start = time.monotonic()
    proc = _train(["-m", f"hydra/launcher={launcher}", "experiment=ablation_lfm,ablation_gfm",
                   *tiny(data_dir, "test=false", trainer="ddp_sim"), f"hydra.sweep.dir={tmp_path}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "<dynamic-code>" not in proc.stdout + proc.stderr
    rows = _summary(tmp_path)
    assert [r["status"] for r in rows] == ["ok", "ok"], rows
    for r in rows:
        assert torch.load(tmp_path / r["job"] / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    assert time.monotonic() - start < 300


# ----------------------------------------------------------------------------- (2) a rank dying before the group
@pytest.mark.slow
def test_a_rank_dying_before_the_process_group_stops_the_job(data_dir, tmp_path):
    # Job exit=none: rank 1 raises while building its callbacks; job exit=3: rank 1's process just ends (exit 3).
    # Either way rank 0 must not wait in init_process_group: the job fails with rank 1's reason, the next one runs.
    start = time.monotonic()
    proc = _train(["-m", "+callbacks.boom.exit_code=null,3",
                   *tiny(data_dir, "test=false", "+callbacks.boom._target_=faults.FailBeforeInit", trainer="ddp_sim"),
                   f"hydra.sweep.dir={tmp_path}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.monotonic() - start < 120
    rows = {next(o for o in r["overrides"].split() if o.startswith("+callbacks.boom.exit_code")): r
            for r in _summary(tmp_path)}
    raised, exited = rows["+callbacks.boom.exit_code=null"], rows["+callbacks.boom.exit_code=3"]
    assert raised["status"] == "failed" and raised["error"] == "rank 1: RuntimeError: injected failure before init"
    assert exited["status"] == "failed" and exited["error"].startswith("rank 1: exited with status 3 before")
    status = json.loads((tmp_path / raised["job"] / "status.json").read_text())
    assert status["error"] == raised["error"]


# ----------------------------------------------------------------------------- (3, 7) srun, faked
def test_srun_master_port_is_per_job_and_the_same_in_every_rank():
    rank0, rank1 = {**SRUN2, "SLURM_PROCID": "0"}, {**SRUN2, "SLURM_PROCID": "1", "SLURM_LOCALID": "1"}
    a = srun_master_port(rank0, "/s/job-a")
    assert a == srun_master_port(rank1, "/s/job-a")  # every rank of the job, without talking to the others
    assert a != srun_master_port(rank0, "/s/job-b")  # the next job of the sweep: a fresh port
    assert a != srun_master_port({**rank0, "SLURM_STEP_ID": "1"}, "/s/job-a")
    assert 20000 <= a < 30000 and 29500 <= srun_master_port(rank0, "/s/job-a", base=29500) < 39500


def test_srun_ranks_agree_on_the_run_directory(monkeypatch):
    for key in list(os.environ):
        if key.startswith("SLURM_"):
            monkeypatch.delenv(key)

    def run_dir(env: dict) -> str:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
            cfg = compose("train", return_hydra_config=True)
        return OmegaConf.select(cfg, "hydra.run.dir"), OmegaConf.select(cfg, "hydra.sweep.dir")

    rank0 = run_dir({**SRUN2, "SLURM_PROCID": "0"})
    time.sleep(1.1)  # ranks start at different moments
    rank1 = run_dir({**SRUN2, "SLURM_PROCID": "1", "SLURM_LOCALID": "1"})
    assert rank0 == rank1 and rank0[0].endswith("slurm-4242.0")
    assert run_dir({**SRUN2, "SLURM_STEP_ID": "1"})[0].endswith("slurm-4242.1")
    assert jobs.unique_suffix(SRUN2) == jobs.unique_suffix({**SRUN2, "SLURM_PROCID": "1"})
    assert jobs.unique_suffix(ALLOC) != jobs.unique_suffix(ALLOC)  # not an srun task: random


def test_only_global_rank_zero_writes_the_sweep_summary(tmp_path, monkeypatch, capsys):
    (tmp_path / "job-1").mkdir()
    jobs.write_status(tmp_path / "job-1", "ok")
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}, "logger": {}})
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "SUBMITIT_LOCAL_GLOBALID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in {**SRUN2, "SLURM_PROCID": "1"}.items():
        monkeypatch.setenv(key, value)
    sweep_summary.SweepSummary().on_multirun_end(config)
    assert not (tmp_path / "summary.csv").exists() and "Sweep summary" not in capsys.readouterr().out
    monkeypatch.setenv("SLURM_PROCID", "0")
    sweep_summary.SweepSummary().on_multirun_end(config)
    assert (tmp_path / "summary.csv").is_file()


def test_preemption_message_names_the_global_rank(monkeypatch, capsys):
    for key, value in {**SRUN2, "SLURM_PROCID": "3", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    SaveOnSignal()._note_preemption(signal.SIGUSR2, None)
    assert "rank 3: SIGUSR2" in capsys.readouterr().err


def _srun_tasks(args: list[str], cwd: Path, **extra: str) -> list[subprocess.Popen]:
    procs = []
    for rank in range(2):
        env = _env(**{**SRUN2, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank), **extra})
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


@pytest.mark.slow
def test_srun_sweep_goes_on_after_a_failed_job(data_dir, tmp_path):
    # Two faked srun tasks run the same sweep (as srun runs train.py -m in each task), no hydra.sweep.dir: job 1
    # fails on rank 1 mid-step, job 2 must not hang on the port job 1's aborted process group used.
    procs = _srun_tasks(["-m", "+callbacks.fail.rank=1,5",
                         *tiny(data_dir, "test=false", "+callbacks.fail._target_=faults.FailOnRank", steps=3,
                               trainer="ddp_sim")], cwd=tmp_path, MASTER_PORT="23456")
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=300)[0])
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    (sweep,) = (tmp_path / "logs" / "train" / "multirun").iterdir()  # one sweep directory for both ranks
    assert sweep.name == "slurm-4242.0"
    rows = {next(o for o in r["overrides"].split() if o.startswith("+callbacks.fail.rank")): r for r in _summary(sweep)}
    assert rows["+callbacks.fail.rank=1"]["status"] == "failed"
    assert rows["+callbacks.fail.rank=1"]["error"] == "rank 1: RuntimeError: injected failure"
    assert rows["+callbacks.fail.rank=5"]["status"] == "ok"
    assert "Sweep summary" in outs[0] and "Sweep summary" not in outs[1]  # global rank 0 alone writes it
    assert not list(sweep.glob(".summary.csv.*"))


# ----------------------------------------------------------------------------- (5) sbatch without srun: requeue
@pytest.mark.slow
def test_ddp_in_sbatch_without_srun_keeps_the_slurm_requeue(data_dir, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "scontrol.log"
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n")
    (bin_dir / "scontrol").chmod(0o755)
    run = tmp_path / "run"
    env = _env(**ALLOC, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    # SIGUSR1 (what #SBATCH --signal=SIGUSR1@120 sends) reaches rank 0 at the end of training batch 1 (after this
    # batch's decision was taken): both ranks act on it together at the end of the next step, step 3.
    proc = _train([*tiny(data_dir, "test=false", "+callbacks.sig._target_=faults.SignalSelf",
                         f"+callbacks.sig.signum={int(signal.SIGUSR1)}", "+callbacks.sig.batch=1", steps=6,
                         trainer="ddp_sim"), f"hydra.run.dir={run}"], env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert log.read_text().split() == ["requeue", "4242"]
    (hpc,) = run.glob("hpc_ckpt_*.ckpt")
    assert torch.load(hpc, weights_only=True)["global_step"] == 3
    assert f"SLURM requeue: saved {hpc} at step 3; requeued job 4242" in proc.stderr
    # The requeued job (same directory) resumes from it.
    again = _train([*tiny(data_dir, "test=false", steps=6, trainer="ddp_sim"), f"hydra.run.dir={run}"], env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from {hpc}" in again.stderr
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6


# ----------------------------------------------------------------------------- (6) Trainer keys, both spellings
@pytest.mark.parametrize("override", ["trainer.accumulate_grad_batches=2", "+trainer.accumulate_grad_batches=2",
                                      "++trainer.accumulate_grad_batches=2", "trainer.sync_batchnorm=true",
                                      "+trainer.sync_batchnorm=true"])
def test_trainer_arguments_are_accepted_in_every_spelling(override, tmp_path):
    from entry import compose_cfg
    from hydra.errors import ConfigCompositionException

    from lgfn.app.config import forced_override_key, validate_config

    def composed(overrides):
        return compose_cfg("train", overrides, tmp_path)

    overrides = ["trainer=ddp", override] if "sync_batchnorm" in override else [override]
    try:
        cfg = composed(overrides)
    except ConfigCompositionException as e:  # what Hydra refuses, the entry point re-composes with ++key=value
        key = forced_override_key(e)
        assert key == override.lstrip("+").split("=")[0]
        argv = task._forced_argv(["train.py", *overrides], key)
        cfg = composed(argv[1:])
    validate_config(cfg)
    name = override.split("=")[0].rsplit(".", 1)[1]
    assert cfg.trainer[name] in (2, True)


def test_a_mistyped_trainer_key_is_still_refused():
    from hydra.errors import ConfigCompositionException

    from lgfn.app.config import composition_error_line, forced_override_key

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)), \
            pytest.raises(ConfigCompositionException) as info:
        compose("train", overrides=["trainer.acumulate_grad_batches=2"])
    assert forced_override_key(info.value) is None
    assert "did you mean trainer.accumulate_grad_batches?" in composition_error_line(info.value)


@pytest.mark.slow
def test_trainer_key_without_plus_from_the_command_line(data_dir, tmp_path):
    proc = _train([*tiny(data_dir, "test=false", "trainer.accumulate_grad_batches=2", steps=2),
                   f"hydra.run.dir={tmp_path}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    assert OmegaConf.load(tmp_path / "config_resolved.yaml").trainer.accumulate_grad_batches == 2


def test_distributed_module_exports():
    assert callable(distributed.end_of_job) and distributed.RENDEZVOUS_ENV == "LGFN_DDP_RENDEZVOUS"
