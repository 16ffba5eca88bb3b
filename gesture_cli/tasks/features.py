"""`gx extract-features`: dataset + backbone -> features/<backbone>/<split>.safetensors + meta.json.

Scale. A split is cut into shards of `shard_size` samples; each shard's features go to
`features/.<backbone>.partial/<split>/shard-00000.safetensors` (numbered) the moment it completes. That folder
outlives a killed run (it is not the step's staging folder, which a crash deletes), so the next run
of the same command (same cache key) skips the finished shards and says so. Under `torchrun` /
`accelerate launch` the pending shards are dealt out to the ranks; rank 0 then collects every
shard (from its disk, or over the process group from ranks on other machines), writes the same
files as a one-process run, records the step and deletes the partial folder. Batches never straddle
shards, so every sample goes through the model in the same batch whatever the number of processes:
fp32 features on CPU are bitwise those of a one-process run.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from gesture_cli.core.errors import UsageError, shell_word
from gesture_cli.models.backbone_ref import backbone_dirname
from gesture_cli.models.features import POOL_KINDS, auto_workers, contiguous_batches, iter_batch_features

FEATURES_KIND = "features"


SHARD_KIND = "feature-shard"


PLAN_FILE = "plan.json"


# Samples per resumable shard: about 2 minutes of work for dinov2-small in bf16 on a 2-core CPU,
# a few seconds on a GPU; a kill loses at most one shard per process.
SHARD_SIZE = 2048


# Options that change how the work is done, never its result: left out of the step's cache key.
NON_KEY_OPTIONS = ("workers", "shard_size")


@dataclass(frozen=True)
class ExtractConfig:
    backbone: str = "tiny-dinov2"  # registry name, hub id, local dir, timm:NAME or TorchScript file
    dataset: str = "synthetic-hands"  # dataset spec (DESIGN §5)
    dataset_opts: tuple[str, ...] = ()  # KEY=VALUE options of the dataset source, e.g. label_map=contiguous
    splits: tuple[str, ...] = ()  # splits to extract; empty = every split the dataset offers
    pool: str = "cls"  # cls | mean | cls+mean (DINOv2's linear-probe input)
    image_size: int | None = None  # input side in pixels; None = the backbone's default
    batch_size: int = 0  # images per forward pass; 0 = auto (32 on CPU, 256 with OOM back-off on CUDA)
    precision: str = "auto"  # auto | bf16 | fp32 (auto: bf16 only where it is fast)
    max_samples: int | None = None  # cap per split, for quick looks at big datasets
    seed: int = 0  # dataset generation / split seed
    workers: int | None = None  # decoding processes per rank; None = auto (0 on CPU and for in-memory data, else cores - 1, at most 8)
    shard_size: int = SHARD_SIZE  # samples per resumable shard file
    compile: bool = False  # torch.compile the backbone (pays a compile of tens of seconds up front)

    def validate(self) -> None:
        if self.pool not in POOL_KINDS:
            raise UsageError(f"--pool '{self.pool}' is not one of {', '.join(POOL_KINDS)}")
        if self.batch_size < 0:
            raise UsageError("--batch-size must be 0 (auto) or a positive number")
        if self.image_size is not None and self.image_size < 8:
            raise UsageError("--image-size must be at least 8 pixels")
        if self.max_samples is not None and self.max_samples < 1:
            raise UsageError("--max-samples must be at least 1")
        if self.workers is not None and self.workers < 0:
            raise UsageError("--workers must be 0 (decode in the main process) or more")
        if self.shard_size < 1:
            raise UsageError("--shard-size must be at least 1")


class PartialDir:
    """features/.<backbone>.partial/: finished shards of an extraction that has not been assembled yet.

    `plan.json` holds the step's cache key, the shard size and the split sizes; shards of another
    plan (another config, other data) are never mixed in: the folder is emptied first.
    """

    def __init__(self, root: Path, plan: dict):
        self.root = Path(root)
        self.plan = plan

    def shard_path(self, split: str, index: int) -> Path:
        return self.root / split / f"shard-{index:05d}.safetensors"

    def prepare(self) -> None:
        from gesture_cli.core.artifacts import load_json, save_json
        from gesture_cli.core.errors import ArtifactError

        plan_path = self.root / PLAN_FILE
        if plan_path.is_file():
            try:
                saved = load_json(plan_path, kind="feature-plan")
                if {k: v for k, v in saved.items() if k not in ("schema", "kind")} == self.plan:
                    return
            except ArtifactError:  # an unreadable plan is as good as a different one: start afresh
                pass
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True, exist_ok=True)
        save_json(plan_path, self.plan, kind="feature-plan")

    def completed(self, *, feature_dim: int | None = None) -> dict[str, list[int]]:
        """split -> indices of the whole shard files present. Each was written atomically, but a disk fault, a
        copy or a hand can still damage one: a shard whose header does not read, whose tensor is not
        [rows of the shard, feature_dim] (None: any width) or whose file is shorter or longer than its header
        says is deleted with a GxWarning, so that it is extracted again instead of failing the assembly after
        all the other shards were done."""
        import warnings

        from gesture_cli.core.errors import GxWarning

        out: dict[str, list[int]] = {}
        for split, n in self.plan["splits"].items():
            out[split] = []
            for i in range(shard_count(n, self.plan["shard_size"])):
                path = self.shard_path(split, i)
                if not path.is_file():
                    continue
                lo, hi = shard_bounds(i, n, self.plan["shard_size"])
                damage = shard_damage(path, rows=hi - lo, feature_dim=feature_dim)
                if damage is None:
                    out[split].append(i)
                    continue
                path.unlink(missing_ok=True)
                warnings.warn(GxWarning(f"{path}: damaged feature shard ({damage}); deleted it, this run extracts it again"), stacklevel=2)
        return out

    def save(self, split: str, index: int, feats) -> None:
        from gesture_cli.core.artifacts import save_tensors

        path = self.shard_path(split, index)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_tensors(path, {"features": feats}, kind=SHARD_KIND, meta={"split": split, "shard": index})

    def load(self, split: str, index: int):
        from gesture_cli.core.artifacts import load_tensors

        return load_tensors(self.shard_path(split, index), kind=SHARD_KIND)[0]["features"]

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def shard_damage(path: Path, *, rows: int, feature_dim: int | None) -> str | None:
    """What is wrong with a saved shard, or None when it looks whole. Reads the safetensors header only
    (8-byte little-endian length + JSON): cheap enough for thousands of shards."""
    import json

    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 2 or 8 + n > size:
                return f"{size} bytes, too short for its safetensors header"
            header = json.loads(f.read(n))
    except OSError as exc:
        return f"cannot read it: {exc.strerror or exc}"
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "its safetensors header is not valid JSON"
    tensors = {k: v for k, v in header.items() if k != "__metadata__"} if isinstance(header, dict) else {}
    feats = tensors.get("features")
    if not isinstance(feats, dict) or not isinstance(feats.get("shape"), list):
        return "no features tensor in it"
    shape = feats["shape"]
    if len(shape) != 2 or shape[0] != rows or (feature_dim is not None and shape[1] != feature_dim):
        return f"features of shape {shape}, expected [{rows}, {feature_dim if feature_dim is not None else 'D'}]"
    try:
        end = max(int(t["data_offsets"][1]) for t in tensors.values())
    except (KeyError, IndexError, TypeError, ValueError):
        return "its safetensors header has no valid data offsets"
    if 8 + n + end != size:
        return f"{size} bytes, its header says {8 + n + end}"
    return None


def shard_count(n: int, shard_size: int) -> int:
    return -(-n // shard_size)


def shard_bounds(index: int, n: int, shard_size: int) -> tuple[int, int]:
    return index * shard_size, min((index + 1) * shard_size, n)


def derived_all_split(datasets: dict, max_samples: int | None) -> list[str] | None:
    """The splits that 'all' is made of, when 'all' is requested and the other requested splits
    partition its rows (a CSV or flat folder cut into train/test by seed); else None."""
    import numpy as np

    whole = datasets.get("all")
    parts = [s for s in datasets if s != "all"]
    if whole is None or not parts or max_samples is not None:
        return None
    rows = [datasets[s].all_rows for s in parts]
    if any(r is None for r in rows):
        return None
    joined = np.sort(np.concatenate(rows))
    if len(joined) != len(whole) or not np.array_equal(joined, np.arange(len(whole))):
        return None
    return parts


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
    on_resume: Callable[[str, int, int, int], None] | None = None,
    on_shard: Callable[[str, int], None] | None = None,
) -> dict:
    """Extract pooled features of every requested split into the run dir; returns the step entry.

    The step is cached on (config, dataset files); a hit returns the earlier entry with `cached` set.
    Under a launcher every rank calls this; rank 0 returns the entry, the others {"rank": r}.
    Callbacks: on_split(split, images this process extracts), on_progress(done, of), on_resume(split,
    shards found, shards in all, images in them) on rank 0; on_shard(split, index) after each shard
    this process saves.
    """
    from gesture_cli.core.device import resolve_device
    from gesture_cli.core.dist import init_dist
    from gesture_cli.data import make_dataset, parse_dataset

    spec = parse_dataset(cfg.dataset, cfg.dataset_opts)  # read once; the datasets below share it
    splits = list(cfg.splits) or spec.splits()
    # Build datasets first: a bad file fails before any model is loaded or anything is written.
    datasets = {s: make_dataset(spec, split=s, seed=cfg.seed) for s in splits}
    for split, ds in datasets.items():
        if len(ds) == 0:
            raise UsageError(f"dataset '{cfg.dataset}' split '{split}' has no images")
    ctx = init_dist(resolve_device(device))
    try:
        return _extract(cfg, run, datasets, ctx, device=device, force=force, argv=argv, callbacks=dict(
            on_split=on_split, on_progress=on_progress, on_backoff=on_backoff, on_resume=on_resume, on_shard=on_shard))
    finally:
        ctx.close()


def _extract(cfg: ExtractConfig, run, datasets: dict, ctx, *, device: str, force: bool, argv, callbacks: dict) -> dict:
    from gesture_cli.core.device import make_precision

    sources = sorted({str(p) for d in datasets.values() for p in d.source_files})
    tokens = {f"dataset:{s}": d.cache_token for s, d in datasets.items() if d.cache_token}
    bb_dir = backbone_dirname(cfg.backbone)
    out_rel = f"features/{bb_dir}"
    # the precision --precision resolves to here, not the option as typed: features extracted in bf16 are neither
    # reused nor resumed where auto now means fp32 (another machine, GX_NATIVE_BF16=0), which would mix the two
    prec = make_precision(ctx.device, cfg.precision)
    key_config = {k: v for k, v in _asdict(cfg).items() if k not in NON_KEY_OPTIONS}
    key_config["precision"] = prec.name
    step = None
    if ctx.is_main:  # only rank 0 reads and writes run.json
        step = run.begin(
            "extract-features",
            config={**key_config, "device": device},
            inputs=[Path(p) for p in sources] + local_backbone_inputs(cfg.backbone),
            input_keys=tokens,
            outputs=[out_rel],
            argv=argv,
            force=force,
        )
    cached, key = ctx.broadcast((step.cached, step.key) if step is not None else None)
    if cached:
        return {**step.entry, "cached": True} if ctx.is_main else {"rank": ctx.rank, "cached": True}

    import torch

    from gesture_cli.models.backbones import build_backbone

    cb = {k: (v if ctx.is_main or k == "on_shard" else None) for k, v in callbacks.items()}
    dev = ctx.device
    dtype = prec.dtype
    backbone = build_backbone(cfg.backbone, device=dev, dtype=dtype, image_size=cfg.image_size)
    if cfg.compile:
        backbone.model.compile()
    # CPU: batch 32 measured fastest on an idle 2-core AMX machine (67.6 images/s vs 46.0 at 64, 64.8 at 8)
    batch_size = cfg.batch_size or (256 if dev.type == "cuda" else 32)
    parts = derived_all_split(datasets, cfg.max_samples)
    sizes = {s: len(d) if cfg.max_samples is None else min(len(d), cfg.max_samples) for s, d in datasets.items()}
    extracted = {s: n for s, n in sizes.items() if not (parts and s == "all")}
    partial = PartialDir(run.path("features", f".{bb_dir}.partial"), {"cache_key": key, "shard_size": cfg.shard_size, "splits": extracted})
    if ctx.is_main:
        partial.prepare()
    ctx.barrier()  # on a shared disk the others now find rank 0's plan; elsewhere they prepare their own
    if not ctx.is_main:
        partial.prepare()
    # Who holds each finished shard: on a shared disk every rank sees every file (rank 0 reads them
    # itself); on separate machines a shard lives on the rank that wrote it and is sent over later.
    held = ctx.all_gather(partial.completed(feature_dim=backbone.feature_dim(cfg.pool)))
    owner = {s: {} for s in extracted}
    for rank, done in reversed(list(enumerate(held))):
        for s, ids in done.items():
            owner[s].update(dict.fromkeys(ids, rank))
    workers = {s: cfg.workers if cfg.workers is not None else auto_workers(d, ctx.device, local_world=ctx.local_world) for s, d in datasets.items()}

    with step if step is not None else nullcontext():
        stats = {}
        for split, n in extracted.items():
            count = shard_count(n, cfg.shard_size)
            pending = [i for i in range(count) if i not in owner[split]]
            mine = pending[ctx.rank :: ctx.world]
            resumed = count - len(pending)
            if resumed and cb["on_resume"] is not None:
                resumed_images = sum(hi - lo for lo, hi in (shard_bounds(i, n, cfg.shard_size) for i in owner[split]))
                cb["on_resume"](split, resumed, count, resumed_images)
            t0 = time.perf_counter()
            mine_images, batches = _extract_shards(
                backbone, datasets[split], split, mine, n=n, cfg=cfg, batch_size=batch_size, workers=workers[split], partial=partial, cb=cb)
            for k, i in enumerate(pending):  # dealt the same way on every rank: no exchange needed
                owner[split][i] = k % ctx.world
            stats[split] = {"seconds": time.perf_counter() - t0, "images": mine_images, "batches": batches, "resumed_shards": resumed, "shards": count}
        all_stats = ctx.all_gather(stats)
        ctx.barrier()
        if not ctx.is_main:
            for split, n in extracted.items():
                for i in range(shard_count(n, cfg.shard_size)):
                    if owner[split][i] == ctx.rank:
                        ctx.send_to_main(partial.load(split, i))
            ctx.barrier()  # rank 0 has written the result: our shards are no longer needed
            partial.remove()
            return {"rank": ctx.rank, "cached": False}

        out = step.stage(out_rel)
        feats_by_split = {}
        for split, n in extracted.items():
            feats_by_split[split] = _assemble(partial, ctx, split, n, owner=owner[split], dim=backbone.feature_dim(cfg.pool), shard_size=cfg.shard_size)
            if not torch.isfinite(feats_by_split[split]).all():
                raise UsageError(f"non-finite features for split '{split}'; rerun with --precision fp32")
        per_split = {}
        total_images, total_time = 0, 0.0
        for split, ds in datasets.items():
            n = sizes[split]
            labels = torch.from_numpy(ds.labels[:n].astype("int64"))
            meta_common = {"split": split, "backbone": backbone.describe(), "pool": cfg.pool, "classes": ds.classes}
            if split in feats_by_split:
                save_tensors_ = {"features": feats_by_split[split], "labels": labels}
                st = [s[split] for s in all_stats]
                seconds = max(s["seconds"] for s in st)
                done_now = sum(s["images"] for s in st)
                per_split[split] = {
                    "images": n, "seconds": round(seconds, 3), "images_per_s": round(done_now / seconds, 2) if seconds and done_now else None,
                    "skipped": ds.skipped, "shards": st[0]["shards"], "resumed_shards": st[0]["resumed_shards"],
                    "batches": sum(s["batches"] for s in st),
                }
                total_images += done_now
                total_time += seconds
            else:  # 'all' = the rows of its parts: the assignment, not a second copy of the features
                save_tensors_ = _split_assignment(datasets, parts, labels)
                meta_common["assembled_from"] = parts
                per_split[split] = {"images": n, "seconds": 0.0, "images_per_s": None, "skipped": ds.skipped, "assembled_from": parts}
            _save_features(out / f"{split}.safetensors", save_tensors_, meta_common)
        meta = {
            "backbone": backbone.describe(),
            "dataset": cfg.dataset,
            "classes": next(iter(datasets.values())).classes,
            "pool": cfg.pool,
            "feature_dim": backbone.feature_dim(cfg.pool),
            "image_size": backbone.image_size,
            "dtype": str(dtype).replace("torch.", ""),
            "precision": prec.name,  # the default of evaluate/infer --from probe and gradcam
            "device": str(dev),
            "batch_size": batch_size,
            "world_size": ctx.world,
            "workers": workers[next(iter(extracted))] if extracted else 0,
            "shard_size": cfg.shard_size,
            "compile": cfg.compile,
            "splits": per_split,
        }
        _save_meta(out / "meta.json", meta)
        step.metrics.update(
            {
                "images": sum(extracted.values()),  # "all" assembled from its parts holds no images of its own
                "images_per_s": round(total_images / total_time, 2) if total_time and total_images else None,
                "feature_dim": meta["feature_dim"],
                "dtype": meta["dtype"],
                "world_size": ctx.world,
                "resumed_shards": sum(s.get("resumed_shards", 0) for s in per_split.values()),
            }
        )
    partial.remove()
    ctx.barrier()
    return {**step.entry, "cached": False, "meta": meta}


def _extract_shards(backbone, dataset, split: str, shards: list[int], *, n: int, cfg: ExtractConfig, batch_size: int, workers: int,
                    partial: PartialDir, cb: dict) -> tuple[int, int]:
    """Extract this rank's shards of one split into `partial`; returns (images, batches) done."""
    import torch

    bounds = [shard_bounds(i, n, cfg.shard_size) for i in shards]
    total = sum(hi - lo for lo, hi in bounds)
    if cb["on_split"] is not None:
        cb["on_split"](split, total)
    # Batches never straddle shards, so a sample meets the same batch neighbours whatever the
    # number of ranks and whether the run resumed.
    batches, owner_of = [], []
    for i, (lo, hi) in zip(shards, bounds, strict=True):
        for b in contiguous_batches(lo, hi, batch_size):
            batches.append(b)
            owner_of.append(i)
    done, buf, k = 0, [], 0
    it = iter_batch_features(backbone, dataset, batches, pool=cfg.pool, batch_size=batch_size, workers=workers, on_backoff=cb["on_backoff"])
    for k, out in enumerate(it):
        buf.append(out)
        done += len(out)
        if cb["on_progress"] is not None:
            cb["on_progress"](done, total)
        if k + 1 == len(batches) or owner_of[k + 1] != owner_of[k]:
            partial.save(split, owner_of[k], torch.cat(buf))
            buf = []
            if cb["on_shard"] is not None:
                cb["on_shard"](split, owner_of[k])
    return done, len(batches)


def _assemble(partial: PartialDir, ctx, split: str, n: int, *, owner: dict, dim: int, shard_size: int):
    """float32 [n, dim] of one split on rank 0, in dataset order, from its own disk or the shard's rank."""
    import torch

    feats = torch.empty((n, dim), dtype=torch.float32)
    for i in range(shard_count(n, shard_size)):
        lo, hi = shard_bounds(i, n, shard_size)
        if owner[i] == 0:
            feats[lo:hi] = partial.load(split, i)
        else:
            feats[lo:hi] = ctx.recv_from(owner[i], feats[lo:hi])
    return feats


def _split_assignment(datasets: dict, parts: list[str], labels) -> dict:
    """'all' as (part, row) per sample: int64 [N] index into `assembled_from` and row in that part."""
    import torch

    n = len(labels)
    part = torch.empty(n, dtype=torch.int64)
    row = torch.empty(n, dtype=torch.int64)
    for j, s in enumerate(parts):
        rows = torch.from_numpy(datasets[s].all_rows.astype("int64"))
        part[rows] = j
        row[rows] = torch.arange(len(rows))
    return {"labels": labels, "part": part, "row": row}


def _save_features(path: Path, tensors: dict, meta: dict) -> None:
    from gesture_cli.core.artifacts import save_tensors

    save_tensors(path, tensors, kind=FEATURES_KIND, meta=meta)


def _save_meta(path: Path, meta: dict) -> None:
    from gesture_cli.core.artifacts import save_json

    save_json(path, meta, kind="features-meta")


def _asdict(cfg) -> dict:
    from gesture_cli.core.config import config_to_dict

    return config_to_dict(cfg)


def local_backbone_inputs(spec: str) -> list[Path]:
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
            f"{path}: no features for backbone '{backbone}' split '{split}'; run `gx extract-features --backbone {shell_word(backbone)} -r {shell_word(run.root)}` first"
        )
    tensors, meta = load_tensors(path, kind=FEATURES_KIND)
    parts = meta.get("assembled_from")
    if parts and "features" not in tensors:  # 'all' stored as the rows of its train/test parts
        import torch

        loaded = [load_features(run, backbone, s)[0] for s in parts]
        feats = torch.empty((len(tensors["labels"]), loaded[0].shape[1]), dtype=loaded[0].dtype)
        for j, part_feats in enumerate(loaded):
            mask = tensors["part"] == j
            feats[mask] = part_feats[tensors["row"][mask]]
        return feats, tensors["labels"], meta
    return tensors["features"], tensors["labels"], meta
