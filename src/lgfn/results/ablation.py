"""The ablation table of a sweep: each variant over its seeds, and its paired difference from ``full``.

``python -m lgfn.results.ablation SWEEP_DIR`` (also run by ``lgfn.results.sweep_summary.SweepSummary`` at the end of a sweep, and so by
``make ablation``) writes ``ablation.md`` and ``ablation.png`` into the sweep directory from the finished jobs'
``metrics.json``:

- per variant (the jobs that differ only in ``seed=``): test PSNR, SSIM and temporal gain as mean ± sample
  standard deviation over the seeds;
- against ``full`` (the reference): the **paired difference** ``PSNR(variant) - PSNR(full)`` for every test
  clip and seed both ran, its mean, and a **95 % Student-t interval** of that mean over the n = clips x seeds
  pairs (:func:`t_interval`). A variant whose interval contains 0 is marked "no measurable difference".

The pairs share a test clip or a trained model, so they are not independent: the interval says how well this
set of clips and seeds pins the difference down, not a guarantee about other data. More seeds narrow it most.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lgfn.common.atomic import atomic_path, write_text_atomic

REFERENCE = "full"
CONFIDENCE = 0.95
METHOD = ("paired differences PSNR(variant) - PSNR(full), one per test clip and seed run by both; their mean "
          "with a 95 % Student-t interval (mean ± t(0.975, n-1) · s / √n over the n = clips × seeds pairs)")


@dataclass
class Job:
    name: str
    experiment: str
    extra: list[str]  # the job's overrides but seed= and experiment=
    seed: Any
    toggles: dict[str, Any]
    clips: dict[str, float]
    average: dict[str, float]
    dataset: str = ""
    started: float | None = None
    ended: float | None = None
    seconds: float | None = None


@dataclass
class Variant:
    name: str
    toggles: dict[str, Any]
    jobs: list[Job] = field(default_factory=list)


# ---------------------------------------------------------------------------- statistics
def t_quantile(p: float, df: int) -> float:
    from scipy.stats import t  # scipy: a dependency of scikit-image / scikit-learn, both required

    return float(t.ppf(p, df))


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; NaN for a single value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return mean, std


def t_interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, low, high): the Student-t interval of the mean of ``values`` (NaN bounds for fewer than 2)."""
    mean, std = mean_std(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = t_quantile(0.5 + confidence / 2, len(values) - 1) * std / math.sqrt(len(values))
    return mean, mean - half, mean + half


def paired_differences(variant: Variant, reference: Variant) -> list[float]:
    """PSNR(variant) - PSNR(reference) for each (seed, clip) both have."""
    ref = {job.seed: job for job in reference.jobs}
    diffs = []
    for job in sorted(variant.jobs, key=lambda j: str(j.seed)):
        other = ref.get(job.seed)
        if other is None:
            continue
        diffs += [job.clips[c] - other.clips[c] for c in sorted(job.clips) if c in other.clips]
    return diffs


# ---------------------------------------------------------------------------- reading a sweep
def _config(job_dir: Path):
    for name in ("config_resolved.yaml", ".hydra/config.yaml"):
        if (job_dir / name).is_file():
            return OmegaConf.load(job_dir / name)
    return None


def load_jobs(sweep_dir: str | Path) -> list[Job]:
    """Every finished job (status ok, with metrics.json) of a sweep."""
    jobs = []
    for job_dir in sorted(p for p in Path(sweep_dir).iterdir() if (p / ".hydra").is_dir()):
        try:
            status = json.loads((job_dir / "status.json").read_text())
            metrics = json.loads((job_dir / "metrics.json").read_text())
        except (OSError, ValueError):
            continue
        cfg = _config(job_dir)
        if status.get("status") != "ok" or cfg is None:
            continue
        overrides = OmegaConf.to_container(OmegaConf.load(job_dir / ".hydra" / "overrides.yaml"))
        rest = sorted(o for o in overrides if not o.lstrip("+~").startswith(("seed=", "experiment=")))
        net = OmegaConf.select(cfg, "model.net", default={}) or {}
        toggles = {k: net.get(k) for k in ("use_dmdcu", "use_lfm", "use_gfm")}
        toggles["centre_only"] = bool(OmegaConf.select(cfg, "data.centre_only", default=False))
        clips = {c: v["psnr"] for c, v in metrics["clips"].items() if isinstance(v.get("psnr"), (int, float))}
        jobs.append(Job(name=job_dir.name, experiment=str(cfg.get("experiment_name")), extra=rest,
                        seed=cfg.get("seed"), toggles=toggles, clips=clips, average=metrics.get("average", {}),
                        dataset=metrics.get("dataset", ""), started=status.get("started"),
                        ended=(job_dir / "status.json").stat().st_mtime, seconds=status.get("seconds")))
    return jobs


def group(jobs: list[Job]) -> list[Variant]:
    """Jobs by variant (the experiment and whatever else but the seed differs between jobs), ``full`` first, then
    in the order of the ablation experiments."""
    common = set.intersection(*(set(j.extra) for j in jobs)) if jobs else set()
    variants: dict[str, Variant] = {}
    for job in jobs:
        name = " ".join([job.experiment, *(o for o in job.extra if o not in common)])
        variants.setdefault(name, Variant(name, job.toggles)).jobs.append(job)
    order = ["full", "ablation_no_dmdcu", "ablation_lfm", "ablation_gfm", "ablation_single_frame"]

    def key(v: Variant) -> tuple:
        head = v.name.split()[0]
        return (order.index(head) if head in order else len(order), v.name)

    return sorted(variants.values(), key=key)


# ---------------------------------------------------------------------------- the table
def summarise(variants: list[Variant], reference: str = REFERENCE) -> list[dict[str, Any]]:
    ref = next((v for v in variants if v.name == reference), None)
    rows = []
    for v in variants:
        row: dict[str, Any] = {"variant": v.name, "toggles": v.toggles, "seeds": sorted(j.seed for j in v.jobs)}
        for key in ("psnr", "ssim", "temporal_gain"):
            values = [j.average[key] for j in v.jobs if isinstance(j.average.get(key), (int, float))]
            row[key] = mean_std(values) if values else (math.nan, math.nan)
        if ref is not None and v is not ref:
            diffs = paired_differences(v, ref)
            row["pairs"] = len(diffs)
            row["diff"] = t_interval(diffs) if diffs else (math.nan, math.nan, math.nan)
            lo, hi = row["diff"][1:]
            if math.isnan(lo):
                row["verdict"] = "too few pairs for an interval"
            elif lo <= 0 <= hi:
                row["verdict"] = "no measurable difference"
            else:
                row["verdict"] = "better than full" if lo > 0 else "worse than full"
        rows.append(row)
    return rows


def _pm(pair: tuple[float, float], nd: int, sign: bool = False) -> str:
    mean, std = pair
    if math.isnan(mean):
        return "-"
    body = f"{mean:+.{nd}f}" if sign else f"{mean:.{nd}f}"
    return body if math.isnan(std) else f"{body} ± {std:.{nd}f}"


def _yes(value: Any) -> str:
    return "-" if value is None else ("yes" if value else "no")


def format_markdown(rows: list[dict[str, Any]], jobs: list[Job], sweep_dir: Path) -> str:
    seeds = sorted({j.seed for j in jobs}, key=str)
    datasets = sorted({j.dataset for j in jobs if j.dataset})
    starts = [j.started for j in jobs if j.started]
    ends = [j.ended for j in jobs if j.ended]
    total = sum(j.seconds for j in jobs if j.seconds)
    lines = [f"# Ablation: {sweep_dir}", "",
             f"Test set: {', '.join(datasets) or '-'} (PSNR/SSIM on Y). {len(jobs)} finished job(s); seeds: "
             f"{', '.join(map(str, seeds))}."]
    if starts and ends:
        wall = max(ends) - min(starts)
        lines.append(f"Wall time: {_duration(wall)} from the first job's start to the last job's end "
                     f"({time.strftime('%Y-%m-%d %H:%M', time.localtime(min(starts)))}); the jobs' own times add up "
                     f"to {_duration(total)}.")
    lines += ["", "| variant | DMDCU | LFM | GFM | frames | seeds | PSNR (dB) | SSIM | temporal gain (dB) | "
              "Δ PSNR vs full (dB) | 95 % interval | pairs | verdict |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r["toggles"]
        if "diff" in r:
            mean, lo, hi = r["diff"]
            diff = "-" if math.isnan(mean) else f"{mean:+.3f}"
            interval = "-" if math.isnan(lo) else f"[{lo:+.3f}, {hi:+.3f}]"
            pairs, verdict = str(r["pairs"]), r["verdict"]
        else:
            diff, interval, pairs = ("(reference)", "", "") if r["variant"] == REFERENCE else ("-", "-", "-")
            verdict = "" if r["variant"] == REFERENCE else "no `full` job to compare with"
        lines.append(f"| {r['variant']} | {_yes(t.get('use_dmdcu'))} | {_yes(t.get('use_lfm'))} | "
                     f"{_yes(t.get('use_gfm'))} | {'centre only' if t.get('centre_only') else 'window'} | "
                     f"{len(r['seeds'])} | {_pm(r['psnr'], 2)} | {_pm(r['ssim'], 4)} | "
                     f"{_pm(r['temporal_gain'], 2, sign=True)} | {diff} | {interval} | {pairs} | {verdict} |")
    lines += ["", "PSNR, SSIM, temporal gain: mean ± sample standard deviation over the seeds (test-set averages). "
              "Temporal gain: PSNR of the real window minus the window with every neighbour replaced by the centre "
              "frame (what the neighbouring frames buy; about 0 for the single-frame variant).",
              f"Δ PSNR and its interval: {METHOD}. The pairs share clips and trained models, so they are not "
              "independent: read the interval as how well these clips and seeds pin the difference down. "
              "An interval containing 0: no measurable difference.", ""]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Bars: PSNR mean ± std per variant; Δ PSNR vs full with its 95 % interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["variant"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.6 * len(rows) + 2.2), squeeze=False)
    left, right = axes[0]
    means = [r["psnr"][0] for r in rows]
    stds = [0.0 if math.isnan(r["psnr"][1]) else r["psnr"][1] for r in rows]
    left.barh(names, means, xerr=stds, color="tab:blue", alpha=0.8, capsize=4)
    finite = [m for m in means if not math.isnan(m)]
    if finite:
        left.set_xlim(min(finite) - 0.5, max(finite) + 0.3)
    left.invert_yaxis()
    left.set_xlabel("test PSNR (dB), mean ± std over seeds")
    diffs = [r.get("diff", (0.0, math.nan, math.nan)) for r in rows]
    centre = [0.0 if math.isnan(d[0]) else d[0] for d in diffs]
    err = [[0.0 if math.isnan(d[1]) else d[0] - d[1] for d in diffs],
           [0.0 if math.isnan(d[2]) else d[2] - d[0] for d in diffs]]
    colours = ["grey" if r.get("verdict", "") in ("no measurable difference", "") else "tab:red" for r in rows]
    right.barh(names, centre, xerr=err, color=colours, alpha=0.8, capsize=4)
    right.axvline(0, color="black", linewidth=0.8)
    from matplotlib.ticker import FormatStrFormatter, MaxNLocator

    right.xaxis.set_major_locator(MaxNLocator(5))
    right.xaxis.set_major_formatter(FormatStrFormatter("%+.3g"))
    right.invert_yaxis()
    right.set_yticklabels([])
    right.set_xlabel("Δ PSNR vs full (dB), 95 % interval (grey: contains 0)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_ablation(sweep_dir: str | Path) -> tuple[Path, Path] | None:
    """Write ablation.md and ablation.png when the sweep has a ``full`` job or a variant with several seeds."""
    sweep_dir = Path(sweep_dir)
    jobs = load_jobs(sweep_dir)
    variants = group(jobs)
    if not variants or not (any(v.name == REFERENCE for v in variants) or any(len(v.jobs) > 1 for v in variants)):
        return None
    rows = summarise(variants)
    md, png = sweep_dir / "ablation.md", sweep_dir / "ablation.png"
    write_text_atomic(format_markdown(rows, jobs, sweep_dir), md)
    with atomic_path(png) as tmp_png:
        plot(rows, tmp_png)
    return md, png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lgfn.results.ablation", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    args = parser.parse_args(argv)
    written = write_ablation(args.sweep_dir)
    if written is None:
        print(f"{args.sweep_dir}: no finished `full` job and no variant with several seeds: nothing to tabulate")
        return 1
    print(written[0].read_text())
    print(f"written: {written[0]}, {written[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
