"""`gx segment-train`: a segmentation head on a frozen backbone (linear or Mask2Former).

Three layers, as elsewhere in gx:
    train_segment(cfg, run)     datasets, class map, token cache, run-dir step, final artifacts under segment/<backbone>/
    fit(...)                    gesture_cli.train.loop: the shared training loop (bf16, accumulation, patience, resume)
    Segmenter / heads           gesture_cli.models.seg_heads

Splits. Training uses the dataset's `train` split (or its first); validation its `val` split, else a
seeded `val_fraction` of the training images; `test`, when the dataset has one, is scored once at the end.
During training the validation mIoU is measured at the training resolution (S x S labels, nearest
resize); the final `metrics.json` scores val and test at each image's own resolution (whole-image
inference, see eval/segment.py). best/ is chosen by `val_mIoU`.

Cached tokens (`--cache-features`). The backbone is frozen, so its patch tokens for an image never
change: they are computed once per split (no augmentation), stored as float16 shards under
`cache/segment/<backbone>/<split>-<key>/` of the run dir (key = backbone, input size, dataset, split,
class map), and training reads batches of tokens instead of running the backbone. A later run with
the same key reuses them. `benchmarks/segment.py` measures the speed-up.

Checkpoints follow `gx lora-train`: written live to segment/<backbone>/checkpoints/ and linked into
the atomically renamed final directory; `--resume` continues an interrupted run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
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
    check_resume,
    loop_config,
    make_splits,
    random_holdout,
    set_aside_checkpoints,
)

COMMAND = "segment-train"
DEFAULT_LR = {"linear": 1e-3, "mask2former": 1e-4}
TOKEN_CACHE_KIND = "segment-token-cache"
SHARD_IMAGES = 512  # images per cache shard file
# Settings a resumed run must share with its checkpoint.
RESUME_KEYS = ("backbone", "dataset", "dataset_opts", "head", "train_only", "class_map", "cache_features", "image_size", "val_fraction",
               "max_samples", "m2f_dim", "m2f_queries", "m2f_encoder_layers", "m2f_decoder_layers", "seed")


@dataclass(frozen=True)
class SegmentTrainConfig:
    backbone: str = "tiny-dinov2"  # registry name, hub id, local dir, timm:NAME or TorchScript file
    dataset: str = "synthetic-scenes"  # segmentation dataset spec: synthetic-scenes | seg:DIR
    dataset_opts: tuple[str, ...] = ()  # KEY=VALUE options of the dataset source, e.g. classes=names.txt
    head: str = "linear"  # linear | mask2former
    train_only: str = "all"  # mask2former: all (whole head) | class_embed (only the class predictor)
    class_map: str | None = None  # JSON file folding the dataset's classes into groups (e.g. configs/ade20k_to_26.json)
    init_head: str | None = None  # head.safetensors (or a segment/<backbone> folder) whose weights start the head
    cache_features: bool = False  # train on patch tokens computed once and cached, instead of running the backbone each step
    image_size: int | None = None  # input side in pixels; None = the backbone's default
    m2f_dim: int = 256  # mask2former: width of the pixel decoder and transformer decoder (multiple of 32)
    m2f_queries: int = 100  # mask2former: object queries
    m2f_encoder_layers: int = 3  # mask2former: deformable-attention layers of the pixel decoder
    m2f_decoder_layers: int = 6  # mask2former: masked-attention decoder layers
    epochs: int = 10  # passes over the training split
    max_steps: int | None = None  # optimizer steps in all; overrides epochs
    batch_size: int = 8  # images per micro-batch and process
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float | None = None  # peak learning rate; None = 1e-3 (linear), 1e-4 (mask2former)
    weight_decay: float = 0.01  # AdamW decoupled weight decay (not on biases / norms)
    warmup_steps: int | None = None  # linear warm-up in optimizer steps; None = warmup_ratio of all steps
    warmup_ratio: float = 0.05  # warm-up share of all optimizer steps when warmup_steps is None
    max_grad_norm: float = 1.0  # gradient clipping; 0 = off
    patience: int = 5  # evaluations without a better val mIoU before stopping; 0 = never
    val_fraction: float = 0.1  # share of the training images held out when the dataset has no val split
    eval_every: int = 0  # optimizer steps between evaluations; 0 = every epoch
    checkpoint_every: int = 100  # optimizer steps between saves of checkpoints/last/
    hflip: bool = False  # random horizontal flips of image and mask (not with --cache-features)
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (core.device.resolve_precision: bf16 where fast, fp16 on older GPUs)
    max_samples: int | None = None  # cap on images per split (seeded subset), for quick runs
    seed: int = 0  # head init, split, data order and flips

    def validate(self) -> None:
        from gesture_cli.models.seg_heads import HEADS, TRAIN_ONLY

        if self.head not in HEADS:
            raise unknown_choice("head", self.head, HEADS)
        if self.train_only not in TRAIN_ONLY:
            raise unknown_choice("--train-only", self.train_only, TRAIN_ONLY)
        if self.train_only != "all" and self.head != "mask2former":
            raise UsageError(f"--train-only {self.train_only} applies to --head mask2former; the linear head always trains whole")
        if self.hflip and self.cache_features:
            raise UsageError("--hflip needs the backbone at every step; it cannot be combined with --cache-features")
        check_data_fields(self)
        if self.m2f_dim < 32 or self.m2f_dim % 32:
            raise UsageError(f"--m2f-dim must be a positive multiple of 32; got {self.m2f_dim}")
        if self.m2f_queries < 1 or self.m2f_encoder_layers < 1 or self.m2f_decoder_layers < 2:
            raise UsageError("mask2former needs --m2f-queries >= 1, --m2f-encoder-layers >= 1 and --m2f-decoder-layers >= 2")
        if self.init_head and self.head != "mask2former":
            raise UsageError("--init-head applies to --head mask2former (the linear head has nothing worth carrying over)")
        self.train_config().validate()

    def train_config(self):
        return loop_config(self, lr=self.lr if self.lr is not None else DEFAULT_LR[self.head], monitor="val_mIoU")

    def head_args(self, image_size: int) -> dict:
        if self.head != "mask2former":
            return {}
        return {"hidden_dim": self.m2f_dim, "queries": self.m2f_queries, "encoder_layers": self.m2f_encoder_layers,
                "decoder_layers": self.m2f_decoder_layers, "points": min(12544, image_size * image_size)}


# ---- data ---------------------------------------------------------------------------------------


def make_seg_splits(cfg: SegmentTrainConfig) -> Splits:
    """Train / validation / test datasets of a config, with its class map applied (see the module docstring)."""
    from gesture_cli.data.registry import parse_dataset_opts
    from gesture_cli.data.segmentation import make_seg_dataset, seg_dataset_splits

    opts = parse_dataset_opts(cfg.dataset_opts)
    return make_splits(cfg.dataset, seg_dataset_splits(cfg.dataset),
                       lambda split: make_seg_dataset(cfg.dataset, split=split, seed=cfg.seed, class_map=cfg.class_map, **opts),
                       val_fraction=cfg.val_fraction, holdout=random_holdout(cfg.seed, stream=5), max_samples=cfg.max_samples, seed=cfg.seed,
                       cap_stream=11)


class PixelBatches:
    """A SegDataset as a fit() BatchSource: {"images": uint8 [B, S, S, 3], "masks": uint8 [B, S, S]}."""

    def __init__(self, dataset, *, size: int):
        self.dataset, self.size = dataset, size

    def __len__(self) -> int:
        return len(self.dataset)

    def get_batch(self, indices) -> dict:
        import torch

        images, masks = self.dataset.batch(indices, self.size)
        return {"images": torch.from_numpy(images), "masks": torch.from_numpy(masks)}


class TokenBatches:
    """Cached patch tokens as a BatchSource: {"tokens": float32 [B, N, D], "grid": (gh, gw), "masks": uint8 [B, S, S]}.

    Shards are memory-mapped by safetensors; only the rows of a batch are read."""

    def __init__(self, directory: Path):
        from safetensors import safe_open

        from gesture_cli.core.artifacts import load_json

        self.directory = Path(directory)
        self.meta = load_json(self.directory / "meta.json", kind=TOKEN_CACHE_KIND)
        self.grid = tuple(self.meta["grid"])
        self.shard_size = int(self.meta["shard_images"])
        self._files = [safe_open(str(self.directory / s), framework="pt") for s in self.meta["shards"]]

    def __len__(self) -> int:
        return int(self.meta["images"])

    def get_batch(self, indices) -> dict:
        import torch

        tokens, masks = [], []
        for i in indices:
            f = self._files[int(i) // self.shard_size]
            j = int(i) % self.shard_size
            tokens.append(f.get_slice("tokens")[j : j + 1].float())  # float16 on disk -> float32 before any autocast
            masks.append(f.get_slice("masks")[j : j + 1])
        return {"tokens": torch.cat(tokens), "grid": self.grid, "masks": torch.cat(masks)}


def cache_key(backbone_info: dict, ds, *, size: int) -> str:
    """A key for the tokens of one split: changes with the backbone, input size, data and class map."""
    names = [ds.name(i) for i in range(len(ds))]
    payload = {"backbone": backbone_info["name"], "source": backbone_info["source"], "size": size, "spec": ds.spec, "split": ds.split,
               "token": ds.cache_token, "names": hashlib.sha256("\n".join(names).encode()).hexdigest()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def build_token_cache(model, ds, directory: Path, *, size: int, batch_size: int,
                      on_progress: Callable[[int, int], None] | None = None) -> Path:
    """Compute the patch tokens of every image of `ds` once and store them (float16) with the S x S masks."""
    import torch

    from gesture_cli.core.artifacts import save_json, save_tensors

    directory = Path(directory)
    if (directory / "meta.json").is_file():
        return directory
    tmp = directory.parent / f".{directory.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        n, shards, grid, done = len(ds), [], None, 0
        dev = next(model.backbone.parameters()).device
        if on_progress is not None:
            on_progress(0, n)
        for s_lo in range(0, n, SHARD_IMAGES):
            s_hi = min(n, s_lo + SHARD_IMAGES)
            toks, masks = [], []
            for lo in range(s_lo, s_hi, batch_size):
                images, m = ds.batch(range(lo, min(s_hi, lo + batch_size)), size)
                with torch.inference_mode():
                    t, grid = model.encode(torch.from_numpy(images).to(dev))
                toks.append(t.clamp(-65504, 65504).half().cpu())  # float16 halves the cache; ViT tokens fit its range
                masks.append(torch.from_numpy(m))
                done += len(m)
                if on_progress is not None:
                    on_progress(done, n)
            name = f"shard-{len(shards):05d}.safetensors"
            save_tensors(tmp / name, {"tokens": torch.cat(toks), "masks": torch.cat(masks)}, kind=TOKEN_CACHE_KIND)
            shards.append(name)
        save_json(tmp / "meta.json", {"images": n, "grid": list(grid or (0, 0)), "shard_images": SHARD_IMAGES, "shards": shards,
                                      "size": size, "dataset": ds.spec, "split": ds.split}, kind=TOKEN_CACHE_KIND)
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def make_loss_fn(*, hflip: bool):
    """(model, batch) -> {"loss", "pixel_acc"}: tokens from the cache, or the frozen backbone on (flipped) images."""
    import torch

    def loss_fn(model, batch):
        inner = model.module if hasattr(model, "module") else model  # DDP wraps the Segmenter
        dev = next(inner.head.parameters()).device
        masks = batch["masks"].to(dev, non_blocking=True)
        if "tokens" in batch:
            return model(masks=masks, tokens=batch["tokens"].to(dev, non_blocking=True), grid=batch["grid"])
        images = batch["images"].to(dev, non_blocking=True)
        if hflip:
            flip = torch.rand(len(images)) < 0.5  # drawn after fit's per-step seeding: the same on resume
            images[flip] = images[flip].flip(2)  # [B, S, S, 3]: axis 2 is the width
            masks[flip] = masks[flip].flip(2)
        return model(masks=masks, images=images)

    return loss_fn


def score_batches(model, batches, *, num_classes: int, batch_size: int) -> dict:
    """Metrics at the training resolution over a PixelBatches / TokenBatches source (eval mode, no grad)."""
    import torch

    from gesture_cli.eval.segment import confusion_matrix, segmentation_metrics

    dev = next(model.head.parameters()).device
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    with torch.no_grad():
        for lo in range(0, len(batches), batch_size):
            b = batches.get_batch(list(range(lo, min(len(batches), lo + batch_size))))
            masks = b["masks"]
            size = tuple(masks.shape[-2:])
            if "tokens" in b:
                scores = model.scores(size=size, tokens=b["tokens"].to(dev), grid=b["grid"])
            else:
                scores = model.scores(size=size, images=b["images"].to(dev))
            cm += confusion_matrix(scores.argmax(1).cpu().numpy(), masks.numpy(), num_classes)
    return segmentation_metrics(cm, [str(i) for i in range(num_classes)])


# ---- checks -------------------------------------------------------------------------------------


def _load_init_head(head, source: str) -> list[str]:
    """Copy matching tensors of another head into `head`; returns the names that were skipped (other shapes,
    e.g. the class predictor of a head trained on another number of classes)."""
    import torch

    from gesture_cli.core.artifacts import load_tensors
    from gesture_cli.models.seg_heads import SEG_HEAD_KIND

    path = Path(source).expanduser()
    if path.is_dir():
        path = path / "head.safetensors"
    tensors, meta = load_tensors(path, kind=SEG_HEAD_KIND)
    if meta.get("head") != head.kind:
        raise UsageError(f"--init-head {path}: a '{meta.get('head')}' head cannot start a '{head.kind}' head")
    own = head.state_dict()
    skipped = [k for k, v in tensors.items() if k not in own or own[k].shape != v.shape]
    missing = [k for k in own if k not in tensors]
    if missing:
        raise UsageError(f"--init-head {path}: its architecture differs from this head's (e.g. '{missing[0]}' is missing); "
                         "use the same --m2f-* options it was trained with")
    with torch.no_grad():
        for k, v in tensors.items():
            if k not in skipped:
                own[k].copy_(v)
    return skipped


# ---- the command's core -------------------------------------------------------------------------


def train_segment(
    cfg: SegmentTrainConfig,
    run,
    *,
    device: str = "auto",
    force: bool = False,
    resume: bool = False,
    argv: list[str] | None = None,
    callbacks: dict[str, list[Callable]] | None = None,
    notify: Callable[[str], None] | None = None,
    on_cache_progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Train, evaluate and write segment/<backbone>/ (see the module docstring); returns a summary dict."""
    import torch

    from gesture_cli.core.config import config_to_dict
    from gesture_cli.core.device import make_precision
    from gesture_cli.eval.segment import evaluate_dataset
    from gesture_cli.models.backbones import build_backbone
    from gesture_cli.models.features import backbone_dirname
    from gesture_cli.models.seg_heads import Segmenter, build_seg_head, count_segmenter_parameters, freeze_for
    from gesture_cli.train.checkpoint import load_checkpoint, load_model_state, read_checkpoint_state
    from gesture_cli.train.common import link_tree, refuse_unfinished
    from gesture_cli.train.loop import fit, make_accelerator

    cfg.validate()
    say = notify or (lambda _line: None)
    out_rel = f"segment/{backbone_dirname(cfg.backbone)}"
    ckpt_dir = run.path(out_rel, "checkpoints")
    if not resume:
        refuse_unfinished(ckpt_dir / "last", force=force)
    splits = make_seg_splits(cfg)
    step = begin_training_step(run, COMMAND, cfg, splits, out_rel=out_rel, device=device, argv=argv, force=force or resume)
    if step.cached:
        return {**step.entry, "cached": True, "is_main": True}

    acc = make_accelerator(device)
    dev = acc.device
    prec = make_precision(dev, cfg.precision)
    # The backbone is frozen: stored in the compute dtype from the start (the token cache is made with it too).
    backbone = build_backbone(cfg.backbone, device=dev, dtype=prec.dtype, image_size=cfg.image_size)
    size = backbone.image_size
    classes = list(splits.train.classes)
    resolved = {**config_to_dict(cfg), "image_size": size}
    if resume:
        check_resume(ckpt_dir / "last", resolved, RESUME_KEYS)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        head = build_seg_head(cfg.head, embed_dim=backbone.info.embed_dim, num_classes=len(classes), **cfg.head_args(size))
    if cfg.init_head:
        skipped = _load_init_head(head, cfg.init_head)
        say(f"head initialised from {cfg.init_head}" + (f" (kept fresh: {', '.join(skipped)})" if skipped else ""))
    params = freeze_for(head, cfg.train_only)
    full = Segmenter(backbone, head)
    trainable, total = count_segmenter_parameters(full)
    is_main = acc.is_main_process
    if is_main:
        say(f"precision: {prec.describe()}")
        say(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / max(1, total):.4f}%): head {cfg.head}"
            + (f", only {cfg.train_only}" if cfg.train_only != "all" else "") + f"; backbone {backbone.info.name} frozen")
        say(f"data: train {len(splits.train)} ({splits.names['train']}), val {len(splits.val) if splits.val else 0}"
            f"{' (' + splits.names['val'] + ')' if 'val' in splits.names else ''}, test {len(splits.test) if splits.test else 0}; "
            f"{len(classes)} classes{' (class map ' + splits.train.class_map.name + ')' if splits.train.class_map else ''}; "
            f"input {size}x{size}")
        if resume:
            st = read_checkpoint_state(ckpt_dir / "last")["trainer"]
            say(f"resuming from step {st['step']}/{st['total_steps']} (epoch {st['epoch']})")

    eval_batch = max(cfg.batch_size, 16)
    if cfg.cache_features:
        cache_root = run.path("cache", "segment", backbone_dirname(cfg.backbone))
        built = {}
        for role, ds in (("train", splits.train), ("val", splits.val)):
            if ds is None:
                continue
            directory = cache_root / f"{role}-{cache_key(backbone.describe(), ds, size=size)}"
            fresh = not (directory / "meta.json").is_file()
            if is_main:  # one process computes the tokens; the others wait and read them
                progress = (lambda d, t, _r=role: on_cache_progress(_r, d, t)) if on_cache_progress and fresh else None
                build_token_cache(full, ds, directory, size=size, batch_size=eval_batch, on_progress=progress)
                say(f"{role} tokens: {'cached now' if fresh else 'reused'} at {directory}")
            acc.wait_for_everyone()
            built[role] = TokenBatches(directory)
        train_data, val_data = built["train"], built.get("val")
        model = Segmenter(None, head)  # the backbone stays out of the training loop entirely
    else:
        train_data = PixelBatches(splits.train, size=size)
        val_data = PixelBatches(splits.val, size=size) if splits.val is not None else None
        model = full

    def eval_fn(m) -> dict[str, float]:
        s = score_batches(m, val_data, num_classes=len(classes), batch_size=eval_batch)
        return {"val_mIoU": s["mIoU"] or 0.0, "val_pixel_acc": s["pixel_acc"] or 0.0}

    cmap = splits.train.class_map
    meta = {"config": resolved, "classes": classes, "backbone": backbone.describe(), "head": cfg.head}
    with step if is_main else contextlib.nullcontext():
        set_aside_checkpoints(step, ckpt_dir, resume=resume, is_main=is_main)
        result = fit(
            model, train_data=train_data, loss_fn=make_loss_fn(hflip=cfg.hflip), eval_fn=eval_fn if val_data is not None else None,
            cfg=cfg.train_config(), checkpoint_dir=ckpt_dir, params=params, callbacks=callbacks, resume=resume, meta=meta, accelerator=acc,
            precision=prec,
        )
        if not is_main:
            return {"is_main": False}
        if result.best_dir is not None:  # final artifacts carry the best validation weights
            tensors, _, _, _ = load_checkpoint(result.best_dir, device=dev)
            load_model_state(model, tensors, source=result.best_dir)
        full = prec.wrap(Segmenter(backbone, head.to(dev)).eval())
        metrics: dict[str, Any] = {}
        for role, ds in (("val", splits.val), ("test", splits.test)):
            if ds is not None:
                metrics[role] = {"split": splits.names.get(role, role), **evaluate_dataset(full, ds, size=size, mode="whole")}
        st = result.state
        summary = {
            "head": cfg.head,
            "train_only": cfg.train_only,
            "backbone": backbone.describe(),
            "classes": classes,
            "class_map": cmap.name if cmap else None,
            "trainable_params": trainable,
            "total_params": total,
            "trainable_fraction": round(trainable / max(1, total), 8),
            "cached_features": cfg.cache_features,
            "steps": st.step,
            "epochs": round(st.step / max(1, st.steps_per_epoch), 3),
            "best_step": st.best_step,
            "best_val_mIoU": st.best_metric,
            "stopped_early": st.stopped_early,
            "resumed_from": st.resumed_from,
            "train_seconds": round(st.elapsed_s, 2),
            "train_samples_per_s": round(st.samples / max(1e-9, st.elapsed_s), 2),
            "weights": "best" if result.best_dir is not None else "last",
            "precision": st.precision,
            "skipped_steps": st.skipped_steps,
        }
        out = step.stage(out_rel)
        _write_artifacts(out, head, cfg=cfg, classes=classes, resolved=resolved, backbone=backbone, splits=splits, summary=summary,
                         metrics=metrics, log_path=result.log_path)
        link_tree(ckpt_dir, out / "checkpoints")
        step.metrics.update({"precision": summary["precision"],
            "head": cfg.head,
            "val_mIoU": metrics.get("val", {}).get("mIoU"),
            "test_mIoU": metrics.get("test", {}).get("mIoU"),
            "test_pixel_acc": metrics.get("test", {}).get("pixel_acc"),
            "trainable_params": trainable,
            "steps": st.step,
        })
    return {**step.entry, "cached": False, "is_main": is_main, "summary": summary, "metrics": metrics, "out": str(run.path(out_rel))}


def _write_artifacts(out: Path, head, *, cfg: SegmentTrainConfig, classes: list[str], resolved: dict, backbone, splits: Splits,
                     summary: dict, metrics: dict, log_path: Path) -> None:
    """head.safetensors, class_map.json, metrics.json, train_log.csv under the staged segment/<backbone>/."""
    from gesture_cli.core.artifacts import save_json
    from gesture_cli.models.seg_heads import save_seg_head

    cmap = splits.train.class_map
    save_seg_head(out / "head.safetensors", head, meta={
        "embed_dim": backbone.info.embed_dim, "classes": classes, "backbone": backbone.describe(), "dataset": cfg.dataset,
        "class_map": cmap.to_json() if cmap else None, "source_classes": splits.train.source_classes, "config": resolved,
        "precision": summary["precision"],
    })
    save_json(out / "class_map.json", {
        "classes": classes, "class_map": cmap.to_json() if cmap else None, "source_classes": splits.train.source_classes or classes,
        "dataset": cfg.dataset,
    }, kind="segment-classes")
    save_json(out / "metrics.json", {**summary, **metrics}, kind="segment-metrics")
    shutil.copy2(log_path, out / "train_log.csv")


__all__ = ["SegmentTrainConfig", "build_token_cache", "make_seg_splits", "train_segment"]
