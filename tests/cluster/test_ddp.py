"""DDP, SLURM and sweeps that survive a cluster (issue 15).

What runs for real here: gloo DDP over 2 CPU processes (``trainer=ddp_sim``), the basic, joblib and
submitit_local launchers, signals and SIGKILL. What cannot (SLURM, srun, NCCL) is tested as decision logic
with a faked environment.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from entry import CONF, ROOT, compose_cfg, run_script, tiny
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict, read_write

from lgfn.app import task
from lgfn.cluster import ddp as distributed
from lgfn.cluster import job_dir as jobs
from lgfn.cluster.slurm import launch_decision, slurm_tasks_per_node, srun_step
from lgfn.common import atomic
from lgfn.common.errors import ConfigError
from lgfn.results import ablation
from lgfn.training import loggers

TESTS = Path(__file__).resolve().parents[1]  # tests/: faults.py, the helpers the child processes import
# Checkpoint every step (no monitor: a monitored ModelCheckpoint waits for validation), no test stage.
EVERY_STEP = ["test=false", "callbacks.model_checkpoint.monitor=null", "+callbacks.model_checkpoint.every_n_train_steps=1"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


def _hydra_cfg(overrides: list[str], return_hydra: bool = True):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("train", overrides=overrides, return_hydra_config=return_hydra)


def _env(**extra: str) -> dict:
    return {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]), **extra}


# ----------------------------------------------------------------------------- (1) status.json
def _hammer(path: str, n: int) -> None:
    for i in range(n):
        atomic.write_json_atomic({"status": "ok", "i": i, "pid": os.getpid()}, Path(path))


def test_concurrent_status_writers_never_collide(tmp_path):
    # Before: every writer used one fixed .status.json.tmp, and a rank's rename found it gone (FileNotFoundError).
    path = tmp_path / "status.json"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_hammer, args=(str(path), 200)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 6
    assert json.loads(path.read_text())["status"] == "ok"
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # no temp file left behind
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)  # a normal file, not mkstemp's 0600


def _as_multirun(hydra_overrides: list[str] | None = None) -> None:
    """Make the current HydraConfig a multirun job's (read-only once set; as a launcher sets it)."""
    hc = HydraConfig.get()
    with read_write(hc), open_dict(hc):
        hc.mode = RunMode.MULTIRUN
        if hydra_overrides is not None:
            hc.overrides.hydra = hydra_overrides


def _multirun_cfg(tmp_path: Path):
    cfg = compose_cfg("train", [], tmp_path)
    _as_multirun()
    return cfg


@pytest.mark.parametrize("env,writes", [({}, True), ({"RANK": "1"}, False), ({"SUBMITIT_LOCAL_GLOBALID": "1"}, False),
                                        ({"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0", "SLURM_PROCID": "3"}, False),
                                        ({"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0", "SLURM_PROCID": "0"}, True)])
def test_only_global_rank_zero_writes_status(env, writes, tmp_path, monkeypatch):
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "SUBMITIT_LOCAL_GLOBALID", "SLURM_JOB_ID", "SLURM_STEP_ID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = _multirun_cfg(tmp_path)
    assert task.run_task(lambda c: 1.5, cfg) == 1.5
    assert (tmp_path / "status.json").exists() is writes
    if writes:
        assert jobs.read_status(tmp_path)["status"] == "ok" and jobs.read_status(tmp_path)["value"] == 1.5
        # A finished job is skipped by a re-run of the sweep: the task does not run, nothing is rewritten.
        before = (tmp_path / "status.json").stat().st_mtime_ns
        assert task.run_task(lambda c: pytest.fail("a finished job ran again"), cfg) == 1.5
        assert (tmp_path / "status.json").stat().st_mtime_ns == before


# ----------------------------------------------------------------------------- names of run and job directories
def test_job_dir_is_named_by_its_overrides_in_any_order():
    a = jobs.job_dir_name(["experiment=ablation_lfm", "seed=2", "trainer.max_steps=4"])
    assert a == jobs.job_dir_name(["trainer.max_steps=4", "seed=2", "experiment=ablation_lfm"])
    assert a.startswith("ablation_lfm-seed2-") and len(a.rsplit("-", 1)[1]) == 8
    assert a != jobs.job_dir_name(["experiment=ablation_lfm", "seed=2", "trainer.max_steps=5"])
    assert jobs.job_dir_name(["model.lr=0.001"]).startswith("job-")
    assert "/" not in jobs.job_dir_name(["data.root=/a/b", "model=lgfn"])


def test_sweep_subdir_and_unique_run_dirs(tmp_path):
    cfg = _hydra_cfg(["experiment=full", "seed=3"])
    assert OmegaConf.select(cfg, "hydra.sweep.subdir") == jobs.job_dir_name(["experiment=full", "seed=3"])
    # Two runs started in the same second get different directories (6 random hex digits after the time).
    dirs = {OmegaConf.select(_hydra_cfg([]), "hydra.run.dir") for _ in range(3)}
    assert len(dirs) == 3
    sweeps = {OmegaConf.select(_hydra_cfg([]), "hydra.sweep.dir") for _ in range(3)}
    assert len(sweeps) == 3
    run = OmegaConf.select(cfg, "hydra.run.dir")
    assert OmegaConf.select(cfg, "hydra.run.dir") == run  # fixed once resolved in a process (cached)


# ----------------------------------------------------------------------------- (4) SLURM decisions, faked
# What an sbatch script or an salloc shell sees (no srun step).
ALLOC = {"SLURM_JOB_ID": "42", "SLURM_JOB_NAME": "train", "SLURM_NTASKS": "1", "SLURM_NNODES": "1", "SLURM_NODEID": "0",
         "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
SRUN8 = {**ALLOC, "SLURM_STEP_ID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NTASKS": "8",
         "SLURM_STEP_NUM_TASKS": "8", "SLURM_STEP_TASKS_PER_NODE": "8", "SLURM_STEP_NUM_NODES": "1"}


@pytest.mark.parametrize(
    "env,devices,nodes,expected",
    [
        ({}, 8, 1, "lightning"),                                              # no SLURM: Lightning decides
        (ALLOC, 8, 1, "spawn"),                                               # sbatch script / salloc, no srun
        ({**ALLOC, "SLURM_STEP_ID": "4294967294"}, 8, 1, "spawn"),            # the batch step is not srun
        (SRUN8, 8, 1, "slurm"),                                               # srun, one task per GPU
        ({**SRUN8, "SLURM_STEP_TASKS_PER_NODE": "4(x2)", "SLURM_STEP_NUM_NODES": "2"}, 4, 2, "slurm"),
        ({**SRUN8, "SLURM_STEP_TASKS_PER_NODE": "1", "SLURM_STEP_NUM_TASKS": "1"}, 8, 1, "spawn"),  # srun, 1 task
        ({**ALLOC, "SLURM_JOB_NAME": "interactive"}, 8, 1, "lightning"),      # Lightning's opt-out
        ({**ALLOC, "TORCHELASTIC_RUN_ID": "x"}, 8, 1, "lightning"),           # torchrun inside an allocation
    ],
)
def test_launch_decision(env, devices, nodes, expected):
    assert launch_decision(env, devices, nodes)[0] == expected


@pytest.mark.parametrize("env,devices,nodes,match", [
    (ALLOC, 8, 2, r"num_nodes=2 inside a SLURM allocation needs srun"),
    ({**SRUN8, "SLURM_STEP_TASKS_PER_NODE": "2"}, 8, 1, r"srun started 2 task\(s\) per node .* --ntasks-per-node=8"),
])
def test_launch_decision_refuses_what_cannot_work(env, devices, nodes, match):
    with pytest.raises(ValueError, match=match):
        launch_decision(env, devices, nodes)


def test_srun_step_and_rank_from_the_environment():
    assert not srun_step(ALLOC) and srun_step(SRUN8)
    assert distributed.process_rank({**SRUN8, "SLURM_PROCID": "5"}) == 5
    assert distributed.process_rank({**ALLOC, "SLURM_PROCID": "5"}) == 0  # the batch script is not a rank
    assert distributed.process_rank({"LOCAL_RANK": "1", "WORLD_SIZE": "2"}) == 1
    assert distributed.process_rank({"LOCAL_RANK": "0", "NODE_RANK": "1", "WORLD_SIZE": "8"}) != 0
    assert distributed.process_rank({"LOCAL_RANK": "0"}) == 0  # left over from an earlier job: not a rank


@pytest.mark.parametrize("gpus,gres,tasks", [(4, None, 4), (None, "gpu:8", 8), (None, "gpu:a100:8", 8),
                                             (None, "gpu", 1), (None, None, 1), ("null", "gpu:2", 2)])
def test_slurm_tasks_per_node(gpus, gres, tasks):
    assert slurm_tasks_per_node(gpus, gres) == tasks


def test_submitit_slurm_config_takes_tasks_from_gres():
    cfg = _hydra_cfg(["hydra/launcher=submitit_slurm", "hydra.launcher.gres=gpu:8", "hydra.launcher.gpus_per_node=null"])
    assert OmegaConf.select(cfg, "hydra.launcher.tasks_per_node") == 8
    cfg = _hydra_cfg(["hydra/launcher=submitit_slurm", "hydra.launcher.gpus_per_node=4"])
    assert OmegaConf.select(cfg, "hydra.launcher.tasks_per_node") == 4


def _trainer_env(monkeypatch, env: dict) -> None:
    for key in list(os.environ):
        if key.startswith(("SLURM_", "TORCHELASTIC_")) or key in ("LOCAL_RANK", "WORLD_SIZE", "RANK", "NODE_RANK"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SLURM_NODELIST", "localhost")


def test_ddp_inside_an_allocation_without_srun_spawns_its_ranks(monkeypatch):
    import lightning as L
    from lightning.fabric.plugins.environments import LightningEnvironment, SLURMEnvironment

    _trainer_env(monkeypatch, ALLOC)
    # Lightning alone takes the batch script for an srun task and would never start the second process.
    plain = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_checkpointing=False)
    assert isinstance(plain.strategy.cluster_environment, SLURMEnvironment)
    ours = L.Trainer(accelerator="cpu", devices=2, strategy=distributed.DDPStrategy(), logger=False,
                     enable_checkpointing=False)
    env = ours.strategy.cluster_environment
    assert isinstance(env, LightningEnvironment) and not env.creates_processes_externally
    assert ours.world_size == 2 and "without srun" in ours.strategy.launch_reason
    _trainer_env(monkeypatch, {**SRUN8, "SLURM_STEP_TASKS_PER_NODE": "2", "SLURM_NTASKS": "2",
                               "SLURM_STEP_NUM_TASKS": "2", "SLURM_NTASKS_PER_NODE": "2"})
    under_srun = L.Trainer(accelerator="cpu", devices=2, strategy=distributed.DDPStrategy(), logger=False,
                           enable_checkpointing=False)
    assert isinstance(under_srun.strategy.cluster_environment, SLURMEnvironment)


# ----------------------------------------------------------------------------- (3) a child's command in a sweep
def test_child_command_runs_this_job_only(tmp_path, monkeypatch):
    compose_cfg("train", ["experiment=ablation_lfm", "seed=2"], tmp_path)
    _as_multirun(["hydra.mode=MULTIRUN", "hydra/launcher=joblib", "hydra.sweep.dir=/s",
                  "hydra.job_logging.root.level=WARNING"])
    distributed.set_job(str(ROOT / "train.py"), tmp_path, None)
    command, cwd = distributed.child_command(1)
    assert command[:2] == [sys.executable, str(ROOT / "train.py")] and cwd == str(ROOT)
    assert "-m" not in command and "--multirun" not in command
    assert not [c for c in command if c.startswith(("hydra/launcher", "hydra.sweep", "hydra.mode"))]
    assert "hydra.job_logging.root.level=WARNING" in command  # other Hydra settings carry over
    assert command.count("experiment=ablation_lfm") == 1 and "seed=2" in command
    assert f"hydra.run.dir='{tmp_path}'" in command and "hydra.output_subdir=null" in command


# ----------------------------------------------------------------------------- resuming, W&B run ids
def test_resume_path_uses_the_directorys_own_checkpoint(tmp_path, capsys):
    cfg = compose_cfg("train", [], tmp_path)
    assert jobs.resume_path(cfg, tmp_path) is None
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"x")
    task.save_resolved_config(cfg, tmp_path)
    assert jobs.resume_path(cfg, tmp_path) == str(last)
    assert f"resuming from {last}" in capsys.readouterr().err
    with open_dict(cfg):
        cfg.auto_resume = False
    assert jobs.resume_path(cfg, tmp_path) is None
    other = compose_cfg("train", ["model.net.num_feat=16", "seed=5"], tmp_path)
    with pytest.raises(ConfigError, match=r"holds last\.ckpt of another run \(model\.net\.num_feat: 32 then, 16"):
        jobs.resume_path(other, tmp_path)
    explicit = compose_cfg("train", ["ckpt_path=/x.ckpt"], tmp_path)
    assert jobs.resume_path(explicit, tmp_path) == "/x.ckpt"


def test_wandb_run_id_is_kept_in_the_run_directory(tmp_path, monkeypatch):
    from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger

    from lgfn.training.loggers import WandbLogger, run_keys

    first = loggers.wandb_run_id(tmp_path / "a")
    assert first == loggers.wandb_run_id(tmp_path / "a") != loggers.wandb_run_id(tmp_path / "b")
    logger = WandbLogger(save_dir=str(tmp_path / "a"), project="p", mode="offline")
    assert logger._wandb_init["id"] == first and logger._wandb_init["resume"] == "allow"
    keys = run_keys({"experiment_name": "ablation_lfm", "seed": 2, "model": {"net": {"use_gfm": False, "num_feat": 8}},
                     "data": {"centre_only": False}})
    assert keys["experiment"] == "ablation_lfm" and keys["seed"] == 2 and keys["use_gfm"] is False
    assert keys["num_feat"] == 8 and keys["centre_only"] is False
    logged = {}
    monkeypatch.setattr(LightningWandbLogger, "log_hyperparams", lambda self, params, *a, **k: logged.update(params))
    logger.log_hyperparams({"experiment_name": "full", "seed": 3, "model": {"net": {"use_lfm": True}}})
    assert logged["experiment"] == "full" and logged["seed"] == 3 and logged["use_lfm"] is True and "model" in logged


# ----------------------------------------------------------------------------- (6) global batch, (7) wall-time saves
def test_global_batch_is_split_over_ranks():
    from lgfn.data import VSRDataModule

    dm = VSRDataModule(name="builtin", root="/nonexistent", global_batch_size=8)
    dm.trainer = SimpleNamespace(world_size=8, accumulate_grad_batches=1, is_global_zero=True)
    assert dm.train_batch_size() == 1
    dm.trainer = SimpleNamespace(world_size=2, accumulate_grad_batches=2, is_global_zero=True)
    assert dm.train_batch_size() == 2
    dm.trainer = SimpleNamespace(world_size=3, accumulate_grad_batches=1, is_global_zero=True)
    with pytest.raises(ValueError, match=r"global_batch_size=8 is not a multiple of 3 ranks"):
        dm.train_batch_size()
    per_rank = VSRDataModule(name="builtin", root="/nonexistent", batch_size=8)
    per_rank.trainer = SimpleNamespace(world_size=8, accumulate_grad_batches=1, is_global_zero=True)
    assert per_rank.train_batch_size() == 8
    cfg = _hydra_cfg(["experiment=lgfn"], return_hydra=False)
    assert cfg.data.global_batch_size == 8  # the paper's recipe: a global batch of 8, whatever the GPUs
    assert cfg.callbacks.periodic_last.every_n_train_steps == 0 and cfg.callbacks.periodic_last.every_n_minutes == 15


def test_periodic_last_checkpoint_by_wall_time(tmp_path, monkeypatch):
    from lgfn.training import callbacks

    clock = [1000.0]
    monkeypatch.setattr(callbacks.time, "monotonic", lambda: clock[0])
    saved = []
    trainer = SimpleNamespace(global_step=0, sanity_checking=False, world_size=1, checkpoint_callback=None,
                              default_root_dir=str(tmp_path), save_checkpoint=lambda p, **k: saved.append(p))
    cb = callbacks.PeriodicLastCheckpoint(every_n_train_steps=100, every_n_minutes=15)
    cb.on_train_start(trainer, None)
    for step, minutes in ((1, 5), (2, 14.9), (3, 15.0), (4, 20), (100, 21), (101, 30.1)):
        trainer.global_step, clock[0] = step, 1000.0 + 60 * minutes
        cb.on_train_batch_end(trainer, None, None, None, 0)
    # 15 min after the start, step 100, then 15 min after that save (at 21 min): 36 min, not yet at 30.1.
    assert len(saved) == 2 and saved[0] == tmp_path / "checkpoints" / "last.ckpt"
    clock[0] = 1000.0 + 60 * 36
    trainer.global_step = 102
    cb.on_train_batch_end(trainer, None, None, None, 0)
    assert len(saved) == 3


# ----------------------------------------------------------------------------- seeds and confidence
def test_t_interval_against_a_hand_computation():
    values = [0.10, -0.05, 0.20, 0.05, 0.00]
    mean = 0.06
    s = math.sqrt(sum((v - mean) ** 2 for v in values) / 4)  # 0.0961769...
    half = 2.7764451051977987 * s / math.sqrt(5)  # t(0.975, 4)
    got = ablation.t_interval(values)
    assert got == pytest.approx((mean, mean - half, mean + half), abs=1e-12)
    assert got[1] < 0 < got[2]  # contains 0: no measurable difference
    assert math.isnan(ablation.t_interval([0.3])[1])


def _fake_job(sweep: Path, experiment: str, seed: int, clips: dict, toggles: dict, gain: float) -> None:
    job = sweep / jobs.job_dir_name([f"experiment={experiment}", f"seed={seed}", "trainer.max_steps=2"])
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create([f"experiment={experiment}", f"seed={seed}", "trainer.max_steps=2"]),
                   job / ".hydra" / "overrides.yaml")
    OmegaConf.save(OmegaConf.create({"experiment_name": experiment, "seed": seed, "model": {"net": toggles},
                                     "data": {"centre_only": experiment == "ablation_single_frame"}}),
                   job / "config_resolved.yaml")
    avg = sum(clips.values()) / len(clips)
    (job / "metrics.json").write_text(json.dumps({
        "dataset": "builtin", "clips": {c: {"psnr": v, "ssim": 0.8, "frames": 4} for c, v in clips.items()},
        "average": {"psnr": avg, "ssim": 0.8, "temporal_gain": gain}}))
    jobs.write_status(job, "ok", started=1.0e9 + seed, seconds=60.0)


def test_ablation_table_pairs_clips_and_seeds(tmp_path):
    on = {"use_dmdcu": True, "use_lfm": True, "use_gfm": True}
    for seed, shift in ((1, 0.0), (2, 0.1), (3, -0.1)):
        _fake_job(tmp_path, "full", seed, {"a": 30.0 + shift, "b": 25.0 + shift}, on, 0.2)
        # LFM only: 0.5 dB worse on every clip and seed; no DMDCU: +-0.01 dB noise around the same.
        _fake_job(tmp_path, "ablation_lfm", seed, {"a": 29.5 + shift, "b": 24.5 + shift}, {**on, "use_gfm": False}, 0.1)
        noise = 0.01 if seed % 2 else -0.01
        _fake_job(tmp_path, "ablation_no_dmdcu", seed, {"a": 30.0 + shift + noise, "b": 25.0 + shift - noise},
                  {**on, "use_dmdcu": False}, 0.2)
    _fake_job(tmp_path, "ablation_single_frame", 1, {"a": 29.0, "b": 24.0}, on, 0.0)
    md, png = ablation.write_ablation(tmp_path)
    text = md.read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert list(rows)[1:] == ["full", "ablation_no_dmdcu", "ablation_lfm", "ablation_single_frame"]
    assert "27.50 ± 0.10" in rows["full"] and "(reference)" in rows["full"] and "+0.20 ± 0.00" in rows["full"]
    assert "-0.500" in rows["ablation_lfm"] and "worse than full" in rows["ablation_lfm"]
    assert "| 6 |" in rows["ablation_lfm"]  # 2 clips x 3 seeds
    assert "no measurable difference" in rows["ablation_no_dmdcu"]
    assert "too few pairs" not in rows["ablation_single_frame"] and "centre only" in rows["ablation_single_frame"]
    assert "Student-t" in text and "Wall time:" in text
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


# ----------------------------------------------------------------------------- end to end (subprocesses)
def _train(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


def _summary(sweep: Path) -> list[dict]:
    import csv

    with open(sweep / "summary.csv") as f:
        return list(csv.DictReader(f))


def _net(ckpt: Path) -> dict:
    return {k: v for k, v in torch.load(ckpt, weights_only=True)["state_dict"].items() if k.startswith("net.")}


@pytest.mark.slow
def test_ddp_sim_sweep_runs_each_job_once_and_records_both(data_dir, tmp_path):
    proc = _train(["-m", "experiment=ablation_lfm,ablation_gfm", *tiny(data_dir, "test=false", trainer="ddp_sim"),
                   f"hydra.sweep.dir={tmp_path}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert out.count("Launching 2 jobs") == 1  # rank 1 did not launch the sweep again
    rows = _summary(tmp_path)
    assert [r["status"] for r in rows] == ["ok", "ok"], rows
    dirs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert dirs == sorted(r["job"] for r in rows)  # two job directories, nothing else
    for r in rows:  # rank 1 ran in its job's own directory, once
        assert (tmp_path / r["job"] / "train_ddp_rank1.log").is_file()
        assert torch.load(tmp_path / r["job"] / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2


@pytest.mark.slow
def test_ema_and_nan_skip_under_ddp(data_dir, tmp_path):
    proc = _train([*tiny(data_dir, "test=false", "model.ema_decay=0.9", "model.nan_policy=skip",
                         "+callbacks.poison._target_=faults.PoisonOnRank", steps=4, trainer="ddp_sim"),
                   f"hydra.run.dir={tmp_path}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Both ranks saw rank 1's NaN and skipped the same batch together.
    assert proc.stderr.count("non-finite training loss (nan on rank 1) at step 1 (batch 1): batch skipped") == 2
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 4
    # The skipped step changed nothing: Adam stepped 3 times; the EMA was updated after every batch.
    assert {int(s["step"]) for s in state["optimizer_states"][0]["state"].values()} == {3}
    assert int(state["state_dict"]["ema.n_averaged"]) == 4
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())


@pytest.mark.slow
def test_nan_on_one_rank_stops_both_ranks_with_the_message(data_dir, tmp_path):
    start = time.monotonic()
    proc = _train([*tiny(data_dir, "test=false", "+callbacks.poison._target_=faults.PoisonOnRank", steps=4,
                         trainer="ddp_sim"), f"hydra.run.dir={tmp_path}"], timeout=300)
    # subprocess.run returns once every process holding the pipes (rank 1 too) has exited.
    assert proc.returncode == 1 and time.monotonic() - start < 120
    message = "error: non-finite training loss (nan on rank 1) at step 1 (batch 1); set model.nan_policy=skip"
    assert proc.stderr.count(message) == 2, proc.stderr[-3000:]  # rank 0 and rank 1


@pytest.mark.slow
def test_one_failing_rank_is_recorded_and_the_sweep_goes_on(data_dir, tmp_path):
    # Job rank=1: rank 1 raises at step 1 while rank 0 waits in the step's all-reduce. Job rank=5: no such rank.
    start = time.monotonic()
    proc = _train(["-m", "+callbacks.fail.rank=1,5", *tiny(data_dir, "test=false", "+callbacks.fail._target_=faults.FailOnRank",
                                                        steps=3, trainer="ddp_sim"), f"hydra.sweep.dir={tmp_path}"],
                  timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.monotonic() - start < 180
    rows = {next(o for o in r["overrides"].split() if o.startswith("+callbacks.fail.rank")): r for r in _summary(tmp_path)}
    assert rows["+callbacks.fail.rank=1"]["status"] == "failed"
    assert rows["+callbacks.fail.rank=1"]["error"] == "rank 1: RuntimeError: injected failure"
    assert rows["+callbacks.fail.rank=5"]["status"] == "ok"  # the next job's DDP started afresh in the same process
    assert "job failed (the sweep goes on): rank 1: RuntimeError: injected failure" in proc.stderr


def _task_pids(sweep: Path) -> list[int]:
    """The submitit_local task processes of this sweep (found by their environment)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            env = (entry / "environ").read_bytes().split(b"\0")
            if b"SUBMITIT_LOCAL_GLOBALID=0" in env and any(str(sweep).encode() in v for v in env):
                pids.append(int(entry.name))
    return pids


def _step(ckpt: Path) -> int:
    with contextlib.suppress(Exception):
        return int(torch.load(ckpt, weights_only=True)["global_step"])
    return -1


@pytest.mark.slow
def test_submitit_preemption_saves_requeues_and_resumes_to_the_same_weights(data_dir, tmp_path):
    steps = 8
    overrides = [*tiny(data_dir, *EVERY_STEP, steps=steps)]
    reference = tmp_path / "reference"
    ref = run_script("train.py", [*overrides, f"hydra.run.dir={reference}"])
    assert ref.returncode == 0, ref.stderr[-3000:]
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "-m", "hydra/launcher=submitit_local",
                             "experiment=full", *overrides, f"hydra.sweep.dir={sweep}"], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, sent = time.monotonic() + 300, False
        while proc.poll() is None and time.monotonic() < deadline:
            last = next(iter(sweep.glob("*/checkpoints/last.ckpt")), None)
            if not sent and last is not None and _step(last) >= 2:
                pids = _task_pids(sweep)
                assert pids, "no submitit task process found"
                for pid in pids:
                    os.kill(pid, signal.SIGUSR2)  # what submitit's scheduler sends before a time limit
                sent = True
            time.sleep(0.02)
        out, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert sent and proc.returncode == 0, out[-3000:]
    (job,) = [p for p in sweep.iterdir() if (p / ".hydra").is_dir()]
    log = "".join(p.read_text() for p in sweep.glob(".submitit/*/*_0_log.*"))
    saved = [ln for ln in log.splitlines() if ln.startswith("pre-empted: saved")]
    assert len(saved) == 1 and f"{job}/checkpoints/last.ckpt at step" in saved[0], log[-3000:]
    assert int(saved[0].split("at step ")[1].split(";")[0]) < steps  # saved mid-run...
    assert "Requeued job" in log and f"resuming from {job}/checkpoints/last.ckpt" in log  # ...resumed in place
    final = job / "checkpoints" / "last.ckpt"
    assert _step(final) == steps and jobs.read_status(job)["status"] == "ok"
    ref_w, got_w = _net(reference / "checkpoints" / "last.ckpt"), _net(final)
    assert ref_w.keys() == got_w.keys() and all(torch.equal(ref_w[k], got_w[k]) for k in ref_w)


@pytest.mark.slow
def test_sigkilled_sweep_rerun_runs_only_the_unfinished_jobs(data_dir, tmp_path):
    steps = 10
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=1", "experiment=full,ablation_lfm,ablation_gfm",
            *tiny(data_dir, *EVERY_STEP, steps=steps), f"hydra.sweep.dir={tmp_path}"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def job(name: str) -> Path | None:
        return next((p for p in tmp_path.glob(f"{name}-*") if (p / ".hydra").is_dir()), None)

    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            first, second = job("full"), job("ablation_lfm")
            if first and jobs.finished(first) and second and _step(second / "checkpoints" / "last.ckpt") >= 2:
                break
            assert proc.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its worker, mid-way through the second job
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(60)
    first, second = job("full"), job("ablation_lfm")
    assert job("ablation_gfm") is None and not jobs.finished(second)
    at = _step(second / "checkpoints" / "last.ckpt")
    assert 2 <= at < steps
    kept = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in [first / "status.json", *first.glob("checkpoints/*")]}
    assert len(kept) > 1
    rerun = _train(args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    out = rerun.stdout + rerun.stderr
    assert f"job {first.name} finished before (its status.json says ok): skipped" in out
    assert f"resuming from {second}/checkpoints/last.ckpt" in out
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in kept} == kept  # the finished job was left alone
    assert [r["status"] for r in _summary(tmp_path)] == ["ok", "ok", "ok"]
    for name in ("full", "ablation_lfm", "ablation_gfm"):
        assert _step(job(name) / "checkpoints" / "last.ckpt") == steps


@pytest.mark.slow
def test_make_ablation_at_a_tiny_size(data_dir, tmp_path):
    extra = [o for o in tiny(data_dir) if not o.startswith(("trainer=", "trainer.max_steps", "trainer.max_epochs",
                                                             "trainer.val_check", "trainer.check_val"))]
    proc = subprocess.run(["make", "-o", ".venv/.installed", "ablation", f"ABLATION_DIR={tmp_path}", "ABLATION_STEPS=2",
                           "ABLATION_SEEDS=1,2", "ABLATION_EXPERIMENTS=full,ablation_single_frame",
                           f"ABLATION_ARGS={' '.join(extra)}"], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (tmp_path / "ablation.md").read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("| full") or ln.startswith("| ablation_single_frame")]
    assert len(rows) == 2 and "| 2 |" in rows[0] and "centre only" in rows[1]
    assert "95 % interval" in text and (tmp_path / "ablation.png").stat().st_size > 1000
    assert "Ablation (" in proc.stdout  # printed at the end of the sweep too
