"""LitLGFN: training, validation and testing of a VSR network under the evaluation protocol."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from lgfn.checkpoints.basicvsr_weights import load_released_into, pretrained_spynet
from lgfn.checkpoints.reader import init_from_file
from lgfn.metrics import TOF_DEFINITION, TofPairs, average_per_clip, grey_u8, psnr_y, ssim_y
from lgfn.models.weight_init import init_dcn, init_weights
from lgfn.protocol.degradation import imresize
from lgfn.training.media import log_sample, log_test_media

LOSSES = ("l1", "charbonnier")
SCHEDULERS = ("multistep", "cosine", "constant")
NAN_POLICIES = ("raise", "skip")


def charbonnier_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Charbonnier (smooth L1) loss, mean over all elements."""
    return torch.sqrt((pred - target) ** 2 + eps * eps).mean()


class LitLGFN(L.LightningModule):
    """Wraps a VSR network (`net`: B x N x 3 x h x w -> B x 3 x sH x sW) with the training recipe and metrics."""

    # nan_policy=skip gives up after this many non-finite losses in a row (bad weights, not a bad batch).
    MAX_SKIPS_IN_A_ROW = 20

    def __init__(
        self,
        net: nn.Module,
        loss: str = "l1",
        lr: float = 1e-4,
        betas: Sequence[float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        offset_lr_mult: float = 1.0,
        scheduler: str = "multistep",
        milestones: Sequence[int] = (50, 70, 90, 95),
        gamma: float = 0.5,
        scheduler_interval: str = "epoch",
        ema_decay: float | None = None,
        crop_border: int = 0,
        nan_policy: str = "raise",
        offset_warn: float = 50.0,
        log_images: int = 2,
        temporal_gain: bool = True,
        align_loss_weight: float = 0.0,
        offset_fidelity_weight: float = 0.0,
        offset_fidelity_threshold: float = 10.0,
        flow_teacher: str = "vimeo_bi",
        weight_init: str = "pytorch",
        dcn_init: str = "default",
        init_from: str | None = None,
        tof: bool = True,
        weights: str | None = None,
        test_images: int = 30,
    ) -> None:
        super().__init__()
        for key, value, allowed in (
            ("model.loss", loss, LOSSES),
            ("model.scheduler", scheduler, SCHEDULERS),
            ("model.nan_policy", nan_policy, NAN_POLICIES),
            ("model.scheduler_interval", scheduler_interval, ("epoch", "step")),
        ):
            if value not in allowed:
                raise ValueError(f"{key}={value!r}: expected one of {', '.join(allowed)}")
        # Plain types only, so checkpoints load with weights_only=True (Hydra hands over ListConfigs).
        betas, milestones = tuple(float(b) for b in betas), [int(m) for m in milestones]
        self.save_hyperparameters(ignore=["net"])
        init_dcn(init_weights(net, weight_init), dcn_init)  # training recipe choices; init_from overwrites them
        if init_from:  # fine-tuning: weights file, Lightning .ckpt or the authors' release, strict key check
            init_from_file(net, init_from)
        if weights:  # released BasicVSR weights (vimeo_bi | vimeo_bd | reds, or a .pth), strict key check
            load_released_into(net, weights)
        self.net = net
        # The network's own constructor arguments travel with every checkpoint (lgfn-upscale rebuilds from them).
        self.net_config = dict(getattr(net, "config", {}))
        self.ema = None
        if ema_decay is not None:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
            self.ema.requires_grad_(False)  # updated by averaging, never by gradients (DDP expects a grad for each)
        # TDAN's alignment loss (an option, off in the paper recipe): a conv3x3 C -> 3 head rebuilds each
        # aligned neighbour's LR frame from its aligned features, compared (L1) with the centre LR frame, so
        # the offsets get a training signal of their own from the first step. The head is not part of the
        # network: it is dropped by the weights export and never runs at inference.
        self.align_head: nn.Module | None = None
        self._aligned: torch.Tensor | None = None
        if align_loss_weight < 0:
            raise ValueError(f"model.align_loss_weight must be >= 0, got {align_loss_weight!r}")
        alignment = getattr(net, "alignment", None)
        if align_loss_weight > 0:
            if alignment is None or not self.net_config.get("num_feat"):
                raise ValueError("model.align_loss_weight > 0 needs a network with an `alignment` module (LGFN)")
            self.align_head = nn.Conv2d(int(self.net_config["num_feat"]), 3, 3, padding=1)
            alignment.register_forward_hook(self._keep_aligned)
        # The offset-fidelity loss of Chan et al. (AAAI 2021), an option (off in the paper recipe): every DCN offset
        # further than `offset_fidelity_threshold` LR px from the optical flow of a pretrained SPyNet (BasicVSR's,
        # `flow_teacher`: vimeo_bi | vimeo_bd | reds) pays its L1 distance, the field's remedy for exploding offsets.
        # The teacher is frozen and kept out of the module's state, optimiser and DDP (it is not a submodule).
        self._offsets: list[torch.Tensor] = []
        self._flow_teacher: list[nn.Module] = []
        if offset_fidelity_weight < 0 or offset_fidelity_threshold < 0:
            raise ValueError("model.offset_fidelity_weight and model.offset_fidelity_threshold must be >= 0, got "
                             f"{offset_fidelity_weight!r} and {offset_fidelity_threshold!r}")
        if offset_fidelity_weight > 0:
            if alignment is None or not hasattr(alignment, "stages"):
                raise ValueError("model.offset_fidelity_weight > 0 needs a network with deformable `alignment` (LGFN)")
            self._flow_teacher.append(pretrained_spynet(flow_teacher).eval().requires_grad_(False))
            for stage in alignment.stages:
                stage.dcn.conv_offset.register_forward_hook(self._keep_offsets)
        self._records: dict[str, list[tuple]] = {"val": [], "test": []}
        self._skipped_in_a_row = 0
        self.test_results: dict[str, dict] = {}
        # Test time, per clip: crops of one frame (LR nearest-upscaled, bicubic, output, GT; uint8 H x W x 3)
        # for the W&B / TensorBoard strip and report.html, and tOF of consecutive frames (lgfn.metrics).
        self.test_samples: dict[str, dict[str, dict]] = {}
        self._samples: dict[str, dict] = {}
        self._chosen: dict[str, int] | None = None
        self._tof: TofPairs | None = None
        self._tof_records: list[tuple] = []

    # ------------------------------------------------------------------ forward / loss
    @property
    def eval_net(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.net

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.eval_net(lr)

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.net.parameters())

    def _loss(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        if self.hparams.loss == "charbonnier":
            return charbonnier_loss(sr, hr)
        return F.l1_loss(sr, hr)

    def _keep_aligned(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        self._aligned = output if self.training else None

    def _align_loss(self, lr: torch.Tensor) -> torch.Tensor:
        """L1 between each aligned neighbour's rebuilt LR frame and the centre LR frame (TDAN)."""
        aligned, n = self._aligned, lr.shape[1]
        self._aligned = None
        c = n // 2
        neighbours = torch.cat([aligned[:, :c], aligned[:, c + 1 :]], dim=1).flatten(0, 1)
        rebuilt = self.align_head(neighbours).unflatten(0, (lr.shape[0], n - 1))
        return F.l1_loss(rebuilt, lr[:, c : c + 1].expand_as(rebuilt))

    def _keep_offsets(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if self.training:
            self._offsets.append(output)

    def offset_fidelity_loss(self, lr: torch.Tensor) -> torch.Tensor:
        """Mean over every DCN offset (dy, dx) of |offset - flow| where that exceeds the threshold, else 0.

        The flow is SPyNet's from the centre LR frame to each neighbour (warping the neighbour by it aligns it to the
        centre, which is what the offsets of the neighbour's features do), at LR resolution like the offsets.
        """
        outputs, self._offsets = self._offsets, []
        b, n = lr.shape[:2]
        c = n // 2
        teacher = self._flow_teacher[0].to(lr.device)
        centre = lr[:, c : c + 1].expand(b, n - 1, *lr.shape[2:]).flatten(0, 1).float()
        neighbours = torch.cat([lr[:, :c], lr[:, c + 1 :]], dim=1).flatten(0, 1).float()
        with torch.no_grad(), torch.autocast(lr.device.type, enabled=False):
            flow = teacher(centre, neighbours)  # M x 2 (dx, dy) x h x w
        target = flow.flip(1).unsqueeze(1)  # M x 1 x 2 (dy, dx: torchvision's offset order) x h x w
        threshold = self.hparams.offset_fidelity_threshold
        losses = []
        for out in outputs:
            taps = out.shape[1] // 3  # conv_offset: 2 x taps offsets, then taps mask logits
            offsets = out[:, : 2 * taps].float().unflatten(1, (taps, 2))
            dist = (offsets - target).abs()
            losses.append(torch.where(dist > threshold, dist, torch.zeros_like(dist)).mean())
        return torch.stack(losses).mean()

    def training_step(self, batch: dict, batch_idx: int):
        self._offsets = []
        sr = self.net(batch["lr"])
        loss = self._loss(sr, batch["hr"])
        if self._flow_teacher and batch["lr"].shape[1] > 1:
            fidelity = self.offset_fidelity_loss(batch["lr"])
            self.log("train/offset_fidelity", fidelity, batch_size=sr.shape[0])
            loss = loss + self.hparams.offset_fidelity_weight * fidelity
        if self.align_head is not None and batch["lr"].shape[1] > 1:
            align = self._align_loss(batch["lr"])
            self.log("train/align_loss", align, batch_size=sr.shape[0])
            loss = loss + self.hparams.align_loss_weight * align
        nonfinite = self._nonfinite_loss(loss)
        if nonfinite is not None:
            msg = f"non-finite training loss ({nonfinite}) at step {self.global_step} (batch {batch_idx})"
            if self.hparams.nan_policy == "raise":
                raise FloatingPointError(msg + "; set model.nan_policy=skip to skip such batches")
            # Skipping helps with a bad batch, never with diverged weights: every later batch would be skipped too.
            bad = next((n for n, p in self.net.named_parameters() if not torch.isfinite(p).all()), None)
            if bad is not None:
                raise FloatingPointError(f"{msg}: weight {bad} is non-finite, so skipping cannot recover "
                                         "(lower model.lr or resume from an earlier checkpoint)")
            self._skipped_in_a_row += 1
            if self._skipped_in_a_row > self.MAX_SKIPS_IN_A_ROW:
                raise FloatingPointError(f"{msg}: {self._skipped_in_a_row} batches in a row were non-finite, so the "
                                         "weights have diverged (lower model.lr or resume from an earlier checkpoint)")
            warnings.warn(msg + ": batch skipped (model.nan_policy=skip)", stacklevel=1)
            # The whole optimiser step is skipped, on one device as under DDP: with accumulate_grad_batches=k the
            # window's other micro-batches are dropped too (on_before_optimizer_step clears every gradient), so a
            # NaN never leaves a step made of part of a window.
            self._drop_grads = True
            if self.trainer.world_size > 1:
                # DDP cannot skip a step (Lightning refuses None): every rank returns a zero loss that reaches
                # every parameter, and on_before_optimizer_step drops the zero gradients, so nothing changes.
                return sum((p * 0).sum() for p in self.parameters() if p.requires_grad)
            return None
        self._skipped_in_a_row = 0
        self.log("train/loss", loss, prog_bar=True, batch_size=sr.shape[0])
        if self.global_step % max(1, self.trainer.log_every_n_steps) == 0:
            self._log_offsets()
        return loss

    def _log_offsets(self) -> None:
        stats_fn = getattr(self.net, "offset_stats", None)
        if stats_fn is None:
            return
        stats = stats_fn()
        for name, value in stats.items():
            self.log(f"offset/{name}", value, batch_size=1)
        worst = max(stats.values(), default=0.0)
        if worst > self.hparams.offset_warn:
            warnings.warn(
                f"mean |DCN offset| reached {worst:.1f} px at step {self.global_step} "
                f"(> model.offset_warn={self.hparams.offset_warn}): deformable alignment may be diverging; "
                "consider a lower model.offset_lr_mult",
                stacklevel=1,
            )

    def _nonfinite_loss(self, loss: torch.Tensor) -> str | None:
        """None if the loss is finite on every rank; else its value (with the rank under DDP). Under DDP every
        rank sees every rank's loss, so all of them raise or skip together (none is left waiting in a collective)."""
        trainer = getattr(self, "_trainer", None)
        if trainer is None or trainer.world_size < 2:
            return None if torch.isfinite(loss) else str(loss.item())
        losses = torch.zeros(trainer.world_size, device=loss.device)
        losses[trainer.global_rank] = loss.detach().float()
        torch.distributed.all_reduce(losses)  # each rank's loss in its own slot (NaN stays in its slot)
        bad = [r for r, v in enumerate(losses.tolist()) if not math.isfinite(v)]
        return None if not bad else f"{losses[bad[0]].item()} on rank {bad[0]}" + (
            f" (and {len(bad) - 1} other rank(s))" if len(bad) > 1 else "")

    def on_before_optimizer_step(self, optimizer) -> None:
        if getattr(self, "_drop_grads", False):  # a skipped batch under DDP: no update at all, as on one device
            for p in self.parameters():
                p.grad = None
            self._drop_grads = False

    def optimizer_step(self, *args, **kwargs):
        # The EMA follows the optimiser: once per step (after the last micro-batch of an accumulation window,
        # skipped steps included), and before on_train_batch_end, so a checkpoint written there holds this step's
        # average (a resume from it continues the same EMA).
        result = super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update_parameters(self.net)
        return result

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, batch: dict, stage: str, batch_idx: int) -> None:
        lr, hr = batch["lr"], batch["hr"]
        sr = self(lr).clamp(0, 1)
        centre = lr[:, lr.shape[1] // 2]
        bic = imresize(centre, 4).clamp(0, 1)[..., : hr.shape[-2], : hr.shape[-1]]
        sr = sr[..., : hr.shape[-2], : hr.shape[-1]]
        border = self.hparams.crop_border
        psnr = psnr_y(sr, hr, border)
        metrics = [psnr, ssim_y(sr, hr, border), psnr_y(bic, hr, border), ssim_y(bic, hr, border)]
        # What the neighbours buy: the same window with every neighbour replaced by the centre frame.
        gain = torch.full_like(psnr, math.nan)
        if self.hparams.temporal_gain:
            gain = psnr - psnr_y(self._centre_only_sr(lr)[..., : hr.shape[-2], : hr.shape[-1]], hr, border)
        values = torch.stack([*metrics, gain], 1)
        for i in range(hr.shape[0]):
            clip, frame, index = batch["clip"][i], int(batch["frame"][i]), int(batch["index"][i])
            self._records[stage].append((index, clip, frame, *values[i].tolist()))
        if stage == "val" and batch_idx < self.hparams.log_images:
            self._log_crops(centre[0], sr[0], bic[0], hr[0], f"{stage}/sample_{batch_idx}",
                            psnr={"bicubic": float(metrics[2][0]), "sr": float(psnr[0])})
        if stage == "test":
            self._keep_test_extras(batch, centre, sr, bic, hr)

    # Side of the HR crop kept per clip for the strip and report.html (smaller frames: the whole frame).
    SAMPLE_CROP = 192

    def _keep_test_extras(self, batch: dict, centre: torch.Tensor, sr: torch.Tensor, bic: torch.Tensor,
                          hr: torch.Tensor) -> None:
        for i in range(hr.shape[0]):
            clip, frame = batch["clip"][i], int(batch["frame"][i])
            if self._tof is not None:
                out, base = grey_u8(sr[i]), grey_u8(bic[i])
                outs = [out, out] if torch.equal(sr[i], bic[i]) else [out, base]
                self._tof_records += self._tof.add(clip, frame, outs, grey_u8(hr[i]))
            chosen = self._chosen.get(clip) if self._chosen is not None else None
            if self._chosen is None and clip not in self._samples and len(self._samples) < self.hparams.test_images:
                chosen = frame  # no list of the test frames: the first frame of each clip
            if chosen == frame and clip not in self._samples:
                self._samples[clip] = {"frame": frame, **self._sample_crops(centre[i], sr[i], bic[i], hr[i])}

    def _sample_crops(self, lr: torch.Tensor, sr: torch.Tensor, bic: torch.Tensor, hr: torch.Tensor) -> dict:
        """The centre crop (uint8 H x W x 3) of the LR frame (nearest-upscaled), bicubic, output and GT."""
        s = max(1, hr.shape[-1] // lr.shape[-1])
        h, w = hr.shape[-2:]
        ch, cw = min(h, self.SAMPLE_CROP) // s * s, min(w, self.SAMPLE_CROP) // s * s
        top, left = (h - ch) // 2 // s * s, (w - cw) // 2 // s * s
        lr_up = lr[:, top // s : (top + ch) // s, left // s : (left + cw) // s]
        lr_up = lr_up.repeat_interleave(s, -2).repeat_interleave(s, -1)
        crops = {"lr": lr_up, "bicubic": bic[:, top : top + ch, left : left + cw],
                 "sr": sr[:, top : top + ch, left : left + cw], "gt": hr[:, top : top + ch, left : left + cw]}
        out = {k: v.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
               for k, v in crops.items()}
        out["box"] = [int(top), int(left), int(ch), int(cw)]  # HR pixels
        return out

    def _test_frames(self) -> dict[str, list[int]] | None:
        """``{clip: scored frames}`` of the test dataloader's dataset (VSRTestDataset), else None."""
        loaders = getattr(self.trainer, "test_dataloaders", None)
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        frames: dict[str, list[int]] = {}
        for loader in loaders:
            ds = getattr(loader, "dataset", None)
            if ds is None or not hasattr(ds, "items") or not hasattr(ds, "clips"):
                return None
            for ci, t in ds.items:
                frames.setdefault(ds.clips[ci].name, []).append(int(t))
        return frames or None

    def _centre_only_sr(self, lr: torch.Tensor) -> torch.Tensor:
        """SR of ``lr`` (B x N x 3 x h x w) with every frame replaced by the centre one, clamped to [0, 1]."""
        centre = lr[:, lr.shape[1] // 2 : lr.shape[1] // 2 + 1]
        return self(centre.expand_as(lr).contiguous()).clamp(0, 1)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "val", batch_idx)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "test", batch_idx)

    def on_validation_epoch_start(self) -> None:
        self._records["val"] = []

    def on_test_epoch_start(self) -> None:
        self._records["test"] = []
        frames = self._test_frames()
        self._samples, self._tof_records = {}, []
        self._chosen = None
        if frames is not None:  # the middle scored frame of the first test_images clips
            first = list(frames.items())[: max(0, self.hparams.test_images)]
            self._chosen = {c: sorted(f)[len(f) // 2] for c, f in first}
        self._tof = None
        if self.hparams.tof:
            self._tof = TofPairs({c: set(f) for c, f in frames.items()} if frames is not None else None)

    def _gather_test_extras(self) -> tuple[list[tuple], dict[str, dict]]:
        """All ranks' tOF pairs and sample crops; pairs split across ranks are completed from the leftovers."""
        records, samples = list(self._tof_records), dict(self._samples)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            tracker = self._tof
            local = (records, samples, tracker.leftovers() if tracker else [], tracker.done if tracker else set())
            parts: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, local)
            records = [r for part in parts for r in part[0]]
            samples = {}
            for part in parts:
                for clip, sample in part[1].items():
                    samples.setdefault(clip, sample)
            if tracker is not None:
                merged = TofPairs(tracker.expected)
                merged.done = set().union(*(part[3] for part in parts))
                for clip, frame, outs, gt in sorted((x for part in parts for x in part[2]), key=lambda x: x[:2]):
                    records += merged.add(clip, frame, outs, gt)
        return sorted({r[:2]: r for r in records}.values()), samples

    def _gather_records(self, stage: str) -> list[tuple]:
        """All ranks' records, each test sample exactly once (the distributed sampler pads with repeats)."""
        local = self._records[stage]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            parts: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, local)
            local = [r for part in parts for r in part]
        return sorted({r[0]: r for r in local}.values())

    def _summarise(self, stage: str, tof_records: Sequence[tuple] = ()) -> dict:
        records = self._gather_records(stage)
        dm = getattr(self.trainer, "datamodule", None)
        mode = getattr(dm, "average", "clip") or "clip"
        name = getattr(dm, "test_name", "test")
        per = {k: {} for k in ("psnr", "ssim", "psnr_bicubic", "ssim_bicubic", "temporal_gain")}
        for _, clip, frame, *vals in records:
            for key, v in zip(per, vals, strict=True):
                per[key].setdefault(clip, {})[frame] = v
        clip_means, averages = {}, {}
        for key, values in per.items():
            clip_means[key], averages[key] = average_per_clip(values, mode=mode) if values else ({}, math.nan)
        frames = {clip: len(v) for clip, v in per["psnr"].items()}
        for clip, frame, (t_sr, t_bic) in tof_records:
            per.setdefault("tof", {}).setdefault(clip, {})[frame] = t_sr
            per.setdefault("tof_bicubic", {}).setdefault(clip, {})[frame] = t_bic
        for key in ("tof", "tof_bicubic"):
            if key in per:
                clip_means[key], averages[key] = average_per_clip(per[key], mode=mode)
        result = {
            "dataset": name,
            "average_mode": mode,
            "crop_border": self.hparams.crop_border,
            "clips": {
                c: {"psnr": clip_means["psnr"][c], "ssim": clip_means["ssim"][c], "frames": frames[c]} for c in frames
            },
            "average": {"psnr": averages["psnr"], "ssim": averages["ssim"]},
            "bicubic": {
                "clips": {c: {"psnr": clip_means["psnr_bicubic"][c], "ssim": clip_means["ssim_bicubic"][c]} for c in frames},
                "average": {"psnr": averages["psnr_bicubic"], "ssim": averages["ssim_bicubic"]},
            },
        }
        if self.hparams.temporal_gain:
            for c in frames:
                result["clips"][c]["temporal_gain"] = clip_means["temporal_gain"][c]
            result["average"]["temporal_gain"] = averages["temporal_gain"]
            result["temporal_gain_definition"] = (
                "dB: PSNR-Y of the real window minus PSNR-Y of the window with every neighbour replaced by the "
                "centre frame (same averaging as psnr)"
            )
        if "tof" in per:  # only where clips have consecutive scored frames (not Vimeo-90K-T's centre frames)
            result["tof_definition"] = TOF_DEFINITION
            for key, section in (("tof", result), ("tof_bicubic", result["bicubic"])):
                for c in clip_means[key]:
                    section["clips"][c]["tof"] = clip_means[key][c]
                section["average"]["tof"] = averages[key]
        if stage == "test":
            result["per_frame"] = self._per_frame(per)
        groups = getattr(dm, "test_groups", None) or {}
        if groups:
            result["groups"] = {}
            for g, clips in groups.items():
                sel = {c: per["psnr"][c] for c in clips if c in per["psnr"]}
                sel_s = {c: per["ssim"][c] for c in clips if c in per["ssim"]}
                if sel:
                    result["groups"][g] = {
                        "psnr": average_per_clip(sel, mode=mode)[1],
                        "ssim": average_per_clip(sel_s, mode=mode)[1],
                    }
                    if self.hparams.temporal_gain:
                        sel_g = {c: per["temporal_gain"][c] for c in clips if c in per["temporal_gain"]}
                        result["groups"][g]["temporal_gain"] = average_per_clip(sel_g, mode=mode)[1]
                    sel_t = {c: per["tof"][c] for c in clips if c in per.get("tof", {})}
                    if sel_t:
                        result["groups"][g]["tof"] = average_per_clip(sel_t, mode=mode)[1]
        return result

    def _per_frame(self, per: dict) -> dict[str, dict[str, list]]:
        """``{clip: {"frame": [t, ...], metric: [value per frame, ...]}}`` (tOF of t: the pair t-1 -> t)."""
        keys = ["psnr", "ssim", "psnr_bicubic", "ssim_bicubic"]
        keys += ["temporal_gain"] * bool(self.hparams.temporal_gain) + ["tof", "tof_bicubic"] * ("tof" in per)
        out = {}
        for clip, values in per["psnr"].items():
            order = sorted(values)
            out[clip] = {"frame": order}
            for key in keys:
                out[clip][key] = [per[key].get(clip, {}).get(t, math.nan) for t in order]
        return out

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        res = self._summarise("val")
        for key, value in (
            ("psnr", res["average"]["psnr"]),
            ("ssim", res["average"]["ssim"]),
            ("psnr_bicubic", res["bicubic"]["average"]["psnr"]),
            ("ssim_bicubic", res["bicubic"]["average"]["ssim"]),
            ("temporal_gain", res["average"].get("temporal_gain")),
        ):
            if value is None:
                continue
            # Every rank holds the same gathered value, so no sync is needed.
            self.log(f"val/{key}", value, prog_bar=key in ("psnr", "temporal_gain"), sync_dist=False)

    def on_test_epoch_end(self) -> None:
        tof_records, samples = self._gather_test_extras()
        res = self._summarise("test", tof_records)
        name = res["dataset"]
        self.test_results[name] = res
        self.test_samples[name] = {c: samples[c] for c in res["clips"] if c in samples}
        if self.trainer.is_global_zero:
            log_test_media(self.loggers, name, res, self.test_samples[name], self.global_step)
        for key, value in (
            ("psnr", res["average"]["psnr"]),
            ("ssim", res["average"]["ssim"]),
            ("psnr_bicubic", res["bicubic"]["average"]["psnr"]),
            ("ssim_bicubic", res["bicubic"]["average"]["ssim"]),
            ("temporal_gain", res["average"].get("temporal_gain")),
            ("tof", res["average"].get("tof")),
            ("tof_bicubic", res["bicubic"]["average"].get("tof")),
        ):
            if value is not None:
                self.log(f"{name}/{key}", value, sync_dist=False)
        for g, vals in res.get("groups", {}).items():
            for key, value in vals.items():
                self.log(f"{name}/{g}/{key}", value, sync_dist=False)

    # ------------------------------------------------------------------ logging helpers
    def _log_crops(self, lr: torch.Tensor, sr: torch.Tensor, bic: torch.Tensor, hr: torch.Tensor, key: str,
                   size: int = 128, psnr: dict | None = None) -> None:
        """The centred ``size`` crop as LR (nearest) | bicubic | model | GT, labelled, with the frame's PSNRs
        (``lgfn.training.media.log_sample``: the layout of the test strips)."""
        if self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        s = max(1, hr.shape[-1] // lr.shape[-1])
        h, w = hr.shape[-2:]
        size_h, size_w = min(h, size) // s * s, min(w, size) // s * s
        top, left = (h - size_h) // 2 // s * s, (w - size_w) // 2 // s * s
        up = lr[:, top // s : (top + size_h) // s, left // s : (left + size_w) // s]
        up = up.repeat_interleave(s, -2).repeat_interleave(s, -1)
        crops = {"lr": up, "bicubic": bic[:, top : top + size_h, left : left + size_w],
                 "sr": sr[:, top : top + size_h, left : left + size_w],
                 "gt": hr[:, top : top + size_h, left : left + size_w]}
        # 8-bit, rounded as the metrics round: W&B stores float arrays as 8-bit without scaling (black images).
        panels = {k: v.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
                  for k, v in crops.items()}
        log_sample(self.loggers, key, panels, psnr or {}, self.global_step)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        hp = self.hparams
        offset, rest = [], []
        for name, p in self.net.named_parameters():
            if p.requires_grad:
                (offset if "offset" in name else rest).append(p)
        if self.align_head is not None:
            rest += list(self.align_head.parameters())
        groups = [{"params": rest}]
        if offset:
            groups.append({"params": offset, "lr": hp.lr * hp.offset_lr_mult})
        optimizer = torch.optim.Adam(groups, lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        if hp.scheduler == "constant":
            return optimizer
        if hp.scheduler == "multistep":
            scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(hp.milestones), gamma=hp.gamma)
        else:
            total = self.trainer.estimated_stepping_batches if hp.scheduler_interval == "step" else self.trainer.max_epochs
            if not total or total < 0 or math.isinf(total):
                raise ValueError("model.scheduler=cosine needs trainer.max_steps or trainer.max_epochs to be set")
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(total), eta_min=hp.lr * 1e-2)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": hp.scheduler_interval}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["net_config"] = self.net_config
        if type(self.net).__name__ != "LGFN":  # the reader assumes LGFN when a checkpoint names no class
            checkpoint["net_class"] = type(self.net).__name__
