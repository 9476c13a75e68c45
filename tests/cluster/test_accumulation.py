"""Gradient accumulation and stopping (issue 21, items 4 and 10): the EMA and last.ckpt follow optimiser steps,
Ctrl-C saves at the next step boundary and prints the command that resumes exactly, a NaN skips the whole
accumulated window on one device as under DDP, and a run that fails before its first step leaves nothing."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from entry import ROOT, run_script, tiny

from lgfn.training.callbacks import PeriodicLastCheckpoint, at_step_boundary

TESTS = Path(__file__).resolve().parents[1]  # tests/: faults.py, imported by the child processes
# last.ckpt after every optimiser step (PeriodicLastCheckpoint), no monitored checkpoint, no test stage.
EVERY_STEP = ["test=false", "callbacks.model_checkpoint.monitor=null", "callbacks.periodic_last.every_n_train_steps=1"]
ACCUMULATE = [*EVERY_STEP, "+trainer.accumulate_grad_batches=2", "model.ema_decay=0.9"]
STEPS = 4


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


def _env() -> dict:
    return {"PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


def _state(ckpt: Path) -> dict:
    return torch.load(ckpt, weights_only=True)


def _adam_steps(state: dict) -> set[int]:
    return {int(s["step"]) for s in state["optimizer_states"][0]["state"].values()}


# ----------------------------------------------------------------------------- decisions, in-process
class _Loop:
    def __init__(self, pattern: list[bool]) -> None:
        self.pattern, self.i = pattern, 0

    def _should_accumulate(self) -> bool:
        return self.pattern[self.i]


def test_periodic_last_checkpoint_writes_once_per_optimiser_step():
    # 3 optimiser steps of 2 micro-batches: batch ends at steps 0,1 | 1,2 | 2,3 (global_step after the batch).
    loop = _Loop([True, False] * 3)
    saves = []
    trainer = SimpleNamespace(sanity_checking=False, world_size=1, fit_loop=SimpleNamespace(epoch_loop=loop),
                              global_step=0, checkpoint_callback=None, default_root_dir="/x",
                              save_checkpoint=lambda path, weights_only: saves.append(trainer.global_step))
    cb = PeriodicLastCheckpoint(every_n_train_steps=1, every_n_minutes=0)
    for i, step in enumerate([0, 1, 1, 2, 2, 3]):
        loop.i, trainer.global_step = i, step
        assert at_step_boundary(trainer) is (i % 2 == 1)
        cb.on_train_batch_end(trainer, None, None, None, i)
    assert saves == [1, 2, 3]  # at each step boundary, once; never mid-window
    assert at_step_boundary(SimpleNamespace()) is True  # no loop to ask: every batch is a step


def test_validation_mid_window_is_refused(tmp_path):
    from entry import compose_cfg

    from lgfn.app.config import validate_config
    from lgfn.common.errors import ConfigError

    cfg = compose_cfg("train", ["+trainer.accumulate_grad_batches=2", "trainer.val_check_interval=3"], tmp_path)
    with pytest.raises(ConfigError, match=r"val_check_interval=3 \(batches\) must be a multiple of "
                                          r"trainer.accumulate_grad_batches=2"):
        validate_config(cfg)
    validate_config(compose_cfg("train", ["+trainer.accumulate_grad_batches=2", "trainer.val_check_interval=4"],
                                tmp_path))


# ----------------------------------------------------------------------------- end to end (subprocesses)
@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory) -> Path:
    """An uninterrupted run of STEPS optimiser steps of 2 micro-batches each, with an EMA."""
    out = tmp_path_factory.mktemp("reference")
    proc = run_script("train.py", [*tiny(data_dir, *ACCUMULATE, steps=STEPS), f"hydra.run.dir={out}"], env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "checkpoints" / "last.ckpt"


@pytest.mark.slow
def test_ema_follows_optimiser_steps(reference):
    state = _state(reference)
    assert state["global_step"] == STEPS
    assert int(state["state_dict"]["ema.n_averaged"]) == STEPS  # once per optimiser step, not per micro-batch
    assert _adam_steps(state) == {STEPS}


@pytest.mark.slow
def test_ctrl_c_mid_window_saves_at_the_step_boundary_and_resumes_exactly(data_dir, reference, tmp_path):
    run = tmp_path / "interrupted"
    # Ctrl-C at the end of micro-batch 2 (the first of step 2's window): saved once step 2 is complete.
    args = [*tiny(data_dir, *ACCUMULATE, "+callbacks.sig._target_=faults.SignalSelf", "+callbacks.sig.batch=2",
                  steps=STEPS), f"hydra.run.dir={run}"]
    proc = run_script("train.py", args, env=_env())
    assert proc.returncode == 128 + signal.SIGINT, proc.stderr[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    assert f"Ctrl-C: saved {last} at step 2; resume with:" in proc.stderr
    state = _state(last)
    assert state["global_step"] == 2 and int(state["state_dict"]["ema.n_averaged"]) == 2
    # The printed command, as printed (plus: no second Ctrl-C this time), finishes the run in the same directory.
    command = shlex.split(proc.stderr.split("resume with:\n", 1)[1].splitlines()[0])
    assert command[:2] == ["python", "train.py"] and f"ckpt_path={last}" in command
    resumed = subprocess.run([sys.executable, *command[1:], "callbacks.sig.batch=100000"], cwd=ROOT, text=True,
                             capture_output=True, timeout=600,
                             env={**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", **_env()})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final, ref = _state(last), _state(reference)
    assert final["global_step"] == STEPS
    weights = [k for k in ref["state_dict"] if k.startswith(("net.", "ema."))]
    assert weights and all(torch.equal(final["state_dict"][k], ref["state_dict"][k]) for k in weights)


@pytest.mark.slow
def test_second_ctrl_c_aborts_at_once(data_dir, tmp_path):
    proc = run_script("train.py", [*tiny(data_dir, *EVERY_STEP, "+callbacks.sig._target_=faults.SignalSelf",
                                         "+callbacks.sig.batch=1", "+callbacks.sig.times=2", steps=6),
                                   f"hydra.run.dir={tmp_path}"], env=_env())
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert "second Ctrl-C: aborted without saving" in proc.stderr and "resume with" not in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("trainer,rank", [("cpu", 0), ("ddp_sim", 1)])
def test_nan_skip_drops_the_whole_accumulated_window(data_dir, tmp_path, trainer, rank):
    # Micro-batch 2 of rank `rank` is NaN: step 2's whole window (both micro-batches) is skipped, on one device as
    # under DDP; the other 3 steps update the weights, and the EMA still counts every optimiser step.
    proc = run_script("train.py", [*tiny(data_dir, *ACCUMULATE, "model.nan_policy=skip",
                                         "+callbacks.poison._target_=faults.PoisonBatch", f"+callbacks.poison.rank={rank}",
                                         "+callbacks.poison.batch=2", steps=STEPS, trainer=trainer),
                                   f"hydra.run.dir={tmp_path}"], env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "batch skipped" in proc.stderr
    state = _state(tmp_path / "checkpoints" / "last.ckpt")
    assert state["global_step"] == STEPS and _adam_steps(state) == {STEPS - 1}
    assert int(state["state_dict"]["ema.n_averaged"]) == STEPS


@pytest.mark.slow
def test_a_run_failing_before_its_first_step_leaves_nothing(tmp_path):
    run = tmp_path / "run"
    proc = run_script("train.py", ["data=folder", f"data.root={tmp_path / 'missing'}", "logger=wandb",
                                   f"hydra.run.dir={run}"], cwd=tmp_path)
    assert proc.returncode == 1
    assert f"error: data.root {tmp_path / 'missing'} does not exist" in proc.stderr
    assert "wandb:" not in proc.stdout + proc.stderr  # no W&B run started, no banners around the error
    assert not run.exists() and not (tmp_path / "wandb").exists()


@pytest.mark.slow
def test_ctrl_c_under_ddp_stops_every_rank_at_one_step_and_resumes(data_dir, tmp_path):
    # A terminal's Ctrl-C reaches every process of the foreground group: both ranks. Both save at one step boundary,
    # exit 130, and the printed command finishes the run.
    import contextlib
    import time

    run = tmp_path / "run"
    steps = 12
    args = [*tiny(data_dir, *EVERY_STEP, steps=steps, trainer="ddp_sim"), f"hydra.run.dir={run}"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, start_new_session=True,
                            env={**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", **_env()},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = run / "checkpoints" / "last.ckpt"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(Exception):
                if _state(last)["global_step"] >= 2:
                    break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=180)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-3000:]
    saved = [line for line in err.splitlines() if line.startswith("Ctrl-C: saved")]
    assert len(saved) == 1 and "exited with status" not in err, err[-3000:]  # rank 0 reports; no rank "failed"
    step = _state(last)["global_step"]
    assert f"at step {step};" in saved[0] and 2 <= step < steps
    command = shlex.split(err.split("resume with:\n", 1)[1].splitlines()[0])
    resumed = subprocess.run([sys.executable, *command[1:]], cwd=ROOT, text=True, capture_output=True, timeout=600,
                             env={**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", **_env()})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _state(last)["global_step"] == steps
