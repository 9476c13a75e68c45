"""Results people can see: tOF, the test-time strips and plots (W&B, TensorBoard), report.html in a browser."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from browser import Browser, find_chromium
from entry import compose_cfg
from lightning import Trainer
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

import eval as eval_entry
from lgfn.data.builtin import ensure_builtin
from lgfn.data.datasets import VSRTestDataset
from lgfn.data.layouts import discover_folder
from lgfn.metrics import TofPairs, tof
from lgfn.protocol.degradation import imresize
from lgfn.results import publish, table
from lgfn.results.paper import published
from lgfn.results.report_page import build_report, write_report
from lgfn.training import media
from lgfn.training.lit_module import LitLGFN


@pytest.fixture(scope="module")
def small_builtin(tmp_path_factory) -> dict[str, Path]:
    return ensure_builtin(tmp_path_factory.mktemp("builtin"), small=True)


class CentreNet(nn.Module):
    """x4: a fixed conv + pixel shuffle of the centre frame (deterministic, not bicubic)."""

    def __init__(self, num_frames: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.num_frames = num_frames
        self.body = nn.Sequential(nn.Conv2d(3, 48, 3, padding=1), nn.PixelShuffle(4))

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        c = lr[:, lr.shape[1] // 2]
        return (imresize(c, 4) + 0.05 * torch.tanh(self.body(c))).clamp(0, 1)


def _run_test(net: nn.Module, dataset, loggers=False, **kwargs) -> LitLGFN:
    module = LitLGFN(net, log_images=0, **kwargs)
    trainer = Trainer(accelerator="cpu", logger=loggers, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(module, dataloaders=DataLoader(dataset, batch_size=1), verbose=False)
    return module


# ---------------------------------------------------------------------------- tOF
def _texture(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur((rng.random((h, w)) * 255).astype(np.uint8), (0, 0), 1.5)


def _hand_tof(prev_out, out, prev_gt, gt) -> float:
    """TecoGAN's tOF written out: Farneback flows, their difference's norm, the centre crop, the mean."""
    args = (None, 0.5, 3, 15, 3, 5, 1.2, 0)
    d = cv2.calcOpticalFlowFarneback(prev_out, out, *args) - cv2.calcOpticalFlowFarneback(prev_gt, gt, *args)
    h, w = d.shape[:2]
    ch = h // 32 * 32 - (32 if h // 32 * 32 > h - 16 else 0)
    cw = w // 32 * 32 - (32 if w // 32 * 32 > w - 16 else 0)
    d = d[(h - ch) // 2 : (h - ch) // 2 + ch, (w - cw) // 2 : (w - cw) // 2 + cw]
    return float(np.sqrt((d.astype(np.float64) ** 2).sum(-1)).mean())


def test_tof_is_tecogans_definition_and_zero_for_a_static_clip():
    tex = _texture()
    gt = [np.roll(tex, t, axis=1) for t in range(4)]  # 1 px per frame to the right
    out = [cv2.GaussianBlur(g, (0, 0), 1.0) for g in gt]
    for t in range(1, 4):
        assert tof(out[t - 1], out[t], gt[t - 1], gt[t]) == pytest.approx(_hand_tof(out[t - 1], out[t], gt[t - 1], gt[t]),
                                                                          abs=1e-6)
    static, blurred = gt[0], out[0]
    assert tof(blurred, blurred, static, static) < 1e-3  # nothing moves in the output nor in the GT
    assert tof(static, static, static, static) == 0.0


def test_an_output_that_flickers_scores_worse_than_the_same_output_without_flicker():
    tex = _texture(seed=3)
    gt = [np.roll(tex, t, axis=1) for t in range(6)]
    steady = [cv2.GaussianBlur(g, (0, 0), 1.0) for g in gt]
    # the same frames with a brightness change every other frame and fresh noise each frame
    rng = np.random.default_rng(0)
    flicker = [np.clip(s.astype(int) + (12 if t % 2 else -12) + rng.integers(-8, 9, s.shape), 0, 255).astype(np.uint8)
               for t, s in enumerate(steady)]

    def clip_tof(frames):
        return np.mean([tof(frames[t - 1], frames[t], gt[t - 1], gt[t]) for t in range(1, len(gt))])

    assert clip_tof(flicker) > 2 * clip_tof(steady) > 0
    assert clip_tof(gt) < clip_tof(steady)  # the GT itself moves exactly like the GT


def test_tof_pairs_in_any_order_equal_a_sequential_pass():
    tex = _texture(48, 64)
    frames = {("a", t): np.roll(tex, 2 * t, axis=0) for t in range(5)}
    frames |= {("b", t): np.roll(tex, t, axis=1) for t in (1, 2, 3)}
    expected = {"a": set(range(5)), "b": {1, 2, 3}}
    seq, shuffled = TofPairs(), TofPairs(expected)
    a = [p for (c, t), f in frames.items() for p in seq.add(c, t, [f], f[::-1].copy())]
    order = [("b", 3), ("a", 4), ("a", 0), ("b", 1), ("a", 2), ("a", 1), ("a", 2), ("b", 2), ("a", 3)]  # one repeat
    b = [p for c, t in order for p in shuffled.add(c, t, [frames[c, t]], frames[c, t][::-1].copy())]
    assert sorted(a) == sorted(b) and len(a) == 4 + 2
    assert shuffled.leftovers() == []  # every frame was dropped once both its pairs were done


def _write_clip(root: Path, name: str, frames: list[np.ndarray]) -> None:
    (root / name).mkdir(parents=True)
    for t, f in enumerate(frames):
        Image.fromarray(f).save(root / name / f"{t:03d}.png")


def test_tof_per_clip_equals_a_hand_computation_and_a_static_clip_scores_zero(tmp_path):
    rgb = np.stack([_texture(64, 96, seed=s) for s in (5, 6, 7)], -1)
    _write_clip(tmp_path, "moving", [np.roll(rgb, 4 * t, axis=1) for t in range(5)])
    _write_clip(tmp_path, "static", [rgb] * 4)
    dataset = VSRTestDataset(discover_folder(tmp_path).clips, num_frames=3)
    net = CentreNet()
    module = _run_test(net, dataset)
    res = module.test_results["test"]

    grey = {}
    with torch.no_grad():
        for i in range(len(dataset)):
            s = dataset[i]
            sr = net(s["lr"][None])[0]
            bic = imresize(s["lr"][1], 4).clamp(0, 1)
            grey[s["clip"], s["frame"]] = [
                cv2.cvtColor(x.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy(), cv2.COLOR_RGB2GRAY)
                for x in (sr, bic, s["hr"])]
    for clip, n, section in (("moving", 5, res), ("static", 4, res)):
        pairs = [[_hand_tof(grey[clip, t - 1][k], grey[clip, t][k], grey[clip, t - 1][2], grey[clip, t][2])
                  for t in range(1, n)] for k in (0, 1)]
        assert section["clips"][clip]["tof"] == pytest.approx(np.mean(pairs[0]), abs=1e-6)
        assert res["bicubic"]["clips"][clip]["tof"] == pytest.approx(np.mean(pairs[1]), abs=1e-6)
        assert res["per_frame"][clip]["tof"][1:] == pytest.approx(pairs[0], abs=1e-6)
        assert math.isnan(res["per_frame"][clip]["tof"][0])  # frame 0 has no predecessor
    assert res["clips"]["static"]["tof"] < 1e-3
    assert res["clips"]["moving"]["tof"] > 10 * res["clips"]["static"]["tof"]
    assert res["average"]["tof"] == pytest.approx((res["clips"]["moving"]["tof"] + res["clips"]["static"]["tof"]) / 2)
    assert "tOF" in table.format_table(res, "LGFN")


def test_tof_is_absent_without_consecutive_frames_or_when_switched_off(small_builtin):
    clips = discover_folder(small_builtin["test"]).clips
    centre_only = [dataclasses.replace(c, centre=3) for c in clips]  # Vimeo-90K-T: one scored frame per clip
    res = _run_test(CentreNet(), VSRTestDataset(centre_only, num_frames=3)).test_results["test"]
    assert "tof" not in res["average"] and "tof_definition" not in res
    assert all("tof" not in v for v in res["clips"].values())
    assert "tOF" not in table.format_table(res, "LGFN")
    res = _run_test(CentreNet(), VSRTestDataset(clips, num_frames=3), tof=False).test_results["test"]
    assert "tof" not in res["average"] and "tof" not in res["bicubic"]["average"]
    # metrics.json's keys of before are all still there
    assert {"dataset", "average_mode", "crop_border", "clips", "average", "bicubic"} <= set(res)


# ---------------------------------------------------------------------------- test-time media
def _expected_strip(dataset: VSRTestDataset, net: nn.Module, frame: int, clip: str, crop: int) -> np.ndarray:
    """LR (nearest) | bicubic | model | GT of the centred crop, x 255 rounded, by hand."""
    i = next(k for k in range(len(dataset)) if dataset[k]["clip"] == clip and dataset[k]["frame"] == frame)
    s = dataset[i]
    lr, hr = s["lr"][1], s["hr"]
    with torch.no_grad():
        sr = net(s["lr"][None])[0]
    bic = imresize(lr, 4).clamp(0, 1)
    h, w = hr.shape[-2:]
    top, left = (h - crop) // 2 // 4 * 4, (w - crop) // 2 // 4 * 4
    up = torch.kron(lr, torch.ones(1, 4, 4))  # nearest x4
    parts = [x[:, top : top + crop, left : left + crop] for x in (up, bic, sr, hr)]
    return torch.cat(parts, -1).clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()


def test_test_strips_and_psnr_plots_are_logged_to_wandb_and_tensorboard(small_builtin, tmp_path, monkeypatch):
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lgfn.training.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(LitLGFN, "SAMPLE_CROP", 32)  # a real crop of the 64 x 80 frames
    dataset = VSRTestDataset(discover_folder(small_builtin["test"]).clips, num_frames=3)
    wandb_logger = WandbLogger(project="lgfn", save_dir=str(tmp_path), mode="offline")
    tb_logger = TensorBoardLogger(save_dir=str(tmp_path), name="tb")
    net = CentreNet()
    module = _run_test(net, dataset, loggers=[wandb_logger, tb_logger])
    wandb_logger.experiment.finish()
    res, samples = module.test_results["test"], module.test_samples["test"]
    frames = {c.name: len(c) for c in dataset.clips}
    assert set(samples) == set(frames)
    ea = EventAccumulator(str(Path(tb_logger.log_dir)), size_guidance={"images": 0})
    ea.Reload()
    run = next((tmp_path / "wandb").glob("offline-run-*"))
    for clip, n in frames.items():
        assert samples[clip]["frame"] == n // 2  # the middle frame
        want = _expected_strip(dataset, net, n // 2, clip, 32)
        assert want.shape == (32, 4 * 32, 3)
        # each panel under its labelled banner (lgfn.training.media): the pictures below the banners unchanged
        psnr = media.frame_psnr(res, clip, n // 2)
        banners = np.concatenate([media.banner(media.panel_texts(k, psnr.get(k)), 32) for k in media.KINDS], 1)
        pngs = list((run / "files" / "media" / "images" / "test" / "strip").glob(f"{clip}_*.png"))
        assert len(pngs) == 1, list(run.rglob("*.png"))
        got = np.asarray(Image.open(pngs[0]).convert("RGB"))
        np.testing.assert_array_equal(got[media.BANNER :], want)
        np.testing.assert_array_equal(got[: media.BANNER], banners)
        event = ea.Images(f"test/strip/{clip}")[-1]
        got = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
        np.testing.assert_array_equal(got[media.BANNER :], want)
        np.testing.assert_array_equal(got[: media.BANNER], banners)
        # the per-frame PSNR line plot: a W&B table of (frame, line, value) rows
        tables = list((run / "files" / "media" / "table" / "test" / "psnr_per_frame").glob(f"{clip}_*.table.json"))
        assert len(tables) == 1, list(run.rglob("*.json"))
        table = json.loads(tables[0].read_text())
        assert table["columns"] == ["step", "lineKey", "lineVal"]
        rows = {(r[1], r[0]): r[2] for r in table["data"]}
        for t, v in zip(res["per_frame"][clip]["frame"], res["per_frame"][clip]["psnr"], strict=True):
            assert rows["LGFN", t] == pytest.approx(v)
        assert [rows["bicubic", t] for t in res["per_frame"][clip]["frame"]] == res["per_frame"][clip]["psnr_bicubic"]


# ---------------------------------------------------------------------------- report.html
class _Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cells: list[tuple[list, str, str]] = []
        self.srcs: list[str] = []
        self._open: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "td" and "data-path" in a:
            self._open = {"path": json.loads(a["data-path"]), "value": a["data-value"], "text": ""}
        for key in ("src", "href"):
            if a.get(key):
                self.srcs.append(a[key])

    def handle_data(self, data):
        if self._open is not None:
            self._open["text"] += data

    def handle_endtag(self, tag):
        if tag == "td" and self._open is not None:
            self.cells.append((self._open["path"], self._open["value"], self._open["text"]))
            self._open = None


def _numbers(obj, path=()):
    """Every finite number of a metrics.json section with its path."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, (*path, k))
    elif isinstance(obj, float) and math.isfinite(obj):
        yield list(path), obj


def _metric_numbers(metrics: dict) -> list[tuple[list, float]]:
    """The numbers the table must show: clips, average, groups, bicubic and paper rows (not per-frame lists)."""
    out = []
    for section in ("clips", "average", "groups"):
        out += [([section, *p], v) for p, v in _numbers(metrics.get(section) or {})]
    for section in ("bicubic", "paper"):
        for sub in ("clips", "average", "groups"):
            out += [([section, sub, *p], v) for p, v in _numbers((metrics.get(section) or {}).get(sub) or {})]
    return out


def check_report_against_metrics(page_html: str, metrics: dict, baseline_only: bool = False) -> list:
    parser = _Cells()
    parser.feed(page_html)
    lookup = {json.dumps(p): (v, t) for p, v, t in parser.cells}
    for path, value, text in parser.cells:
        obj = metrics
        for k in path:
            obj = obj[k]
        assert float(value) == obj, (path, value, obj)  # the full value, exactly
        assert abs(float(text) - obj) <= 0.51 * 10 ** -len(text.split(".")[1]), (path, text, obj)
    for path, value in _metric_numbers(metrics):
        if baseline_only and path[0] == "bicubic":
            continue  # model=bicubic: one set of columns, its own
        assert json.dumps(path) in lookup, f"{path} ({value}) is not in the table"
    # self-contained: every image is a data URI, nothing from the network
    assert parser.srcs and all(s.startswith("data:image/png;base64,") for s in parser.srcs), parser.srcs[:3]
    assert not re.search(r"(src|href)=\"(https?:)?//", page_html)
    return parser.cells


def _synthetic_vid4_result() -> tuple[dict, dict]:
    rng = np.random.default_rng(0)
    clips = {}
    for c in ("calendar", "city", "foliage", "walk"):
        clips[c] = {"psnr": float(rng.uniform(20, 30)), "ssim": float(rng.uniform(0.5, 0.9)), "frames": 5,
                    "temporal_gain": float(rng.uniform(-0.1, 0.5)), "tof": float(rng.uniform(0.1, 1))}
    result = {
        "dataset": "vid4", "average_mode": "clip", "crop_border": 0, "clips": clips,
        "average": {k: float(np.mean([v[k] for v in clips.values()])) for k in ("psnr", "ssim", "temporal_gain", "tof")},
        "temporal_gain_definition": "dB: ...", "tof_definition": "px: ...",
        "bicubic": {"clips": {c: {"psnr": v["psnr"] - 2, "ssim": v["ssim"] - 0.1, "tof": v["tof"] + 0.1}
                              for c, v in clips.items()},
                    "average": {"psnr": 23.0, "ssim": 0.6, "tof": 0.7}},
        "per_frame": {c: {"frame": [1, 2, 3, 4, 5], "psnr": list(rng.uniform(20, 30, 5)),
                          "psnr_bicubic": list(rng.uniform(18, 28, 5)),
                          "tof": [None, *rng.uniform(0.1, 1, 4)], "tof_bicubic": [None, *rng.uniform(0.1, 1, 4)]}
                      for c in clips},
    }
    result["paper"] = published(result)
    crop = (rng.random((24, 32, 3)) * 255).astype(np.uint8)
    samples = {"walk": {"frame": 3, "box": [0, 0, 24, 32], **{k: np.roll(crop, i, 1) for i, k in
                                                                 enumerate(("lr", "bicubic", "sr", "gt"))}}}
    return result, samples


def test_report_table_is_metrics_json_with_the_paper_columns(tmp_path):
    result, samples = _synthetic_vid4_result()
    path = write_report(tmp_path / "report.html", result, samples, "LGFN")
    page = path.read_text()
    cells = check_report_against_metrics(page, json.loads(json.dumps(result)))
    assert any(p[0] == "paper" and p[-2] == "LGFN" for p, _, _ in cells)
    assert any(p[-1] == "tof" and p[0] == "bicubic" for p, _, _ in cells)
    assert page.count("<svg") == 2 * 4  # PSNR and tOF per frame, per clip
    # the crops decode to what was given
    uris = re.findall(r'data-kind="(\w+)"[^>]*src="data:image/png;base64,([^"]+)"', page)
    assert [k for k, _ in uris] == ["lr", "bicubic", "sr", "gt"]
    for kind, data in uris:
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(base64.b64decode(data)))), samples["walk"][kind])
    assert not list(tmp_path.glob(".*"))  # the temporary file was renamed onto report.html


def test_eval_writes_report_beside_metrics_json(small_builtin, tmp_path):
    data = small_builtin["test"].parent.parent
    cfg = compose_cfg("eval", ["model=bicubic", f"paths.data_dir={data}", "data.num_frames=3",
                               "data.builtin_small=true", "data.num_workers=0", "trainer=cpu",
                               f"data.root={small_builtin['test'].parent}"], tmp_path / "run")
    eval_entry.evaluate(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "tof" in metrics["average"] and set(metrics["per_frame"]) == set(metrics["clips"])
    page = (tmp_path / "run" / "report.html").read_text()
    check_report_against_metrics(page, metrics, baseline_only=True)
    assert page.count('class="cmp"') == len(metrics["clips"])


# ---------------------------------------------------------------------------- in a real browser
CHECK_PAGE = """
(async () => {
  const imgs = [...document.images];
  const decoded = await Promise.all(imgs.map(i => (i.getAttribute('src') ? i.decode() : Promise.resolve())
      .then(() => [i.naturalWidth, i.naturalHeight], e => 'failed: ' + e)));
  const cells = [...document.querySelectorAll('td[data-path]')].map(td =>
      [JSON.parse(td.dataset.path), td.dataset.value, td.textContent]);
  const cmp = document.querySelector('.cmp');
  const out = {decoded, cells, svgs: document.querySelectorAll('svg.plot').length};
  if (cmp) {
    const split = cmp.querySelector('input.split'), over = cmp.querySelector('img.over');
    split.value = 25; split.dispatchEvent(new Event('input'));
    out.clip = over.style.clipPath;
    out.tags = [cmp.querySelector('.tag.l').textContent, cmp.querySelector('.tag.r').textContent];
    cmp.querySelector('button.swap').click();
    out.swapped = [cmp.querySelector('.tag.l').textContent, cmp.querySelector('.tag.r').textContent];
    out.overIsThumb = over.src === cmp.querySelector('img.thumb[data-kind="' +
        cmp.querySelector('select.left').value + '"]').src;
    cmp.querySelector('button.swap').click();
  }
  return out;
})()
"""


def _in_browser(path: Path, shot: Path) -> dict:
    if find_chromium() is None:
        pytest.skip("chromium not found: the report.html browser checks need it (make test installs Debian's "
                    "`chromium` with apt-get where it can; or set LGFN_CHROMIUM=/path/to/chrome)")
    with Browser() as browser:
        page = browser.open(path)
        out = page.evaluate(CHECK_PAGE)
        out["problems"] = page.problems()
        page.screenshot(shot)
    return out


def _check_in_browser(out: dict, metrics: dict, model: str) -> None:
    assert out["problems"] == [], out["problems"]
    assert out["decoded"] and all(isinstance(d, list) and d[0] > 0 and d[1] > 0 for d in out["decoded"]), out["decoded"]
    assert out["cells"]
    for path, value, text in out["cells"]:
        obj = metrics
        for k in path:
            obj = obj[k]
        assert float(value) == obj and abs(float(text) - obj) < 0.01, (path, value, text, obj)
    assert out["clip"] == "inset(0px 75% 0px 0px)" or out["clip"] == "inset(0 75% 0 0)", out["clip"]
    assert out["tags"] == ["Bicubic", model] and out["swapped"] == [model, "Bicubic"] and out["overIsThumb"]


def test_report_in_a_headless_browser(tmp_path):
    result, samples = _synthetic_vid4_result()
    path = write_report(tmp_path / "report.html", result, samples, "LGFN")
    out = _in_browser(path, tmp_path / "report.png")
    _check_in_browser(out, json.loads(json.dumps(result)), "LGFN")
    assert out["svgs"] == 8
    assert len(out["cells"]) == len(check_report_against_metrics(path.read_text(), json.loads(json.dumps(result))))
    shot = Image.open(tmp_path / "report.png")
    assert shot.size[0] >= 1000 and np.asarray(shot.convert("L")).std() > 10  # a page was drawn, not a blank


def test_eval_report_of_a_trained_style_net_in_a_headless_browser(small_builtin, tmp_path):
    dataset = VSRTestDataset(discover_folder(small_builtin["test"]).clips, num_frames=3)
    module = _run_test(CentreNet(), dataset)

    class _Trainer:
        is_global_zero, loggers = True, []

    publish.report_results(module.test_results, _Trainer(), tmp_path, "LGFN", show=False, samples=module.test_samples)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    out = _in_browser(tmp_path / "report.html", tmp_path / "report.png")
    _check_in_browser(out, metrics, "LGFN")
    assert len(out["decoded"]) == (4 + 2) * len(metrics["clips"])  # 4 thumbnails + the 2 slider images per clip
    assert build_report(metrics, None, "LGFN").count('class="cmp"') == 0  # no samples, no comparison


def test_upscale_compare_writes_the_page_for_a_users_video(tmp_path):
    from lgfn.checkpoints.weights_file import save_weights
    from lgfn.inference.upscale import main
    from lgfn.models import LGFN

    tiny = dict(num_frames=3, num_feat=8, num_extract_blocks=1, num_align_stages=1, deformable_groups=2,
                num_lfm=1, num_gfm=1, gfm_slice_channels=2, num_rcab=1)
    torch.manual_seed(0)
    net = LGFN(**tiny).eval()
    save_weights(net, tmp_path / "tiny.pt", meta={"padding": "reflection_circle"})
    rgb = np.stack([_texture(20, 24, seed=s) for s in (1, 2, 3)], -1)
    (tmp_path / "in").mkdir()
    for t in range(4):
        Image.fromarray(np.roll(rgb, t, axis=1)).save(tmp_path / "in" / f"f{t}.png")
    page = tmp_path / "page.html"
    assert main([str(tmp_path / "in"), str(tmp_path / "out"), "--ckpt", str(tmp_path / "tiny.pt"),
                 "--compare", "2", "--compare-out", str(page)]) == 0
    text = page.read_text()
    uris = dict(re.findall(r'data-kind="(\w+)"[^>]*src="data:image/png;base64,([^"]+)"', text))
    assert list(uris) == ["lr", "bicubic", "sr"]  # no ground truth for a user's video
    sr = np.asarray(Image.open(io.BytesIO(base64.b64decode(uris["sr"]))))
    np.testing.assert_array_equal(sr, np.asarray(Image.open(tmp_path / "out" / "f2.png").convert("RGB")))
    lr = np.asarray(Image.open(io.BytesIO(base64.b64decode(uris["lr"]))))
    np.testing.assert_array_equal(lr, np.kron(np.roll(rgb, 2, axis=1), np.ones((4, 4, 1), np.uint8)))
    if find_chromium() is not None:
        out = _in_browser(page, tmp_path / "page.png")
        assert out["problems"] == [] and len(out["decoded"]) == 5
        assert out["tags"] == ["Bicubic", "LGFN"] and out["overIsThumb"]
    assert main([str(tmp_path / "in"), str(tmp_path / "o2"), "--ckpt", str(tmp_path / "tiny.pt"),
                 "--compare", "1", "--compare-out", str(tmp_path / "page.txt")]) == 2


# ---------------------------------------------------------------------------- every label fits (issue 24)
FIT_CHECK = """
(() => {
  const inside = (a, b) => a.left >= b.left - 0.5 && a.right <= b.right + 0.5 && a.top >= b.top - 0.5
      && a.bottom <= b.bottom + 0.5;
  const box = r => [Math.round(r.left), Math.round(r.top), Math.round(r.right), Math.round(r.bottom)];
  const bad = [], seen = {svgText: 0, keys: 0};
  const page = document.documentElement.getBoundingClientRect();
  const view = {left: 0, top: -1e9, right: document.documentElement.clientWidth, bottom: 1e9};
  document.querySelectorAll('figure.plot').forEach(fig => {
    const figBox = fig.getBoundingClientRect(), svgBox = fig.querySelector('svg').getBoundingClientRect();
    if (!inside(figBox, view)) bad.push(['figure outside the page', box(figBox)]);
    fig.querySelectorAll('svg text').forEach(t => {
      seen.svgText++;
      const r = t.getBoundingClientRect();
      if (!inside(r, svgBox)) bad.push(['axis text cut', t.textContent, box(r), box(svgBox)]);
    });
    fig.querySelectorAll('.legend .key').forEach(k => {
      seen.keys++;
      const r = k.getBoundingClientRect();
      if (!inside(r, figBox) || k.scrollWidth > k.clientWidth + 1)
        bad.push(['legend cut', k.textContent, box(r), box(figBox), k.scrollWidth, k.clientWidth]);
    });
  });
  document.querySelectorAll('h1, p.sub, h3').forEach(e => {
    if (e.scrollWidth > e.clientWidth + 1) bad.push(['heading overflows', e.textContent.slice(0, 40)]);
  });
  return {bad, seen, pageWidth: document.documentElement.scrollWidth,
          viewWidth: document.documentElement.clientWidth};
})()
"""


@pytest.mark.parametrize("name", ["LGFN (quickstart, lgfn_small on builtin, 500 steps, seed 1)",
                                  "LGFN_quickstart_lgfn_small_builtin_500_steps_seed_1_without_any_space"])
def test_plot_legends_and_axis_labels_fit_any_model_name_at_1280_and_390_px(tmp_path, name):
    if find_chromium() is None:
        pytest.skip("chromium not found: the report.html browser checks need it (make test installs Debian's "
                    "`chromium` with apt-get where it can; or set LGFN_CHROMIUM=/path/to/chrome)")
    result, samples = _synthetic_vid4_result()
    path = write_report(tmp_path / "report.html", result, samples, name)
    assert name not in re.sub(r"<title>[^<]*</title>", "", "".join(re.findall(r"<svg.*?</svg>", path.read_text())))
    for width in (1280, 390):
        with Browser(width=width) as browser:
            page = browser.open(path)
            out = page.evaluate(FIT_CHECK)
            assert page.problems() == []
        assert out["seen"]["keys"] == 2 * 8 and out["seen"]["svgText"] > 8 * 6, out["seen"]
        assert out["bad"] == [], (width, out["bad"])
        assert out["pageWidth"] <= out["viewWidth"], (width, out)  # nothing sticks out sideways


def test_report_results_prints_the_paths_it_wrote(tmp_path, capsys, monkeypatch):
    result, samples = _synthetic_vid4_result()

    class _Trainer:
        is_global_zero, loggers = True, []

    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    publish.report_results({"vid4": result, "other": json.loads(json.dumps(result))}, _Trainer(), Path("out"),
                           "LGFN", show=False, samples={"vid4": samples})
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["metrics: out/metrics.json", "report:  out/report.html",
                     "metrics: out/metrics_other.json", "report:  out/report_other.html"]
    assert all((tmp_path / "cwd" / ln.split()[-1]).is_file() for ln in lines)
    # outside the working directory: the absolute path
    publish.report_results({"vid4": result}, _Trainer(), tmp_path / "elsewhere", "LGFN", show=False)
    assert capsys.readouterr().out.splitlines()[0] == f"metrics: {tmp_path / 'elsewhere' / 'metrics.json'}"
