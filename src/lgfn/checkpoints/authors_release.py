"""The authors' released LGFN checkpoint (BIOINSu/LGFN) to and from this project's ``LGFN``.

The release is ``torch.save(model.state_dict())`` of the authors' network: a flat dict of 556 float32
tensors (7,849,837 values), no config, possibly under a ``module.`` (DataParallel) or ``model.`` (their
trainer's wrapper) prefix. Their network computes the same function as ``lgfn.models.LGFN`` at the paper's
sizes (``PAPER_CONFIG``), so the conversion is a renaming of keys, tensor for tensor, with no reshaping:

=============================================  ===============================================
release                                        lgfn.models.LGFN
=============================================  ===============================================
``feat0``                                      ``extraction.conv_first``
``res_feat.{i}.body.{0,2}``                    ``extraction.body.{i}.conv{1,2}``
``res_feat.{E}`` (E = 5)                       ``extraction.conv_last``
``cd_align.offset_conv1.{k}``                  ``alignment.stages.{k}.conv_cat``
``cd_align.offset_conv2.{k}.conv1``            ``alignment.stages.{k}.dmdcu.conv_in``
``cd_align.offset_conv2.{k}.d_list.{i}``       ``alignment.stages.{k}.dmdcu.branches.{i}``
``cd_align.offset_conv2.{k}.conv2``            ``alignment.stages.{k}.dmdcu.conv_fuse``
``cd_align.dc.{k}.weight`` / ``.bias``         ``alignment.stages.{k}.dcn.weight`` / ``.bias``
``cd_align.dc.{k}.conv_offset_mask``           ``alignment.stages.{k}.dcn.conv_offset``
``dual_fusion.lc_fusion_blocks.{j}.conv1``     ``local_fusion.blocks.{j}.conv_state``
``dual_fusion.lc_fusion_blocks.{j}.conv2``     ``local_fusion.blocks.{j}.conv_fuse``
``...lc_fusion_blocks.{j}.res_block.{r}.body.{0,2}``  ``local_fusion.blocks.{j}.body.{r}.conv{1,2}``
``dual_fusion.gl_fusion_blocks.{j}.conv1``     ``global_fusion.blocks.{j}.conv_in``
``...gl_fusion_blocks.{j}.conv2c``             ``global_fusion.blocks.{j}.conv_reduce``
``...gl_fusion_blocks.{j}.conv21`` / ``conv22``  ``global_fusion.blocks.{j}.branch1`` / ``branch3``
``...gl_fusion_blocks.{j}.conv23.{0,2}``       ``global_fusion.blocks.{j}.branch33.{0,2}``
``...gl_fusion_blocks.{j}.conv2m`` / ``conv3``   ``global_fusion.blocks.{j}.conv_fuse`` / ``conv_out``
``dual_fusion.merge``                          ``merge.conv``
``merge``                                      ``reconstruction.conv_fuse``
``rg.body.{i}.body.{0,2}``                     ``reconstruction.body.blocks.{i}.body.{0,2}``
``rg.body.{i}.body.3.conv_du.{0,2}``           ``reconstruction.body.blocks.{i}.body.3.attention.{1,3}``
``rg.body.{R}`` (R = 20)                       ``reconstruction.body.conv``
``tail.0.{0,2}``                               ``reconstruction.upsample.{0,2}``
``tail.1``                                     ``reconstruction.conv_last``
=============================================  ===============================================

(each with ``.weight`` and ``.bias``). The DCN's ``conv_offset_mask`` keeps its channel order: channels
0-143 are the offsets in torchvision's layout (the release concatenates its two offset chunks, which
is the same order) and 144-215 the mask logits, exactly what ``DCNv2Pack`` reads from ``conv_offset``.

Every mapping is strict: a file that does not fit lists its missing, unexpected and mis-shaped keys
(the release itself loads with ``strict=False`` and silently keeps random weights where a key is off).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from lgfn.models import LGFN

# The sizes of the authors' network (their code fixes all of them but the width and the frame count).
PAPER_CONFIG: dict[str, Any] = {
    "num_frames": 7,
    "num_feat": 64,
    "num_extract_blocks": 5,
    "num_align_stages": 4,
    "deformable_groups": 8,
    "num_lfm": 10,
    "num_gfm": 10,
    "gfm_slice_channels": 9,
    "num_rcab": 20,
    "rcab_reduction": 8,
    "scale": 4,
    "use_dmdcu": True,
    "use_lfm": True,
    "use_gfm": True,
}
RELEASE_NUM_TENSORS = 556
RELEASE_NUM_VALUES = 7_849_837
# Wrappers around the bare network: DataParallel ("module.") and the EDSR-style trainer ("model.").
WRAPPER_PREFIXES = ("module.", "model.")
# Top-level modules of the authors' network; "cd_align" and "dual_fusion" are what recognise a release.
RELEASE_ROOTS = ("feat0", "res_feat", "cd_align", "dual_fusion", "merge", "rg", "tail")


class ReleaseError(ValueError):
    """A file that is not (or does not fit) the authors' released LGFN; the message is one line."""


# ---------------------------------------------------------------------------- the key map
def _module_pairs(cfg: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(project module, release module) for every conv of ``LGFN(**cfg)``, in the network's order."""
    yield "extraction.conv_first", "feat0"
    for i in range(cfg["num_extract_blocks"]):
        yield f"extraction.body.{i}.conv1", f"res_feat.{i}.body.0"
        yield f"extraction.body.{i}.conv2", f"res_feat.{i}.body.2"
    yield "extraction.conv_last", f"res_feat.{cfg['num_extract_blocks']}"

    stages = cfg["num_align_stages"]
    for k in range(stages):
        ours = f"alignment.stages.{k}"
        yield f"{ours}.conv_cat", f"cd_align.offset_conv1.{k}"
        if cfg["use_dmdcu"]:
            yield f"{ours}.dmdcu.conv_in", f"cd_align.offset_conv2.{k}.conv1"
            for i in range(2 * (stages - k)):  # branch i has dilation i + 1
                yield f"{ours}.dmdcu.branches.{i}", f"cd_align.offset_conv2.{k}.d_list.{i}"
            yield f"{ours}.dmdcu.conv_fuse", f"cd_align.offset_conv2.{k}.conv2"
        yield f"{ours}.dcn", f"cd_align.dc.{k}"  # the DCN's own weight and bias
        yield f"{ours}.dcn.conv_offset", f"cd_align.dc.{k}.conv_offset_mask"

    if cfg["use_lfm"]:
        for j in range(cfg["num_lfm"]):
            ours, theirs = f"local_fusion.blocks.{j}", f"dual_fusion.lc_fusion_blocks.{j}"
            yield f"{ours}.conv_state", f"{theirs}.conv1"
            yield f"{ours}.conv_fuse", f"{theirs}.conv2"
            for r in range(2):
                yield f"{ours}.body.{r}.conv1", f"{theirs}.res_block.{r}.body.0"
                yield f"{ours}.body.{r}.conv2", f"{theirs}.res_block.{r}.body.2"
    if cfg["use_gfm"]:
        for j in range(cfg["num_gfm"]):
            ours, theirs = f"global_fusion.blocks.{j}", f"dual_fusion.gl_fusion_blocks.{j}"
            for mine, their in (("conv_in", "conv1"), ("conv_reduce", "conv2c"), ("branch1", "conv21"),
                                ("branch3", "conv22"), ("branch33.0", "conv23.0"), ("branch33.2", "conv23.2"),
                                ("conv_fuse", "conv2m"), ("conv_out", "conv3")):
                yield f"{ours}.{mine}", f"{theirs}.{their}"
    yield "merge.conv", "dual_fusion.merge"

    yield "reconstruction.conv_fuse", "merge"
    for i in range(cfg["num_rcab"]):
        ours, theirs = f"reconstruction.body.blocks.{i}.body", f"rg.body.{i}.body"
        yield f"{ours}.0", f"{theirs}.0"
        yield f"{ours}.2", f"{theirs}.2"
        yield f"{ours}.3.attention.1", f"{theirs}.3.conv_du.0"
        yield f"{ours}.3.attention.3", f"{theirs}.3.conv_du.2"
    yield "reconstruction.body.conv", f"rg.body.{cfg['num_rcab']}"
    scale = cfg["scale"]
    stages_up = 1 if scale == 3 else scale.bit_length() - 1
    for m in range(stages_up):  # [conv, PixelShuffle] per stage: the convs sit at 0, 2, ...
        yield f"reconstruction.upsample.{2 * m}", f"tail.0.{2 * m}"
    yield "reconstruction.conv_last", "tail.1"


def key_map(cfg: Mapping[str, Any] | None = None) -> dict[str, str]:
    """``{project key: release key}`` for every tensor of ``LGFN(**cfg)`` (default: the paper's sizes)."""
    cfg = {**PAPER_CONFIG, **(cfg or {})}
    return {f"{ours}.{p}": f"{theirs}.{p}" for ours, theirs in _module_pairs(cfg) for p in ("weight", "bias")}


def expected_shapes(cfg: Mapping[str, Any] | None = None) -> dict[str, tuple[int, ...]]:
    """``{release key: shape}`` of the authors' network with the sizes ``cfg`` (default: the paper's)."""
    cfg = {**PAPER_CONFIG, **(cfg or {})}
    with torch.device("meta"):  # shapes only: nothing is allocated or initialised
        own = {k: tuple(v.shape) for k, v in LGFN(**cfg).state_dict().items()}
    names = key_map(cfg)
    if set(names) != set(own):  # the map and the network must describe the same tensors
        raise RuntimeError(f"lgfn.checkpoints.authors_release.key_map is out of date with LGFN: {sorted(set(names) ^ set(own))[:5]}")
    return {names[k]: shape for k, shape in own.items()}


# ---------------------------------------------------------------------------- recognising a release
def strip_wrapper(state: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """Drop a ``module.`` / ``model.`` prefix that every key carries (repeatedly); returns (state, prefix)."""
    state, prefix = dict(state), ""
    while state:
        head = next((p for p in WRAPPER_PREFIXES if all(str(k).startswith(p) for k in state)), None)
        if head is None:
            break
        state = {str(k)[len(head):]: v for k, v in state.items()}
        prefix += head
    return state, prefix


def is_release(obj: Any) -> bool:
    """Whether ``obj`` (a loaded file) is a state dict in the authors' layout: recognised by its keys."""
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(k, str) for k in obj):
        return False
    if "format" in obj or "state_dict" in obj:  # an lgfn-weights file or a Lightning checkpoint
        return False
    state, _ = strip_wrapper(obj)
    return any(k.startswith(("cd_align.", "dual_fusion.")) for k in state) or "feat0.weight" in state


def _indices(state: Mapping[str, Any], pattern: str) -> set[int]:
    rx = re.compile(pattern)
    return {int(m.group(1)) for k in state if (m := rx.match(k))}


def infer_config(state: Mapping[str, Any]) -> dict[str, Any] | None:
    """The authors' network sizes a release-layout state dict was saved with (from counts and shapes), or None."""
    try:
        feat = int(state["feat0.weight"].shape[0])
        stages = len(_indices(state, r"cd_align\.offset_conv1\.(\d+)\."))
        lfm = len(_indices(state, r"dual_fusion\.lc_fusion_blocks\.(\d+)\."))
        gfm = len(_indices(state, r"dual_fusion\.gl_fusion_blocks\.(\d+)\."))
        frames = int(state["merge.weight"].shape[1]) // feat
        up = sorted(_indices(state, r"tail\.0\.(\d+)\.weight"))
        scale = 3 if len(up) == 1 and state["tail.0.0.weight"].shape[0] == 9 * feat else 2 ** len(up)
        cfg = {
            "num_frames": frames,
            "num_feat": feat,
            "num_extract_blocks": len(_indices(state, r"res_feat\.(\d+)\.body\.")),
            "num_align_stages": stages,
            "deformable_groups": int(state["cd_align.dc.0.conv_offset_mask.weight"].shape[0]) // 27,
            "num_lfm": lfm or PAPER_CONFIG["num_lfm"],
            "num_gfm": gfm or PAPER_CONFIG["num_gfm"],
            "gfm_slice_channels": (int(state["dual_fusion.gl_fusion_blocks.0.conv1.weight"].shape[0]) // frames
                                   if gfm else PAPER_CONFIG["gfm_slice_channels"]),
            "num_rcab": len(_indices(state, r"rg\.body\.(\d+)\.body\.")),
            "rcab_reduction": feat // int(state["rg.body.0.body.3.conv_du.0.weight"].shape[0]),
            "scale": scale,
            "use_dmdcu": bool(_indices(state, r"cd_align\.offset_conv2\.(\d+)\.")),
            "use_lfm": bool(lfm),
            "use_gfm": bool(gfm),
        }
    except (KeyError, IndexError, AttributeError, TypeError, ZeroDivisionError):
        return None
    return cfg


# ---------------------------------------------------------------------------- checking
def _shape(v: Any) -> tuple[int, ...] | None:
    return tuple(v.shape) if isinstance(v, torch.Tensor) and v.is_floating_point() else None


def _problems(state: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]]) -> dict[str, list[str]]:
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = []
    for k, shape in expected.items():
        if k in state and _shape(state[k]) != shape:
            v = state[k]
            got = (f"{tuple(v.shape)}" if isinstance(v, torch.Tensor) and v.is_floating_point()
                   else (f"a {v.dtype} tensor" if isinstance(v, torch.Tensor) else f"a {type(v).__name__}"))
            wrong.append(f"{k} {got}, expected {shape}")
    return {"missing": missing, "unexpected": unexpected, "shape mismatch": wrong}


def _listing(problems: Mapping[str, list[str]], limit: int = 5) -> str:
    parts = []
    for label, items in problems.items():
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:limit])}{more}")
    return "; ".join(parts)


def _describe(cfg: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v} (paper {PAPER_CONFIG.get(k, 'has none')})" for k, v in cfg.items()
                     if v != PAPER_CONFIG.get(k))


def release_to_state(obj: Mapping[str, Any], source: str = "file") -> dict[str, torch.Tensor]:
    """A release-layout state dict -> the state dict of ``LGFN(**PAPER_CONFIG)``, strictly checked.

    Raises ReleaseError (one line naming ``source``) for a file of another model size or with missing,
    unexpected or mis-shaped keys. The tensors themselves are passed through unchanged.
    """
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        raise ReleaseError(f"{source}: not a state dict (a dict of tensors), found {type(obj).__name__}")
    state, _ = strip_wrapper(obj)
    problems = _problems(state, expected_shapes())
    if any(problems.values()):
        other = infer_config(state)
        if other is not None and other != PAPER_CONFIG:
            try:
                fits_other = not any(_problems(state, expected_shapes(other)).values())
            except (ValueError, RuntimeError):  # sizes LGFN cannot be built with
                fits_other = False
            if fits_other:
                raise ReleaseError(
                    f"{source}: an LGFN of another size ({_describe(other)}): only the paper-size release "
                    f"({RELEASE_NUM_TENSORS} tensors, {RELEASE_NUM_VALUES:,} values) can be mapped")
        raise ReleaseError(f"{source}: does not fit the authors' LGFN at the paper's sizes "
                           f"({RELEASE_NUM_TENSORS} tensors): {_listing(problems)}")
    return {ours: state[theirs] for ours, theirs in key_map().items()}


def state_to_release(state: Mapping[str, torch.Tensor], net_config: Mapping[str, Any] | None,
                     source: str = "file") -> dict[str, torch.Tensor]:
    """The state dict of a paper-size ``LGFN`` -> the authors' layout (float32 tensors, their key names)."""
    if net_config is not None:
        cfg = {**PAPER_CONFIG, **dict(net_config)}
        if cfg != PAPER_CONFIG:
            raise ReleaseError(f"{source}: an LGFN of another size ({_describe(cfg)}): the authors' network "
                               "has the paper's sizes only")
    names, shapes = key_map(), expected_shapes()
    problems = _problems(state, {ours: shapes[theirs] for ours, theirs in names.items()})
    if any(problems.values()):
        raise ReleaseError(f"{source}: does not fit LGFN at the paper's sizes: {_listing(problems)}")
    return {theirs: state[ours].detach().cpu().to(torch.float32).contiguous() for ours, theirs in names.items()}


__all__ = ["PAPER_CONFIG", "RELEASE_NUM_TENSORS", "RELEASE_NUM_VALUES", "ReleaseError", "expected_shapes",
           "infer_config", "is_release", "key_map", "release_to_state", "state_to_release", "strip_wrapper"]
