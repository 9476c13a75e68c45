"""``baselines=[bicubic,basicvsr]``: the same test windows scored by baseline networks beside the model.

After ``trainer.test`` of the model, ``add_baselines`` runs every listed baseline on the same data module
(same windows, padding, crop border, temporal gain and tOF settings) and adds, per dataset:

- to the result (``metrics.json``), ``"baselines": {name: {"model": label, "clips": {...}, "average": {...}}}``
  (the contract's keys, ``clips``/``average``/``bicubic``/..., stay as they are);
- to each clip's sample (``LitLGFN.test_samples``), ``"baselines": {label: crop}``: the same crop of the same
  frame, which report.html adds to its comparison slider and strip.

``bicubic`` reuses the bicubic numbers LitLGFN measures anyway (its temporal gain is 0 by construction: it sees
the centre frame only). ``basicvsr`` is BasicVSR with its released weights (``model.weights`` when the model is
itself a BasicVSR with weights, else vimeo_bd for ``data.degradation=bd`` and vimeo_bi otherwise), run as a
second LitLGFN test pass with its own Trainer (built from ``trainer``, no logger).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig

from lgfn.checkpoints.basicvsr_weights import BaselineWeightsMissing, basicvsr_weights_for, resolve_weights
from lgfn.common.errors import ConfigError
from lgfn.models import BasicVSR
from lgfn.training.lit_module import LitLGFN

BASELINES = ("bicubic", "basicvsr")


def baseline_names(cfg: DictConfig) -> list[str]:
    """The ``baselines`` list, checked: known names, each once. One-line ConfigError otherwise."""
    value = cfg.get("baselines") or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple, ListConfig)):
        raise ConfigError(f"baselines={value!r}: expected a list such as baselines=[bicubic,basicvsr]")
    names = [str(v) for v in value]
    for name in names:
        if name not in BASELINES:
            raise ConfigError(f"baselines: unknown baseline {name!r} (choose from {', '.join(BASELINES)})")
    if len(set(names)) != len(names):
        raise ConfigError(f"baselines={names}: a baseline is listed twice")
    return names


def check_baselines(cfg: DictConfig) -> list[str]:
    """``baseline_names``, and the released weights of a listed basicvsr present (before any work starts)."""
    names = baseline_names(cfg)
    if "basicvsr" in names:
        try:
            resolve_weights(basicvsr_weights(cfg))
        except (BaselineWeightsMissing, ValueError, FileNotFoundError) as e:
            raise ConfigError(f"baselines=[basicvsr]: {e}") from None
    return names


def basicvsr_weights(cfg: DictConfig) -> str:
    """The released weights the basicvsr baseline runs with (see the module docstring)."""
    net = cfg.model.get("net") or {}
    if str(net.get("_target_", "")).endswith(".BasicVSR") and cfg.model.get("weights"):
        return str(cfg.model.weights)
    return basicvsr_weights_for(cfg.data.get("degradation", "bi"))


def _bicubic(result: Mapping[str, Any]) -> dict:
    bic = result["bicubic"]
    gain = "temporal_gain" in result.get("average", {})

    def row(v: Mapping) -> dict:
        return {**v, **({"temporal_gain": 0.0} if gain else {})}

    return {"model": "Bicubic", "clips": {c: row(v) for c, v in bic["clips"].items()}, "average": row(bic["average"])}


def _basicvsr(cfg: DictConfig, datamodule: Any) -> tuple[dict[str, dict], dict[str, dict], str]:
    """A LitLGFN test pass of BasicVSR on ``datamodule`` -> (test_results, test_samples, label)."""

    weights = basicvsr_weights(cfg)
    model = cfg.model
    lit = LitLGFN(BasicVSR(num_frames=int(cfg.data.num_frames)), weights=weights, log_images=0,
                  crop_border=int(model.get("crop_border", 0)), temporal_gain=bool(model.get("temporal_gain", True)),
                  tof=bool(model.get("tof", True)), test_images=int(model.get("test_images", 30)))
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    trainer.test(lit, datamodule=datamodule, verbose=False)
    return lit.test_results, lit.test_samples, f"BasicVSR ({weights})"


def add_baselines(cfg: DictConfig, results: dict[str, dict], samples: dict[str, dict]) -> None:
    """Run ``cfg.baselines`` on ``cfg``'s test data and add them to ``results`` / ``samples`` (in place)."""
    names = baseline_names(cfg)
    if not names or not results:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        print(f"note: baselines={names} skipped: they run on one device (python eval.py ... baselines=[...] "
              "without DDP)", file=sys.stderr, flush=True)
        return
    runs: dict[str, tuple[dict, dict, str]] = {}
    for name in names:
        if name == "basicvsr":
            runs[name] = _basicvsr(cfg, instantiate(cfg.data))
    for dataset, res in results.items():
        section = res.setdefault("baselines", {})
        for name in names:
            if name == "bicubic":
                section[name] = _bicubic(res)
                continue
            other, other_samples, label = runs[name]
            theirs = other.get(dataset)
            if theirs is None:
                continue
            section[name] = {"model": label, "clips": theirs["clips"], "average": theirs["average"],
                             **({"groups": theirs["groups"]} if theirs.get("groups") else {})}
            for clip, sample in (samples.get(dataset) or {}).items():
                crop = (other_samples.get(dataset) or {}).get(clip)
                if crop is not None and crop.get("frame") == sample.get("frame") and "sr" in crop:
                    sample.setdefault("baselines", {})[label] = crop["sr"]


__all__ = ["BASELINES", "add_baselines", "baseline_names", "basicvsr_weights", "check_baselines"]
