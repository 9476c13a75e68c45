"""What a normal training run prints: where its results went (paths that exist) and nothing a user cannot act on.

One run of ``train.py experiment=quickstart`` (2 DDP processes, as ``make train``) with the network shrunk, one
optimiser step, stopped before any validation (an epoch of 2 batches, validation at epoch end), output captured
(not a terminal) with a 60-column COLUMNS so a bar that wraps would show it.
"""

from __future__ import annotations

import re
from pathlib import Path

from entry import TINY_DATA, TINY_NET, run_script

NOISE = [
    "global batch",  # the recipe's own global batch, split over the 2 ranks as it should be
    "Using `DistributedSampler`",  # test under DDP: every sample counts once (LitLGFN gathers by index)
    "could not find the monitored key",  # a run that stops before its first validation
    "[WARNING]",
]


def test_a_normal_run_prints_where_results_went_and_no_noise(tmp_path):
    overrides = ["experiment=quickstart", "logger=csv", f"paths.data_dir={tmp_path / 'data'}", *TINY_NET,
                 *TINY_DATA, "trainer.max_steps=1", "trainer.val_check_interval=null",
                 "trainer.check_val_every_n_epoch=1", "trainer.log_every_n_steps=1", "hydra.run.dir=run"]
    res = run_script("train.py", overrides, cwd=tmp_path, env={"COLUMNS": "60"})
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    for noise in NOISE:
        assert noise not in out, (noise, out[-4000:])

    # the paths, relative to where it ran, exist
    printed = dict(re.findall(r"^(metrics|report|checkpoints): +(.+)$", res.stdout, re.M))
    assert set(printed) == {"metrics", "report", "checkpoints"}, res.stdout[-3000:]
    assert printed["metrics"] == "run/metrics.json" and (tmp_path / printed["metrics"]).is_file()
    assert printed["report"] == "run/report.html" and (tmp_path / printed["report"]).is_file()
    folder, files = re.fullmatch(r"(\S+)/ \((.+)\)", printed["checkpoints"]).groups()
    assert folder == "run/checkpoints" and files.split(", ") == ["last.ckpt"]
    assert all((tmp_path / folder / f).is_file() for f in files.split(", "))
    assert res.stdout.rstrip().splitlines()[-1].startswith("checkpoints: ")  # the run's last word

    # a log file, not a terminal: each progress bar is one line, its metrics included
    bars = [ln for ln in out.splitlines() if ln.startswith(("Epoch 0, step", "Testing"))]
    assert len(bars) == 2, out[-3000:]
    assert re.search(r"Epoch 0, step .* 1/1 .*it/s train/loss: \d\.\d+\s*$", bars[0]), bars[0]
    assert re.search(r"Testing .* (\d+)/\1 .*it/s\s*$", bars[1]), bars[1]
    assert Path(tmp_path / "run" / "train.log").is_file()
