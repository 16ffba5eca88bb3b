"""`gx keypoint-train`: ViT keypoint regression (16 MPII joints) with a frozen, LoRA or fully tuned backbone.

Three layers, as in `gesture_cli.train.lora`:
    train_keypoint(cfg, run)     KeypointTrainer through the trainer skeleton (train/skeleton.py): datasets,
                                 run-dir step, checkpoints, final artifacts under keypoint/<backbone>/
    fit(...)                     gesture_cli.train.loop: AdamW, warm-up + cosine, bf16 where native, resume
    build_keypoint_model(...)    gesture_cli.models.keypoint_head: backbone (+ LoRA) + regression head

Loss: masked MSE of the normalised coordinates, averaged over the annotated joints only (joints with
MPII `joints_vis` 0 contribute nothing). Augmentation on the training device, per sample: a
horizontal flip (half the samples) that also swaps every left joint with its right partner, a small
rotation / zoom / shift applied to image and joints alike, brightness and contrast.

Splits: the dataset's `train` split (or its only split, e.g. mpii's `all`); validation is its `val`
split when there is one, else a seeded `val_fraction` of the training split; `test` is scored at the
end when the dataset has it. `best/` is chosen by validation PCK (PCKh@0.5 when head sizes are
known, else PCK@0.2 of the torso). Checkpoints are written live to keypoint/<backbone>/checkpoints/
and linked into the atomically committed final directory, exactly as `gx lora-train` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gesture_cli.core.errors import UsageError, unknown_choice
from gesture_cli.data.splits import Splits
from gesture_cli.train.common import LoopSettings, SizedBatches, check_data_fields, loop_config, split_numbers
from gesture_cli.train.skeleton import FitData, Outcome, Plan, fit_summary
from gesture_cli.train.tuning import TunedBuilt, TuningTrainer, check_lora_fields, lora_record

COMMAND = "keypoint-train"
METHODS = ("frozen", "lora", "full")
HEAD_TYPES = ("patch", "pooled")
POOL_KINDS = ("cls", "mean", "cls+mean")
DEFAULT_LR = {"frozen": 1e-3, "lora": 5e-4, "full": 1e-4}  # per method when --lr is not given
RESUME_KEYS = ("backbone", "method", "dataset", "dataset_opts", "head", "hidden", "pool", "target_modules", "rank", "alpha", "dropout",
               "image_size", "val_fraction", "max_samples", "seed")


@dataclass(frozen=True)
class KeypointTrainConfig(LoopSettings):
    backbone: str = "tiny-dinov2"  # registry name, hub id, local dir, timm:NAME or TorchScript file
    dataset: str = "synthetic-keypoints"  # keypoint dataset spec: synthetic-keypoints | mpii:JSON[:IMGDIR]
    dataset_opts: tuple[str, ...] = ()  # KEY=VALUE options of the source, e.g. margin=1.25 (mpii), train_samples=2000 (synthetic)
    method: str = "lora"  # frozen | lora | full
    head: str = "patch"  # patch: integral regression over patch tokens | pooled: MLP on pooled features
    hidden: int = 256  # width of the head's hidden layer
    pool: str = "cls+mean"  # what the pooled head sees: cls | mean | cls+mean
    target_modules: tuple[str, ...] = ()  # Linear module names for LoRA; empty = the family default (q/v projections)
    rank: int = 8  # LoRA rank r
    alpha: float = 16.0  # LoRA alpha (updates are scaled by alpha / r)
    dropout: float = 0.1  # dropout on the LoRA input
    image_size: int | None = None  # crop side fed to the backbone, pixels; None = the backbone's default
    epochs: int = 30  # passes over the training split
    batch_size: int = 32  # crops per micro-batch and process
    lr: float | None = None  # peak learning rate; None = 1e-3 (frozen), 5e-4 (lora), 1e-4 (full)
    patience: int = 10  # evaluations without a better val PCK before stopping; 0 = never
    val_fraction: float = 0.1  # share of the training split held out when the dataset has no val split
    flip: bool = True  # mirror half the crops and swap left/right joints
    rotate: float = 15.0  # random rotation within +-rotate degrees
    scale_jitter: float = 0.15  # random zoom: the crop window side varies within 1 +- scale_jitter
    max_samples: int | None = None  # cap per split (seeded random subset), for quick runs
    seed: int = 0  # head init, split, data order, augmentation

    def validate(self) -> None:
        if self.method not in METHODS:
            raise unknown_choice("method", self.method, METHODS)
        if self.head not in HEAD_TYPES:
            raise unknown_choice("head", self.head, HEAD_TYPES)
        if self.pool not in POOL_KINDS:
            raise unknown_choice("pool", self.pool, POOL_KINDS)
        if self.hidden < 1:
            raise UsageError(f"--hidden must be at least 1; got {self.hidden}")
        check_lora_fields(self)
        check_data_fields(self)
        if not 0 <= self.rotate <= 180:
            raise UsageError(f"--rotate must lie in [0, 180] degrees; got {self.rotate}")
        if not 0 <= self.scale_jitter < 1:
            raise UsageError(f"--scale-jitter must lie in [0, 1); got {self.scale_jitter}")
        self.train_config().validate()

    def train_config(self):
        return loop_config(self, lr=self.lr if self.lr is not None else DEFAULT_LR[self.method], monitor="val_pck")


# ---- data ---------------------------------------------------------------------------------------


def make_splits(cfg: KeypointTrainConfig) -> Splits:
    """Train / validation / test datasets of a config (see the module docstring)."""
    from gesture_cli.data.keypoints import make_keypoint_splits

    return make_keypoint_splits(cfg.dataset, cfg.dataset_opts, val_fraction=cfg.val_fraction, max_samples=cfg.max_samples, seed=cfg.seed)


class KeypointBatches(SizedBatches):
    """A KeypointDataset as a `BatchSource` for fit(): get_batch(indices) -> dict of CPU tensors."""

    def get_batch(self, indices):
        import torch

        b = self.dataset.batch(indices, size=self.size)
        return {"images": torch.from_numpy(np.ascontiguousarray(b.images)), "keypoints": torch.from_numpy(b.keypoints),
                "visible": torch.from_numpy(b.visible)}


# ---- augmentation and loss ----------------------------------------------------------------------


@dataclass(frozen=True)
class KeypointAugment:
    flip: bool = True  # mirror half the samples, swapping left and right joints
    rotate: float = 15.0  # degrees, drawn uniformly from [-rotate, rotate]
    scale_jitter: float = 0.15  # the sampled window's side is (1 +- scale_jitter) x the crop's
    shift: float = 0.05  # window centre moves up to this fraction of the crop side
    brightness: float = 0.2  # gain from [1 - b, 1 + b]
    contrast: float = 0.2  # contrast gain around the per-image mean


def augment_keypoints(images, keypoints, visible, cfg: KeypointAugment, *, generator=None):
    """(images float [B, C, H, W] in [0, 1], keypoints [B, K, 2] in crop units, visible [B, K]) -> the same, augmented.

    One affine warp per sample through `grid_sample` (zero padding), with the joints moved by the same
    map; mirrored samples get their joints re-indexed by FLIP_INDEX, so joint "r_wrist" is still the
    right wrist of the mirrored person. Random numbers come from `generator` or torch's global RNG
    (which fit() reseeds per micro-batch).
    """
    import torch
    import torch.nn.functional as F

    from gesture_cli.data.keypoints import FLIP_INDEX

    b = images.shape[0]
    if b == 0:
        return images, keypoints, visible

    def uniform(lo: float, hi: float):
        return lo + (hi - lo) * torch.rand(b, generator=generator)

    flip = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0) if cfg.flip else torch.ones(b)
    angle = torch.deg2rad(uniform(-cfg.rotate, cfg.rotate))
    scale = torch.exp(uniform(math.log(1 - cfg.scale_jitter), math.log(1 + cfg.scale_jitter)))
    shift = torch.stack([uniform(-cfg.shift, cfg.shift), uniform(-cfg.shift, cfg.shift)], dim=1) * 2  # normalised [-1, 1] units
    gain, contrast = uniform(1 - cfg.brightness, 1 + cfg.brightness), uniform(1 - cfg.contrast, 1 + cfg.contrast)

    cos, sin = torch.cos(angle), torch.sin(angle)
    # Output point p (in [-1, 1]^2) samples the input at A p + t, A = scale * R(angle) * diag(flip, 1).
    a = torch.stack([torch.stack([cos * flip, -sin], dim=1), torch.stack([sin * flip, cos], dim=1)], dim=1) * scale.view(b, 1, 1)
    theta = torch.cat([a, shift.unsqueeze(-1)], dim=2)  # [B, 2, 3]
    dev, dtype = images.device, images.dtype
    grid = F.affine_grid(theta.to(dev, dtype), list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = ((out - mean) * contrast.to(dev, dtype).view(b, 1, 1, 1) + mean) * gain.to(dev, dtype).view(b, 1, 1, 1)

    # Joints: input point q = 2u - 1 lands at p = A^-1 (q - t).
    q = keypoints.float() * 2 - 1
    inv = torch.linalg.inv(a).to(q.device)
    p = torch.einsum("bij,bkj->bki", inv, q - shift.to(q.device).unsqueeze(1))
    kps = (p + 1) / 2
    mirrored = (flip < 0).to(kps.device)
    index = torch.tensor(FLIP_INDEX, device=kps.device)
    kps = torch.where(mirrored.view(b, 1, 1), kps[:, index], kps)
    vis = torch.where(mirrored.view(b, 1).to(visible.device), visible[:, index.to(visible.device)], visible)
    return out.clamp_(0.0, 1.0), kps.to(keypoints.dtype), vis


def masked_mse(pred, target, visible):
    """Mean squared coordinate error over annotated joints: sum(vis * |pred - target|^2) / (2 * sum(vis))."""
    sq = ((pred.float() - target.float()) ** 2).sum(-1)  # [B, K]
    vis = visible.float()
    return (sq * vis).sum() / (2 * vis.sum().clamp(min=1.0))


def make_loss_fn(*, augment: KeypointAugment | None):
    """(model, batch dict) -> {"loss"}: augment on the device, preprocess, regress, masked MSE."""
    from gesture_cli.models.augment import to_float_images

    def loss_fn(model, batch):
        inner = model.module if hasattr(model, "module") else model  # DDP wraps the regressor
        dev = inner.head.norm.weight.device
        x = to_float_images(batch["images"].to(dev, non_blocking=True))
        kps, vis = batch["keypoints"].to(dev), batch["visible"].to(dev)
        if augment is not None:
            x, kps, vis = augment_keypoints(x, kps, vis, augment)
        pred = model(inner.backbone.preprocess(x))
        return {"loss": masked_mse(pred, kps, vis)}

    return loss_fn


def score(model, dataset, *, size: int, batch_size: int) -> dict:
    """keypoint_metrics + the masked MSE of a dataset, no augmentation."""
    from gesture_cli.eval.keypoint import keypoint_metrics, predict_keypoints
    from gesture_cli.eval.keypoint import masked_mse as np_masked_mse

    pred, truth = predict_keypoints(model, dataset, size=size, batch_size=batch_size)
    out = keypoint_metrics(pred, truth["keypoints"], truth["visible"], head_size=truth["head_size"], torso_size=truth["torso_size"])
    out["loss"] = np_masked_mse(pred, truth["keypoints"], truth["visible"])
    return out


# ---- the trainer ---------------------------------------------------------------------------------


class KeypointTrainer(TuningTrainer):
    command = COMMAND
    resume_keys = RESUME_KEYS

    def make_splits(self, context) -> Splits:
        return make_splits(self.cfg)

    def build(self, plan: Plan, *, acc, prec, say) -> TunedBuilt:
        import torch

        from gesture_cli.core.config import config_to_dict
        from gesture_cli.data.keypoints import MPII_JOINTS, NUM_JOINTS
        from gesture_cli.models.backbones import build_backbone
        from gesture_cli.models.keypoint_head import build_keypoint_model
        from gesture_cli.models.lora import count_parameters

        cfg, splits = self.cfg, plan.splits
        # Built in fp32: fit() stores the frozen part in the compute dtype once the trained part is known.
        backbone = build_backbone(cfg.backbone, device=acc.device, dtype=torch.float32, image_size=cfg.image_size)
        model = build_keypoint_model(backbone, num_joints=NUM_JOINTS, method=cfg.method, head=cfg.head, hidden=cfg.hidden, pool=cfg.pool,
                                     targets=cfg.target_modules or None, rank=cfg.rank, alpha=cfg.alpha, dropout=cfg.dropout, seed=cfg.seed)
        targets = sorted(getattr(backbone.model, "peft_config", {}).get("default").target_modules) if cfg.method == "lora" else []
        resolved = {**config_to_dict(cfg), "image_size": backbone.image_size, "target_modules": targets}
        if self.resume:  # again, with the defaults the backbone resolved
            self.check_resume(resolved)
        trainable, total = count_parameters(model)
        notices = [
            self.parameter_notice(trainable, total, targets, detail=f", head {cfg.head}"),
            f"data: {self.describe_splits(splits)}; {backbone.image_size} px crops; head sizes from {splits.train.head_source}",
        ]
        meta = {"config": resolved, "joints": list(MPII_JOINTS), "backbone": backbone.describe(), "method": cfg.method}
        return TunedBuilt(model=model, resolved=resolved, meta=meta, notices=notices, backbone=backbone, trainable=trainable, total=total)

    def _score(self, model, dataset, built: TunedBuilt) -> dict:
        return score(model, dataset, size=built.backbone.image_size, batch_size=max(self.cfg.batch_size, 64))

    def make_data(self, plan: Plan, built: TunedBuilt, *, acc, say) -> FitData:
        cfg, splits = self.cfg, plan.splits

        def eval_fn(m) -> dict[str, float]:
            s = self._score(m, splits.val, built)
            out = {"val_loss": s["loss"], "val_pck": s["pck"] if s["pck"] is not None else 0.0}
            if s["pck@0.2"] is not None:
                out["val_pck_torso"] = s["pck@0.2"]["mean"]
            return out

        augment = KeypointAugment(flip=cfg.flip, rotate=cfg.rotate, scale_jitter=cfg.scale_jitter)
        return FitData(model=built.model, train_data=KeypointBatches(splits.train, size=built.backbone.image_size),
                       loss_fn=make_loss_fn(augment=augment), eval_fn=eval_fn if splits.val is not None else None)

    def evaluate(self, plan: Plan, built: TunedBuilt, data: FitData, result, *, prec) -> Outcome:
        cfg, trainable = self.cfg, built.trainable
        metrics = self.score_splits(plan.splits, lambda ds: self._score(built.model, ds, built))
        pck_kind = (metrics.get("val") or metrics.get("test") or {}).get("pck_kind")
        summary = {**self.summary_start(built, head=cfg.head), **fit_summary(result, best="best_val_pck", after_best={"pck_kind": pck_kind})}
        step_metrics = {
            "method": cfg.method,
            **split_numbers(metrics, val_pck="val.pck", test_pck="test.pck"),
            "pck_kind": pck_kind,
            "trainable_params": trainable,
            "steps": result.state.step,
            "samples_per_s": summary["train_samples_per_s"],
        }
        return Outcome(metrics=metrics, summary=summary, step_metrics=step_metrics)

    def save(self, out: Path, plan: Plan, built: TunedBuilt, outcome: Outcome) -> None:
        from gesture_cli.core.artifacts import save_json
        from gesture_cli.data.keypoints import FLIP_PAIRS, MPII_JOINTS, SKELETON
        from gesture_cli.models.keypoint_head import save_keypoint_model

        cfg, resolved = self.cfg, built.resolved
        save_keypoint_model(out, built.model, joints=MPII_JOINTS, extra={
            "lora": lora_record(cfg, resolved), "dataset": cfg.dataset, "config": resolved, "splits": plan.splits.names,
            "precision": outcome.summary["precision"],
        })
        save_json(out / "joints.json", {"joints": list(MPII_JOINTS), "flip_pairs": [list(p) for p in FLIP_PAIRS],
                                        "skeleton": [list(e) for e in SKELETON], "units": "crop units: (0, 0) top-left, (1, 1) bottom-right"},
                  kind="keypoint-joints")
        save_json(out / "metrics.json", {**outcome.summary, **outcome.metrics}, kind="keypoint-metrics")


__all__ = ["KeypointAugment", "KeypointTrainConfig", "augment_keypoints", "make_splits", "masked_mse"]
