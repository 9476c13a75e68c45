"""What train.py and eval.py share: config checks, object building, checkpoint loading and the results report."""

from __future__ import annotations

import difflib
import inspect
import json
import math
import os
import sys
import traceback
import types
import typing
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_class, get_method, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key."""


# ---------------------------------------------------------------------------- resolvers
def _group(experiment_name: str) -> str:
    """W&B group: the sweep's id in a multirun (one dashboard per sweep), else the experiment name."""
    try:
        hc = HydraConfig.get()
    except ValueError:
        return experiment_name
    if hc.mode == RunMode.MULTIRUN:
        return "sweep-" + Path(hc.sweep.dir).name
    return experiment_name


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("lgfn_group"):
        OmegaConf.register_new_resolver("lgfn_group", _group)


register_resolvers()
# conf/hydra/launcher/*.yaml spell out the plugins' settings under the plugins' own names, on purpose.
warnings.filterwarnings("ignore", message=r".*is validated against ConfigStore schema with the same name.*")


# ---------------------------------------------------------------------------- validation
def _type_ok(value: Any, annotation: Any) -> bool:
    if annotation is inspect.Parameter.empty or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence, typing.Sequence) or annotation in (list, tuple):
        return isinstance(value, (list, tuple, ListConfig))
    if origin in (dict, Mapping) or annotation is dict:
        return isinstance(value, (dict, DictConfig))
    return True  # modules, callables and other objects are checked by their constructors


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def validate_node(node: DictConfig, key: str) -> None:
    """Check a `_target_` node's keys and simple types against the target's signature, recursively."""
    target = node.get("_target_")
    if target is None:
        return
    try:
        obj = get_class(target)
    except Exception:
        try:
            obj = get_method(target)
        except Exception as e:
            raise ConfigError(f"{key}._target_: cannot import {target!r} ({e})") from None
    fn = obj.__init__ if inspect.isclass(obj) else obj
    try:
        sig = inspect.signature(fn, eval_str=True)
    except (TypeError, ValueError, NameError):
        return
    params = {n: p for n, p in sig.parameters.items() if n != "self"}
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for name in node:
        if str(name).startswith("_"):
            continue
        full = f"{key}.{name}"
        if name not in params:
            if takes_kwargs:
                continue
            close = difflib.get_close_matches(str(name), list(params), n=1)
            hint = f" (did you mean {key}.{close[0]}?)" if close else ""
            raise ConfigError(f"unknown config key {full}: {target} does not take {name!r}{hint}")
        value = node[name]
        if isinstance(value, DictConfig) and "_target_" in value:
            validate_node(value, full)
            continue
        if isinstance(value, DictConfig):
            continue
        plain = OmegaConf.to_object(value) if isinstance(value, ListConfig) else value
        if not _type_ok(plain, params[name].annotation):
            raise ConfigError(
                f"config key {full}={plain!r}: expected {_type_name(params[name].annotation)}, "
                f"got {type(plain).__name__}"
            )
    missing = [
        n for n, p in params.items()
        if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and n not in node
    ]
    if missing and target.split(".")[-1] != "Trainer":
        raise ConfigError(f"config {key} ({target}) is missing required key(s): {', '.join(missing)}")


def validate_config(cfg: DictConfig) -> None:
    """Fail before any work starts, with the key's name, on typos, wrong types and impossible combinations."""
    for key in ("model", "data"):
        if key not in cfg or cfg[key] is None:
            raise ConfigError(f"config group {key} is not set (choose e.g. {key}=...)")
        validate_node(cfg[key], key)
    if cfg.get("trainer"):
        validate_node(cfg.trainer, "trainer")
    for group in ("callbacks", "logger"):
        for name, node in (cfg.get(group) or {}).items():
            if isinstance(node, DictConfig):
                validate_node(node, f"{group}.{name}")
    net = cfg.model.get("net", {})
    if net.get("use_lfm") is False and net.get("use_gfm") is False:
        raise ConfigError("model.net.use_lfm and model.net.use_gfm cannot both be false: the model needs a fusion branch")
    if "num_frames" in net and net.num_frames != cfg.data.num_frames:
        raise ConfigError(f"model.net.num_frames={net.num_frames} differs from data.num_frames={cfg.data.num_frames}")
    scale = net.get("scale", 4)
    patch = cfg.data.get("patch_size")
    if patch is not None and patch % scale:
        raise ConfigError(f"data.patch_size={patch} must be divisible by the scale ({scale})")


# ---------------------------------------------------------------------------- building
def instantiate_list(node: DictConfig | None) -> list:
    """Instantiate every `_target_` entry of a config group (callbacks, loggers); null entries are skipped."""
    if not node:
        return []
    return [instantiate(v) for v in node.values() if isinstance(v, DictConfig) and "_target_" in v]


def output_dir() -> Path:
    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return Path.cwd()


def save_resolved_config(cfg: DictConfig, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out / "config_resolved.yaml", resolve=True)


def load_net_weights(model: Any, ckpt_path: str | os.PathLike) -> dict:
    """Load network weights from a Lightning checkpoint or a weights-only file into `model.net`."""
    import torch

    from lgfn.checkpoint import load_checkpoint
    from lgfn.weights import net_state

    ckpt = load_checkpoint(ckpt_path)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"checkpoint {ckpt_path}: expected a 'state_dict' of tensors")
    state = net_state(state) or state  # a Lightning checkpoint, else the network's own state_dict
    net = model.net
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        parts = [f"{n} {len(k)}: {show(k)}" for n, k in (("missing", missing), ("unexpected", unexpected),
                                                         ("shape mismatch", wrong)) if k]
        saved = ckpt.get("net_config") if isinstance(ckpt, dict) else None
        hint = f"; the checkpoint was saved with net config {dict(saved)}" if saved else ""
        raise ValueError(f"checkpoint {ckpt_path} does not fit model.net ({'; '.join(parts)}){hint}")
    net.load_state_dict(state)
    return ckpt


def export_weights(trainer: Any, out_path: str, which: str = "best") -> Path:
    """Turn the run's best (or last) Lightning checkpoint into the weights-only file lgfn-upscale loads."""
    from lgfn.weights import export_weights_from_checkpoint

    cb = trainer.checkpoint_callback
    ckpt = (cb.best_model_path if which == "best" else "") or cb.last_model_path
    if not ckpt:
        raise ValueError("export_weights: the run wrote no checkpoint to export")
    export_weights_from_checkpoint(ckpt, out_path)
    print(f"weights written to {out_path} (from {ckpt})", flush=True)
    return Path(out_path)


# ---------------------------------------------------------------------------- report
def model_label(model: Any, cfg: DictConfig) -> str:
    """The model column's title: the network's class, and the experiment when there is one."""
    name = type(model.net).__name__
    return name if cfg.experiment_name in ("default", "eval") else f"{name} ({cfg.experiment_name})"


def format_table(result: dict, model_name: str = "LGFN") -> str:
    """The per-clip table in the layout of the paper's tables: clip rows, bicubic and the model side by side."""
    clips = result["clips"]
    bic = result.get("bicubic", {}).get("clips", {})
    width = max([len("Average"), *(len(c) for c in clips)])
    head = f"{'clip':<{width}} | {'frames':>6} | {'Bicubic':>15} | {model_name:>15}"
    lines = [
        f"{result['dataset']}: PSNR/SSIM on Y (BT.601), border crop {result.get('crop_border', 0)}, "
        f"average over {'clips (each clip counts equally)' if result.get('average_mode') == 'clip' else 'all frames'}",
        head,
        "-" * len(head),
    ]

    def cell(d: dict) -> str:
        return f"{d['psnr']:.2f}/{d['ssim']:.4f}" if d else "-"

    for clip, vals in clips.items():
        lines.append(f"{clip:<{width}} | {vals['frames']:>6} | {cell(bic.get(clip, {})):>15} | {cell(vals):>15}")
    lines.append("-" * len(head))
    frames = sum(v["frames"] for v in clips.values())
    avg_bic = result.get("bicubic", {}).get("average", {})
    lines.append(f"{'Average':<{width}} | {frames:>6} | {cell(avg_bic):>15} | {cell(result['average']):>15}")
    for g, vals in result.get("groups", {}).items():
        lines.append(f"{g:<{width}} | {'':>6} | {'':>15} | {cell(vals):>15}")
    return "\n".join(lines)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_json_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_json_safe(obj), indent=2) + "\n")
    os.replace(tmp, path)


def report_results(results: dict[str, dict], trainer: Any, out: Path, model_name: str, show: bool = True) -> None:
    """Write metrics.json, print the table and log it as a W&B table (rank 0 only)."""
    if not results or not trainer.is_global_zero:
        return
    out.mkdir(parents=True, exist_ok=True)
    # metrics.json holds one dataset (the contract's shape); a datamodule has one test set.
    for i, (name, res) in enumerate(results.items()):
        write_json_atomic(res, out / ("metrics.json" if i == 0 else f"metrics_{name}.json"))
        if show:
            print("\n" + format_table(res, model_name) + "\n", flush=True)
        for logger in trainer.loggers:
            if type(logger).__name__ == "WandbLogger":
                bic = res["bicubic"]["clips"]
                rows = [[c, v["frames"], bic[c]["psnr"], bic[c]["ssim"], v["psnr"], v["ssim"]] for c, v in res["clips"].items()]
                rows.append(["Average", sum(v["frames"] for v in res["clips"].values()),
                             res["bicubic"]["average"]["psnr"], res["bicubic"]["average"]["ssim"],
                             res["average"]["psnr"], res["average"]["ssim"]])
                logger.log_table(key=f"{name}/per_clip", columns=["clip", "frames", "bicubic_psnr", "bicubic_ssim",
                                                                  "psnr", "ssim"], data=rows)


# ---------------------------------------------------------------------------- failure handling
def run_task(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run a task; bad input ends it with a one-line error. In a sweep a failed job is recorded, not fatal."""
    multirun = False
    try:
        multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        pass
    out = output_dir()
    try:
        value = task(cfg)
        if multirun:
            write_json_atomic({"status": "ok"}, out / "status.json")
        return value
    except Exception as e:
        if multirun:
            out.mkdir(parents=True, exist_ok=True)
            write_json_atomic({"status": "failed", "error": f"{type(e).__name__}: {e}",
                               "traceback": traceback.format_exc()}, out / "status.json")
            print(f"job failed (the sweep goes on): {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            return float("nan")
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or not isinstance(e, (ValueError, FileNotFoundError,
                                                                           FloatingPointError, OSError)):
            raise
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
