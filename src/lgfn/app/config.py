"""Config checks of the entry points: Hydra resolvers, key/type validation against `_target_` signatures, one-line composition errors."""

from __future__ import annotations

import difflib
import inspect
import re
import types
import typing
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_class, get_method
from omegaconf import DictConfig, ListConfig, OmegaConf

from lgfn.app.baselines import check_baselines
from lgfn.checkpoints.basicvsr_weights import basicvsr_weights_for
from lgfn.cluster.job_dir import job_dir_name, run_id, unique_suffix
from lgfn.cluster.slurm import slurm_tasks_per_node
from lgfn.common.errors import ConfigError


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
    if not OmegaConf.has_resolver("lgfn_job_subdir"):  # a sweep job's directory: named after its overrides
        OmegaConf.register_new_resolver("lgfn_job_subdir", job_dir_name)
    if not OmegaConf.has_resolver("lgfn_unique"):  # cached: one value per process, copied into sweep jobs
        OmegaConf.register_new_resolver("lgfn_unique", unique_suffix, use_cache=True)
    if not OmegaConf.has_resolver("lgfn_run_id"):  # time + suffix; the same in every rank of an srun step
        OmegaConf.register_new_resolver("lgfn_run_id", run_id, use_cache=True)
    if not OmegaConf.has_resolver("lgfn_tasks_per_node"):
        OmegaConf.register_new_resolver("lgfn_tasks_per_node", slurm_tasks_per_node)
    if not OmegaConf.has_resolver("lgfn_basicvsr_weights"):  # conf/model/basicvsr.yaml: weights for the data
        OmegaConf.register_new_resolver("lgfn_basicvsr_weights", basicvsr_weights_for)


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
    trainer = cfg.get("trainer") or {}
    accumulate, every = trainer.get("accumulate_grad_batches", 1) or 1, trainer.get("val_check_interval")
    if isinstance(accumulate, int) and accumulate > 1 and isinstance(every, int) and every % accumulate:
        # Lightning counts val_check_interval in batches: validation (and its last.ckpt / best checkpoint) would
        # land mid-window, saving a state without part of an accumulated gradient.
        raise ConfigError(f"trainer.val_check_interval={every} (batches) must be a multiple of "
                          f"trainer.accumulate_grad_batches={accumulate}, so that checkpoints fall on optimiser steps")
    check_baselines(cfg)  # baselines=[bicubic,basicvsr]: known names, released weights installed
    net = cfg.model.get("net", {})
    if net.get("use_lfm") is False and net.get("use_gfm") is False:
        raise ConfigError("model.net.use_lfm and model.net.use_gfm cannot both be false: the model needs a fusion branch")
    if "num_frames" in net and net.num_frames != cfg.data.num_frames:
        raise ConfigError(f"model.net.num_frames={net.num_frames} differs from data.num_frames={cfg.data.num_frames}")
    scale = net.get("scale", 4)
    patch = cfg.data.get("patch_size")
    if patch is not None and patch % scale:
        raise ConfigError(f"data.patch_size={patch} must be divisible by the scale ({scale})")


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


def _target_params(target: str) -> dict[str, inspect.Parameter]:
    try:
        obj = get_class(target)
        return dict(inspect.signature(obj.__init__ if inspect.isclass(obj) else obj, eval_str=True).parameters)
    except Exception:  # noqa: BLE001 - no signature to check against
        return {}


def forced_override_key(error: BaseException) -> str | None:
    """The key of an override Hydra refused although the config's ``_target_`` takes it, else None.

    ``trainer.accumulate_grad_batches=2`` (a Trainer argument not in conf/trainer) is "not in struct", and
    ``+trainer.sync_batchnorm=true`` (already in conf/trainer/ddp.yaml) "already there": both name arguments that
    ``lightning.pytorch.Trainer`` takes, and both spellings the README shows must work. The entry point re-runs
    the composition with ``++key=value`` (add or override) for such a key (``lgfn.app.task.hydra_main``).
    """
    from hydra.errors import ConfigCompositionException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    if not isinstance(error, ConfigCompositionException):
        return None
    text = str(error)
    exists = re.match(r"Could not append to config\. An item is already at '([^']+)'", text)
    if exists:
        return exists.group(1)
    override = re.match(r"Could not override '([^']+)'", text)
    cause = error.__cause__
    if not (override and isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and "not in struct" in str(cause)):
        return None
    key = override.group(1)
    if str(getattr(cause, "full_key", None) or key) != key:
        return None  # a node on the way is missing: a typo, not an argument
    parent = getattr(cause, "parent_node", None)
    target = parent.get("_target_") if isinstance(parent, DictConfig) else None
    param = _target_params(target).get(key.rsplit(".", 1)[-1]) if target else None
    if param is None or param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
        return None
    return key


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
