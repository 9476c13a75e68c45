"""Run the real entry points (train.py / eval.py) in-process or as subprocesses, with tiny overrides."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# lgfn_small shrunk further: every block present, a few thousand parameters.
TINY_NET = [
    "model.net.num_feat=8",
    "model.net.num_extract_blocks=1",
    "model.net.num_align_stages=1",
    "model.net.deformable_groups=2",
    "model.net.num_lfm=1",
    "model.net.num_gfm=1",
    "model.net.gfm_slice_channels=2",
    "model.net.num_rcab=1",
]
TINY_DATA = ["data.num_frames=3", "data.patch_size=32", "data.batch_size=2", "data.num_workers=0",
             "data.builtin_small=true", "data.val_max_clips=1"]


def tiny(data_dir: Path, *extra: str, steps: int = 2, trainer: str = "cpu") -> list[str]:
    """Overrides for a run of `steps` optimiser steps on the small built-in set, CSV logging, CPU."""
    return [
        f"trainer={trainer}",
        "logger=csv",
        f"paths.data_dir={data_dir}",
        f"trainer.max_steps={steps}",
        "trainer.max_epochs=-1",
        f"trainer.val_check_interval={steps}",
        "trainer.check_val_every_n_epoch=null",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "~callbacks.progress_bar",
        *TINY_NET,
        *TINY_DATA,
        *extra,
    ]


def compose_cfg(config_name: str, overrides: list[str], out_dir: Path):
    """Compose like @hydra.main does (hydra config included), with the run directory at `out_dir`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(config_name, overrides=[*overrides, f"hydra.run.dir={out_dir}"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out_dir)
        cfg.hydra.runtime.cwd = str(ROOT)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # as in @hydra.main: the job's config holds no hydra node
    return cfg


def run_script(script: str, overrides: list[str], cwd: Path = ROOT, env: dict | None = None,
               timeout: int = 600) -> subprocess.CompletedProcess:
    # One thread per process: sweeps and DDP run several processes on 2 cores, and OpenMP spinning
    # threads that outnumber the cores slow everything down many times.
    full_env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / script), *overrides], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
