"""The paper's published 4x results (PSNR/SSIM on Y), LGFN and bicubic: the one place they live.

Source: "Local-Global Fusion Network for Video Super-Resolution" (IEEE Access, 2020), as published in the
result tables of the authors' repository BIOINSu/LGFN (``imgs/quantitative_vid4.png``,
``quantitative_spmcs_all.png``, ``quantitative_spmcs_part.png``, ``quantitative_vimeo90k.png``), BI
degradation. Their protocol is this project's default: Y of BT.601 on the 8-bit rounded output, no border
crop, the first and last frame of each Vid4 / SPMCS clip skipped, Vimeo-90K-T scored on im4 only.

``published(result)`` picks the rows that belong to an evaluation result (``result["dataset"]``, its clips
and groups); ``eval.py`` puts them into ``metrics.json`` as ``"paper"`` and the table prints them beside the
measured numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SOURCE = "LGFN (IEEE Access 2020), the result tables in the authors' repository BIOINSu/LGFN"
METHODS = ("LGFN", "Bicubic")


def _row(lgfn: tuple[float, float], bicubic: tuple[float, float]) -> dict[str, dict[str, float]]:
    return {"LGFN": {"psnr": lgfn[0], "ssim": lgfn[1]}, "Bicubic": {"psnr": bicubic[0], "ssim": bicubic[1]}}


# Vid4: per clip, and "Average" = the mean of the 4 clip means.
VID4 = {
    "clips": {
        "calendar": _row((24.11, 0.8131), (20.39, 0.5720)),
        "city": _row((27.88, 0.8099), (25.17, 0.6024)),
        "foliage": _row((26.32, 0.7626), (23.47, 0.5666)),
        "walk": _row((30.93, 0.9137), (26.11, 0.7977)),
    },
    "average": _row((27.31, 0.8248), (23.79, 0.6347)),
    "average_of": "the 4 clips (mean of clip means)",
}

# SPMCS: "all" = the mean over every restored frame of the full set (30 clips); the release's 8-clip subset
# per clip, with its own published average. That average is not the mean of the eight clip rows (30.68 dB
# for LGFN, 26.28 dB bicubic); the published values are kept as printed.
SPMCS_SUBSET = ("car05_001", "hitachi_isee5_001", "hk004_001", "HKVTG_004", "jvc_009_001", "NYVTG_006",
                "PRVTG_012", "veni5_015")
SPMCS_FULL_CLIPS = 30
SPMCS = {
    "clips": {
        "car05_001": _row((32.19, 0.9090), (27.75, 0.7825)),
        "hitachi_isee5_001": _row((26.58, 0.9085), (19.61, 0.5938)),
        "hk004_001": _row((33.42, 0.9034), (28.54, 0.8003)),
        "HKVTG_004": _row((29.54, 0.7985), (27.46, 0.6831)),
        "jvc_009_001": _row((30.52, 0.9175), (25.40, 0.7558)),
        "NYVTG_006": _row((33.27, 0.9250), (28.45, 0.8014)),
        "PRVTG_012": _row((27.67, 0.8269), (25.63, 0.7136)),
        "veni5_015": _row((32.26, 0.9413), (27.41, 0.8483)),
    },
    "average_all": _row((31.76, 0.8872), (27.15, 0.7512)),
    "average_subset": _row((30.34, 0.8792), (26.10, 0.7351)),
}

# Vimeo-90K-T: per motion group (slow 1616, medium 4983, fast 1225 clips) and the mean over all 7824 clips.
VIMEO90K_T_CLIPS = 7824
VIMEO90K_T = {
    "groups": {
        "slow": _row((34.42, 0.9237), (29.34, 0.8330)),
        "medium": _row((37.64, 0.9512), (31.29, 0.8708)),
        "fast": _row((40.50, 0.9634), (34.07, 0.9050)),
    },
    "average": _row((37.42, 0.9473), (31.32, 0.8684)),
    "average_of": f"all {VIMEO90K_T_CLIPS} clips (mean of clip values)",
}

# result["dataset"] -> the published table.
TABLES: dict[str, dict[str, Any]] = {"vid4": VID4, "spmcs": SPMCS, "vimeo90k_t": VIMEO90K_T, "vimeo90k": VIMEO90K_T}


def _lookup(rows: Mapping[str, Any], name: str) -> Any:
    """Clip / group names compared without case (datasets spell e.g. ``hkvtg_004`` differently)."""
    low = {k.lower(): v for k, v in rows.items()}
    return low.get(str(name).lower())


def published(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """The paper's rows for an evaluation result (None for datasets the paper has no table of).

    ``{"source", "table", "clips": {clip: {"LGFN": {psnr, ssim}, "Bicubic": {...}}}, "groups": {...},
    "average": {...} | None, "average_of"}``: clips and groups are those of ``result`` that the paper lists;
    ``average`` is given only when the result covers the same clip set as the published average (all Vid4
    clips; the SPMCS subset or the full 30 clips; Vimeo-90K-T at any size, its lists differ slightly between
    copies, with a note when the count is not 7824).
    """
    name = str(result.get("dataset", ""))
    table = TABLES.get(name)
    if table is None:
        return None
    clips = list(result.get("clips", {}))
    out: dict[str, Any] = {"source": SOURCE, "table": name, "clips": {}, "groups": {}, "average": None}
    for clip in clips:
        row = _lookup(table.get("clips", {}), clip)
        if row is not None:
            out["clips"][clip] = row
    for group in result.get("groups", {}) or {}:
        row = _lookup(table.get("groups", {}), group)
        if row is not None:
            out["groups"][group] = row
    lowered = {c.lower() for c in clips}
    if table is VID4:
        if lowered == {c.lower() for c in VID4["clips"]}:
            out["average"], out["average_of"] = VID4["average"], VID4["average_of"]
    elif table is SPMCS:
        if lowered == {c.lower() for c in SPMCS_SUBSET}:
            out["average"], out["average_of"] = SPMCS["average_subset"], "the release's 8-clip subset"
        elif len(clips) == SPMCS_FULL_CLIPS:
            out["average"], out["average_of"] = SPMCS["average_all"], "all 30 clips (mean over all frames)"
    else:
        out["average"], out["average_of"] = VIMEO90K_T["average"], VIMEO90K_T["average_of"]
        if len(clips) != VIMEO90K_T_CLIPS:
            out["note"] = f"the paper's average is over {VIMEO90K_T_CLIPS} clips; this result has {len(clips)}"
    if out["average"] is None:
        out["average_of"] = None
        out["note"] = (f"no published average for this clip set ({len(clips)} clips): the paper averages "
                       + ("all 4 Vid4 clips" if table is VID4 else f"the 8-clip subset or all {SPMCS_FULL_CLIPS} clips"))
    return out


__all__ = ["METHODS", "SOURCE", "SPMCS", "SPMCS_SUBSET", "TABLES", "VID4", "VIMEO90K_T", "published"]
