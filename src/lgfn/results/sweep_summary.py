"""The end of a sweep: one table of every job's test metrics (summary.csv in the sweep dir, and W&B)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from lgfn.cluster.ddp import process_rank
from lgfn.common.atomic import atomic_path
from lgfn.results.ablation import write_ablation

COLUMNS = ["job", "overrides", "status", "dataset", "psnr", "ssim", "temporal_gain", "psnr_bicubic", "ssim_bicubic",
           "error"]


def _job_num(job: Path) -> int:
    """The job's number in the launch that last ran it (from .hydra/hydra.yaml), for ordering rows."""
    try:
        return int(OmegaConf.select(OmegaConf.load(job / ".hydra" / "hydra.yaml"), "hydra.job.num", default=1 << 30))
    except Exception:  # noqa: BLE001 - an unreadable record: last
        return 1 << 30


def collect(sweep_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """One row per job directory of a sweep (every job any run of the sweep started), from its metrics.json /
    status.json / overrides. A job still marked ``running`` when this runs (after the launch) was interrupted."""
    rows = []
    job_dirs = [d for d in Path(sweep_dir).iterdir() if d.is_dir() and (d / ".hydra").is_dir()]
    for job in sorted(job_dirs, key=lambda d: (_job_num(d), d.name)):
        overrides_file = job / ".hydra" / "overrides.yaml"
        overrides = OmegaConf.to_container(OmegaConf.load(overrides_file)) if overrides_file.exists() else []
        row: dict[str, Any] = {"job": job.name, "overrides": " ".join(overrides), "status": "unknown"}
        status_file, metrics_file = job / "status.json", job / "metrics.json"
        if status_file.exists():
            try:
                status = json.loads(status_file.read_text())
            except ValueError:
                status = {"status": "unknown", "error": "unreadable status.json"}
            row["status"] = status.get("status", "unknown")
            if row["status"] == "running":
                row["status"] = "interrupted"
            row["error"] = status.get("error", "")
        if metrics_file.exists():
            m = json.loads(metrics_file.read_text())
            row.update(dataset=m.get("dataset"), psnr=m["average"]["psnr"], ssim=m["average"]["ssim"],
                       temporal_gain=m["average"].get("temporal_gain"),
                       psnr_bicubic=m.get("bicubic", {}).get("average", {}).get("psnr"),
                       ssim_bicubic=m.get("bicubic", {}).get("average", {}).get("ssim"))
            if row["status"] == "unknown":
                row["status"] = "ok"
        rows.append(row)
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    def num(v: Any, nd: int) -> str:
        return f"{v:.{nd}f}" if isinstance(v, (int, float)) else "-"

    def gain(v: Any) -> str:
        return f"{v:+.2f}" if isinstance(v, (int, float)) else "-"

    lines = ["| job | overrides | status | PSNR | SSIM | temporal gain (dB) | bicubic PSNR |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['job']} | {r['overrides']} | {r['status']} | {num(r.get('psnr'), 2)} | "
                     f"{num(r.get('ssim'), 4)} | {gain(r.get('temporal_gain'))} | {num(r.get('psnr_bicubic'), 2)} |")
    return "\n".join(lines)


def write_summary(sweep_dir: str | os.PathLike) -> Path:
    rows = collect(sweep_dir)
    path = Path(sweep_dir) / "summary.csv"
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


class SweepSummary(Callback):
    """Hydra callback: after a multirun, write summary.csv, print it, and log it as a W&B table."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        if process_rank() != 0:  # under srun every rank runs the sweep: global rank 0 alone writes and reports it
            return
        path = write_summary(sweep_dir)
        rows = collect(sweep_dir)
        failed = [r["job"] for r in rows if r["status"] != "ok"]
        print(f"\nSweep summary ({path}):\n{format_rows(rows)}", flush=True)
        if failed:
            print(f"{len(failed)} of {len(rows)} job(s) failed: {', '.join(failed)} (see their status.json)", flush=True)
        try:
            written = write_ablation(sweep_dir)
        except Exception as e:  # noqa: BLE001 - summary.csv is the record; the ablation table is derived from it
            print(f"ablation table not written: {type(e).__name__}: {e}", flush=True)
            written = None
        if written is not None:
            print(f"\nAblation ({written[0]}, {written[1].name}):\n{written[0].read_text()}", flush=True)
        if "wandb" in (config.get("logger") or {}):
            self._log_wandb(config, rows, sweep_dir)

    @staticmethod
    def _log_wandb(config: DictConfig, rows: list[dict[str, Any]], sweep_dir: Path) -> None:
        try:
            import wandb

            run = wandb.init(project=config.logger.wandb.get("project", "lgfn"), dir=str(sweep_dir),
                             group="sweep-" + sweep_dir.name, job_type="sweep_summary",
                             name=f"summary-{sweep_dir.name}", mode=os.environ.get("WANDB_MODE", "offline"),
                             reinit=True)
            run.log({"sweep/summary": wandb.Table(columns=COLUMNS, data=[[r.get(c) for c in COLUMNS] for r in rows])})
            run.finish()
        except Exception as e:  # the CSV is the record; W&B is a convenience
            print(f"W&B sweep summary not logged: {e}", flush=True)
