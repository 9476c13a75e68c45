"""The notebooks run top to bottom (nbclient) on tiny inputs and print the numbers they should."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from nets import strong_tiny_net  # noqa: E402

from lgfn.checkpoints.weights_file import save_weights  # noqa: E402
from lgfn.data.builtin import ensure_builtin  # noqa: E402
from lgfn.metrics import psnr_y, ssim_y  # noqa: E402
from lgfn.models import LGFN  # noqa: E402
from lgfn.protocol.degradation import degrade, imresize, quantize_8bit  # noqa: E402
from lgfn.protocol.windows import frame_indices  # noqa: E402
from lgfn.results.sweep_summary import write_summary  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
TINY = dict(num_frames=3, num_feat=8, num_extract_blocks=1, num_align_stages=1, deformable_groups=2,
            num_lfm=1, num_gfm=1, gfm_slice_channels=2, num_rcab=1)


@pytest.fixture
def kernel(tmp_path, monkeypatch) -> str:
    """A kernelspec for this interpreter, found first via JUPYTER_PATH: no user kernel needed or used."""
    jupyter = tmp_path / "jupyter"
    spec = jupyter / "kernels" / "lgfn-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "lgfn test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter))
    # Connection files and the IPython profile go to tmp: CI homes may be read-only.
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    # Headless: the inline backend renders figures with Agg into image/png outputs.
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    return "lgfn-test"


def run_notebook(name: str, kernel: str, cwd: Path):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name=kernel, timeout=120, resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return nb


def text_of(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stdout":
                parts.append(out["text"])
            elif out.get("output_type") == "execute_result" and "text/plain" in out["data"]:
                parts.append(out["data"]["text/plain"])
    return "".join(parts)


def count_images(nb) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))


@pytest.mark.parametrize("name", ["01_quickstart.ipynb", "02_ablations.ipynb", "03_temporal.ipynb"])
def test_notebooks_are_saved_clean(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= len(code)
    assert "LGFN_NB_" in code[0].source  # parameters come first


def _reference_table(test_dir: Path, net: LGFN, padding: str, max_frames: int) -> dict[str, tuple[float, ...]]:
    """Per clip (bicubic PSNR, SSIM, model PSNR, SSIM) of its first frames: read and degraded directly."""
    out = {}
    for clip_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        files = sorted(clip_dir.glob("*.png"))
        hr = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1) for f in files])
        hr = hr.float() / 255
        lr = quantize_8bit(degrade(hr, "bi", 4))
        rows = []
        with torch.no_grad():
            for t in range(min(len(files), max_frames)):
                sr = net(lr[frame_indices(t, net.num_frames, len(files), padding)][None]).clamp(0, 1)
                bic = imresize(lr[t], 4).clamp(0, 1)[None]
                gt = hr[t : t + 1]
                rows.append([psnr_y(bic, gt).item(), ssim_y(bic, gt).item(), psnr_y(sr, gt).item(), ssim_y(sr, gt).item()])
        out[clip_dir.name] = tuple(np.mean(rows, axis=0))
    return out


def assert_table_cells(got: list[float], want) -> None:
    """PSNR/SSIM pairs as printed (2 and 4 decimals) against the reference values."""
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert abs(g - w) <= (0.0051 if i % 2 == 0 else 5.1e-5), (got, list(want))


@pytest.mark.slow
def test_quickstart_notebook(tmp_path, kernel, monkeypatch):
    net = strong_tiny_net()
    ckpt = tmp_path / "tiny.pt"
    # replicate differs from the default padding at the clip ends: the notebook must follow the checkpoint.
    save_weights(net, ckpt, meta={"padding": "replicate", "degradation": "bi"})
    data = tmp_path / "builtin"
    test_dir = ensure_builtin(data, small=True)["test"]
    monkeypatch.setenv("LGFN_NB_CKPT", str(ckpt))
    monkeypatch.setenv("LGFN_NB_DATA_DIR", str(data))
    monkeypatch.setenv("LGFN_NB_SMALL", "1")
    monkeypatch.setenv("LGFN_NB_MAX_FRAMES", "4")  # of 9: windows still reach the last frames

    nb = run_notebook("01_quickstart.ipynb", kernel, tmp_path)
    text = text_of(nb)
    assert count_images(nb) == 1
    assert "Average" in text

    ref = _reference_table(test_dir, net, "replicate", max_frames=4)
    assert len(ref) == 2
    cell = r"(\d+\.\d\d)/(\d\.\d{4})"
    for clip, (bp, bs, mp, ms) in ref.items():
        m = re.search(rf"^{clip}\s*\|\s*(\d+)\s*\|\s*{cell}\s*\|\s*{cell}\s*$", text, re.M)
        assert m, f"no row for {clip} in:\n{text}"
        frames, got = int(m.group(1)), [float(g) for g in m.groups()[1:]]
        assert frames == 4
        assert_table_cells(got, [bp, bs, mp, ms])
    m = re.search(rf"^Average\s*\|\s*8\s*\|\s*{cell}\s*\|\s*{cell}\s*$", text, re.M)
    assert m, text
    mean = np.mean(list(ref.values()), axis=0)
    assert_table_cells([float(g) for g in m.groups()], mean)
    assert not (NOTEBOOKS.parent / "checkpoints" / "tiny.pt").exists()


def _job(sweep: Path, num: int, overrides: list[str], clips: dict | None, bicubic: dict, error: str = "") -> None:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if clips is None:
        (job / "status.json").write_text(json.dumps({"status": "failed", "error": error}))
        return
    avg = {k: float(np.mean([v[k] for v in clips.values()])) for k in ("psnr", "ssim")}
    bic_avg = {k: float(np.mean([v[k] for v in bicubic.values()])) for k in ("psnr", "ssim")}
    metrics = {"dataset": "builtin", "average_mode": "clip",
               "clips": {c: {**v, "frames": 16} for c, v in clips.items()}, "average": avg,
               "bicubic": {"clips": bicubic, "average": bic_avg}}
    (job / "metrics.json").write_text(json.dumps(metrics))


@pytest.mark.slow
def test_ablations_notebook_reads_newest_sweep(tmp_path, kernel, monkeypatch):
    root = tmp_path / "multirun"
    common = ["model=lgfn_small", "data=builtin", "trainer=cpu"]
    bicubic = {"astronaut": {"psnr": 27.5, "ssim": 0.8}, "chelsea": {"psnr": 30.25, "ssim": 0.85}}
    old = root / "2024-01-01_00-00-00"
    _job(old, 0, ["experiment=stale_run", *common], {"astronaut": {"psnr": 20.0, "ssim": 0.5}}, bicubic)
    write_summary(old)
    new = root / "2024-01-02_00-00-00"
    _job(new, 0, ["experiment=full", *common],
         {"astronaut": {"psnr": 29.125, "ssim": 0.86}, "chelsea": {"psnr": 32.5, "ssim": 0.9}}, bicubic)
    _job(new, 1, ["experiment=ablation_lfm", *common],
         {"astronaut": {"psnr": 28.75, "ssim": 0.85}, "chelsea": {"psnr": 31.0, "ssim": 0.88}}, bicubic)
    _job(new, 2, ["experiment=ablation_gfm", *common], None, bicubic, error="RuntimeError: out of memory")
    write_summary(new)
    # The newest by modification time, whatever the names say.
    os.utime(old / "summary.csv", (2e9, 2e9))
    os.utime(new / "summary.csv", (2e9 + 10, 2e9 + 10))
    monkeypatch.setenv("LGFN_NB_SWEEP_DIR", str(root))

    nb = run_notebook("02_ablations.ipynb", kernel, tmp_path)
    text = text_of(nb)
    assert f"sweep: {new}" in text
    assert "stale_run" not in text
    assert count_images(nb) == 2
    assert re.search(r"ablation_gfm\) failed: RuntimeError: out of memory", text), text
    # Per-clip table: bicubic, full, ablation_lfm (the overrides all jobs share are dropped from the names).
    head = next(line for line in text.splitlines() if "bicubic" in line and "ablation_lfm" in line)
    assert head.split() == ["bicubic", "full", "ablation_lfm"]
    rows = {line.split()[0]: [float(x) for x in line.split()[1:]] for line in text.splitlines()
            if line.split()[:1] in (["astronaut"], ["chelsea"])}
    assert rows == {"astronaut": [27.5, 29.12, 28.75], "chelsea": [30.25, 32.5, 31.0]}
    # Summary: the job averages as write_summary recorded them.
    full = next(line for line in text.splitlines() if line.split()[:2] == ["0", "full"])
    assert full.split()[2:4] == ["ok", "30.8125"]


@pytest.mark.slow
def test_temporal_notebook_trains_the_pairs_and_tabulates_them(tmp_path, kernel, monkeypatch):
    from entry import TINY_DATA, TINY_NET

    out = tmp_path / "runs"
    monkeypatch.setenv("LGFN_NB_STEPS", "2")
    monkeypatch.setenv("LGFN_NB_OUT", str(out))
    monkeypatch.setenv("LGFN_NB_RUNS", "7 frames,single frame")
    monkeypatch.setenv("LGFN_NB_EXTRA", " ".join(["trainer=cpu", f"paths.data_dir={tmp_path / 'data'}",
                                                  *TINY_NET, *TINY_DATA]))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = run_notebook("03_temporal.ipynb", kernel, tmp_path)
    text = text_of(nb)
    assert count_images(nb) == 1
    runs = {"7 frames": out / "7_frames", "single_frame": out / "single_frame"}
    metrics = {k: json.loads((d / "metrics.json").read_text()) for k, d in runs.items()}
    seven = next(line for line in text.splitlines() if line.startswith("7 frames "))
    assert "LR patch 32" not in text  # only the runs asked for
    single = next(line for line in text.splitlines() if line.startswith("single frame "))
    s7, s1 = seven.split()[2:], single.split()[2:]
    assert float(s7[0]) == pytest.approx(round(metrics["7 frames"]["average"]["psnr"], 2))
    assert float(s7[2]) == pytest.approx(round(metrics["7 frames"]["average"]["temporal_gain"], 2))
    assert float(s7[4]) == pytest.approx(round(metrics["7 frames"]["average"]["psnr"]
                                               - metrics["single_frame"]["average"]["psnr"], 2))
    assert metrics["single_frame"]["average"]["temporal_gain"] == 0.0  # its windows are the centre repeated
    assert float(s1[2]) == 0.0
    # a second run reuses the finished runs instead of training again
    before = {d: (d / "metrics.json").stat().st_mtime_ns for d in runs.values()}
    run_notebook("03_temporal.ipynb", kernel, tmp_path)
    assert before == {d: (d / "metrics.json").stat().st_mtime_ns for d in runs.values()}
