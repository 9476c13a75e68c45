"""What train.py and eval.py share: config checks, object building, checkpoint loading and the results report."""

from __future__ import annotations

import contextlib
import difflib
import functools
import inspect
import json
import logging
import math
import os
import re
import shutil
import sys
import time
import traceback
import types
import typing
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_class, get_method, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict


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
    from lgfn.jobs import job_dir_name, unique_suffix
    from lgfn.slurm import slurm_tasks_per_node

    if not OmegaConf.has_resolver("lgfn_group"):
        OmegaConf.register_new_resolver("lgfn_group", _group)
    if not OmegaConf.has_resolver("lgfn_job_subdir"):  # a sweep job's directory: named after its overrides
        OmegaConf.register_new_resolver("lgfn_job_subdir", job_dir_name)
    if not OmegaConf.has_resolver("lgfn_unique"):  # cached: one value per process, copied into sweep jobs
        OmegaConf.register_new_resolver("lgfn_unique", unique_suffix, use_cache=True)
    if not OmegaConf.has_resolver("lgfn_tasks_per_node"):
        OmegaConf.register_new_resolver("lgfn_tasks_per_node", slurm_tasks_per_node)


register_resolvers()
# conf/hydra/launcher/*.yaml spell out the plugins' settings under the plugins' own names, on purpose.
warnings.filterwarnings("ignore", message=r".*is validated against ConfigStore schema with the same name.*")


# ---------------------------------------------------------------------------- third-party noise
class _DropLightningNoise(logging.Filter):
    """Lightning's "💡 Tip" adverts for its cloud packages (litlogger, litmodels), and its note that the
    configured ``lgfn.callbacks.ModelSummary`` replaces its default one; every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith("💡 Tip") and ("litlogger" in message or "litmodels" in message):
            return False
        return not message.startswith("Trainer already configured with model summary callbacks")


def quiet_third_party() -> None:
    """Silence messages a user cannot act on, each matched by its own text; other warnings and logs still show.

    (W&B's "anonymous setting" warning is avoided at its source, ``lgfn.loggers.WandbLogger``.)
    """
    # Lightning 2.6 on torch >= 2.10 builds torch's deprecated LeafSpec in its own code, at every fit and test.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
    # Under DDP Lightning advises sync_dist for every epoch-level metric; LitLGFN's evaluation metrics are
    # gathered from all ranks before they are logged (every rank logs the same value), so the advice does not apply
    # to them. Any other key (a user's own metric) still gets it.
    warnings.filterwarnings(
        "ignore",
        message=r"It is recommended to use `self\.log\('[^']+/(psnr|ssim|psnr_bicubic|ssim_bicubic|temporal_gain|"
                r"tof|tof_bicubic)', \.\.\., sync_dist=True\)`",
    )
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropLightningNoise) for f in log.filters):
            log.addFilter(_DropLightningNoise())


quiet_third_party()


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


def load_net_weights(model: Any, ckpt_path: str | os.PathLike) -> str:
    """Load network weights (weights file, Lightning checkpoint or the authors' release) into `model.net`.

    With `model.ema_decay` set, evaluation runs the averaged copy (`model.eval_net`), so it gets the same
    weights: the file's weights are what is scored, whichever copy the module evaluates.
    """
    from lgfn.weights import load_weights_into

    kind = load_weights_into(model.net, ckpt_path, "checkpoint")
    ema = getattr(model, "ema", None)
    if ema is not None:
        ema.module.load_state_dict(model.net.state_dict())
    return kind


def adopt_release_sizes(cfg: DictConfig) -> None:
    """eval.py with the authors' release as ckpt_path: model.net takes the paper's sizes the file was saved with.

    The release holds no config, and only the paper-size LGFN fits it; any other LGFN size in model.net is
    replaced (with a one-line note). Other files, and other networks, are left to the strict key check.
    """
    from lgfn.checkpoint import load_checkpoint
    from lgfn.release import PAPER_CONFIG, is_release

    net = cfg.model.get("net")
    if not cfg.get("ckpt_path") or net is None or str(net.get("_target_", "")).rsplit(".", 1)[-1] != "LGFN":
        return
    if not is_release(load_checkpoint(cfg.ckpt_path)):
        return
    if cfg.data.num_frames != PAPER_CONFIG["num_frames"]:
        raise ConfigError(f"ckpt_path={cfg.ckpt_path} is the authors' LGFN for {PAPER_CONFIG['num_frames']} frames: "
                          f"data.num_frames={cfg.data.num_frames} cannot use it")
    changed = [f"{k} {net.get(k)} -> {v}" for k, v in PAPER_CONFIG.items() if k in net and net.get(k) != v]
    if changed:
        with open_dict(cfg):
            for k, v in PAPER_CONFIG.items():
                if k != "num_frames":  # interpolated from data.num_frames, already checked
                    net[k] = v
        print(f"note: ckpt_path is the authors' release (the paper-size LGFN): model.net set to its sizes "
              f"({', '.join(changed)})", file=sys.stderr, flush=True)


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


# More clips than this (Vimeo-90K-T has 7824) are summarised in one line; metrics.json has every clip.
MAX_CLIP_ROWS = 60


def _cell(d: Mapping | None) -> str:
    if not d or d.get("psnr") is None:
        return "-"
    return f"{d['psnr']:.2f}/{d['ssim']:.4f}"


def _diff(measured: Mapping | None, paper: Mapping | None) -> str:
    if not measured or not paper or measured.get("psnr") is None or not math.isfinite(measured["psnr"]):
        return "-"
    return f"{measured['psnr'] - paper['psnr']:+.2f}/{measured['ssim'] - paper['ssim']:+.4f}"


def _gain(d: Mapping | None) -> str:
    value = (d or {}).get("temporal_gain")
    return "-" if value is None or not math.isfinite(value) else f"{value:+.2f}"


def _tof(d: Mapping | None) -> str:
    value = (d or {}).get("tof")
    return "-" if value is None or not math.isfinite(value) else f"{value:.3f}"


def format_table(result: dict, model_name: str = "LGFN", paper: dict | None = None) -> str:
    """The per-clip table in the layout of the paper's tables: clip rows, bicubic and the model side by side.

    On Vid4, SPMCS and Vimeo-90K-T the paper's published numbers (``lgfn.paper``; ``result["paper"]`` when
    present) sit beside the measured ones, with the difference measured - paper. A ``gain`` column shows
    ``temporal_gain`` (dB, what the neighbouring frames buy) when the result has it. A bicubic model gets
    one column (its own numbers are the bicubic baseline).
    """
    from lgfn.paper import published

    clips = result["clips"]
    bic = result.get("bicubic", {})
    if paper is None:
        paper = result.get("paper") or published(result)
    baseline_only = model_name == "Bicubic" or model_name.startswith("Bicubic ")
    rows_with_gain = [*clips.values(), result.get("average", {}), *result.get("groups", {}).values()]
    show_gain = any("temporal_gain" in (v or {}) for v in rows_with_gain)
    show_tof = any("tof" in (v or {}) for v in rows_with_gain)

    # Each row: (name, frames, measured bicubic, measured model, published row).
    rows: list[tuple[str, str, Mapping | None, Mapping | None, Mapping | None]] = []
    paper_clips = (paper or {}).get("clips", {})
    for clip, vals in clips.items():
        rows.append((clip, str(vals.get("frames", "")), bic.get("clips", {}).get(clip), vals, paper_clips.get(clip)))
    frames = sum(v.get("frames", 0) for v in clips.values())
    average = ("Average", str(frames), bic.get("average"), result["average"], (paper or {}).get("average"))
    groups = [(g, "", bic.get("groups", {}).get(g), vals, (paper or {}).get("groups", {}).get(g))
              for g, vals in result.get("groups", {}).items()]

    width = max([len("Average"), *(len(r[0]) for r in (*rows, *groups))])
    model_w = max(15, len(model_name))
    # (title, width, cell of a row)
    columns: list[tuple[str, int, Callable]] = [("clip", -width, lambda r: r[0]), ("frames", 6, lambda r: r[1])]
    if baseline_only:
        columns.append(("Bicubic", 15, lambda r: _cell(r[3])))
        if paper:
            columns += [("paper Bicubic", 13, lambda r: _cell((r[4] or {}).get("Bicubic"))),
                        ("diff", 14, lambda r: _diff(r[3], (r[4] or {}).get("Bicubic")))]
    else:
        columns.append(("Bicubic", 15, lambda r: _cell(r[2])))
        if paper:
            columns += [("paper Bicubic", 13, lambda r: _cell((r[4] or {}).get("Bicubic"))),
                        ("diff", 14, lambda r: _diff(r[2], (r[4] or {}).get("Bicubic")))]
        columns.append((model_name, model_w, lambda r: _cell(r[3])))
        if paper:
            columns += [("paper LGFN", 13, lambda r: _cell((r[4] or {}).get("LGFN"))),
                        ("diff", 14, lambda r: _diff(r[3], (r[4] or {}).get("LGFN")))]
    if show_gain:
        columns.append(("gain", 6, lambda r: _gain(r[3])))
    if show_tof:
        columns.append(("tOF", 6, lambda r: _tof(r[3])))

    def line(cells: list[str]) -> str:
        return " | ".join(f"{c:<{-w}}" if w < 0 else f"{c:>{w}}" for c, (_, w, _) in zip(cells, columns, strict=True))

    def row_line(r: tuple) -> str:
        return line([fn(r) for _, _, fn in columns])

    head = line([title for title, _, _ in columns])
    lines = [
        f"{result['dataset']}: PSNR/SSIM on Y (BT.601), border crop {result.get('crop_border', 0)}, "
        f"average over {'clips (each clip counts equally)' if result.get('average_mode') == 'clip' else 'all frames'}",
        head,
        "-" * len(head),
    ]
    if len(rows) > MAX_CLIP_ROWS:
        lines.append(f"({len(rows)} clips: the per-clip values are in metrics.json)")
    else:
        lines += [row_line(r) for r in rows]
    lines.append("-" * len(head))
    lines.append(row_line(average))
    lines += [row_line(g) for g in groups]
    if paper:
        lines.append(f"paper: {paper.get('source', '')}; diff = measured - paper"
                     + (f"; paper average over {paper['average_of']}" if paper.get("average_of") else ""))
        if paper.get("note"):
            lines.append(f"paper: {paper['note']}")
    if show_gain:
        lines.append("gain: temporal gain, dB (the real window minus the window with every neighbour replaced by "
                     "the centre frame)")
    if show_tof:
        bic_tof = (bic.get("average") or {}).get("tof")
        ref = "" if baseline_only or bic_tof is None or not math.isfinite(bic_tof) else f"; bicubic {bic_tof:.3f}"
        lines.append("tOF: temporal consistency, px, lower is better (TecoGAN: mean |flow(output) - flow(GT)| of "
                     f"consecutive frames{ref})")
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
    """Write JSON through a temp file of this writer's own (never shared between processes), renamed over `path`."""
    import tempfile

    from lgfn.fileio import publish

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(_json_safe(obj), indent=2) + "\n")
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def report_results(results: dict[str, dict], trainer: Any, out: Path, model_name: str, show: bool = True,
                   samples: Mapping[str, Mapping] | None = None) -> None:
    """Write metrics.json and report.html (``lgfn.report``; ``samples``: ``LitLGFN.test_samples``), print the
    table and log it as a W&B table (rank 0 only)."""
    if not results or not trainer.is_global_zero:
        return
    out.mkdir(parents=True, exist_ok=True)
    from lgfn.paper import published

    # metrics.json holds one dataset (the contract's shape); a datamodule has one test set.
    for i, (name, res) in enumerate(results.items()):
        paper = published(res)
        if paper is not None:
            res["paper"] = paper  # the published LGFN / bicubic numbers of the same clips or groups
        write_json_atomic(res, out / ("metrics.json" if i == 0 else f"metrics_{name}.json"))
        from lgfn.report import write_report

        # the page shows what metrics.json holds: the same JSON-safe values
        write_report(out / ("report.html" if i == 0 else f"report_{name}.html"), _json_safe(res),
                     (samples or {}).get(name), model_name)
        if show:
            print("\n" + format_table(res, model_name) + "\n", flush=True)
        for logger in trainer.loggers:
            if type(logger).__name__ == "WandbLogger":
                bic = res["bicubic"]["clips"]
                extra = [k for k in ("temporal_gain", "tof") if k in res["average"]]

                def more(v: Mapping, extra: list[str] = extra) -> list:
                    return [v.get(k) for k in extra]

                rows = [[c, v["frames"], bic[c]["psnr"], bic[c]["ssim"], v["psnr"], v["ssim"], *more(v)]
                        for c, v in res["clips"].items()]
                rows.append(["Average", sum(v["frames"] for v in res["clips"].values()),
                             res["bicubic"]["average"]["psnr"], res["bicubic"]["average"]["ssim"],
                             res["average"]["psnr"], res["average"]["ssim"], *more(res["average"])])
                logger.log_table(key=f"{name}/per_clip", columns=["clip", "frames", "bicubic_psnr", "bicubic_ssim",
                                                                  "psnr", "ssim", *extra], data=rows)


# ---------------------------------------------------------------------------- failure handling
def run_task(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run a task; bad input ends it with a one-line error. In a sweep a failed job is recorded, not fatal.

    In a sweep (``lgfn.jobs``): a job whose directory says ``ok`` is skipped; global rank 0 alone writes
    ``status.json``. Under DDP a failure on any rank is reported as ``rank R: Error: message`` (``lgfn.distributed``).
    Every job ends its W&B run and its DDP processes before the next one starts.
    """
    from lgfn import distributed, jobs

    multirun = False
    try:
        multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        pass
    out = output_dir()
    if multirun and jobs.finished(out):
        print(f"job {out.name} finished before (its status.json says ok): skipped", flush=True)
        return (jobs.read_status(out) or {}).get("value")

    def record_failure(reason: str, trace: str = "") -> None:
        if multirun and distributed.process_rank() == 0:
            jobs.write_status(out, "failed", error=reason, traceback=trace)

    distributed.set_job(inspect.getsourcefile(task), out, record_failure)
    started = time.time()
    if multirun and distributed.process_rank() == 0:
        jobs.write_status(out, "running")
    try:
        value = task(cfg)
        if multirun and distributed.process_rank() == 0:
            jobs.write_status(out, "ok", value=value if isinstance(value, (int, float)) else None,
                              started=started, seconds=round(time.time() - started, 1))
        return value
    except Exception as e:
        if type(e).__name__ == "InstantiationException" and isinstance(e.__cause__, Exception):
            e = e.__cause__  # hydra wraps what a constructor raised: report the constructor's own error
        distributed.publish_failure(e)
        remote = distributed.remote_failure()  # another rank failed first: its reason, not this rank's echo
        error = remote or f"{type(e).__name__}: {e}"
        if not multirun:
            remove_unused_run_dir(out)
        if multirun:
            record_failure(error, traceback.format_exc())
            print(f"job failed (the sweep goes on): {error}", file=sys.stderr, flush=True)
            return float("nan")
        if remote:
            print(f"error: {remote}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or not isinstance(e, (ValueError, FileNotFoundError,
                                                                           FloatingPointError, OSError)):
            raise
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    finally:
        jobs.finish_wandb()
        distributed.end_of_job()


def remove_unused_run_dir(out: Path) -> bool:
    """Delete the run directory of a failed run when it holds only what Hydra wrote before the task started.

    That is the ``.hydra`` folder (config, hydra and overrides YAML) and the job's log; anything else (a
    resolved config, checkpoints, logger files) means the run got somewhere, and the directory stays.
    Returns whether it was removed.
    """
    try:
        hc = HydraConfig.get()
    except ValueError:
        return False
    subdir = hc.output_subdir
    if not subdir or not (out / subdir).is_dir():
        return False  # not a directory Hydra set up for this run
    bookkeeping = {"config.yaml", "hydra.yaml", "overrides.yaml"}
    if any(p.name not in bookkeeping or not p.is_file() for p in (out / subdir).iterdir()):
        return False
    if any(p.name not in (subdir, f"{hc.job.name}.log") for p in out.iterdir()):
        return False
    shutil.rmtree(out, ignore_errors=True)
    return not out.exists()


# ---------------------------------------------------------------------------- entry points
def hydra_main(config_name: str, config_path: str = "conf") -> Callable:
    """``@hydra.main(version_base="1.3", config_path=..., config_name=...)`` with config errors in one line.

    Hydra rejects an override of a key the config does not have (``model.net.num_fet=32``, a typo) while
    composing, with advice to write ``+model.net.num_fet=32`` (which would only add the typo). Here it ends
    like every other config error: one line ``error: unknown config key ... (did you mean ...?)`` and exit
    status 1; a mistyped group choice (``model=lgfn_smal``) names the choices. HYDRA_FULL_ERROR=1 keeps
    Hydra's own report.
    """
    import hydra

    def decorator(task_function: Callable) -> Callable:
        hydra_entry = hydra.main(version_base="1.3", config_path=config_path, config_name=config_name)(task_function)

        @functools.wraps(task_function)
        def main(cfg_passthrough: DictConfig | None = None) -> Any:
            if cfg_passthrough is not None:
                return hydra_entry(cfg_passthrough)
            with _one_line_composition_errors():
                return hydra_entry()

        return main

    return decorator


@contextlib.contextmanager
def _one_line_composition_errors() -> Iterator[None]:
    """Route Hydra's composition failures through ``composition_error_line`` while the entry point runs.

    Hydra reports them, and exits, in ``hydra._internal.utils.run_and_report``: the one place that sees them.
    """
    from hydra._internal import utils as hydra_utils

    original = getattr(hydra_utils, "run_and_report", None)
    if original is None:  # another Hydra layout: keep its report
        yield
        return

    def run_and_report(func: Callable) -> Any:
        def guarded() -> Any:
            try:
                return func()
            except Exception as e:
                line = None if os.environ.get("HYDRA_FULL_ERROR") == "1" else composition_error_line(e)
                if line is None:
                    raise
                print(f"error: {line}", file=sys.stderr, flush=True)
                raise SystemExit(1) from None

        return original(guarded)

    hydra_utils.run_and_report = run_and_report
    try:
        yield
    finally:
        hydra_utils.run_and_report = original


def composition_error_line(error: BaseException) -> str | None:
    """One line for Hydra's "key not in struct" / "does not exist" / "could not find group option" errors; else None."""
    from hydra.errors import ConfigCompositionException, MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    if not isinstance(error, ConfigCompositionException):
        return None
    text = str(error)
    if isinstance(error, MissingConfigException):
        missing, options = error.missing_cfg_file, list(error.options or [])
        if not missing or "/" not in missing or not options:
            return None
        group, name = missing.rsplit("/", 1)
        close = difflib.get_close_matches(name, options, n=1)
        hint = f"did you mean {group}={close[0]}? " if close else ""
        return f"unknown config choice {group}={name} ({hint}choices: {', '.join(options)})"
    cause = error.__cause__
    override = re.match(r"Could not override '([^']+)'", text)
    if override and isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and "not in struct" in str(cause):
        add = re.search(r"use (\+\S+)", text)
        return _unknown_key_line(override.group(1), cause, add.group(1) if add else None)
    deleted = re.match(r"Could not delete from config\. '([^']+)' does not exist", text)
    if deleted:
        return f"unknown config key {deleted.group(1)}: there is nothing to delete (~{deleted.group(1)})"
    return None


def _unknown_key_line(key: str, cause: Exception, add: str | None) -> str:
    """``unknown config key KEY[: TARGET does not take 'NAME'] (did you mean ...?)``, as validate_node says it."""
    missing = str(getattr(cause, "full_key", None) or key)  # the first segment of `key` that does not exist
    name = str(getattr(cause, "key", None) or missing.rsplit(".", 1)[-1])
    parent = getattr(cause, "parent_node", None)
    prefix = missing[: -len(name)] if missing.endswith(name) else ""
    rest = key[len(missing):] if key.startswith(missing) else ""
    candidates = [str(k) for k in parent.keys() if not str(k).startswith("_")] if isinstance(parent, DictConfig) else []
    target = parent.get("_target_") if isinstance(parent, DictConfig) else None
    if target:
        try:
            obj = get_class(target)
            params = inspect.signature(obj.__init__ if inspect.isclass(obj) else obj, eval_str=True).parameters
        except Exception:  # noqa: BLE001 - no signature to suggest from
            params = {}
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()) and not rest:
            # The target takes extra keyword arguments: adding the key is legitimate, so Hydra's advice holds.
            return (f"unknown config key {key}: not in the config; {target} passes extra keyword arguments on, "
                    f"so if {name!r} is one of them add it with {add or '+' + key}")
        candidates += [n for n in params if n != "self" and params[n].kind not in (inspect.Parameter.VAR_POSITIONAL,
                                                                                     inspect.Parameter.VAR_KEYWORD)]
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=1)
    hint = f" (did you mean {prefix}{close[0]}{rest}?)" if close else ""
    does_not_take = f": {target} does not take {name!r}" if target and not rest else ""
    return f"unknown config key {key}{does_not_take}{hint}"
