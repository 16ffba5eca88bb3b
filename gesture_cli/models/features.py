"""Frozen-backbone feature extraction: dataset + backbone -> features/<backbone>/<split>.safetensors.

Speed levers, measured (DESIGN §7): weights cast to bf16 where the hardware multiplies bf16 natively
(CUDA, AVX512-BF16/AMX CPUs; never on other CPUs, where bf16 is emulated and hundreds of times
slower), batched preprocessing as tensor ops, SDPA attention, `torch.inference_mode`. Decoding the
next batch runs in a worker thread while the model runs on the current one (OpenCV releases the GIL).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from gesture_cli.core.errors import UsageError

POOL_KINDS = ("cls", "mean", "cls+mean")
FEATURES_KIND = "features"


@dataclass(frozen=True)
class ExtractConfig:
    backbone: str = "tiny-dinov2"  # registry name, hub id, local dir, timm:NAME or TorchScript file
    dataset: str = "synthetic-hands"  # dataset spec (DESIGN §5)
    dataset_opts: tuple[str, ...] = ()  # KEY=VALUE options of the dataset source, e.g. label_map=contiguous
    splits: tuple[str, ...] = ()  # splits to extract; empty = every split the dataset offers
    pool: str = "cls"  # cls | mean | cls+mean (DINOv2's linear-probe input)
    image_size: int | None = None  # input side in pixels; None = the backbone's default
    batch_size: int = 0  # images per forward pass; 0 = auto (64 on CPU, 256 with OOM back-off on CUDA)
    precision: str = "auto"  # auto | bf16 | fp32 (auto: bf16 only where it is fast)
    max_samples: int | None = None  # cap per split, for quick looks at big datasets
    seed: int = 0  # dataset generation / split seed

    def validate(self) -> None:
        if self.pool not in POOL_KINDS:
            raise UsageError(f"--pool '{self.pool}' is not one of {', '.join(POOL_KINDS)}")
        if self.batch_size < 0:
            raise UsageError("--batch-size must be 0 (auto) or a positive number")
        if self.image_size is not None and self.image_size < 8:
            raise UsageError("--image-size must be at least 8 pixels")
        if self.max_samples is not None and self.max_samples < 1:
            raise UsageError("--max-samples must be at least 1")


def backbone_dirname(spec: str) -> str:
    """A filesystem-safe folder name for a backbone spec (hub ids keep owner--name, paths their stem)."""
    p = Path(spec)
    if spec.startswith(("/", "./", "../", "~")) or p.suffix in {".pt", ".pt2"}:
        spec = p.stem if p.suffix else p.name
    spec = spec.replace("timm:", "timm-").replace("/", "--")
    return re.sub(r"[^A-Za-z0-9._+-]", "_", spec) or "backbone"


def extract_split(
    backbone,
    dataset,
    *,
    pool: str,
    batch_size: int,
    device,
    max_samples: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_backoff: Callable[[int], None] | None = None,
):
    """Return (features float32 [N, D] on CPU, labels int64 [N]) for one dataset split."""
    import numpy as np
    import torch

    from gesture_cli.core.device import is_cuda_oom

    n = len(dataset) if max_samples is None else min(len(dataset), max_samples)
    dim = backbone.feature_dim(pool)
    feats = torch.empty((n, dim), dtype=torch.float32)
    size = backbone.image_size

    def load(lo: int, hi: int):
        return torch.from_numpy(np.ascontiguousarray(dataset.batch(range(lo, hi), size=size)))

    done = 0
    with ThreadPoolExecutor(max_workers=1) as pool_exec, torch.inference_mode():
        pending = pool_exec.submit(load, 0, min(batch_size, n)) if n else None
        while done < n:
            hi = min(done + batch_size, n)
            raw = pending.result()
            if raw.shape[0] != hi - done:  # batch size changed after an OOM back-off
                raw = load(done, hi)
            nxt = min(hi + batch_size, n)
            pending = pool_exec.submit(load, hi, nxt) if hi < n else None
            try:
                pixels = backbone.preprocess(raw.to(device, non_blocking=True))
                cls, patches, _ = backbone.forward_features(pixels)
                out = backbone.pool(cls, patches, pool)
            except RuntimeError as exc:
                if not is_cuda_oom(exc) or batch_size == 1:
                    raise
                torch.cuda.empty_cache()
                batch_size = max(1, batch_size // 2)
                if on_backoff is not None:
                    on_backoff(batch_size)
                if pending is not None:
                    pending.result()
                pending = pool_exec.submit(load, done, min(done + batch_size, n))
                continue
            feats[done:hi] = out.float().cpu()
            done = hi
            if on_progress is not None:
                on_progress(done, n)
    labels = torch.from_numpy(np.asarray(dataset.labels[:n], dtype=np.int64))
    return feats, labels


def extract_features(
    cfg: ExtractConfig,
    run,
    *,
    device: str = "auto",
    force: bool = False,
    argv: list[str] | None = None,
    on_split: Callable[[str, int], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_backoff: Callable[[int], None] | None = None,
) -> dict:
    """Extract pooled features of every requested split into the run dir; returns the step entry.

    The step is cached on (config, dataset files); a hit returns the earlier entry with `cached` set.
    """
    from gesture_cli.data import dataset_splits, make_dataset
    from gesture_cli.data.registry import parse_dataset_opts

    splits = list(cfg.splits) or dataset_splits(cfg.dataset)
    opts = parse_dataset_opts(cfg.dataset_opts)
    # Build datasets first: a bad file fails before any model is loaded or anything is written.
    datasets = {s: make_dataset(cfg.dataset, split=s, seed=cfg.seed, **opts) for s in splits}
    sources = sorted({str(p) for d in datasets.values() for p in d.source_files})
    tokens = {f"dataset:{s}": d.cache_token for s, d in datasets.items() if d.cache_token}
    out_rel = f"features/{backbone_dirname(cfg.backbone)}"
    step = run.begin(
        "extract-features",
        config={**_asdict(cfg), "device": device},
        inputs=[Path(p) for p in sources] + _local_backbone_inputs(cfg.backbone),
        input_keys=tokens,
        outputs=[out_rel],
        argv=argv,
        force=force,
    )
    if step.cached:
        return {**step.entry, "cached": True}

    import torch

    from gesture_cli.core.artifacts import save_json, save_tensors
    from gesture_cli.core.device import compute_dtype, resolve_device, resolve_precision
    from gesture_cli.models.backbones import build_backbone

    dev = resolve_device(device)
    dtype = compute_dtype(dev, cfg.precision)
    backbone = build_backbone(cfg.backbone, device=dev, dtype=dtype, image_size=cfg.image_size)
    batch_size = cfg.batch_size or (256 if dev.type == "cuda" else 64)
    with step:
        out = step.stage(out_rel)
        per_split = {}
        total_images, total_time = 0, 0.0
        for split, ds in datasets.items():
            n = len(ds) if cfg.max_samples is None else min(len(ds), cfg.max_samples)
            if n == 0:
                raise UsageError(f"dataset '{cfg.dataset}' split '{split}' has no images")
            if on_split is not None:
                on_split(split, n)
            t0 = time.perf_counter()
            feats, labels = extract_split(
                backbone, ds, pool=cfg.pool, batch_size=batch_size, device=dev, max_samples=cfg.max_samples,
                on_progress=on_progress, on_backoff=on_backoff,
            )
            dt = time.perf_counter() - t0
            if not torch.isfinite(feats).all():
                raise UsageError(f"non-finite features for split '{split}'; rerun with --precision fp32")
            save_tensors(
                out / f"{split}.safetensors",
                {"features": feats, "labels": labels},
                kind=FEATURES_KIND,
                meta={"split": split, "backbone": backbone.describe(), "pool": cfg.pool, "classes": ds.classes},
            )
            per_split[split] = {"images": n, "seconds": round(dt, 3), "images_per_s": round(n / dt, 2) if dt else None, "skipped": ds.skipped}
            total_images += n
            total_time += dt
        meta = {
            "backbone": backbone.describe(),
            "dataset": cfg.dataset,
            "classes": next(iter(datasets.values())).classes,
            "pool": cfg.pool,
            "feature_dim": backbone.feature_dim(cfg.pool),
            "image_size": backbone.image_size,
            "dtype": str(dtype).replace("torch.", ""),
            "precision": resolve_precision(dev, cfg.precision),  # the default of evaluate/infer --from probe and gradcam
            "device": str(dev),
            "batch_size": batch_size,
            "splits": per_split,
        }
        save_json(out / "meta.json", meta, kind="features-meta")
        step.metrics.update(
            {
                "images": total_images,
                "images_per_s": round(total_images / total_time, 2) if total_time else None,
                "feature_dim": meta["feature_dim"],
                "dtype": meta["dtype"],
            }
        )
    return {**step.entry, "cached": False, "meta": meta}


def _asdict(cfg) -> dict:
    from gesture_cli.core.config import config_to_dict

    return config_to_dict(cfg)


def _local_backbone_inputs(spec: str) -> list[Path]:
    """Local backbone files/dirs are inputs too: new weights under the same path invalidate the cache."""
    p = Path(spec).expanduser()
    return [p] if p.exists() else []


def load_features(run, backbone: str, split: str):
    """(features [N, D], labels [N], meta) of an extracted split, with a clear error if absent."""
    from gesture_cli.core.artifacts import load_tensors
    from gesture_cli.core.errors import ArtifactError

    path = run.path("features", backbone_dirname(backbone), f"{split}.safetensors")
    if not path.is_file():
        raise ArtifactError(
            f"{path}: no features for backbone '{backbone}' split '{split}'; run `gx extract-features --backbone {backbone} -r {run.root}` first"
        )
    tensors, meta = load_tensors(path, kind=FEATURES_KIND)
    return tensors["features"], tensors["labels"], meta
