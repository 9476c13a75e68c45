"""The authors' released checkpoint: lgfn-convert both ways, direct use, model.init_from, the paper's numbers.

The release layout is written out here from the reference's list of key names and shapes
(``LGFN_REFERENCE.md``, "Released checkpoint"), independently of ``lgfn.checkpoints.authors_release``; values are random.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from conftest import write_frames
from entry import TINY_NET, compose_cfg, tiny
from hydra.utils import instantiate

import eval as eval_entry
import train as train_entry
from lgfn.app import config, task
from lgfn.checkpoints.authors_release import PAPER_CONFIG, expected_shapes, infer_config
from lgfn.checkpoints.convert import main as convert_main
from lgfn.checkpoints.reader import load_network
from lgfn.checkpoints.weights_file import save_weights
from lgfn.models import LGFN
from lgfn.results import paper
from lgfn.results.table import format_table


# ----------------------------------------------------------------------------- the release layout
def reference_shapes(nf: int = 64) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the authors' state dict, as the reference lists them (width nf; paper: 64)."""
    s: dict[str, tuple[int, ...]] = {}

    def conv(name: str, out: int, inp: int, k: int = 3) -> None:
        s[f"{name}.weight"] = (out, inp, k, k)
        s[f"{name}.bias"] = (out,)

    conv("feat0", nf, 3)
    for i in range(5):
        conv(f"res_feat.{i}.body.0", nf, nf)
        conv(f"res_feat.{i}.body.2", nf, nf)
    conv("res_feat.5", nf, nf)
    for k in range(4):
        branches = 2 * (4 - k)
        conv(f"cd_align.offset_conv1.{k}", nf, 2 * nf)
        conv(f"cd_align.offset_conv2.{k}.conv1", nf, nf)
        for i in range(branches):
            conv(f"cd_align.offset_conv2.{k}.d_list.{i}", nf // 2, nf)
        conv(f"cd_align.offset_conv2.{k}.conv2", nf, nf // 2 * branches, 1)
        conv(f"cd_align.dc.{k}", nf, nf)
        conv(f"cd_align.dc.{k}.conv_offset_mask", 8 * 27, nf)
    for j in range(10):
        b = f"dual_fusion.lc_fusion_blocks.{j}"
        conv(f"{b}.conv1", nf, 2 * nf)
        conv(f"{b}.conv2", nf, 2 * nf, 1)
        for r in range(2):
            conv(f"{b}.res_block.{r}.body.0", nf, nf)
            conv(f"{b}.res_block.{r}.body.2", nf, nf)
    ch = nf // 7 * 7  # 63
    mid = ch // 2  # 31
    for j in range(10):
        b = f"dual_fusion.gl_fusion_blocks.{j}"
        conv(f"{b}.conv1", ch, nf)
        conv(f"{b}.conv2c", mid, ch, 1)
        conv(f"{b}.conv21", mid, mid, 1)
        conv(f"{b}.conv22", mid, mid)
        conv(f"{b}.conv23.0", mid, mid)
        conv(f"{b}.conv23.2", mid, mid)
        conv(f"{b}.conv2m", ch, 3 * mid)
        conv(f"{b}.conv3", nf, ch)
    conv("dual_fusion.merge", nf, 2 * nf, 1)
    conv("merge", nf, 7 * nf)
    for i in range(20):
        conv(f"rg.body.{i}.body.0", nf, nf)
        conv(f"rg.body.{i}.body.2", nf, nf)
        conv(f"rg.body.{i}.body.3.conv_du.0", nf // 8, nf, 1)
        conv(f"rg.body.{i}.body.3.conv_du.2", nf, nf // 8, 1)
    conv("rg.body.20", nf, nf)
    conv("tail.0.0", 4 * nf, nf)
    conv("tail.0.2", 4 * nf, nf)
    conv("tail.1", 3, nf)
    return s


def random_release(nf: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random float32 tensors in the release layout, scaled so activations stay O(1) through the 50 blocks.

    The DCN offset convs get large weights: offsets of a few pixels, so a wrong offset layout would show.
    """
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in reference_shapes(nf).items():
        if len(shape) == 1:
            v = torch.randn(shape, generator=g) * 0.05
        else:
            fan_in = shape[1] * shape[2] * shape[3]
            v = torch.randn(shape, generator=g) * (0.6 / fan_in**0.5) * (30 if "conv_offset_mask" in k else 1)
        out[k] = v.float()
    return out


@pytest.fixture(scope="module")
def release() -> dict[str, torch.Tensor]:
    return random_release()


@pytest.fixture(scope="module")
def release_file(release, tmp_path_factory) -> Path:
    """The release as DataParallel saved it: every key under 'module.'."""
    path = tmp_path_factory.mktemp("release") / "model_best.pt"
    torch.save({f"module.{k}": v for k, v in release.items()}, path)
    return path


def test_reference_layout_counts_and_project_agree(release):
    assert len(release) == 556
    assert sum(v.numel() for v in release.values()) == 7_849_837
    assert sum(p.numel() for p in LGFN(**PAPER_CONFIG).parameters()) == 7_849_837
    assert PAPER_CONFIG == LGFN().config  # the paper's sizes are LGFN's defaults
    assert expected_shapes() == reference_shapes()
    assert infer_config(release) == PAPER_CONFIG


# ----------------------------------------------------------------------------- convert, load, convert back
def test_release_converts_loads_strictly_and_converts_back(release, release_file, tmp_path, capsys):
    dst = tmp_path / "lgfn.pt"
    assert convert_main(["release", str(release_file), str(dst)]) == 0
    assert "wrote" in capsys.readouterr().out
    obj = torch.load(dst, weights_only=True)
    assert obj["format"] == "lgfn-weights" and obj["net_class"] == "LGFN" and obj["net_config"] == PAPER_CONFIG
    meta = obj["meta"]
    assert meta["source_file"] == "model_best.pt" and meta["source_prefix"] == "module."
    assert meta["source_sha256"] == hashlib.sha256(release_file.read_bytes()).hexdigest()
    assert meta["num_frames"] == 7 and meta["scale"] == 4 and meta["padding"] == "reflection_circle"
    LGFN(**obj["net_config"]).load_state_dict(obj["state_dict"], strict=True)
    assert len(obj["state_dict"]) == 556
    net, meta2 = load_network(dst)
    assert isinstance(net, LGFN) and meta2["source"] == "release"

    back = tmp_path / "back.pt"
    assert convert_main(["to-release", str(dst), str(back)]) == 0
    again = torch.load(back, weights_only=True)
    assert list(again) == list(release) or set(again) == set(release)
    for k, v in release.items():
        assert again[k].dtype == torch.float32 and torch.equal(again[k], v), k
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_model_prefix_is_stripped_too(release, tmp_path):
    src = tmp_path / "model_latest.pt"
    torch.save({f"model.{k}": v for k, v in release.items()}, src)
    assert convert_main(["release", str(src), str(tmp_path / "w.pt")]) == 0
    assert torch.load(tmp_path / "w.pt", weights_only=True)["meta"]["source_prefix"] == "model."


def _load_by_hand(net: LGFN, rel: dict[str, torch.Tensor]) -> None:
    """Copy the release's tensors into ``net`` module by module, following the reference's description."""
    used: set[str] = set()

    def put(module: torch.nn.Module, name: str) -> None:
        module.weight.copy_(rel[f"{name}.weight"])
        module.bias.copy_(rel[f"{name}.bias"])
        used.update((f"{name}.weight", f"{name}.bias"))

    with torch.no_grad():
        ex = net.extraction
        put(ex.conv_first, "feat0")
        for i, block in enumerate(ex.body):
            put(block.conv1, f"res_feat.{i}.body.0")
            put(block.conv2, f"res_feat.{i}.body.2")
        put(ex.conv_last, f"res_feat.{len(ex.body)}")
        for k, stage in enumerate(net.alignment.stages):
            put(stage.conv_cat, f"cd_align.offset_conv1.{k}")
            put(stage.dmdcu.conv_in, f"cd_align.offset_conv2.{k}.conv1")
            for i, branch in enumerate(stage.dmdcu.branches):
                assert branch.dilation == (i + 1, i + 1)
                put(branch, f"cd_align.offset_conv2.{k}.d_list.{i}")
            put(stage.dmdcu.conv_fuse, f"cd_align.offset_conv2.{k}.conv2")
            put(stage.dcn, f"cd_align.dc.{k}")
            put(stage.dcn.conv_offset, f"cd_align.dc.{k}.conv_offset_mask")
        for j, block in enumerate(net.local_fusion.blocks):
            name = f"dual_fusion.lc_fusion_blocks.{j}"
            put(block.conv_state, f"{name}.conv1")
            put(block.conv_fuse, f"{name}.conv2")
            for r, rb in enumerate(block.body):
                put(rb.conv1, f"{name}.res_block.{r}.body.0")
                put(rb.conv2, f"{name}.res_block.{r}.body.2")
        for j, block in enumerate(net.global_fusion.blocks):
            name = f"dual_fusion.gl_fusion_blocks.{j}"
            put(block.conv_in, f"{name}.conv1")
            put(block.conv_reduce, f"{name}.conv2c")
            put(block.branch1, f"{name}.conv21")
            put(block.branch3, f"{name}.conv22")
            put(block.branch33[0], f"{name}.conv23.0")
            put(block.branch33[2], f"{name}.conv23.2")
            put(block.conv_fuse, f"{name}.conv2m")
            put(block.conv_out, f"{name}.conv3")
        put(net.merge.conv, "dual_fusion.merge")
        rec = net.reconstruction
        put(rec.conv_fuse, "merge")
        for i, rcab in enumerate(rec.body.blocks):
            put(rcab.body[0], f"rg.body.{i}.body.0")
            put(rcab.body[2], f"rg.body.{i}.body.2")
            attention = rcab.body[3].attention  # pool, conv, ReLU, conv, sigmoid
            put(attention[1], f"rg.body.{i}.body.3.conv_du.0")
            put(attention[3], f"rg.body.{i}.body.3.conv_du.2")
        put(rec.body.conv, f"rg.body.{len(rec.body.blocks)}")
        put(rec.upsample[0], "tail.0.0")
        put(rec.upsample[2], "tail.0.2")
        put(rec.conv_last, "tail.1")
    assert used == set(rel)  # every tensor placed exactly where the reference says, none left over


def test_converted_network_equals_lgfn_loaded_by_hand(release, release_file, tmp_path):
    assert convert_main(["release", str(release_file), str(tmp_path / "w.pt")]) == 0
    converted, _ = load_network(tmp_path / "w.pt")
    torch.manual_seed(123)
    by_hand = LGFN().double().eval()
    _load_by_hand(by_hand, release)
    converted = converted.double().eval()
    lr = torch.rand(1, 7, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        a, b = converted(lr), by_hand(lr)
    assert a.shape == (1, 3, 32, 32)
    assert (a - b).abs().max().item() <= 1e-12
    # The DCNs really moved their samples (a few pixels), so the offset layout was exercised.
    assert min(converted.offset_stats().values()) > 0.5


# ----------------------------------------------------------------------------- refusals
class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_cases(release: dict, tmp_path: Path) -> dict[str, tuple[object, str]]:
    missing = dict(release)
    missing.pop("cd_align.dc.3.conv_offset_mask.bias")
    extra = {**release, "dual_fusion.extra.weight": torch.zeros(3)}
    shape = {**release, "merge.weight": torch.zeros(64, 448, 1, 1)}
    return {
        "missing": (missing, "1 missing: cd_align.dc.3.conv_offset_mask.bias"),
        "extra": (extra, "1 unexpected: dual_fusion.extra.weight"),
        "shape": (shape, "1 shape mismatch: merge.weight (64, 448, 1, 1), expected (64, 448, 3, 3)"),
        "other_size": (random_release(nf=32), "another size (num_feat=32 (paper 64)"),
        "pickle": ({"feat0.weight": _Evil(tmp_path / "pwned")}, "holds code or objects that are not weights"),
    }


@pytest.mark.parametrize("case", ["missing", "extra", "shape", "other_size", "pickle"])
def test_bad_release_is_one_line_exit_1_no_output(case, release, tmp_path, capsys):
    obj, expected = _bad_cases(release, tmp_path)[case]
    src, dst = tmp_path / f"{case}.pt", tmp_path / "out" / "w.pt"
    torch.save(obj, src)
    assert convert_main(["release", str(src), str(dst)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("lgfn-convert: error: "), err
    assert expected in err and str(src) in err, err
    assert "weights_only=False" not in err
    assert not dst.exists() and not (tmp_path / "pwned").exists()
    if case == "pickle":
        assert "was not loaded" in err


def test_to_release_refuses_another_size(tmp_path, capsys):
    cfg = {k.split(".")[-1]: int(v) for k, v in (o.split("=") for o in TINY_NET)}
    save_weights(LGFN(num_frames=3, **cfg), tmp_path / "tiny.pt")
    assert convert_main(["to-release", str(tmp_path / "tiny.pt"), str(tmp_path / "r.pt")]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "another size" in err and "num_feat=8 (paper 64)" in err, err
    assert not (tmp_path / "r.pt").exists()


# ----------------------------------------------------------------------------- direct use, init_from
def test_release_file_loads_directly_with_a_note(release, release_file, capsys):
    net, meta = load_network(release_file)  # what lgfn-upscale --ckpt and lgfn-export do
    assert "authors' released LGFN" in capsys.readouterr().err
    assert meta["source"] == "release" and net.config == PAPER_CONFIG
    assert torch.equal(net.reconstruction.conv_last.weight, release["tail.1.weight"])


def test_init_from_any_weights_file(release_file, tmp_path, capsys):
    cfg_net = {k.split(".")[-1]: int(v) for k, v in (o.split("=") for o in TINY_NET)}
    torch.manual_seed(7)
    source = LGFN(num_frames=3, **cfg_net)
    save_weights(source, tmp_path / "w.pt")
    torch.save({"state_dict": {f"net.{k}": v for k, v in source.state_dict().items()}, "net_config": source.config},
               tmp_path / "last.ckpt")
    for path in (tmp_path / "w.pt", tmp_path / "last.ckpt"):
        cfg = compose_cfg("train", tiny(tmp_path, f"model.init_from={path}"), tmp_path / "run")
        config.validate_config(cfg)
        model = instantiate(cfg.model)
        for k, v in source.state_dict().items():
            assert torch.equal(model.net.state_dict()[k], v), k
    # The release only fits the paper-size LGFN: a strict one-line error naming the keys and the fix.
    cfg = compose_cfg("train", tiny(tmp_path, f"model.init_from={release_file}"), tmp_path / "run2")
    with pytest.raises(SystemExit) as e:
        task.run_task(train_entry.train, cfg)
    assert e.value.code == 1
    lines = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.strip()]
    assert lines[-1].startswith(f"error: model.init_from={release_file} (the authors' released LGFN state dict "
                                "(the paper-size LGFN)) does not fit model.net ("), lines[-1]
    assert "unexpected" in lines[-1] and "shape mismatch" in lines[-1] and "model=lgfn" in lines[-1]


# ----------------------------------------------------------------------------- the paper beside the table
@pytest.fixture(scope="module")
def vid4_root(tmp_path_factory) -> Path:
    """Vid4 layout, GT/<clip>/*.png, two of the four clips, 7 frames of 32x32 (LR made on the fly)."""
    root = tmp_path_factory.mktemp("vid4_paper")
    for k, clip in enumerate(["calendar", "city"]):
        write_frames(root / "GT" / clip, 7, seed=60 + k)
    return root


def test_eval_release_on_vid4_prints_the_paper_beside_it(release_file, vid4_root, tmp_path, capsys):
    out = tmp_path / "eval"
    cfg = compose_cfg("eval", ["data=vid4", f"data.root={vid4_root}", "data.num_workers=0", "data.batch_size=5",
                               "trainer=cpu", "trainer.enable_progress_bar=false", f"ckpt_path={release_file}"], out)
    results = eval_entry.evaluate(cfg)  # model= left at its default: the release sets the paper's sizes
    captured = capsys.readouterr()
    assert "authors' release" in captured.err and "model.net set to its sizes (num_feat=64" in captured.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["paper"]["clips"]["calendar"]["LGFN"] == {"psnr": 24.11, "ssim": 0.8131}
    assert metrics["paper"]["clips"]["city"]["Bicubic"] == {"psnr": 25.17, "ssim": 0.6024}
    assert metrics["paper"]["average"] is None  # 2 of the 4 clips: the published average does not apply
    assert set(results["vid4"]["clips"]) == {"calendar", "city"}
    table = captured.out
    head = next(ln for ln in table.splitlines() if ln.startswith("clip"))
    assert [c.strip() for c in head.split("|")] == ["clip", "frames", "Bicubic", "paper Bicubic", "diff", "LGFN",
                                                    "paper LGFN", "diff", "gain", "tOF"]
    calendar = next(ln for ln in table.splitlines() if ln.startswith("calendar"))
    assert "20.39/0.5720" in calendar and "24.11/0.8131" in calendar
    measured = metrics["clips"]["calendar"]["psnr"]
    assert f"{measured - 24.11:+.2f}/" in calendar


def test_eval_bicubic_table_has_one_bicubic_column(vid4_root, tmp_path, capsys):
    out = tmp_path / "eval"
    cfg = compose_cfg("eval", ["model=bicubic", "data=vid4", f"data.root={vid4_root}", "data.num_workers=0",
                               "trainer=cpu", "trainer.enable_progress_bar=false"], out)
    eval_entry.evaluate(cfg)
    head = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("clip"))
    assert [c.strip() for c in head.split("|")] == ["clip", "frames", "Bicubic", "paper Bicubic", "diff", "tOF"]


def _result(dataset: str, clips: list[str], gain: bool) -> dict:
    extra = {"temporal_gain": 0.35} if gain else {}
    return {"dataset": dataset, "average_mode": "clip", "crop_border": 0,
            "clips": {c: {"psnr": 30.0, "ssim": 0.9, "frames": 5, **extra} for c in clips},
            "average": {"psnr": 30.0, "ssim": 0.9, **extra},
            "bicubic": {"clips": {c: {"psnr": 25.0, "ssim": 0.7} for c in clips},
                        "average": {"psnr": 25.0, "ssim": 0.7}}}


def test_table_gain_column_only_when_present():
    with_gain = format_table(_result("builtin", ["a", "b"], gain=True), "LGFN")
    head = with_gain.splitlines()[1]
    assert [c.strip() for c in head.split("|")][-1] == "gain" and "+0.35" in with_gain
    assert "gain" not in format_table(_result("builtin", ["a", "b"], gain=False), "LGFN")
    nan = _result("builtin", ["a"], gain=True)
    nan["clips"]["a"]["temporal_gain"] = float("nan")
    assert format_table(nan, "LGFN").splitlines()[3].rstrip().endswith("-")


def test_paper_numbers_per_dataset():
    vid4 = paper.published(_result("vid4", ["calendar", "city", "foliage", "walk"], gain=False))
    assert vid4["average"] == {"LGFN": {"psnr": 27.31, "ssim": 0.8248}, "Bicubic": {"psnr": 23.79, "ssim": 0.6347}}
    subset = paper.published(_result("spmcs", list(paper.SPMCS_SUBSET), gain=False))
    assert subset["average"]["LGFN"] == {"psnr": 30.34, "ssim": 0.8792} and len(subset["clips"]) == 8
    full = paper.published(_result("spmcs", [f"c{i}" for i in range(30)], gain=False))
    assert full["average"]["LGFN"] == {"psnr": 31.76, "ssim": 0.8872}
    res = _result("vimeo90k_t", ["00001/0001"], gain=False)
    res["groups"] = {"slow": {"psnr": 30.0, "ssim": 0.9}, "fast": {"psnr": 30.0, "ssim": 0.9}}
    vimeo = paper.published(res)
    assert vimeo["groups"]["fast"]["LGFN"] == {"psnr": 40.50, "ssim": 0.9634}
    assert vimeo["average"]["LGFN"]["psnr"] == 37.42
    table = format_table(res, "LGFN")
    assert "40.50/0.9634" in table and "37.42/0.9473" in table
    assert paper.published(_result("builtin", ["a"], gain=False)) is None
    # Vid4's published average is the mean of its four clip rows (to the printed precision).
    assert sum(r["LGFN"]["psnr"] for r in paper.VID4["clips"].values()) / 4 == pytest.approx(27.31, abs=0.005)
