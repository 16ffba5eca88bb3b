"""`gx keypoint-train`: ViT keypoint regression (16 MPII joints) with a frozen, LoRA or fully tuned backbone.

Three layers, as in `gesture_cli.train.lora`:
    train_keypoint(cfg, run)     datasets, run-dir step, checkpoints, final artifacts under keypoint/<backbone>/
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

import contextlib
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gesture_cli.core.errors import UsageError, unknown_choice
from gesture_cli.train.common import (
    Splits,
    begin_training_step,
    check_data_fields,
    check_lora_fields,
    check_resume,
    loop_config,
    set_aside_checkpoints,
)

COMMAND = "keypoint-train"
METHODS = ("frozen", "lora", "full")
HEAD_TYPES = ("patch", "pooled")
POOL_KINDS = ("cls", "mean", "cls+mean")
DEFAULT_LR = {"frozen": 1e-3, "lora": 5e-4, "full": 1e-4}  # per method when --lr is not given
RESUME_KEYS = ("backbone", "method", "dataset", "dataset_opts", "head", "hidden", "pool", "target_modules", "rank", "alpha", "dropout",
               "image_size", "val_fraction", "max_samples", "seed")


@dataclass(frozen=True)
class KeypointTrainConfig:
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
    max_steps: int | None = None  # optimizer steps in all; overrides epochs
    batch_size: int = 32  # crops per micro-batch and process
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float | None = None  # peak learning rate; None = 1e-3 (frozen), 5e-4 (lora), 1e-4 (full)
    weight_decay: float = 0.01  # AdamW decoupled weight decay (not on biases / norms)
    warmup_steps: int | None = None  # linear warm-up in optimizer steps; None = warmup_ratio of all steps
    warmup_ratio: float = 0.05  # warm-up share of all optimizer steps when warmup_steps is None
    max_grad_norm: float = 1.0  # gradient clipping; 0 = off
    patience: int = 10  # evaluations without a better val PCK before stopping; 0 = never
    val_fraction: float = 0.1  # share of the training split held out when the dataset has no val split
    eval_every: int = 0  # optimizer steps between evaluations; 0 = every epoch
    checkpoint_every: int = 100  # optimizer steps between saves of checkpoints/last/
    flip: bool = True  # mirror half the crops and swap left/right joints
    rotate: float = 15.0  # random rotation within +-rotate degrees
    scale_jitter: float = 0.15  # random zoom: the crop window side varies within 1 +- scale_jitter
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (core.device.resolve_precision: bf16 where fast, fp16 on older GPUs)
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


class KeypointBatches:
    """A KeypointDataset as a `BatchSource` for fit(): get_batch(indices) -> dict of CPU tensors."""

    def __init__(self, dataset, *, size: int):
        self.dataset = dataset
        self.size = size

    def __len__(self) -> int:
        return len(self.dataset)

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


# ---- the command's core -------------------------------------------------------------------------


def train_keypoint(
    cfg: KeypointTrainConfig,
    run,
    *,
    device: str = "auto",
    force: bool = False,
    resume: bool = False,
    argv: list[str] | None = None,
    callbacks: dict[str, list[Callable]] | None = None,
    notify: Callable[[str], None] | None = None,
) -> dict:
    """Train, evaluate and write keypoint/<backbone>/ (see the module docstring); returns a summary dict."""
    import torch

    from gesture_cli.core.config import config_to_dict
    from gesture_cli.core.device import make_precision
    from gesture_cli.data.keypoints import MPII_JOINTS, NUM_JOINTS
    from gesture_cli.models.backbones import build_backbone
    from gesture_cli.models.features import backbone_dirname
    from gesture_cli.models.keypoint_head import build_keypoint_model
    from gesture_cli.models.lora import count_parameters
    from gesture_cli.train.checkpoint import load_checkpoint, load_model_state, read_checkpoint_state
    from gesture_cli.train.common import link_tree, refuse_unfinished
    from gesture_cli.train.loop import fit, make_accelerator

    cfg.validate()
    say = notify or (lambda _line: None)
    out_rel = f"keypoint/{backbone_dirname(cfg.backbone)}"
    ckpt_dir = run.path(out_rel, "checkpoints")
    given = {k: sorted(v) if k == "target_modules" else v for k, v in config_to_dict(cfg).items()
             if not (k in ("image_size", "target_modules") and not v)}
    if resume:
        check_resume(ckpt_dir / "last", given, RESUME_KEYS)
    else:
        refuse_unfinished(ckpt_dir / "last", force=force)
    splits = make_splits(cfg)
    step = begin_training_step(run, COMMAND, cfg, splits, out_rel=out_rel, device=device, argv=argv, force=force or resume)
    if step.cached:
        return {**step.entry, "cached": True, "is_main": True}

    acc = make_accelerator(device)
    prec = make_precision(acc.device, cfg.precision)
    # Built in fp32: fit() stores the frozen part in the compute dtype once the trained part is known.
    backbone = build_backbone(cfg.backbone, device=acc.device, dtype=torch.float32, image_size=cfg.image_size)
    model = build_keypoint_model(backbone, num_joints=NUM_JOINTS, method=cfg.method, head=cfg.head, hidden=cfg.hidden, pool=cfg.pool,
                                 targets=cfg.target_modules or None, rank=cfg.rank, alpha=cfg.alpha, dropout=cfg.dropout, seed=cfg.seed)
    targets = sorted(getattr(backbone.model, "peft_config", {}).get("default").target_modules) if cfg.method == "lora" else []
    resolved = {**config_to_dict(cfg), "image_size": backbone.image_size, "target_modules": targets}
    if resume:  # again, with the defaults the backbone resolved
        check_resume(ckpt_dir / "last", resolved, RESUME_KEYS)

    trainable, total = count_parameters(model)
    if acc.is_main_process:
        say(f"precision: {prec.describe()}")
        say(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / max(1, total):.2f}%), method {cfg.method}, head {cfg.head}"
            + (f", LoRA r={cfg.rank} alpha={cfg.alpha:g} on {', '.join(targets)}" if cfg.method == "lora" else ""))
        say(f"data: train {len(splits.train)} ({splits.names['train']}), val {len(splits.val) if splits.val else 0}"
            f"{' (' + splits.names['val'] + ')' if 'val' in splits.names else ''}, test {len(splits.test) if splits.test else 0}; "
            f"{backbone.image_size} px crops; head sizes from {splits.train.head_source}")
        if resume:
            st = read_checkpoint_state(ckpt_dir / "last")["trainer"]
            say(f"resuming from step {st['step']}/{st['total_steps']} (epoch {st['epoch']})")

    size = backbone.image_size
    eval_bs = max(cfg.batch_size, 64)

    def eval_fn(m) -> dict[str, float]:
        s = score(m, splits.val, size=size, batch_size=eval_bs)
        out = {"val_loss": s["loss"], "val_pck": s["pck"] if s["pck"] is not None else 0.0}
        if s["pck@0.2"] is not None:
            out["val_pck_torso"] = s["pck@0.2"]["mean"]
        return out

    meta = {"config": resolved, "joints": list(MPII_JOINTS), "backbone": backbone.describe(), "method": cfg.method}
    augment = KeypointAugment(flip=cfg.flip, rotate=cfg.rotate, scale_jitter=cfg.scale_jitter)
    is_main = acc.is_main_process
    with step if is_main else contextlib.nullcontext():
        set_aside_checkpoints(step, ckpt_dir, resume=resume, is_main=is_main)
        result = fit(
            model, train_data=KeypointBatches(splits.train, size=size), loss_fn=make_loss_fn(augment=augment),
            eval_fn=eval_fn if splits.val is not None else None, cfg=cfg.train_config(), checkpoint_dir=ckpt_dir,
            callbacks=callbacks, resume=resume, meta=meta, accelerator=acc, precision=prec,
        )
        if not is_main:
            return {"is_main": False}
        if result.best_dir is not None:  # the final artifacts carry the best validation weights
            tensors, _, _, _ = load_checkpoint(result.best_dir, device=acc.device)
            load_model_state(model, tensors, source=result.best_dir)
        model.eval()
        metrics: dict[str, Any] = {}
        for role, ds in (("val", splits.val), ("test", splits.test)):
            if ds is not None:
                metrics[role] = {"split": splits.names.get(role, role), **score(model, ds, size=size, batch_size=eval_bs)}
        st = result.state
        summary = {
            "method": cfg.method,
            "head": cfg.head,
            "backbone": backbone.describe(),
            "trainable_params": trainable,
            "total_params": total,
            "trainable_fraction": round(trainable / max(1, total), 6),
            "steps": st.step,
            "epochs": round(st.step / max(1, st.steps_per_epoch), 3),
            "best_step": st.best_step,
            "best_val_pck": st.best_metric,
            "pck_kind": (metrics.get("val") or metrics.get("test") or {}).get("pck_kind"),
            "stopped_early": st.stopped_early,
            "resumed_from": st.resumed_from,
            "train_seconds": round(st.elapsed_s, 2),
            "train_samples_per_s": round(st.samples / max(1e-9, st.elapsed_s), 2),
            "weights": "best" if result.best_dir is not None else "last",
            "num_processes": st.num_processes,
            "precision": st.precision,
            "skipped_steps": st.skipped_steps,
        }
        out = step.stage(out_rel)
        _write_artifacts(out, model, cfg=cfg, resolved=resolved, splits=splits, summary=summary, metrics=metrics, log_path=result.log_path)
        link_tree(ckpt_dir, out / "checkpoints")
        step.metrics.update({"precision": summary["precision"],
            "method": cfg.method,
            "val_pck": metrics.get("val", {}).get("pck"),
            "test_pck": metrics.get("test", {}).get("pck"),
            "pck_kind": summary["pck_kind"],
            "trainable_params": trainable,
            "steps": st.step,
            "samples_per_s": summary["train_samples_per_s"],
        })
    return {**step.entry, "cached": False, "is_main": True, "summary": summary, "metrics": metrics, "out": str(run.path(out_rel))}


def _write_artifacts(out: Path, model, *, cfg: KeypointTrainConfig, resolved: dict, splits: Splits, summary: dict, metrics: dict,
                     log_path: Path) -> None:
    from gesture_cli.core.artifacts import save_json
    from gesture_cli.data.keypoints import FLIP_PAIRS, MPII_JOINTS, SKELETON
    from gesture_cli.models.keypoint_head import save_keypoint_model

    lora = {"targets": list(resolved.get("target_modules") or []), "rank": cfg.rank, "alpha": cfg.alpha, "dropout": cfg.dropout}
    save_keypoint_model(out, model, joints=MPII_JOINTS, extra={
        "lora": lora if cfg.method == "lora" else None, "dataset": cfg.dataset, "config": resolved, "splits": splits.names,
        "precision": summary["precision"],
    })
    save_json(out / "joints.json", {"joints": list(MPII_JOINTS), "flip_pairs": [list(p) for p in FLIP_PAIRS],
                                    "skeleton": [list(e) for e in SKELETON], "units": "crop units: (0, 0) top-left, (1, 1) bottom-right"},
              kind="keypoint-joints")
    save_json(out / "metrics.json", {**summary, **metrics}, kind="keypoint-metrics")
    shutil.copy2(log_path, out / "train_log.csv")


__all__ = ["KeypointAugment", "KeypointTrainConfig", "augment_keypoints", "make_splits", "masked_mse", "train_keypoint"]
