"""`gx extract-features`: pooled features of a frozen backbone for every split of a dataset."""

from __future__ import annotations

from typing import Annotated

import typer

from gesture_cli.cli.options import DatasetOpt, PrecisionOpt, argv, flags, gx_command, make_console

EXAMPLE = "Example: gx extract-features --backbone tiny-dinov2 --dataset synthetic-hands -r runs/demo"


@gx_command
def extract_features(
    backbone=None,
    dataset: DatasetOpt = None,
    dataset_opt: Annotated[list[str] | None, typer.Option("--dataset-opt", help="Dataset source option KEY=VALUE (repeatable), e.g. label_map=contiguous.", show_default=False)] = None,
    split: Annotated[list[str] | None, typer.Option("--split", help="Split to extract (repeatable) [default: all].", show_default=False)] = None,
    pool: Annotated[str | None, typer.Option("--pool", help="cls | mean | cls+mean [default: cls].", show_default=False)] = None,
    image_size: Annotated[int | None, typer.Option("--image-size", help="Input side in pixels [default: the backbone's].", show_default=False)] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Images per batch; 0 = auto [default: 0].", show_default=False)] = None,
    precision: PrecisionOpt = None,
    max_samples: Annotated[int | None, typer.Option("--max-samples", help="Cap on images per split.", show_default=False)] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Processes decoding and resizing images, per GPU/process [default: on a GPU the cores per process - 1, at most 8; 0 on CPU and for in-memory data].", show_default=False)] = None,
    shard_size: Annotated[int | None, typer.Option("--shard-size", help="Samples per shard file; a killed run resumes from the last whole shard [default: 2048].", show_default=False)] = None,
    compile_: Annotated[bool | None, typer.Option("--compile/--no-compile", help="torch.compile the backbone (tens of seconds of compiling first) [default: no].", show_default=False)] = None,
    run_dir=None, device="auto", seed=None, config=None, force=False, verbose=False,
) -> None:
    """Extract frozen-backbone features of a dataset into features/<backbone>/<split>.safetensors.

    Runs unchanged under `torchrun` or `accelerate launch`: each process extracts its share, rank 0
    writes the result. Finished shards survive a kill; rerunning the same command resumes.
    """
    from gesture_cli.cli.progress import Bars
    from gesture_cli.core.config import resolve_config
    from gesture_cli.core.rundir import RunDir
    from gesture_cli.tasks.datasets import config_as_recorded
    from gesture_cli.tasks.features import ExtractConfig
    from gesture_cli.tasks.features import extract_features as run_extract

    cfg = config_as_recorded(resolve_config(
        ExtractConfig,
        config,
        flags(backbone=backbone, dataset=dataset, dataset_opts=dataset_opt or None, splits=split or None, pool=pool, image_size=image_size,
              batch_size=batch_size, precision=precision, max_samples=max_samples, seed=seed, workers=workers, shard_size=shard_size,
              compile=compile_),
    ))
    run = RunDir(run_dir)
    console = make_console()
    err = make_console(stderr=True)
    with Bars(console, unit="img") as bars:
        entry = run_extract(
            cfg, run, device=device, force=force, argv=argv(), on_split=lambda name, n: bars.start(f"{cfg.backbone} {name}", n),
            on_progress=lambda done, total: bars.update(done),
            on_backoff=lambda bs: err.print(f"CUDA out of memory: batch size lowered to {bs}"),
            on_resume=lambda name, found, count, images: console.print(
                f"extract-features: resumed {name} from {found} of {count} finished shards ({images} images); extracting the rest"),
        )
    if entry.get("rank"):  # another process of a torchrun / accelerate launch: rank 0 reports
        return
    if entry.get("cached"):
        console.print(f"[dim]extract-features: cached result for {cfg.backbone} on {cfg.dataset} (use --force to recompute)[/]")
        return
    _summary(console, run, entry["meta"], entry["outputs"][0])


def _summary(console, run, meta: dict, out_rel: str) -> None:
    from rich.table import Table

    bb = meta["backbone"]
    table = Table(title=f"{out_rel}  ({bb['family']}, {meta['feature_dim']}-d {meta['pool']}, {meta['image_size']}px, {meta['dtype']} on {meta['device']})")
    for col in ("split", "images", "seconds", "images/s", "resumed", "skipped"):
        table.add_column(col, justify="right" if col != "split" else "left")
    for split, s in meta["splits"].items():
        skipped = ", ".join(f"{k}: {v}" for k, v in (s.get("skipped") or {}).items()) or "0"
        speed = f"{s['images_per_s']:.1f}" if s.get("images_per_s") else "-"
        if s.get("assembled_from"):  # 'all' of a dataset cut into train/test: stored as their rows
            resumed = "rows of " + " + ".join(s["assembled_from"])
        else:
            resumed = f"{s.get('resumed_shards', 0)}/{s.get('shards', 0)} shards"
        table.add_row(split, str(s["images"]), f"{s['seconds']:.2f}", speed, resumed, skipped)
    console.print(table)
    if meta.get("world_size", 1) > 1:
        console.print(f"{meta['world_size']} processes extracted the shards; rank 0 assembled them")
    console.print(f"Wrote {run.root / out_rel}")


def register(app: typer.Typer) -> None:
    app.command("extract-features", epilog=EXAMPLE)(extract_features)
