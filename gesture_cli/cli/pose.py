"""`gx pose-convert`: keypoint sequences in any format gx reads -> gx's pose folder (index.jsonl + safetensors)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gesture_cli.cli.options import SeedOpt, VerboseOpt, gx_command, make_console

EXAMPLE = (
    "Example: gx pose-convert data/phoenix -o data/phoenix-gx   |   gx pose-convert samples.pkl --allow-pickle -o data/gx   |   "
    "gx pose-convert synthetic-signs -o data/signs --dataset-opt train_size=1000"
)


@gx_command
def pose_convert(
    source: Annotated[str, typer.Argument(metavar="INPUT", help="A file or folder (.pose, OpenPose *_keypoints.json, Kaggle .parquet, ASL-App .json, a pickle), or a pose spec: pose:PATH, synthetic-signs.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write (index.jsonl, meta.json, samples/*.safetensors).", show_default=False)],
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Read pickle files (they can run arbitrary code: only for files you trust).")] = False,
    layout: Annotated[str | None, typer.Option("--layout", help="auto | mediapipe-holistic | openpose-137 | coco-wholebody-133: keep only samples of this layout [default: auto].", show_default=False)] = None,
    texts: Annotated[Path | None, typer.Option("--texts", help="Label table (CSV/TSV with a name column and text/gloss columns, or a labels pickle with --allow-pickle).", show_default=False)] = None,
    fps: Annotated[float | None, typer.Option("--fps", help="Frame rate for formats that record none (OpenPose JSON, parquet, pickle).", show_default=False)] = None,
    split: Annotated[str | None, typer.Option("--split", help="Convert one split: train | val | test [default: all samples].", show_default=False)] = None,
    dataset_opt: Annotated[list[str] | None, typer.Option("--dataset-opt", help="Source option KEY=VALUE (repeatable), e.g. train_size=1000 for synthetic-signs.", show_default=False)] = None,
    seed: SeedOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace OUTDIR if it exists and is not empty.")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Convert keypoint sequences to gx's pose format: one safetensors file per sample (keypoints + mask) and an index with texts."""
    from gesture_cli.data.pose import make_pose_dataset, write_pose_folder
    from gesture_cli.data.registry import parse_dataset_opts

    spec = source if ":" in source.split("/", 1)[0] or not Path(source).expanduser().exists() else f"pose:{source}"
    opts = parse_dataset_opts(dataset_opt or [])
    given = {"allow_pickle": allow_pickle or None, "layout": layout, "texts": str(texts) if texts else None, "fps": fps}
    opts.update({k: v for k, v in given.items() if v is not None})
    ds = make_pose_dataset(spec, split=split, seed=seed or 0, **opts)
    out = write_pose_folder(ds, output, overwrite=force)
    _summary(make_console(), ds, out)


def _summary(console, ds, out: Path) -> None:
    import numpy as np
    from rich.table import Table

    fps = sorted({round(s.fps, 2) for s in ds.samples})
    table = Table(title=f"{ds.spec}: {len(ds)} samples, {ds.layout}, {ds.dims}D, {', '.join(f'{f:g}' for f in fps[:4])}{'...' if len(fps) > 4 else ''} fps")
    for col in ("split", "samples", "frames min", "mean", "max", "valid points", "with text", "with gloss"):
        table.add_column(col, justify="left" if col == "split" else "right")
    groups: dict[str, list] = {}
    for s in ds.samples:
        groups.setdefault(s.split or "-", []).append(s)
    for name in sorted(groups, key=lambda n: ("train", "val", "test", "-").index(n) if n in ("train", "val", "test", "-") else 9):
        ss = groups[name]
        frames = np.array([s.num_frames for s in ss])
        valid = sum(int(s.mask.sum()) for s in ss) / max(1, sum(s.mask.size for s in ss))
        table.add_row(name, str(len(ss)), str(frames.min()), f"{frames.mean():.1f}", str(frames.max()), f"{valid:.0%}",
                      str(sum(bool(s.text) for s in ss)), str(sum(bool(s.gloss) for s in ss)))
    console.print(table)
    if ds.skipped:
        console.print("Skipped: " + "; ".join(f"{k}: {v}" for k, v in ds.skipped.items()), highlight=False)
    console.print(f"Wrote {out}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("pose-convert", epilog=EXAMPLE)(pose_convert)
