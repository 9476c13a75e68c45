"""eval.py ... baselines=[bicubic,basicvsr]: baselines scored on the same windows, beside the model, in metrics.json
("baselines"), the printed table (a column per model) and report.html (columns and the comparison's crops)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import write_moving_clip
from entry import TINY_NET, compose_cfg, tiny

import eval as eval_entry
import train as train_entry
from lgfn.app import baselines, config
from lgfn.checkpoints.weights_file import save_weights
from lgfn.common.errors import ConfigError
from lgfn.models import LGFN
from lgfn.results.table import format_table

CONTRACT_KEYS = {"dataset", "average_mode", "crop_border", "clips", "average", "bicubic"}


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("baselines_folder")
    write_moving_clip(root / "astro")
    write_moving_clip(root / "slow", n=3, motion=(1, 0))
    return root


@pytest.fixture(scope="module")
def tiny_lgfn(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    sizes = {o.split("=")[0].removeprefix("model.net."): int(o.split("=")[1]) for o in TINY_NET}
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_weights(LGFN(num_frames=3, **sizes), path)
    return path


# Small convolutions run several times faster on one thread than on two busy cores (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _overrides(root: Path, *extra: str) -> list[str]:
    return ["data=folder", f"data.root={root}", "data.num_frames=3", "data.num_workers=0", "trainer=cpu",
            "trainer.enable_progress_bar=false", *extra]


@pytest.mark.parametrize("value, match", [
    ("[bicubic,edvr]", r"unknown baseline 'edvr' \(choose from bicubic, basicvsr\)"),
    ("[bicubic,bicubic]", "listed twice"),
])
def test_bad_baselines_are_one_line_config_errors(tmp_path, value, match):
    cfg = compose_cfg("eval", ["model=bicubic", f"baselines={value}"], tmp_path)
    with pytest.raises(ConfigError, match=match) as err:
        config.validate_config(cfg)
    assert "\n" not in str(err.value)


def test_missing_extra_fails_before_work(tmp_path, monkeypatch):
    import importlib.metadata

    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    cfg = compose_cfg("eval", ["model=bicubic", "baselines=[basicvsr]"], tmp_path)
    with pytest.raises(ConfigError, match=r"baselines=\[basicvsr\].*pip install") as err:
        config.validate_config(cfg)
    assert "\n" not in str(err.value)


def test_basicvsr_weights_follow_the_data(tmp_path):
    assert baselines.basicvsr_weights(compose_cfg("eval", [], tmp_path)) == "vimeo_bi"
    assert baselines.basicvsr_weights(compose_cfg("eval", ["data.degradation=bd"], tmp_path)) == "vimeo_bd"
    cfg = compose_cfg("eval", ["model=basicvsr", "model.weights=reds"], tmp_path)
    assert baselines.basicvsr_weights(cfg) == "reds"


def test_eval_with_baselines(weights_installed, folder_root, tiny_lgfn, tmp_path, capsys):
    out = tmp_path / "run"
    cfg = compose_cfg("eval", _overrides(folder_root, f"ckpt_path={tiny_lgfn}", "baselines=[bicubic,basicvsr]"), out)
    eval_entry.evaluate(cfg)
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())

    # metrics.json: the contract's keys as without baselines, the baselines beside them.
    assert CONTRACT_KEYS <= set(metrics) and set(metrics["baselines"]) == {"bicubic", "basicvsr"}
    bv, bic = metrics["baselines"]["basicvsr"], metrics["baselines"]["bicubic"]
    assert bv["model"] == "BasicVSR (vimeo_bi)" and set(bv["clips"]) == set(metrics["clips"]) == {"astro", "slow"}
    for key in ("psnr", "ssim", "temporal_gain", "tof"):
        assert key in bv["average"] and key in bic["average"]
    assert bic["average"]["psnr"] == metrics["bicubic"]["average"]["psnr"] and bic["average"]["temporal_gain"] == 0
    # The released network beats bicubic and the untrained tiny LGFN on the same windows.
    assert bv["average"]["psnr"] > bic["average"]["psnr"] > metrics["average"]["psnr"]

    # The printed table: one table, a column per model, gain and tOF per model.
    table = printed[printed.index("folder: PSNR/SSIM"):]
    head = table.splitlines()[1]
    for title in ("Bicubic", "BasicVSR (vimeo_bi)", "LGFN", "gain Bicubic", "gain BasicVSR (vimeo_bi)", "gain LGFN",
                  "tOF Bicubic", "tOF BasicVSR (vimeo_bi)", "tOF LGFN"):
        assert re.search(rf"\| +{re.escape(title)} *(\||$)", head), (title, head)
    assert printed.count("folder: PSNR/SSIM") == 1
    average = next(line for line in table.splitlines() if line.startswith("Average"))
    assert f"{bv['average']['psnr']:.2f}/{bv['average']['ssim']:.4f}" in average

    # report.html: the baseline's cells carry their metrics.json paths; the comparison holds its crop.
    page = (out / "report.html").read_text()
    for key in ("psnr", "ssim", "temporal_gain", "tof"):
        assert f'data-path="{json.dumps(["baselines", "basicvsr", "average", key])}"'.replace('"', "&quot;", 0) in \
            page.replace("&quot;", '"')
    assert page.count('data-kind="baseline0"') == 2  # one crop per clip with a sample (both clips)
    assert '<option value="baseline0">BasicVSR (vimeo_bi)</option>' in page


def test_table_without_baselines_is_unchanged():
    result = {"dataset": "d", "clips": {"c": {"psnr": 30.0, "ssim": 0.9, "frames": 2, "temporal_gain": 0.1}},
              "average": {"psnr": 30.0, "ssim": 0.9, "temporal_gain": 0.1},
              "bicubic": {"clips": {"c": {"psnr": 28.0, "ssim": 0.8}}, "average": {"psnr": 28.0, "ssim": 0.8}}}
    plain = format_table(result, "LGFN", paper={})
    assert re.search(r"\| +gain$", plain.splitlines()[1]) and "gain LGFN" not in plain
    with_base = format_table({**result, "baselines": {"bicubic": {"model": "Bicubic", "clips": {},
                                                                  "average": {"psnr": 28.0, "ssim": 0.8}}}},
                             "LGFN", paper={})
    assert "gain LGFN" in with_base and "BasicVSR" not in with_base


@pytest.mark.slow
def test_train_test_with_baselines(weights_installed, tmp_path, builtin_stub, capsys):
    out = tmp_path / "run"
    cfg = compose_cfg("train", tiny(tmp_path / "data", "baselines=[bicubic,basicvsr]", "test_ckpt=last",
                                         "data.val_holdout=1", steps=1), out)
    train_entry.train(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["baselines"]) == {"bicubic", "basicvsr"}
    assert set(metrics["baselines"]["basicvsr"]["clips"]) == set(metrics["clips"])
    assert "gain BasicVSR (vimeo_bi)" in capsys.readouterr().out
