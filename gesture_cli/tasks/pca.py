"""`gx pca-compute` (and `--merge`): frames of a dataset + backbone -> pca/<backbone>/{pca.json,pca.safetensors}.

The streaming, exact, mergeable PCA itself (PatchPCA, the block plan that makes launched runs bitwise
equal to one process) is `gesture_cli.models.pca`; this module opens the run-dir step, writes and
reads the PCA folder, and merges folders computed elsewhere.
"""

from __future__ import annotations

import datetime as _dt
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from gesture_cli.core.errors import ArtifactError, DataError, UsageError, shell_word
from gesture_cli.models.backbone_ref import backbone_dirname
from gesture_cli.models.pca import (
    RANGE_PERCENTILES,
    RESERVOIR_SIZE,
    PatchPCA,
    PCAConfig,
    _accumulate,
    auto_batch_size,
    choose_foreground,
    frame_units,
    parse_shard,
    plan_blocks,
    projection_ranges,
)
from gesture_cli.tasks.features import local_backbone_inputs

PCA_KIND = "pca"


PCA_JSON = "pca.json"


PCA_TENSORS = "pca.safetensors"


def compute_pca(
    cfg: PCAConfig,
    run,
    *,
    device: str = "auto",
    force: bool = False,
    argv: list[str] | None = None,
    on_pass: Callable[[str, int | None], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    on_backoff: Callable[[int], None] | None = None,
    on_memory: Callable[[str], None] | None = None,
) -> dict:
    """Accumulate patch features of a dataset's frames and write pca/<backbone>/; returns the step entry.

    Under `torchrun` / `accelerate launch` rank r accumulates blocks r, r+N, ... of consecutive clips
    (images) and rank 0 adds the block sums in block order, as one process does (fp32 on CPU: the same
    bits), and writes the result; it returns the step entry, the other ranks {"rank": r}.
    """
    from gesture_cli.core.device import resolve_device
    from gesture_cli.core.dist import init_dist, launched_world_size
    from gesture_cli.data.video import make_frame_source

    if launched_world_size() > 1 and cfg.max_samples is not None:
        raise UsageError("--max-samples takes the first N frames of one stream; under torchrun / accelerate launch "
                         "each process reads its own clips: drop --max-samples or run one process")
    source = make_frame_source(cfg.dataset, seed=cfg.seed)
    if cfg.shard is not None:
        source = source.shard(*parse_shard(cfg.shard))
    ctx = init_dist(resolve_device(device))
    try:
        return _compute(cfg, run, source, ctx, device=device, force=force, argv=argv, on_pass=on_pass,
                        on_progress=on_progress, on_backoff=on_backoff, on_memory=on_memory)
    finally:
        ctx.close()


def _compute(cfg: PCAConfig, run, source, ctx, *, device: str, force: bool, argv, on_pass, on_progress, on_backoff, on_memory) -> dict:
    from gesture_cli.core.device import make_precision

    units = frame_units(source, cfg.frame_stride)  # opens every video header: bad files fail now
    total = units.total(max_frames=cfg.max_samples)
    if ctx.world == 1 and total == 0:
        raise DataError(f"dataset '{cfg.dataset}'{f' shard {cfg.shard}' if cfg.shard else ''} has no frames")
    if not ctx.is_main:
        on_pass = on_progress = on_memory = None  # rank 0 reports
    out_rel = f"pca/{backbone_dirname(cfg.backbone)}"
    prec = make_precision(ctx.device, cfg.precision)
    step = None
    if ctx.is_main:
        step = run.begin(
            "pca-compute",
            # keyed on the precision resolved here, not the option as typed (as extract-features and pca-visualize)
            config={**_asdict(cfg), "precision": prec.name, "device": device},
            inputs=[Path(p) for p in source.source_files] + local_backbone_inputs(cfg.backbone),
            input_keys={"dataset": source.cache_token} if source.cache_token else {},
            outputs=[out_rel],
            argv=argv,
            force=force,
        )
    if ctx.broadcast(step.cached if step is not None else None):
        return {**step.entry, "cached": True} if ctx.is_main else {"rank": ctx.rank, "cached": True}

    from contextlib import nullcontext

    from gesture_cli.models.backbones import build_backbone

    dev = ctx.device
    backbone = build_backbone(cfg.backbone, device=dev, dtype=prec.dtype, image_size=cfg.image_size)
    dim = backbone.info.embed_dim
    if cfg.n_components > dim:
        raise UsageError(f"--n-components {cfg.n_components} exceeds backbone '{cfg.backbone}''s embedding width {dim}")
    acc_dev = dev if dev.type in ("cpu", "cuda") else _cpu()  # MPS has no float64
    batch_size = cfg.batch_size or auto_batch_size(dev, backbone.image_size)
    plan = plan_blocks(units.counts, batch_size)  # the same blocks for any number of processes
    if ctx.world > 1:  # rank 0's progress bar counts the frames of its own blocks
        total = units.total([u for b in range(0, len(plan), ctx.world) for u in plan[b]])
    seed = _stream_seed(cfg)
    t0 = time.perf_counter()
    kwargs = dict(on_progress=on_progress, on_backoff=on_backoff, on_memory=on_memory, batch_size=batch_size)
    with step if step is not None else nullcontext():
        fg = None
        if cfg.foreground:
            if on_pass is not None:
                on_pass("foreground pass", total)
            first = PatchPCA(dim, device=acc_dev, reservoir_size=cfg.reservoir_size or RESERVOIR_SIZE)
            _accumulate(backbone, units, plan, cfg, ctx, first, seed=seed, **kwargs)
            if ctx.is_main:
                fg = choose_foreground(first, cfg.foreground_threshold)
                fg["first_pass_patches"] = first.n
            if ctx.world > 1:  # every rank masks its second pass with rank 0's component (sent via the CPU)
                fg = ctx.broadcast(None if fg is None else {k: v.cpu() if hasattr(v, "cpu") else v for k, v in fg.items()})
                fg = {k: v.to(acc_dev) if hasattr(v, "to") else v for k, v in fg.items()}
        if on_pass is not None:
            on_pass("foreground patches" if fg else "patches", total)
        acc = PatchPCA(dim, device=acc_dev, reservoir_size=cfg.reservoir_size)
        counts = _accumulate(backbone, units, plan, cfg, ctx, acc, seed=seed + 1, foreground=fg, **kwargs)  # its own keys
        if not ctx.is_main:
            return {"rank": ctx.rank, "cached": False}
        out = step.stage(out_rel)
        if counts.frames == 0:
            raise DataError(f"dataset '{cfg.dataset}' gave no frames")
        if fg is not None and acc.n < 2:
            raise DataError(
                f"--foreground-threshold {fg['threshold']:g} keeps {acc.n} of {fg['first_pass_patches']} patches; lower the threshold"
            )
        seconds = time.perf_counter() - t0
        desc = backbone.describe()
        meta = {
            "dataset": cfg.dataset,
            "frame_stride": cfg.frame_stride,
            "max_samples": cfg.max_samples,
            "shard": cfg.shard,
            "total_frames": counts.frames,
            "subjects": sorted(counts.subjects),
            "clips": sorted(counts.clips),
            "warnings": list(counts.warnings),
            "seconds": round(seconds, 3),
            "frames_per_s": round(counts.frames / seconds, 2) if seconds else None,
            "device": str(dev),
            "dtype": str(backbone.dtype).replace("torch.", ""),
            "batch_size": batch_size,
            "world_size": ctx.world,
        }
        result = write_pca(out, acc, backbone=desc, n_components=cfg.n_components, meta=meta, foreground=fg)
        step.metrics.update(
            {k: result[k] for k in ("total_frames", "total_patches", "unique_subjects", "unique_clips")}
            | {"explained_variance_top3": round(float(sum(result["explained_variance_ratio"][:3])), 4)}
        )
    return {**step.entry, "cached": False, "pca": result}


def _cpu():
    import torch

    return torch.device("cpu")


def _stream_seed(cfg: PCAConfig) -> int:
    # Two shards with the same --seed must not draw the same reservoir keys: mix in dataset and shard.
    # Not the rank: under a launcher every rank draws the keys one process would.
    return cfg.seed * 1_000_003 + zlib.crc32(f"{cfg.dataset}|{cfg.shard}".encode())


def _asdict(cfg) -> dict:
    from gesture_cli.core.config import config_to_dict

    return config_to_dict(cfg)


def write_pca(out: Path, acc: PatchPCA, *, backbone: dict, n_components: int, meta: dict, foreground: dict | None) -> dict:
    """Finalize `acc` and write pca.json + pca.safetensors into `out`; returns the pca.json content."""
    import torch

    from gesture_cli import __version__
    from gesture_cli.core.artifacts import save_json, save_tensors

    res = acc.finalize(n_components)
    rows = acc.reservoir.ordered()[0]  # key order: a matmul's rows need not round alike at every position
    ranges = projection_ranges(rows, res) if len(rows) else None
    grid = backbone["image_size"] // backbone["patch_size"]
    subjects, clips = meta.pop("subjects"), meta.pop("clips")
    info = {
        # the original tool's metadata
        "image_size": backbone["image_size"],
        "model_name": backbone["name"],
        "embed_dim": backbone["embed_dim"],
        "patches_per_frame": grid * grid,
        "grid_size": grid,
        "patch_size": backbone["patch_size"],
        "total_patches": acc.n,
        "unique_subjects": len(subjects),
        "unique_clips": len(clips),
        "pca_components": n_components,
        "timestamp": _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds"),
        # gx additions
        "gx_version": __version__,
        "backbone": backbone,
        "explained_variance_ratio": [round(float(v), 6) for v in res.explained_variance_ratio],
        "cumulative_explained_variance": [round(float(v), 6) for v in torch.cumsum(res.explained_variance_ratio, 0)],
        "eigenvalues": [float(v) for v in res.eigenvalues],
        "ranges": ranges.tolist() if ranges is not None else None,
        "range_percentiles": list(RANGE_PERCENTILES),
        "range_sample_patches": len(rows),
        "reservoir_size": acc.reservoir.size,
        "foreground": None
        if foreground is None
        else {
            "threshold": foreground["threshold"],
            "kept_fraction": round(foreground["kept_fraction"], 4),
            "first_pass_patches": foreground.get("first_pass_patches"),
            "rule": "score on first-pass PC1 > threshold; sign chosen so that at 0 the foreground is the minority",
        },
        **meta,
        "subjects": subjects,
        "clips": clips,
    }
    tensors = {
        "mean": res.mean,
        "components": res.components,
        "eigenvalues": res.eigenvalues,
        "explained_variance_ratio": res.explained_variance_ratio,
        **acc.state_dict(),
    }
    if ranges is not None:
        tensors["ranges"] = ranges
    if foreground is not None:
        tensors["fg_mean"] = foreground["mean"]
        tensors["fg_component"] = foreground["component"]
        tensors["fg_threshold"] = torch.tensor([foreground["threshold"]], dtype=torch.float64)
    save_tensors(out / PCA_TENSORS, tensors, kind=PCA_KIND, meta={"backbone": backbone, "pca_components": n_components})
    save_json(out / PCA_JSON, info, kind=PCA_KIND)
    return info


def find_pca_dirs(root: Path) -> list[Path]:
    """PCA folders in a run dir (root/pca/*/pca.json), or [root] when root itself is a PCA folder."""
    root = Path(root)
    if (root / PCA_JSON).is_file():
        return [root]
    base = root / "pca" if (root / "pca").is_dir() else root
    return sorted(p.parent for p in base.glob(f"*/{PCA_JSON}"))


def resolve_pca_dir(path: Path | str, backbone: str | None = None) -> Path:
    """One PCA folder from a run dir or a pca folder; `backbone` picks one when a run has several."""

    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: no such run directory or PCA folder")
    dirs = find_pca_dirs(path)
    if backbone is not None and len(dirs) > 1:
        dirs = [d for d in dirs if d.name == backbone_dirname(backbone)]
    if not dirs:
        want = f" for backbone '{backbone}'" if backbone else ""
        raise ArtifactError(f"{path}: no PCA{want} (no pca/<backbone>/{PCA_JSON}); run gx pca-compute -r {shell_word(path)} first")
    if len(dirs) > 1:
        names = ", ".join(d.name for d in dirs)
        raise UsageError(f"{path} holds PCAs of several backbones ({names}); choose one with --backbone")
    return dirs[0]


def load_pca(folder: Path, *, device="cpu") -> tuple[dict, dict]:
    """(pca.json content, tensors) of a PCA folder, checking kinds and schema versions."""
    from gesture_cli.core.artifacts import load_json, load_tensors

    info = load_json(Path(folder) / PCA_JSON, kind=PCA_KIND)
    tensors, _ = load_tensors(Path(folder) / PCA_TENSORS, kind=PCA_KIND, device=str(device))
    return info, tensors


def describe_pca(info: dict) -> str:
    return f"{info['model_name']} (embed_dim {info['embed_dim']}, patch {info['patch_size']})"


def _check_mergeable(a: tuple[Path, dict], b: tuple[Path, dict]) -> None:
    (pa, ia), (pb, ib) = a, b
    for key, what in (("model_name", "backbones"), ("embed_dim", "embedding widths"), ("patch_size", "patch sizes"), ("image_size", "image sizes")):
        if ia[key] != ib[key]:
            extra = f", image {ia['image_size']}" if key == "image_size" else ""
            extra_b = f", image {ib['image_size']}" if key == "image_size" else ""
            raise UsageError(
                f"cannot merge {pa} ({describe_pca(ia)[:-1]}{extra}) with {pb} ({describe_pca(ib)[:-1]}{extra_b}): "
                f"PCAs of different {what} do not combine; merge runs of one backbone at one image size"
            )
    if bool(ia.get("foreground")) or bool(ib.get("foreground")):
        raise UsageError(
            f"cannot merge {pa} with {pb}: --foreground PCAs select patches with their own first-pass component, "
            "so their statistics do not add up; merge runs without --foreground"
        )


def merge_pca(
    paths: list[str],
    run,
    *,
    n_components: int | None = None,
    backbone: str | None = None,
    force: bool = False,
    argv: list[str] | None = None,
) -> dict:
    """Combine the statistics of finished pca-compute runs into run/pca/<backbone>/."""

    if len(paths) < 2:
        raise UsageError("--merge needs at least two run directories or PCA folders")
    dirs = [resolve_pca_dir(p, backbone) for p in paths]
    if len({d.resolve() for d in dirs}) < len(dirs):
        raise UsageError("--merge got the same PCA folder twice; its data would be counted twice")
    infos = [(d, load_pca_info(d)) for d in dirs]
    for other in infos[1:]:
        _check_mergeable(infos[0], other)
    if backbone is not None and backbone_dirname(backbone) != backbone_dirname(infos[0][1]["model_name"]):
        raise UsageError(f"--backbone {backbone}: the PCAs to merge were computed with {describe_pca(infos[0][1])}")
    first = infos[0][1]
    k = n_components or max(i["pca_components"] for _, i in infos)
    out_rel = f"pca/{backbone_dirname(first['model_name'])}"
    target = run.path(out_rel).resolve()
    if any(d.resolve() == target for d in dirs):
        raise UsageError(f"{run.path(out_rel)} is one of the inputs; write the merge to another run dir with -r")
    step = run.begin(
        "pca-compute",
        config={"merge": [str(d) for d in dirs], "n_components": k},
        inputs=[d / PCA_TENSORS for d in dirs],
        outputs=[out_rel],
        argv=argv,
        force=force,
    )
    if step.cached:
        return {**step.entry, "cached": True}
    with step:
        out = step.stage(out_rel)
        acc = None
        subjects, clips, warnings, datasets = set(), set(), [], []
        frames = 0
        size = max(int(i.get("reservoir_size", RESERVOIR_SIZE)) for _, i in infos)
        for d, info in infos:
            _, tensors = load_pca(d)
            part = PatchPCA.from_state(tensors, reservoir_size=size)
            acc = part if acc is None else acc.merge(part)
            shared = clips & set(info["clips"])
            if shared:
                warnings.append(f"{d} shares {len(shared)} clip(s) with an earlier input (e.g. {sorted(shared)[0]}): their frames count twice")
            subjects |= set(info["subjects"])
            clips |= set(info["clips"])
            frames += int(info["total_frames"])
            warnings += info.get("warnings", [])
            datasets.append(info["dataset"])
        meta = {
            "dataset": " + ".join(dict.fromkeys(datasets)),
            "frame_stride": first.get("frame_stride"),
            "max_samples": None,
            "shard": None,
            "merged_from": [str(d) for d in dirs],
            "total_frames": frames,
            "subjects": sorted(subjects),
            "clips": sorted(clips),
            "warnings": warnings,
        }
        result = write_pca(out, acc, backbone=first["backbone"], n_components=k, meta=meta, foreground=None)
        step.metrics.update({k_: result[k_] for k_ in ("total_frames", "total_patches", "unique_subjects", "unique_clips")} | {"merged": len(dirs)})
    return {**step.entry, "cached": False, "pca": result}


def load_pca_info(folder: Path) -> dict:
    from gesture_cli.core.artifacts import load_json

    return load_json(folder / PCA_JSON, kind=PCA_KIND)
