"""`gx segment-train`: a segmentation head on a frozen backbone (linear or Mask2Former).

Three layers, as elsewhere in gx:
    train_segment(cfg, run)     SegmentTrainer through the trainer skeleton (train/skeleton.py): datasets,
                                class map, token cache, run-dir step, final artifacts under segment/<backbone>/
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

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gesture_cli.core.errors import UsageError, unknown_choice
from gesture_cli.data.splits import Splits, make_splits, random_holdout
from gesture_cli.train.common import LoopSettings, SizedBatches, check_data_fields, loop_config, split_numbers
from gesture_cli.train.skeleton import Built, FitData, Outcome, Plan, Trainer, fit_summary

COMMAND = "segment-train"
DEFAULT_LR = {"linear": 1e-3, "mask2former": 1e-4}
TOKEN_CACHE_KIND = "segment-token-cache"
SHARD_IMAGES = 512  # images per cache shard file
# Settings a resumed run must share with its checkpoint.
RESUME_KEYS = ("backbone", "dataset", "dataset_opts", "head", "train_only", "class_map", "cache_features", "image_size", "val_fraction",
               "max_samples", "m2f_dim", "m2f_queries", "m2f_encoder_layers", "m2f_decoder_layers", "seed")


@dataclass(frozen=True)
class SegmentTrainConfig(LoopSettings):
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
    batch_size: int = 8  # images per micro-batch and process
    lr: float | None = None  # peak learning rate; None = 1e-3 (linear), 1e-4 (mask2former)
    patience: int = 5  # evaluations without a better val mIoU before stopping; 0 = never
    val_fraction: float = 0.1  # share of the training images held out when the dataset has no val split
    hflip: bool = False  # random horizontal flips of image and mask (not with --cache-features)
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
    from gesture_cli.data.registry import parse_dataset
    from gesture_cli.data.segmentation import make_seg_dataset

    spec = parse_dataset(cfg.dataset, cfg.dataset_opts, kind="segmentation")  # read once; every split below is made from it
    return make_splits(cfg.dataset, spec.splits(),
                       lambda split: make_seg_dataset(spec, split=split, seed=cfg.seed, class_map=cfg.class_map),
                       val_fraction=cfg.val_fraction, holdout=random_holdout(cfg.seed, stream=5), max_samples=cfg.max_samples, seed=cfg.seed,
                       cap_stream=11)


class PixelBatches(SizedBatches):
    """A SegDataset as a fit() BatchSource: {"images": uint8 [B, S, S, 3], "masks": uint8 [B, S, S]}."""

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


# ---- the trainer ---------------------------------------------------------------------------------


@dataclass
class SegmentBuilt(Built):
    backbone: object = None  # models.backbones.Backbone, frozen, in the compute dtype
    head: object = None  # the trained segmentation head
    device: object = None  # torch.device the model lives on
    classes: list[str] | None = None
    params: list | None = None  # what the optimizer updates (--train-only)


class SegmentTrainer(Trainer):
    command = COMMAND
    resume_keys = RESUME_KEYS

    def __init__(self, cfg, run, *, out_rel: str, resume: bool = False, force: bool = False, cache_root: Path,
                 on_cache_progress: Callable[[str, int, int], None] | None = None):
        super().__init__(cfg, run, out_rel=out_rel, resume=resume, force=force)
        self.cache_root = cache_root  # token caches of --cache-features, one folder per split and key
        self.on_cache_progress = on_cache_progress

    def make_splits(self, context) -> Splits:
        return make_seg_splits(self.cfg)

    def build(self, plan: Plan, *, acc, prec, say) -> SegmentBuilt:
        import torch

        from gesture_cli.core.config import config_to_dict
        from gesture_cli.models.backbones import build_backbone
        from gesture_cli.models.seg_heads import Segmenter, build_seg_head, count_segmenter_parameters, freeze_for

        cfg, splits = self.cfg, plan.splits
        # The backbone is frozen: stored in the compute dtype from the start (the token cache is made with it too).
        backbone = build_backbone(cfg.backbone, device=acc.device, dtype=prec.dtype, image_size=cfg.image_size)
        size = backbone.image_size
        classes = list(splits.train.classes)
        resolved = {**config_to_dict(cfg), "image_size": size}
        if self.resume:
            self.check_resume(resolved)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            head = build_seg_head(cfg.head, embed_dim=backbone.info.embed_dim, num_classes=len(classes), **cfg.head_args(size))
        if cfg.init_head:
            skipped = _load_init_head(head, cfg.init_head)
            say(f"head initialised from {cfg.init_head}" + (f" (kept fresh: {', '.join(skipped)})" if skipped else ""))
        params = freeze_for(head, cfg.train_only)
        full = Segmenter(backbone, head)
        trainable, total = count_segmenter_parameters(full)
        cmap = splits.train.class_map
        notices = [
            f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / max(1, total):.4f}%): head {cfg.head}"
            + (f", only {cfg.train_only}" if cfg.train_only != "all" else "") + f"; backbone {backbone.info.name} frozen",
            f"data: {self.describe_splits(splits)}; {len(classes)} classes{' (class map ' + cmap.name + ')' if cmap else ''}; input {size}x{size}",
        ]
        meta = {"config": resolved, "classes": classes, "backbone": backbone.describe(), "head": cfg.head}
        return SegmentBuilt(model=full, resolved=resolved, meta=meta, notices=notices, backbone=backbone, head=head, classes=classes,
                            device=acc.device, params=params, trainable=trainable, total=total)

    def make_data(self, plan: Plan, built: SegmentBuilt, *, acc, say) -> FitData:
        from gesture_cli.models.seg_heads import Segmenter

        cfg, splits, size = self.cfg, plan.splits, built.backbone.image_size
        eval_batch = max(cfg.batch_size, 16)
        if cfg.cache_features:
            caches = {}
            for role, ds in (("train", splits.train), ("val", splits.val)):
                if ds is None:
                    continue
                directory = self.cache_root / f"{role}-{cache_key(built.backbone.describe(), ds, size=size)}"
                fresh = not (directory / "meta.json").is_file()
                if acc.is_main_process:  # one process computes the tokens; the others wait and read them
                    progress = (lambda d, t, _r=role: self.on_cache_progress(_r, d, t)) if self.on_cache_progress and fresh else None
                    build_token_cache(built.model, ds, directory, size=size, batch_size=eval_batch, on_progress=progress)
                    say(f"{role} tokens: {'cached now' if fresh else 'reused'} at {directory}")
                acc.wait_for_everyone()
                caches[role] = TokenBatches(directory)
            train_data, val_data = caches["train"], caches.get("val")
            model = Segmenter(None, built.head)  # the backbone stays out of the training loop entirely
        else:
            train_data = PixelBatches(splits.train, size=size)
            val_data = PixelBatches(splits.val, size=size) if splits.val is not None else None
            model = built.model

        def eval_fn(m) -> dict[str, float]:
            s = score_batches(m, val_data, num_classes=len(built.classes), batch_size=eval_batch)
            return {"val_mIoU": s["mIoU"] or 0.0, "val_pixel_acc": s["pixel_acc"] or 0.0}

        return FitData(model=model, train_data=train_data, loss_fn=make_loss_fn(hflip=cfg.hflip),
                       eval_fn=eval_fn if val_data is not None else None, params=built.params)

    def evaluate(self, plan: Plan, built: SegmentBuilt, data: FitData, result, *, prec) -> Outcome:
        from gesture_cli.eval.segment import evaluate_dataset
        from gesture_cli.models.seg_heads import Segmenter

        cfg, size, cmap = self.cfg, built.backbone.image_size, plan.splits.train.class_map
        full = prec.wrap(Segmenter(built.backbone, built.head.to(built.device)).eval())
        metrics = self.score_splits(plan.splits, lambda ds: evaluate_dataset(full, ds, size=size, mode="whole"))
        trainable, total = built.trainable, built.total
        summary = {
            "head": cfg.head, "train_only": cfg.train_only, "backbone": built.backbone.describe(), "classes": built.classes,
            "class_map": cmap.name if cmap else None, "trainable_params": trainable, "total_params": total,
            "trainable_fraction": round(trainable / max(1, total), 8), "cached_features": cfg.cache_features,
            **fit_summary(result, best="best_val_mIoU", processes=False),
        }
        step_metrics = {
            "head": cfg.head,
            **split_numbers(metrics, val_mIoU="val.mIoU", test_mIoU="test.mIoU", test_pixel_acc="test.pixel_acc"),
            "trainable_params": trainable,
            "steps": result.state.step,
        }
        return Outcome(metrics=metrics, summary=summary, step_metrics=step_metrics)

    def save(self, out: Path, plan: Plan, built: SegmentBuilt, outcome: Outcome) -> None:
        """head.safetensors, class_map.json and metrics.json under the staged segment/<backbone>/."""
        from gesture_cli.core.artifacts import save_json
        from gesture_cli.models.seg_heads import save_seg_head

        cfg, classes, train = self.cfg, built.classes, plan.splits.train
        cmap = train.class_map
        save_seg_head(out / "head.safetensors", built.head, meta={
            "embed_dim": built.backbone.info.embed_dim, "classes": classes, "backbone": built.backbone.describe(), "dataset": cfg.dataset,
            "class_map": cmap.to_json() if cmap else None, "source_classes": train.source_classes, "config": built.resolved,
            "precision": outcome.summary["precision"],
        })
        save_json(out / "class_map.json", {
            "classes": classes, "class_map": cmap.to_json() if cmap else None, "source_classes": train.source_classes or classes,
            "dataset": cfg.dataset,
        }, kind="segment-classes")
        save_json(out / "metrics.json", {**outcome.summary, **outcome.metrics}, kind="segment-metrics")


__all__ = ["SegmentTrainConfig", "build_token_cache", "make_seg_splits"]
