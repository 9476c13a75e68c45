"""The weights-only file: round trip, Lightning export, and the refusals (wrong net, truncated, unsafe)."""

from __future__ import annotations

import os

import pytest
import torch

from lgfn.checkpoints.reader import export_weights_from_checkpoint, load_network
from lgfn.checkpoints.weights_file import save_weights
from lgfn.models import LGFN
from lgfn.models.bicubic import Bicubic

TINY = dict(num_frames=3, num_feat=8, num_extract_blocks=1, num_align_stages=1, deformable_groups=2,
            num_lfm=1, num_gfm=1, gfm_slice_channels=2, num_rcab=1)


def tiny_net(seed: int = 0, **over) -> LGFN:
    torch.manual_seed(seed)
    cfg = {**TINY, **over}
    net = LGFN(**cfg).eval()
    if not hasattr(net, "config"):
        net.config = dict(cfg)
    return net


def test_round_trip_same_outputs(tmp_path):
    net = tiny_net()
    path = tmp_path / "w.pt"
    save_weights(net, path, meta={"padding": "replicate", "note": "test"})
    obj = torch.load(path, weights_only=True)  # plain types + tensors only
    assert obj["format"] == "lgfn-weights" and obj["version"] == 1 and obj["net_class"] == "LGFN"
    loaded, meta = load_network(path)
    assert meta["padding"] == "replicate" and meta["num_frames"] == 3 and meta["scale"] == 4
    assert meta["degradation"] == "bi" and meta["note"] == "test"
    x = torch.rand(1, 3, 3, 9, 11)
    with torch.inference_mode():
        assert torch.equal(net(x), loaded(x))
    assert not loaded.training


def test_bicubic_round_trip(tmp_path):
    save_weights(Bicubic(5, 4), tmp_path / "b.pt")
    net, meta = load_network(tmp_path / "b.pt")
    assert isinstance(net, Bicubic) and meta["num_frames"] == 5


def test_lightning_checkpoint_prefers_ema(tmp_path):
    net, ema = tiny_net(0), tiny_net(1)
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    state.update({f"ema.module.{k}": v for k, v in ema.state_dict().items()})
    state["ema.n_averaged"] = torch.tensor(3)
    ckpt = {"state_dict": state, "net_config": dict(TINY), "epoch": 2, "global_step": 10,
            "hyper_parameters": {"lr": 1e-4, "milestones": (1, 2)},
            "datamodule_hyper_parameters": {"padding": "reflection", "degradation": "bd"}}
    torch.save(ckpt, tmp_path / "last.ckpt")
    x = torch.rand(1, 3, 3, 8, 8)
    loaded, meta = load_network(tmp_path / "last.ckpt")
    with torch.inference_mode():
        assert torch.equal(loaded(x), ema(x)) and not torch.equal(loaded(x), net(x))
    assert meta["padding"] == "reflection" and meta["degradation"] == "bd" and meta["ema"] is True
    meta = export_weights_from_checkpoint(tmp_path / "last.ckpt", tmp_path / "w.pt")
    assert meta["epoch"] == 2
    again, meta2 = load_network(tmp_path / "w.pt")
    with torch.inference_mode():
        assert torch.equal(again(x), ema(x))
    assert torch.load(tmp_path / "w.pt", weights_only=True)["net_class"] == "LGFN"
    # Without EMA the plain "net.*" weights are used.
    del ckpt["datamodule_hyper_parameters"]
    ckpt["state_dict"] = {k: v for k, v in state.items() if k.startswith("net.")}
    torch.save(ckpt, tmp_path / "plain.ckpt")
    loaded, meta = load_network(tmp_path / "plain.ckpt")
    with torch.inference_mode():
        assert torch.equal(loaded(x), net(x))
    assert meta["padding"] == "reflection_circle"


def test_wrong_architecture_lists_keys(tmp_path):
    save_weights(tiny_net(), tmp_path / "w.pt")
    obj = torch.load(tmp_path / "w.pt", weights_only=True)
    obj["net_config"]["num_feat"] = 16  # a wider net: every conv shape differs
    obj["state_dict"].pop("reconstruction.conv_last.bias")
    torch.save(obj, tmp_path / "bad.pt")
    with pytest.raises(ValueError) as e:
        load_network(tmp_path / "bad.pt")
    msg = str(e.value)
    assert "\n" not in msg and "bad.pt" in msg
    assert "missing 1: reconstruction.conv_last.bias" in msg
    assert "shape mismatch" in msg and "more)" in msg


def test_unknown_class_refused(tmp_path):
    save_weights(tiny_net(), tmp_path / "w.pt")
    obj = torch.load(tmp_path / "w.pt", weights_only=True)
    obj["net_class"] = "os.system"
    torch.save(obj, tmp_path / "evil_class.pt")
    with pytest.raises(ValueError, match="not one of the allowed classes"):
        load_network(tmp_path / "evil_class.pt")


def test_truncated_file_one_line_error(tmp_path):
    save_weights(tiny_net(), tmp_path / "w.pt")
    data = (tmp_path / "w.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError) as e:
        load_network(tmp_path / "cut.pt")
    assert "cut.pt" in str(e.value) and "\n" not in str(e.value)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"format": "lgfn-weights", "payload": _Evil(marker)}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="evil.pt"):
        load_network(tmp_path / "evil.pt")
    assert not marker.exists()


def test_save_is_atomic_and_refuses_unknown_class(tmp_path):
    with pytest.raises(ValueError, match="only"):
        save_weights(torch.nn.Conv2d(3, 3, 3), tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []
