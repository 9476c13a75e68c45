"""LitLGFN: training, validation and testing of a VSR network under the evaluation protocol."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from lgfn.degradation import imresize
from lgfn.metrics import average_per_clip, psnr_y, ssim_y

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
        init_from: str | None = None,
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
        if init_from:  # fine-tuning: weights file, Lightning .ckpt or the authors' release, strict key check
            from lgfn.weights import init_from_file

            init_from_file(net, init_from)
        self.net = net
        # The network's own constructor arguments travel with every checkpoint (lgfn-upscale rebuilds from them).
        self.net_config = dict(getattr(net, "config", {}))
        self.ema = None
        if ema_decay is not None:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
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
        self._records: dict[str, list[tuple]] = {"val": [], "test": []}
        self._skipped_in_a_row = 0
        self.test_results: dict[str, dict] = {}

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

    def training_step(self, batch: dict, batch_idx: int):
        sr = self.net(batch["lr"])
        loss = self._loss(sr, batch["hr"])
        if self.align_head is not None and batch["lr"].shape[1] > 1:
            align = self._align_loss(batch["lr"])
            self.log("train/align_loss", align, batch_size=sr.shape[0])
            loss = loss + self.hparams.align_loss_weight * align
        if not torch.isfinite(loss):
            msg = f"non-finite training loss ({loss.item()}) at step {self.global_step} (batch {batch_idx})"
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

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.net)

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
            self._log_crops(sr[0], bic[0], hr[0], f"{stage}/sample_{batch_idx}")

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

    def _gather_records(self, stage: str) -> list[tuple]:
        """All ranks' records, each test sample exactly once (the distributed sampler pads with repeats)."""
        local = self._records[stage]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            parts: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, local)
            local = [r for part in parts for r in part]
        return sorted({r[0]: r for r in local}.values())

    def _summarise(self, stage: str) -> dict:
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
        result = {
            "dataset": name,
            "average_mode": mode,
            "crop_border": self.hparams.crop_border,
            "clips": {
                c: {"psnr": clip_means["psnr"][c], "ssim": clip_means["ssim"][c], "frames": frames[c]} for c in frames
            },
            "average": {"psnr": averages["psnr"], "ssim": averages["ssim"]},
            "temporal_gain_definition": "dB: PSNR-Y of the real window minus PSNR-Y of the window with every "
            "neighbour replaced by the centre frame (same averaging as psnr)",
            "bicubic": {
                "clips": {c: {"psnr": clip_means["psnr_bicubic"][c], "ssim": clip_means["ssim_bicubic"][c]} for c in frames},
                "average": {"psnr": averages["psnr_bicubic"], "ssim": averages["ssim_bicubic"]},
            },
        }
        if self.hparams.temporal_gain:
            for c in frames:
                result["clips"][c]["temporal_gain"] = clip_means["temporal_gain"][c]
            result["average"]["temporal_gain"] = averages["temporal_gain"]
        else:
            del result["temporal_gain_definition"]
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
        return result

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
        res = self._summarise("test")
        name = res["dataset"]
        self.test_results[name] = res
        for key, value in (
            ("psnr", res["average"]["psnr"]),
            ("ssim", res["average"]["ssim"]),
            ("psnr_bicubic", res["bicubic"]["average"]["psnr"]),
            ("ssim_bicubic", res["bicubic"]["average"]["ssim"]),
            ("temporal_gain", res["average"].get("temporal_gain")),
        ):
            if value is not None:
                self.log(f"{name}/{key}", value, sync_dist=False)
        for g, vals in res.get("groups", {}).items():
            for key, value in vals.items():
                self.log(f"{name}/{g}/{key}", value, sync_dist=False)

    # ------------------------------------------------------------------ logging helpers
    def _log_crops(self, sr: torch.Tensor, bic: torch.Tensor, hr: torch.Tensor, key: str, size: int = 128) -> None:
        if self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        h, w = hr.shape[-2:]
        top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
        crops = [t[:, top : top + size, left : left + size].detach().float().cpu() for t in (sr, bic, hr)]
        grid = torch.cat(crops, dim=-1)  # SR | bicubic | GT side by side
        # 8-bit, rounded as the metrics round: W&B stores float arrays as 8-bit without scaling (black images).
        u8 = grid.clamp(0, 1).mul(255).round().to(torch.uint8)
        for logger in self.loggers:
            name = type(logger).__name__
            if name == "WandbLogger":
                logger.log_image(key=key, images=[u8.permute(1, 2, 0).numpy()], caption=["LGFN | bicubic | GT"],
                                 step=self.global_step)
            elif name == "TensorBoardLogger":
                logger.experiment.add_image(key, u8.numpy(), self.global_step, dataformats="CHW")

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
