"""The results table in the layout of the paper's tables: clip rows, bicubic and the model side by side."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from omegaconf import DictConfig

from lgfn.results.paper import published


def model_label(model: Any, cfg: DictConfig) -> str:
    """The model column's title: the network's class, and the experiment when there is one."""
    name = type(model.net).__name__
    return name if cfg.experiment_name in ("default", "eval") else f"{name} ({cfg.experiment_name})"


# More clips than this (Vimeo-90K-T has 7824) are summarised in one line; metrics.json has every clip.
MAX_CLIP_ROWS = 60


def _cell(d: Mapping | None) -> str:
    if not d or d.get("psnr") is None:
        return "-"
    return f"{d['psnr']:.2f}/{d['ssim']:.4f}"


def _diff(measured: Mapping | None, paper: Mapping | None) -> str:
    if not measured or not paper or measured.get("psnr") is None or not math.isfinite(measured["psnr"]):
        return "-"
    return f"{measured['psnr'] - paper['psnr']:+.2f}/{measured['ssim'] - paper['ssim']:+.4f}"


def _gain(d: Mapping | None) -> str:
    value = (d or {}).get("temporal_gain")
    return "-" if value is None or not math.isfinite(value) else f"{value:+.2f}"


def _tof(d: Mapping | None) -> str:
    value = (d or {}).get("tof")
    return "-" if value is None or not math.isfinite(value) else f"{value:.3f}"


def format_table(result: dict, model_name: str = "LGFN", paper: dict | None = None) -> str:
    """The per-clip table in the layout of the paper's tables: clip rows, bicubic and the model side by side.

    On Vid4, SPMCS and Vimeo-90K-T the paper's published numbers (``lgfn.results.paper``; ``result["paper"]`` when
    present) sit beside the measured ones, with the difference measured - paper. A ``gain`` column shows
    ``temporal_gain`` (dB, what the neighbouring frames buy) when the result has it. A bicubic model gets
    one column (its own numbers are the bicubic baseline).
    """
    clips = result["clips"]
    bic = result.get("bicubic", {})
    if paper is None:
        paper = result.get("paper") or published(result)
    baseline_only = model_name == "Bicubic" or model_name.startswith("Bicubic ")
    # baselines=[bicubic,basicvsr] (lgfn.app.baselines): a column per baseline, and with them the gain and tOF
    # columns come per model. The bicubic baseline is the Bicubic column itself.
    base = {n: b for n, b in (result.get("baselines") or {}).items() if not (baseline_only and n == "bicubic")}
    others = [n for n in base if n != "bicubic"]
    labels = {n: str(b.get("model", n)) for n, b in base.items()}
    rows_with_gain = [*clips.values(), result.get("average", {}), *result.get("groups", {}).values()]
    show_gain = any("temporal_gain" in (v or {}) for v in rows_with_gain)
    show_tof = any("tof" in (v or {}) for v in rows_with_gain)
    base_gain = [n for n in base if "temporal_gain" in (base[n].get("average") or {})]
    base_tof = [n for n in base if "tof" in (base[n].get("average") or {})]

    # Each row: (name, frames, measured bicubic, measured model, published row, where in metrics.json).
    rows: list[tuple] = []
    paper_clips = (paper or {}).get("clips", {})
    for clip, vals in clips.items():
        rows.append((clip, str(vals.get("frames", "")), bic.get("clips", {}).get(clip), vals, paper_clips.get(clip),
                     ("clips", clip)))
    frames = sum(v.get("frames", 0) for v in clips.values())
    average = ("Average", str(frames), bic.get("average"), result["average"], (paper or {}).get("average"),
               ("average",))
    groups = [(g, "", bic.get("groups", {}).get(g), vals, (paper or {}).get("groups", {}).get(g), ("groups", g))
              for g, vals in result.get("groups", {}).items()]

    def baseline(r: tuple, name: str) -> Mapping | None:
        section = base[name]
        return section.get("average") if r[5][0] == "average" else (section.get(r[5][0]) or {}).get(r[5][1])

    width = max([len("Average"), *(len(r[0]) for r in (*rows, *groups))])
    model_w = max(15, len(model_name))
    # (title, width, cell of a row)
    columns: list[tuple[str, int, Callable]] = [("clip", -width, lambda r: r[0]), ("frames", 6, lambda r: r[1])]
    if baseline_only:
        columns.append(("Bicubic", 15, lambda r: _cell(r[3])))
        if paper:
            columns += [("paper Bicubic", 13, lambda r: _cell((r[4] or {}).get("Bicubic"))),
                        ("diff", 14, lambda r: _diff(r[3], (r[4] or {}).get("Bicubic")))]
    else:
        columns.append(("Bicubic", 15, lambda r: _cell(r[2])))
        if paper:
            columns += [("paper Bicubic", 13, lambda r: _cell((r[4] or {}).get("Bicubic"))),
                        ("diff", 14, lambda r: _diff(r[2], (r[4] or {}).get("Bicubic")))]
    baseline_columns = [(labels[n], max(15, len(labels[n])), lambda r, n=n: _cell(baseline(r, n))) for n in others]
    if baseline_only:
        columns += baseline_columns
    else:
        columns += baseline_columns
        columns.append((model_name, model_w, lambda r: _cell(r[3])))
        if paper:
            columns += [("paper LGFN", 13, lambda r: _cell((r[4] or {}).get("LGFN"))),
                        ("diff", 14, lambda r: _diff(r[3], (r[4] or {}).get("LGFN")))]
    if base:
        for n in base_gain:
            columns.append((f"gain {labels[n]}", max(6, len(labels[n]) + 5), lambda r, n=n: _gain(baseline(r, n))))
        if show_gain:
            columns.append((f"gain {model_name}", max(6, len(model_name) + 5), lambda r: _gain(r[3])))
        for n in base_tof:
            columns.append((f"tOF {labels[n]}", max(6, len(labels[n]) + 4), lambda r, n=n: _tof(baseline(r, n))))
        if show_tof:
            columns.append((f"tOF {model_name}", max(6, len(model_name) + 4), lambda r: _tof(r[3])))
        show_gain, show_tof = show_gain or bool(base_gain), show_tof or bool(base_tof)
    else:
        if show_gain:
            columns.append(("gain", 6, lambda r: _gain(r[3])))
        if show_tof:
            columns.append(("tOF", 6, lambda r: _tof(r[3])))

    def line(cells: list[str]) -> str:
        return " | ".join(f"{c:<{-w}}" if w < 0 else f"{c:>{w}}" for c, (_, w, _) in zip(cells, columns, strict=True))

    def row_line(r: tuple) -> str:
        return line([fn(r) for _, _, fn in columns])

    head = line([title for title, _, _ in columns])
    lines = [
        f"{result['dataset']}: PSNR/SSIM on Y (BT.601), border crop {result.get('crop_border', 0)}, "
        f"average over {'clips (each clip counts equally)' if result.get('average_mode') == 'clip' else 'all frames'}",
        head,
        "-" * len(head),
    ]
    if len(rows) > MAX_CLIP_ROWS:
        lines.append(f"({len(rows)} clips: the per-clip values are in metrics.json)")
    else:
        lines += [row_line(r) for r in rows]
    lines.append("-" * len(head))
    lines.append(row_line(average))
    lines += [row_line(g) for g in groups]
    if paper:
        lines.append(f"paper: {paper.get('source', '')}; diff = measured - paper"
                     + (f"; paper average over {paper['average_of']}" if paper.get("average_of") else ""))
        if paper.get("note"):
            lines.append(f"paper: {paper['note']}")
    if show_gain:
        lines.append("gain: temporal gain, dB (the real window minus the window with every neighbour replaced by "
                     "the centre frame)")
    if show_tof:
        bic_tof = (bic.get("average") or {}).get("tof")
        ref = "" if baseline_only or bic_tof is None or not math.isfinite(bic_tof) else f"; bicubic {bic_tof:.3f}"
        lines.append("tOF: temporal consistency, px, lower is better (TecoGAN: mean |flow(output) - flow(GT)| of "
                     f"consecutive frames{ref})")
    return "\n".join(lines)


