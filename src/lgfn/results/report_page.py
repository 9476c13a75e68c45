"""Results people can look at: ``report.html`` beside ``metrics.json``, (the page of ``lgfn-upscale --compare-out`` too).

``write_report(path, result, samples, model_name)`` writes one self-contained page (no network: images are
embedded as PNG data URIs, plots are inline SVG, the little JavaScript is inline):

- the per-clip table exactly as ``metrics.json`` has it: bicubic, the model, the paper's numbers where
  ``result["paper"]`` has them, ``temporal_gain`` and ``tof`` (bicubic and model); every number cell carries
  its place in ``metrics.json`` (``data-path``, a JSON list of keys) and its full value (``data-value``);
- per clip, the per-frame PSNR-Y of the model and bicubic (and per-frame tOF) as SVG plots;
- per clip with a sample (``LitLGFN.test_samples``), a before/after comparison of one frame's crop: two of
  LR (nearest-upscaled), bicubic, the model and GT under a slider, chosen with two menus (a swap button and
  the arrow keys on the slider too), with the four crops side by side below it.

``write_upscale_report`` is the same page for ``lgfn-upscale --compare N --compare-out page.html``: a user's
own video has no ground truth, so it holds the comparison (LR, bicubic, the model) and what was run.
(The same pictures for W&B and TensorBoard: ``lgfn.training.media``.)
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lgfn.common.atomic import write_text_atomic
from lgfn.training.media import KINDS, LABELS


# ---------------------------------------------------------------------------- formatting
def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _get(obj: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(obj, Mapping) or key not in obj:
            return None
        obj = obj[key]
    return obj


FORMATS = {"psnr": "{:.2f}", "ssim": "{:.4f}", "temporal_gain": "{:+.2f}", "tof": "{:.3f}"}


def _num_cell(result: Mapping[str, Any], path: list[str]) -> str:
    value = _get(result, path)
    if not _finite(value):
        return '<td class="num na">-</td>'
    text = FORMATS.get(path[-1], "{:.4g}").format(value)
    return (f'<td class="num" data-path="{html.escape(json.dumps(path))}" data-value="{value!r}">'
            f"{html.escape(text)}</td>")


def png_data_uri(img: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.asarray(img, dtype=np.uint8))).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def svg_plot(xs: Sequence[float], series: Mapping[str, Sequence[float]], ylabel: str, fmt: str = "{:.2f}",
             width: int = 560, height: int = 200) -> str:
    """An inline SVG line plot (points with hover titles; non-finite values leave gaps) in a ``figure``, with its
    legend below it in HTML: the legend wraps to the figure's width, so any series name fits at any page width
    (inside the SVG's fixed viewBox a long name would be cut)."""
    left, right, top, bottom = 56, 20, 10, 34
    pts = [v for ys in series.values() for v in ys if _finite(v)]
    if not pts or len(xs) < 2:
        return ""
    lo, hi = min(pts), max(pts)
    pad = (hi - lo) * 0.08 or max(abs(hi) * 0.01, 0.01)
    lo, hi = lo - pad, hi + pad
    x0, x1 = min(xs), max(xs)
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / ((x1 - x0) or 1) * pw

    def sy(y: float) -> float:
        return top + (hi - y) / (hi - lo) * ph

    out = [f'<figure class="plot" style="width:{width}px">',
           f'<svg class="plot" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}">',
           f"<title>{html.escape(ylabel)} per frame</title>",
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="frame"/>']
    for t in _nice_ticks(lo, hi, 4):
        y = sy(t)
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{html.escape(fmt.format(t))}</text>')
    for t in _nice_ticks(x0, x1, min(10, max(1, int(x1 - x0)))):
        if abs(t - round(t)) > 1e-9:
            continue
        x = sx(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + ph}" y2="{top + ph + 4}" class="axis"/>'
                   f'<text x="{x:.1f}" y="{top + ph + 16}" text-anchor="middle">{int(round(t))}</text>')
    out.append(f'<text x="{left + pw / 2:.1f}" y="{height - 3}" text-anchor="middle">frame</text>'
               f'<text x="12" y="{top + ph / 2:.1f}" text-anchor="middle" '
               f'transform="rotate(-90 12 {top + ph / 2:.1f})">{html.escape(ylabel)}</text>')
    for i, (label, ys) in enumerate(series.items()):
        cls = f"s{i}"
        runs: list[list[str]] = [[]]
        dots = []
        for x, y in zip(xs, ys, strict=True):
            if not _finite(y):
                runs.append([])
                continue
            runs[-1].append(f"{sx(x):.1f},{sy(y):.1f}")
            dots.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" class="{cls}">'
                        f"<title>{html.escape(label)}, frame {x}: {html.escape(fmt.format(y))}</title></circle>")
        out += [f'<polyline points="{" ".join(r)}" class="{cls}"/>' for r in runs if len(r) > 1]
        out += dots
    out.append("</svg>")
    keys = "".join(f'<span class="key"><i class="swatch s{i}"></i>{html.escape(label)}</span>'
                   for i, label in enumerate(series))
    out.append(f'<figcaption class="legend" style="margin-left:{100 * left / width:.2f}%">{keys}</figcaption>'
               "</figure>")
    return "".join(out)


# ---------------------------------------------------------------------------- the page
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1180px;
 padding:0 16px;color:#1d2733;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px}h3{font-size:16px;margin:0 0 6px}
.sub{color:#5a6775;margin:0 0 16px}
table.metrics{border-collapse:collapse;font-variant-numeric:tabular-nums;margin:8px 0}
table.metrics th,table.metrics td{border-bottom:1px solid #dde3ea;padding:3px 9px;text-align:right;white-space:nowrap}
table.metrics th{background:#f3f6f9;font-weight:600}table.metrics th.grp{text-align:center;border-left:2px solid #fff}
table.metrics td.name,table.metrics th.name{text-align:left}table.metrics tr.avg td{font-weight:600;border-top:2px solid #9aa8b6}
table.metrics td.na{color:#9aa8b6}.tablewrap{overflow-x:auto}
dl.defs{color:#3b4856;font-size:13px}dl.defs dt{font-weight:600;margin-top:6px}dl.defs dd{margin:0 0 0 14px}
section.clip{border-top:1px solid #dde3ea;padding:14px 0}
.plots{display:flex;flex-wrap:wrap;gap:8px}
figure.plot{margin:0;max-width:100%}
svg.plot{display:block;font:11px sans-serif;fill:#3b4856;width:100%;height:auto}
figure.plot .legend{display:flex;flex-wrap:wrap;gap:2px 14px;font:12px sans-serif;color:#3b4856;margin-top:2px}
figure.plot .key{min-width:0;max-width:100%;overflow-wrap:anywhere}
figure.plot .swatch{display:inline-block;width:18px;height:0;border-top:2px solid;vertical-align:middle;
 margin-right:5px}figure.plot .swatch.s0{border-color:#d9480f}figure.plot .swatch.s1{border-color:#1c7ed6}
h1,.sub,h3{overflow-wrap:anywhere}
.cmp .controls label{max-width:100%}.cmp select{max-width:calc(100vw - 110px)}
.cmp .tag{max-width:42%;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.thumbs figure{min-width:0;max-width:100%}.thumbs figcaption{overflow-wrap:anywhere}
svg.plot .frame{fill:#fbfcfd;stroke:#c5cfd9}svg.plot .grid{stroke:#e6ebf0}svg.plot .axis{stroke:#9aa8b6}
svg.plot polyline,svg.plot line.s0,svg.plot line.s1{fill:none;stroke-width:2}
svg.plot .s0{stroke:#d9480f;fill:#d9480f}svg.plot .s1{stroke:#1c7ed6;fill:#1c7ed6}
svg.plot polyline.s0,svg.plot polyline.s1{fill:none}
.cmp .controls{margin:6px 0;display:flex;gap:10px;align-items:center;flex-wrap:wrap}
.cmp .stage{position:relative;max-width:100%;user-select:none;background:#eee;touch-action:none}
.cmp .stage img{position:absolute;left:0;top:0;width:100%;height:100%;image-rendering:pixelated}
.cmp .divider{position:absolute;top:0;bottom:0;width:2px;margin-left:-1px;background:#fff;
 box-shadow:0 0 0 1px rgba(0,0,0,.45);pointer-events:none}
.cmp .tag{position:absolute;top:6px;padding:1px 6px;background:rgba(0,0,0,.6);color:#fff;font-size:12px;
 border-radius:3px;pointer-events:none}.cmp .tag.l{left:6px}.cmp .tag.r{right:6px}
.cmp input.split{display:block;margin:6px 0}
.thumbs{display:flex;gap:6px;flex-wrap:wrap;margin-top:8px}.thumbs figure{margin:0}
.thumbs img{display:block;image-rendering:pixelated;border:1px solid #dde3ea;cursor:pointer}
.thumbs figcaption{font-size:12px;color:#5a6775;text-align:center}
.muted{color:#5a6775;font-size:13px}
"""

# Plain JavaScript: the comparison slider. No libraries, nothing loaded from anywhere.
SCRIPT = """
(function () {
  document.querySelectorAll('.cmp').forEach(function (cmp) {
    var src = {};
    cmp.querySelectorAll('img.thumb').forEach(function (t) { src[t.dataset.kind] = t; });
    var under = cmp.querySelector('img.under'), over = cmp.querySelector('img.over');
    var left = cmp.querySelector('select.left'), right = cmp.querySelector('select.right');
    var split = cmp.querySelector('input.split'), divider = cmp.querySelector('.divider');
    var tagL = cmp.querySelector('.tag.l'), tagR = cmp.querySelector('.tag.r');
    var stage = cmp.querySelector('.stage');
    function label(sel) { return sel.options[sel.selectedIndex].text; }
    function show() {
      over.src = src[left.value].src; under.src = src[right.value].src;
      var p = Number(split.value);
      over.style.clipPath = 'inset(0 ' + (100 - p) + '% 0 0)';
      divider.style.left = p + '%';
      tagL.textContent = label(left); tagR.textContent = label(right);
    }
    function drag(e) {
      var r = stage.getBoundingClientRect();
      split.value = Math.round(Math.max(0, Math.min(1, (e.clientX - r.left) / r.width)) * 100);
      show();
    }
    stage.addEventListener('pointerdown', function (e) {
      stage.setPointerCapture(e.pointerId); drag(e);
      stage.onpointermove = drag;
    });
    stage.addEventListener('pointerup', function () { stage.onpointermove = null; });
    cmp.querySelector('button.swap').addEventListener('click', function () {
      var l = left.value; left.value = right.value; right.value = l; show();
    });
    cmp.querySelectorAll('img.thumb').forEach(function (t) {
      t.addEventListener('click', function () { right.value = t.dataset.kind; show(); });
    });
    [left, right, split].forEach(function (el) { el.addEventListener('input', show); });
    show();
  });
})();
"""


def _comparison(sample: Mapping[str, Any], model_name: str, uid: str) -> str:
    labels = {**LABELS, "sr": model_name}
    images: dict[str, Any] = {}
    for k in KINDS:
        if k == "sr":  # baselines=[...] (lgfn.app.baselines): their crops of the same frame, before the model's
            for i, (label, crop) in enumerate((sample.get("baselines") or {}).items()):
                images[f"baseline{i}"], labels[f"baseline{i}"] = crop, str(label)
        if k in sample:
            images[k] = sample[k]
    kinds = list(images)
    first = np.asarray(images[kinds[0]])
    h, w = first.shape[:2]
    zoom = max(1, min(4, 384 // max(w, 1)))  # small crops shown at 2-4x, pixels kept sharp
    default_left, default_right = "bicubic", "sr"

    def options(selected: str) -> str:
        return "".join(f'<option value="{k}"{" selected" if k == selected else ""}>{html.escape(labels[k])}</option>'
                       for k in kinds)

    thumbs = "".join(
        f'<figure><img class="thumb" data-kind="{k}" alt="{html.escape(labels[k])}" width="{w}" height="{h}" '
        f'src="{png_data_uri(images[k])}"><figcaption>{html.escape(labels[k])}</figcaption></figure>'
        for k in kinds
    )
    where = ""
    if "box" in sample:
        top, left, ch, cw = sample["box"]
        where = f" (crop {cw}x{ch} at x={left}, y={top}, HR pixels)"
    return (
        f'<div class="cmp" id="cmp-{uid}">'
        f'<p class="muted">Frame {html.escape(str(sample.get("frame", "")))}{where}: drag on the image or the '
        f"slider; the left image shows left of the line.</p>"
        f'<div class="controls"><label>left <select class="left">{options(default_left)}</select></label>'
        f'<label>right <select class="right">{options(default_right)}</select></label>'
        f'<button type="button" class="swap">swap</button></div>'
        f'<div class="stage" style="width:{w * zoom}px;aspect-ratio:{w}/{h}">'
        f'<img class="under" alt="right image" src=""><img class="over" alt="left image" src="">'
        f'<div class="divider"></div><span class="tag l"></span><span class="tag r"></span></div>'
        f'<input class="split" type="range" min="0" max="100" value="50" aria-label="split position" '
        f'style="width:{w * zoom}px;max-width:100%">'
        f'<div class="thumbs">{thumbs}</div></div>'
    )


def _table(result: Mapping[str, Any], model_name: str) -> str:
    """The per-clip table: one cell per number of metrics.json, each tagged with its path."""
    paper = result.get("paper") or {}
    baseline_only = model_name == "Bicubic" or model_name.startswith("Bicubic ")
    has = {key: any(key in (v or {}) for v in [*result["clips"].values(), result.get("average", {})])
           for key in ("temporal_gain", "tof")}
    bic_tof = any("tof" in (v or {}) for v in (result.get("bicubic", {}).get("clips") or {}).values())

    # (group title, [(column title, path maker(section, name) -> path | None)])
    groups: list[tuple[str, list[tuple[str, Any]]]] = []

    def row_path(section: str, name: str, *tail: str) -> list[str]:
        return [section, *tail] if section == "average" else [section, name, *tail]

    if not baseline_only:
        groups.append(("Bicubic", [(m.upper(), lambda s, n, m=m: ["bicubic", *row_path(s, n, m)])
                                   for m in ("psnr", "ssim")]))
        if paper:
            groups.append(("paper Bicubic", [(m.upper(), lambda s, n, m=m: ["paper", *row_path(s, n, "Bicubic", m)])
                                             for m in ("psnr", "ssim")]))
    # baselines=[bicubic,basicvsr] (lgfn.app.baselines): a column group per baseline before the model's (the
    # bicubic baseline is the Bicubic group), and the gain and tOF columns per model.
    base = {b: v for b, v in (result.get("baselines") or {}).items() if not (baseline_only and b == "bicubic")}
    blabel = {b: str(v.get("model", b)) for b, v in base.items()}
    for b in base:
        if b != "bicubic":
            groups.append((blabel[b], [(m.upper(), lambda s, n, m=m, b=b: ["baselines", b, *row_path(s, n, m)])
                                       for m in ("psnr", "ssim")]))
    groups.append((model_name, [(m.upper(), lambda s, n, m=m: row_path(s, n, m)) for m in ("psnr", "ssim")]))
    if paper:
        method = "Bicubic" if baseline_only else "LGFN"
        groups.append((f"paper {method}", [(m.upper(), lambda s, n, m=m, method=method:
                                            ["paper", *row_path(s, n, method, m)]) for m in ("psnr", "ssim")]))
    extra = []
    if base:
        for key, title in (("temporal_gain", "gain (dB)"), ("tof", "tOF")):
            for b in base:
                if key in (base[b].get("average") or {}):
                    extra.append((f"{title} {blabel[b]}", lambda s, n, b=b, key=key:
                                  ["baselines", b, *row_path(s, n, key)]))
            if has[key]:
                extra.append((f"{title} {model_name}", lambda s, n, key=key: row_path(s, n, key)))
    elif has["temporal_gain"]:
        extra.append(("gain (dB)", lambda s, n: row_path(s, n, "temporal_gain")))
    if has["tof"] and not base:
        if bic_tof and not baseline_only:
            extra.append(("tOF bicubic", lambda s, n: ["bicubic", *row_path(s, n, "tof")]))
        extra.append((f"tOF {model_name}" if not baseline_only else "tOF", lambda s, n: row_path(s, n, "tof")))
    if extra:
        groups.append(("temporal", extra))

    head1 = '<th class="name" rowspan="2">clip</th><th rowspan="2">frames</th>' + "".join(
        f'<th class="grp" colspan="{len(cols)}">{html.escape(title)}</th>' for title, cols in groups)
    head2 = "".join(f"<th>{html.escape(c)}</th>" for _, cols in groups for c, _ in cols)

    def row(section: str, name: str, label: str, frames: Any, cls: str = "") -> str:
        cells = [f'<td class="name">{html.escape(label)}</td>',
                 f'<td class="num">{html.escape(str(frames)) if frames not in (None, "") else ""}</td>']
        for _, cols in groups:
            for _, path in cols:
                cells.append(_num_cell(result, path(section, name)))
        return f'<tr class="{cls}" data-row="{html.escape(json.dumps([section, name]))}">{"".join(cells)}</tr>'

    rows = [row("clips", c, c, v.get("frames", "")) for c, v in result["clips"].items()]
    total = sum(v.get("frames", 0) for v in result["clips"].values())
    foot = [row("average", "Average", "Average", total, "avg")]
    foot += [row("groups", g, g, "") for g in result.get("groups", {}) or {}]
    body = "".join(rows)
    return (f'<div class="tablewrap"><table class="metrics" id="metrics"><thead><tr>{head1}</tr><tr>{head2}</tr>'
            f'</thead><tbody>{body}</tbody><tfoot>{"".join(foot)}</tfoot></table></div>')


def _definitions(result: Mapping[str, Any]) -> str:
    items = [("PSNR / SSIM", "on Y of BT.601 (16 + 65.481 R + 128.553 G + 24.966 B), the output clamped and "
              f"rounded to 8 bits, border crop {result.get('crop_border', 0)}; dataset average over "
              + ("clips (each clip counts equally)" if result.get("average_mode") == "clip" else "all frames"))]
    if result.get("temporal_gain_definition"):
        items.append(("gain (temporal_gain)", result["temporal_gain_definition"]))
    if result.get("tof_definition"):
        items.append(("tOF (tof)", result["tof_definition"]))
    paper = result.get("paper") or {}
    if paper:
        text = str(paper.get("source", ""))
        if paper.get("average_of"):
            text += f"; paper average over {paper['average_of']}"
        if paper.get("note"):
            text += f"; {paper['note']}"
        items.append(("paper", text))
    return '<dl class="defs">' + "".join(f"<dt>{html.escape(a)}</dt><dd>{html.escape(b)}</dd>" for a, b in items) + "</dl>"


def _page(title: str, subtitle: str, body: str) -> str:
    return (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>"
        f"<h1>{html.escape(title)}</h1><p class=\"sub\">{html.escape(subtitle)}</p>\n{body}\n"
        f"<script>{SCRIPT}</script></body></html>\n"
    )


def build_report(result: Mapping[str, Any], samples: Mapping[str, Mapping] | None = None,
                 model_name: str = "LGFN") -> str:
    """The HTML of report.html for one evaluation result (``metrics.json``'s content) and its samples."""
    samples = samples or {}
    n_frames = sum(v.get("frames", 0) for v in result["clips"].values())
    parts = ["<h2>Per clip</h2>", _table(result, model_name), _definitions(result)]
    per_frame = result.get("per_frame") or {}
    clips = [c for c in result["clips"] if c in samples or len((per_frame.get(c) or {}).get("frame", [])) > 1]
    if clips:
        parts.append("<h2>Clips</h2>")
    for i, clip in enumerate(clips):
        per = per_frame.get(clip) or {}
        vals = result["clips"][clip]
        facts = [f"{vals.get('frames', '')} frames", f"PSNR {vals['psnr']:.2f} dB" if _finite(vals.get("psnr")) else ""]
        if _finite(vals.get("tof")):
            facts.append(f"tOF {vals['tof']:.3f}")
        plots = ""
        if len(per.get("frame", [])) > 1:
            plots = svg_plot(per["frame"], {model_name: per["psnr"], "Bicubic": per["psnr_bicubic"]}, "PSNR-Y (dB)")
            if "tof" in per and any(_finite(v) for v in per["tof"]):
                plots += svg_plot(per["frame"], {model_name: per["tof"], "Bicubic": per["tof_bicubic"]},
                                  "tOF (px)", fmt="{:.3f}")
        cmp = _comparison(samples[clip], model_name, str(i)) if clip in samples else ""
        parts.append(f'<section class="clip" id="clip-{i}" data-clip="{html.escape(clip)}">'
                     f"<h3>{html.escape(clip)}</h3><p class=\"muted\">{html.escape(', '.join(f for f in facts if f))}</p>"
                     f'<div class="plots">{plots}</div>{cmp}</section>')
    subtitle = (f"{model_name} on {result.get('dataset', '')}: {len(result['clips'])} clips, {n_frames} frames; "
                "the numbers are those of metrics.json beside this page")
    return _page(f"{model_name}: {result.get('dataset', '')}", subtitle, "\n".join(parts))


def build_upscale_report(sample: Mapping[str, Any], facts: Mapping[str, Any], model_name: str = "LGFN") -> str:
    """The page of ``lgfn-upscale --compare``: what was run, and the frame's comparison (no ground truth)."""
    rows = "".join(f'<tr><td class="name">{html.escape(str(k))}</td><td class="name">{html.escape(str(v))}</td></tr>'
                   for k, v in facts.items())
    body = (f'<h2>Run</h2><table class="metrics" id="facts"><tbody>{rows}</tbody></table>'
            f'<h2>Frame {html.escape(str(sample.get("frame", "")))}</h2>'
            f'<section class="clip" id="clip-0">{_comparison(sample, model_name, "0")}</section>'
            '<p class="muted">A video of your own has no ground truth, so no PSNR or tOF here; '
            "<code>python eval.py</code> on frames with ground truth gives them.</p>")
    return _page(f"lgfn-upscale: {facts.get('input', '')}", "bicubic vs the network on one frame", body)


def write_report(path: str | os.PathLike, result: Mapping[str, Any], samples: Mapping[str, Mapping] | None = None,
                 model_name: str = "LGFN") -> Path:
    """``report.html`` for ``result`` (as in metrics.json: pass the JSON-safe copy) at ``path``, atomically."""
    return write_text_atomic(build_report(result, samples, model_name), path)


def write_upscale_report(path: str | os.PathLike, sample: Mapping[str, Any], facts: Mapping[str, Any],
                         model_name: str = "LGFN") -> Path:
    return write_text_atomic(build_upscale_report(sample, facts, model_name), path)


__all__ = ["build_report", "build_upscale_report", "svg_plot", "write_report",
           "write_upscale_report"]
