"""What train.py and eval.py do with a checkpoint path: resume it, score it, or export the run's best.

All of them read the file through ``lgfn.checkpoints.reader`` (one reader, one strict key check), so a
file that cannot serve is refused in one line naming the file, what it is and the override that would work.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from lgfn.checkpoints.reader import (
    NetFile,
    check_fits,
    export_weights_from_checkpoint,
    load_weights_into,
    read_net_file,
)
from lgfn.common.errors import ConfigError


def _is_lgfn(net_cfg: Any) -> bool:
    return net_cfg is not None and str(net_cfg.get("_target_", "")).rsplit(".", 1)[-1] == "LGFN"


def adopt_checkpoint_sizes(cfg: DictConfig) -> NetFile | None:
    """eval.py ckpt_path=FILE: read FILE once; an LGFN ``model.net`` takes the sizes FILE was saved with.

    The authors' release holds no config (only the paper-size LGFN fits it); a Lightning checkpoint or a
    weights file holds its ``net_config`` (an ablation's toggles included). Sizes that differ from
    ``model.net`` are replaced, with a one-line note; a different frame count is an error. Other networks
    are left to the strict key check.
    """
    if not cfg.get("ckpt_path"):
        return None
    nf = read_net_file(cfg.ckpt_path)
    net = cfg.model.get("net")
    if not _is_lgfn(net) or not nf.net_config or (nf.net_class or "LGFN") != "LGFN":
        return nf
    frames = nf.net_config.get("num_frames")
    if frames is not None and frames != cfg.data.num_frames:
        raise ConfigError(f"ckpt_path={nf.describe()} is an LGFN for {frames} frames: data.num_frames="
                          f"{cfg.data.num_frames} cannot use it (set data.num_frames={frames})")
    changed = {k: v for k, v in nf.net_config.items() if k != "num_frames" and net.get(k, v) != v}
    if changed:
        with open_dict(cfg):
            for k, v in changed.items():
                net[k] = v
        what = "the authors' release (the paper-size LGFN)" if nf.kind == "release" else f"a {nf.kind} file"
        print(f"note: ckpt_path is {what}: model.net set to its sizes "
              f"({', '.join(f'{k}={v}' for k, v in changed.items())})", file=sys.stderr, flush=True)
    return nf


def load_net_weights(model: Any, ckpt: str | os.PathLike | NetFile) -> str:
    """Load a file's network weights into ``model.net`` (strict); returns what the file was.

    With ``model.ema_decay`` set, evaluation runs the averaged copy (``model.eval_net``), so it gets the same
    weights: the file's weights are what is scored, whichever copy the module evaluates.
    """
    kind = load_weights_into(model.net, ckpt, "ckpt_path")
    ema = getattr(model, "ema", None)
    if ema is not None:
        ema.module.load_state_dict(model.net.state_dict())
    return kind


def check_resumable(path: str | os.PathLike, model: Any) -> None:
    """train.py ckpt_path=FILE continues a run: FILE must be a whole Lightning checkpoint that fits ``model.net``."""
    nf = read_net_file(path)
    if not nf.resumable:
        raise ConfigError(f"ckpt_path={nf.describe()} is not a Lightning checkpoint to resume (train.py ckpt_path= "
                          f"continues a run from its last.ckpt); to start training from these weights use "
                          f"model.init_from={path}")
    check_fits(model.net, nf, "ckpt_path")


def export_weights(trainer: Any, out_path: str, which: str = "best") -> Path:
    """Turn the run's best (or last) Lightning checkpoint into the weights-only file lgfn-upscale loads."""
    cb = trainer.checkpoint_callback
    ckpt = (cb.best_model_path if which == "best" else "") or cb.last_model_path
    if not ckpt:
        raise ValueError("export_weights: the run wrote no checkpoint to export")
    export_weights_from_checkpoint(ckpt, out_path)
    print(f"weights written to {out_path} (from {ckpt})", flush=True)
    return Path(out_path)
