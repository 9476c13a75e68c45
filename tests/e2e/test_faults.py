"""Faults, bad input and untrusted files: kill/resume, SIGTERM, atomic saves, NaN, checkpoints, list paths."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from entry import ROOT, TINY_NET, compose_cfg, run_script, tiny

from lgfn.app import config, task
from lgfn.checkpoints.lightning_io import AtomicCheckpointIO, atomic_torch_save, load_checkpoint
from lgfn.common.errors import ConfigError
from lgfn.data.datasets import ResumableSampler

STEPS = 6
# Checkpoint every step (without a monitor: a monitored ModelCheckpoint waits for validation). An epoch of
# the small built-in set is longer than STEPS batches, so a kill lands mid-epoch.
RESUME_RUN = ["test=false", "callbacks.model_checkpoint.monitor=null", "+callbacks.model_checkpoint.every_n_train_steps=1"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


def _train_args(data_dir: Path, out: Path, *extra: str, steps: int = STEPS) -> list[str]:
    return [*tiny(data_dir, *RESUME_RUN, *extra, steps=steps), f"hydra.run.dir={out}"]


def _popen(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_step(proc: subprocess.Popen, ckpt: Path, step: int, timeout: float = 120) -> int:
    """Poll `ckpt` (written atomically, so always whole) until its global_step reaches `step`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training ended before step {step}: {proc.stderr.read()[-3000:]}")
        # Loaded on every poll: a step takes ~0.1 s and file times may be too coarse to see each save.
        with contextlib.suppress(FileNotFoundError):
            got = torch.load(ckpt, weights_only=True)["global_step"]
            if got >= step:
                return got
        time.sleep(0.01)
    raise AssertionError(f"no checkpoint with global_step >= {step} after {timeout} s")


def _net_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("net.")}


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _net_weights(a), _net_weights(b)
    assert wa.keys() == wb.keys() and wa
    diff = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not diff, f"{len(diff)} tensors differ, e.g. {diff[0]}: max |diff| {(wa[diff[0]] - wb[diff[0]]).abs().max()}"


@pytest.fixture(scope="module")
def reference_run(data_dir, tmp_path_factory) -> Path:
    """An uninterrupted run of STEPS steps (its final last.ckpt)."""
    out = tmp_path_factory.mktemp("reference")
    proc = run_script("train.py", _train_args(data_dir, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = out / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == STEPS
    return last


# ----------------------------------------------------------------------------- pre-emption
@pytest.mark.slow
def test_sigkill_then_resume_gives_bit_identical_weights(data_dir, reference_run, tmp_path):
    killed = tmp_path / "killed"
    proc = _popen(_train_args(data_dir, killed))
    last = killed / "checkpoints" / "last.ckpt"
    try:
        _wait_for_step(proc, last, 2)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    at = torch.load(last, weights_only=True)["global_step"]
    assert 2 <= at < STEPS, f"the kill came too late (step {at}): nothing left to resume"
    # The interrupted run's weights are not the final ones yet.
    with pytest.raises(AssertionError):
        _assert_same_weights(last, reference_run)
    resumed = tmp_path / "resumed"
    proc2 = run_script("train.py", _train_args(data_dir, resumed, f"ckpt_path={last}"))
    assert proc2.returncode == 0, proc2.stderr[-3000:]
    final = resumed / "checkpoints" / "last.ckpt"
    assert torch.load(final, weights_only=True)["global_step"] == STEPS
    _assert_same_weights(final, reference_run)
    assert "dataloader is not resumable" not in proc2.stderr


@pytest.mark.slow
def test_sigterm_saves_last_ckpt_exits_nonzero_and_resumes_exactly(data_dir, reference_run, tmp_path):
    # Only SaveOnSignal writes last.ckpt here; the per-step files tell when training runs.
    run = tmp_path / "term"
    proc = _popen(_train_args(data_dir, run, "callbacks.model_checkpoint.save_last=false"))
    try:
        deadline = time.monotonic() + 120
        while not list((run / "checkpoints").glob("best-step*.ckpt")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    state = load_checkpoint(last)  # whole, and loadable with weights_only=True
    step = state["global_step"]
    assert f"SIGTERM: saved {last} at step {step}" in err
    assert 1 <= step < STEPS
    assert not list(last.parent.glob(".*.tmp*"))
    resumed = tmp_path / "resumed"
    proc2 = run_script("train.py", _train_args(data_dir, resumed, f"ckpt_path={last}"))
    assert proc2.returncode == 0, proc2.stderr[-3000:]
    _assert_same_weights(resumed / "checkpoints" / "last.ckpt", reference_run)


# ----------------------------------------------------------------------------- deterministic data order
class _Range(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


def test_sampler_order_is_a_function_of_seed_and_epoch_and_can_start_midway():
    ds = _Range(10)
    full = list(ResumableSampler(ds, seed=3, num_replicas=1, rank=0, epoch=2))
    assert sorted(i for i, _ in full) == list(range(10))
    assert full == list(ResumableSampler(ds, seed=3, num_replicas=1, rank=0, epoch=2))  # no global RNG involved
    torch.manual_seed(123)
    assert full == list(ResumableSampler(ds, seed=3, num_replicas=1, rank=0, epoch=2))
    assert [i for i, _ in full] != [i for i, _ in ResumableSampler(ds, seed=3, num_replicas=1, rank=0, epoch=1)]
    # Resuming at sample 4 yields the rest of the same epoch; len() stays the whole epoch (Lightning's count).
    resumed = ResumableSampler(ds, seed=3, num_replicas=1, rank=0)
    resumed.load_state_dict({"epoch": 2, "start": 4})
    resumed.set_epoch(2)  # Lightning sets the same epoch after restoring: the skip stays
    assert list(resumed) == full[4:] and len(resumed) == 10
    resumed.set_epoch(3)
    assert list(resumed) == list(ResumableSampler(ds, seed=3, num_replicas=1, rank=0, epoch=3))
    # Two ranks split the padded permutation; per-sample seeds do not depend on the rank.
    parts = [list(ResumableSampler(_Range(9), seed=3, num_replicas=2, rank=r, epoch=2)) for r in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == 5
    assert {i for p in parts for i, _ in p} == set(range(9))
    seeds = {i: s for p in parts for i, s in p}
    assert all(seeds[i] == s for i, s in ResumableSampler(_Range(9), seed=3, num_replicas=1, rank=0, epoch=2))


def test_train_sample_is_reproducible_from_its_seed(tiny_folder):
    from lgfn.data.datasets import VSRTrainDataset
    from lgfn.data.layouts import discover_folder

    ds = VSRTrainDataset(discover_folder(tiny_folder).clips[1:], num_frames=3, padding="reflection", patch_size=16)
    a = ds[(2, 77)]
    torch.rand(5)  # the global RNG moving on does not matter
    b = ds[(2, 77)]
    assert torch.equal(a["lr"], b["lr"]) and torch.equal(a["hr"], b["hr"])
    others = [ds[(2, s)]["lr"] for s in range(8)]
    assert any(not torch.equal(o, a["lr"]) for o in others)  # the seed does drive crops/flips


# ----------------------------------------------------------------------------- atomic checkpoint writes
def _breaking_save(obj, f, *args, **kwargs):
    f.write(b"PK\x03\x04 half a checkpoint")
    raise OSError("disk full (simulated)")


def test_failed_save_keeps_previous_checkpoint_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1, "w": torch.arange(4.0)}, path)
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", _breaking_save)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(4)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    assert io.load_checkpoint(path)["global_step"] == 1


def test_sigkill_mid_save_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"global_step": 1, "w": torch.arange(4.0)}, path)
    before = path.read_bytes()
    # A child process writes half a checkpoint through atomic_torch_save, then hangs until killed.
    code = (
        "import sys, time, torch\n"
        "from lgfn.checkpoints.lightning_io import atomic_torch_save\n"
        "def slow(obj, f, *a, **k):\n"
        "    f.write(b'x' * 100000); f.flush(); print('writing', flush=True); time.sleep(60)\n"
        "torch.save = slow\n"
        f"atomic_torch_save({{'global_step': 2}}, {str(path)!r})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.stdout.close()
    assert path.read_bytes() == before
    assert load_checkpoint(path)["global_step"] == 1
    # The kill leaves only a hidden temp file beside it, never a half-written last.ckpt.
    assert all(p.name.startswith(".last.ckpt.") and ".tmp" in p.suffixes for p in tmp_path.iterdir() if p != path)


# ----------------------------------------------------------------------------- non-finite loss, offsets
class _PoisonNet(torch.nn.Module):
    """B x N x 3 x h x w -> B x 3 x 4h x 4w; returns NaN on the `poison_at`-th call (0-based)."""

    def __init__(self, poison_at: int | None) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.poison_at, self.calls = poison_at, 0

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        out = torch.nn.functional.interpolate(self.conv(lr[:, lr.shape[1] // 2]), scale_factor=4.0)
        self.calls += 1
        return out * float("nan") if self.calls - 1 == self.poison_at else out


class _Windows(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        return {"lr": torch.rand(3, 3, 8, 8, generator=g), "hr": torch.rand(3, 32, 32, generator=g)}


def _fit(net: torch.nn.Module, steps: int, **hparams):
    import lightning as L

    from lgfn.training.lit_module import LitLGFN

    module = LitLGFN(net, scheduler="constant", **hparams)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        log_every_n_steps=1)
    trainer.fit(module, torch.utils.data.DataLoader(_Windows(), batch_size=2))
    return module, trainer


def test_nan_loss_raise_names_the_step():
    with pytest.raises(FloatingPointError, match=r"non-finite training loss \(nan\) at step 2 \(batch 2\).*nan_policy=skip"):
        _fit(_PoisonNet(poison_at=2), steps=4)


def test_nan_loss_skip_goes_on(recwarn):
    net = _PoisonNet(poison_at=1)
    module, trainer = _fit(net, steps=3, nan_policy="skip")
    # Lightning still counts the skipped batch as a step (the optimizer sees no gradients, so changes nothing).
    assert trainer.global_step == 3 and net.calls == 3
    assert any("at step 1 (batch 1): batch skipped" in str(w.message) for w in recwarn)
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_nan_skip_refuses_when_weights_are_non_finite():
    net = _PoisonNet(poison_at=None)
    with torch.no_grad():
        net.conv.weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match=r"at step 0 .*weight conv\.weight is non-finite, so skipping cannot"):
        _fit(net, steps=4, nan_policy="skip")


def test_nan_skip_gives_up_after_many_in_a_row(monkeypatch):
    from lgfn.training.lit_module import LitLGFN

    monkeypatch.setattr(LitLGFN, "MAX_SKIPS_IN_A_ROW", 3)
    net = _PoisonNet(poison_at=None)
    net.forward = lambda lr: torch.full((lr.shape[0], 3, 32, 32), float("nan")) + 0 * net.conv.weight.sum()
    with pytest.raises(FloatingPointError, match=r"at step 3 .*4 batches in a row were non-finite"):
        _fit(net, steps=10, nan_policy="skip")


def test_exploding_offsets_warn_and_are_logged():
    from lgfn.models import LGFN

    cfg = {k.split(".")[-1]: int(v) for k, v in (o.split("=") for o in TINY_NET)}
    net = LGFN(num_frames=3, **cfg)
    dcns = [m for n, m in net.named_modules() if n.endswith("dcn")]
    assert dcns
    for dcn in dcns:
        torch.nn.init.constant_(dcn.conv_offset.bias, 80.0)
    with pytest.warns(UserWarning, match=r"mean \|DCN offset\| reached 8\d\.\d px at step 0 .*offset_lr_mult"):
        _, trainer = _fit(net, steps=1, offset_warn=50.0)
    logged = {k: float(v) for k, v in trainer.logged_metrics.items() if k.startswith("offset/")}
    assert logged and all(v > 50 for v in logged.values()), logged


# ----------------------------------------------------------------------------- untrusted checkpoints
class _Evil:
    """Unpickling this calls open(marker, 'w'): a file appears if the loader runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _tiny_lit(num_feat: int = 8):
    from lgfn.models import LGFN
    from lgfn.training.lit_module import LitLGFN

    cfg = {k.split(".")[-1]: int(v) for k, v in (o.split("=") for o in TINY_NET)}
    cfg["num_feat"] = num_feat
    return LitLGFN(LGFN(num_frames=3, **cfg))


def _eval_args(data_dir: Path, ckpt: Path, *extra: str) -> list[str]:
    return ["trainer=cpu", "logger=csv", f"paths.data_dir={data_dir}", *TINY_NET, "data.num_frames=3",
            "data.builtin_small=true", "data.num_workers=0", f"ckpt_path={ckpt}", *extra]


def _one_line_error(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert "Traceback" not in text, text[-3000:]
    return lines[-1]


@pytest.mark.slow
def test_eval_adopts_the_checkpoint_sizes_and_lists_keys_when_it_cannot(data_dir, tmp_path):
    model = _tiny_lit(num_feat=8)
    ckpt = tmp_path / "small.ckpt"
    torch.save({"state_dict": model.state_dict(), "net_config": model.net_config}, ckpt)
    # The file says its sizes: eval.py uses them (with a note), as lgfn-upscale --ckpt does.
    proc = run_script("eval.py", [*_eval_args(data_dir, ckpt, "model.net.num_feat=16"), f"hydra.run.dir={tmp_path / 'e'}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "model.net set to its sizes (num_feat=8)" in proc.stderr
    assert (tmp_path / "e" / "metrics.json").is_file()
    # A bare state_dict holds no sizes: a strict one-line error listing the keys.
    bare = tmp_path / "bare.pt"
    torch.save(model.net.state_dict(), bare)
    proc = run_script("eval.py", [*_eval_args(data_dir, bare, "model.net.num_feat=16"), f"hydra.run.dir={tmp_path / 'b'}"])
    assert proc.returncode == 1
    line = _one_line_error(proc.stderr)
    assert line.startswith(f"error: ckpt_path={bare} (a bare state_dict) does not fit model.net (shape mismatch"), line
    listed = re.search(r"shape mismatch (\d+): ([^;)]*)", line)
    assert listed and int(listed[1]) > 5 and listed[2].split(", ")[0] in model.net.state_dict(), line
    assert line.endswith("use the model.net sizes it was trained with"), line
    assert not (tmp_path / "b" / "metrics.json").exists()


def test_truncated_checkpoint_is_a_one_line_error(data_dir, tmp_path, capsys):
    import eval as eval_entry
    from lgfn.checkpoints.reader import load_network

    model = _tiny_lit()
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": model.state_dict(), "net_config": model.net_config}, good)
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"cannot load checkpoint .*cut\.ckpt"):
        load_network(cut)
    cfg = compose_cfg("eval", _eval_args(data_dir, cut), tmp_path / "e")
    with pytest.raises(SystemExit) as exc:
        task.run_task(eval_entry.evaluate, cfg)
    assert exc.value.code == 1
    assert _one_line_error(capsys.readouterr().err).startswith(f"error: cannot load checkpoint {cut}")


def test_malicious_pickle_is_refused_everywhere(data_dir, tmp_path, capsys):
    import eval as eval_entry
    import train as train_entry
    from lgfn.inference.upscale import main as upscale_main

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"net.x": _Evil(marker)}, "net_config": {}, "global_step": 0}, evil)
    # Control: a loader that trusts the file does run the code.
    torch.load(evil, weights_only=False)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(ValueError, match="weights_only=True"):
        load_checkpoint(evil)
    # eval.py
    cfg = compose_cfg("eval", _eval_args(data_dir, evil), tmp_path / "e")
    with pytest.raises(SystemExit):
        task.run_task(eval_entry.evaluate, cfg)
    assert _one_line_error(capsys.readouterr().err).startswith(f"error: cannot load checkpoint {evil}")
    # lgfn-upscale
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        from PIL import Image

        Image.new("RGB", (8, 8), (10 * i, 20, 30)).save(frames / f"{i}.png")
    assert upscale_main([str(frames), str(tmp_path / "out"), "--ckpt", str(evil), "--device", "cpu"]) == 1
    assert _one_line_error(capsys.readouterr().err).startswith(f"lgfn-upscale: error: cannot load checkpoint {evil}")
    assert not (tmp_path / "out").exists()
    # train.py ckpt_path= (resume)
    cfg = compose_cfg("train", tiny(data_dir, "test=false", f"ckpt_path={evil}"), tmp_path / "t")
    with pytest.raises(SystemExit):
        task.run_task(train_entry.train, cfg)
    assert _one_line_error(capsys.readouterr().err).startswith(f"error: cannot load checkpoint {evil}")
    assert not marker.exists()


# ----------------------------------------------------------------------------- paths in list files
@pytest.mark.parametrize("entry", ["../outside/0001", "/etc/passwd", "00001/../../x", "~/clips", "a\\..\\b"])
def test_list_entries_cannot_leave_the_dataset_root(entry, tmp_path, tiny_vimeo90k, tiny_folder):
    import shutil

    from lgfn.data.layouts import discover_folder, discover_vimeo90k

    root = tmp_path / "vimeo"
    shutil.copytree(tiny_vimeo90k, root)
    listed = root / "sep_trainlist.txt"
    listed.write_text(listed.read_text() + f"{entry}\n")
    with pytest.raises(ValueError, match=rf"sep_trainlist\.txt:\d+: entry {re.escape(repr(entry))} must be a clip path relative"):
        discover_vimeo90k(root, "train")
    clip_list = tmp_path / "clips.txt"
    clip_list.write_text(f"b\n{entry}\n")
    with pytest.raises(ValueError, match=rf"clips\.txt:2: entry {re.escape(repr(entry))}"):
        discover_folder(tiny_folder, clip_list=str(clip_list))


def test_list_entries_with_subfolders_still_work(tiny_vimeo90k):
    from lgfn.data.layouts import discover_vimeo90k

    assert all("/" in c.name for c in discover_vimeo90k(tiny_vimeo90k, "train").clips)


# ----------------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    "overrides,match",
    [
        (["experiment=quickstart", "+data.patch_sise=64"], r"unknown config key data\.patch_sise.*did you mean data\.patch_size"),
        (["experiment=ablation_lfm", "+model.net.use_lmf=true"], r"unknown config key model\.net\.use_lmf"),
        (["experiment=quickstart", "data.batch_size=eight"], r"data\.batch_size='eight': expected int"),
        (["experiment=full", "model.net.use_lfm=false", "model.net.use_gfm=false"], "cannot both be false"),
        (["experiment=quickstart", "data.patch_size=66"], r"data\.patch_size=66 must be divisible"),
    ],
)
def test_bad_config_inside_an_experiment_is_named(overrides, match, tmp_path):
    cfg = compose_cfg("train", overrides, tmp_path)
    with pytest.raises(ConfigError, match=match):
        config.validate_config(cfg)
