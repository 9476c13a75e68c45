"""benchmarks/gpu_check.py at tiny sizes on the CPU: every part runs and reports what the GPU run will."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_runs_tiny_on_the_cpu(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check

    out = tmp_path / "g.json"
    assert gpu_check.main(["--device", "cpu", "--tiny", "--json", str(out), "--md", str(tmp_path / "g.md")]) == 0
    result = json.loads(out.read_text())
    what = [r["what"] for r in result["rows"]]
    assert result["info"]["tiny"] and result["info"]["skipped (time budget)"] == []
    assert sum("train" in w for w in what) == 2 and any("bf16-mixed" in w for w in what)
    assert any("inference" in w and "float32" in w for w in what) and any("--half" in w for w in what)
    assert sum(w.startswith("DCN") for w in what) == 4  # torchvision and portable, fwd and fwd+bwd
    loaders = [r for r in result["rows"] if r["what"].startswith("loader")]
    assert len(loaders) == 3 and all(r["per_s"] > 0 and r["workers_per_gpu"] >= 1 for r in loaders)
    assert all(r["per_s"] > 0 for r in result["rows"])
    half = next(r for r in result["rows"] if "--half" in r["what"])
    assert half["psnr_vs_float32_db"] > 40
    assert "| what |" in (tmp_path / "g.md").read_text()
    # A spent budget skips the remaining parts instead of running past it.
    assert gpu_check.run("cpu", tiny=True, budget=0.0)["info"]["skipped (time budget)"] == ["train", "inference", "dcn", "loader"]
