"""The end of a test: metrics.json, report.html, the printed table and the W&B per-clip table (rank 0)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lgfn.common.atomic import json_safe, write_json_atomic
from lgfn.results.paper import published
from lgfn.results.report_page import write_report
from lgfn.results.table import format_table


def report_results(results: dict[str, dict], trainer: Any, out: Path, model_name: str, show: bool = True,
                   samples: Mapping[str, Mapping] | None = None) -> None:
    """Write metrics.json and report.html (``lgfn.results.report_page``; ``samples``: ``LitLGFN.test_samples``), print the
    table and log it as a W&B table (rank 0 only)."""
    if not results or not trainer.is_global_zero:
        return
    out.mkdir(parents=True, exist_ok=True)
    # metrics.json holds one dataset (the contract's shape); a datamodule has one test set.
    for i, (name, res) in enumerate(results.items()):
        paper = published(res)
        if paper is not None:
            res["paper"] = paper  # the published LGFN / bicubic numbers of the same clips or groups
        metrics_path = out / ("metrics.json" if i == 0 else f"metrics_{name}.json")
        report_path = out / ("report.html" if i == 0 else f"report_{name}.html")
        write_json_atomic(res, metrics_path)
        # the page shows what metrics.json holds: the same JSON-safe values
        write_report(report_path, json_safe(res), (samples or {}).get(name), model_name)
        if show:
            print("\n" + format_table(res, model_name) + "\n", flush=True)
        print(f"metrics: {shown(metrics_path)}\nreport:  {shown(report_path)}", flush=True)
        for logger in trainer.loggers:
            if type(logger).__name__ == "WandbLogger":
                bic = res["bicubic"]["clips"]
                extra = [k for k in ("temporal_gain", "tof") if k in res["average"]]

                def more(v: Mapping, extra: list[str] = extra) -> list:
                    return [v.get(k) for k in extra]

                rows = [[c, v["frames"], bic[c]["psnr"], bic[c]["ssim"], v["psnr"], v["ssim"], *more(v)]
                        for c, v in res["clips"].items()]
                rows.append(["Average", sum(v["frames"] for v in res["clips"].values()),
                             res["bicubic"]["average"]["psnr"], res["bicubic"]["average"]["ssim"],
                             res["average"]["psnr"], res["average"]["ssim"], *more(res["average"])])
                logger.log_table(key=f"{name}/per_clip", columns=["clip", "frames", "bicubic_psnr", "bicubic_ssim",
                                                                  "psnr", "ssim", *extra], data=rows)


def shown(path: str | Path) -> str:
    """``path`` as printed for the user: relative to the working directory when inside it, else absolute."""
    path = Path(path).absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def print_checkpoints(trainer: Any) -> None:
    """One line at the end of training (rank 0): the folder of the checkpoints and the files in it."""
    if not trainer.is_global_zero:
        return
    folders = []
    for callback in getattr(trainer, "checkpoint_callbacks", None) or []:
        folder = getattr(callback, "dirpath", None)
        if folder and Path(folder) not in folders:
            folders.append(Path(folder))
    for folder in folders:
        files = sorted(p.name for p in folder.glob("*.ckpt")) if folder.is_dir() else []
        if files:
            print(f"checkpoints: {shown(folder)}/ ({', '.join(files)})", flush=True)
        else:
            print(f"checkpoints: none written (to {shown(folder)}/)", flush=True)
