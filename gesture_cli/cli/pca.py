"""`gx pca-compute` and `gx pca-visualize`: PCA of backbone patch features over images and videos."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gesture_cli.cli.options import PrecisionOpt, argv, dataset_opt, flags, gx_command, make_console, precision_line

COMPUTE_EXAMPLE = (
    "Example: gx pca-compute --backbone dinov2-small --dataset video:data/signers --frame-stride 5 -r runs/pca   "
    "(merge two machines' runs: gx pca-compute --merge runs/a runs/b -r runs/all)"
)
VISUALIZE_EXAMPLE = "Example: gx pca-visualize --input data/signers/s01/clip3.mp4 --side-by-side -r runs/pca"

PcaDatasetOpt = Annotated[
    str | None,
    dataset_opt("video:FILE|DIR (DIR/<subject>/<clip>.mp4 or DIR/<subject>/<clip>/frame*.png), synthetic-video, or any image dataset "
                "(folder:DIR, synthetic-hands, ...)."),
]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", help="Frames per forward pass; 0 = auto (halved on CUDA out-of-memory) [default: 0].", show_default=False)]


@gx_command
def pca_compute(
    paths: Annotated[list[Path] | None, typer.Argument(help="With --merge: run dirs or pca/<backbone> folders to combine.", show_default=False)] = None,
    backbone=None,
    dataset: PcaDatasetOpt = None,
    merge: Annotated[bool, typer.Option("--merge", help="Combine the statistics of finished runs (PATHS) into one PCA in --run-dir, as if computed in one run.")] = False,
    n_components: Annotated[int | None, typer.Option("--n-components", "-k", help="Components kept [default: 10].", show_default=False)] = None,
    frame_stride: Annotated[int | None, typer.Option("--frame-stride", help="Use frames 0, s, 2s, ... of each clip [default: 1].", show_default=False)] = None,
    max_samples: Annotated[int | None, typer.Option("--max-samples", help="Cap on frames (images) in total.", show_default=False)] = None,
    image_size: Annotated[int | None, typer.Option("--image-size", help="Square input side in pixels [default: the backbone's].", show_default=False)] = None,
    foreground: Annotated[bool | None, typer.Option("--foreground/--no-foreground", help="Two passes: threshold PC1 of the first to drop background patches, then PCA of the foreground [default: off].", show_default=False)] = None,
    foreground_threshold: Annotated[float | None, typer.Option("--foreground-threshold", help="PC1 score above which a patch is foreground (with --foreground) [default: 0].", show_default=False)] = None,
    reservoir_size: Annotated[int | None, typer.Option("--reservoir-size", help="Patches sampled to set the colour ranges [default: 10000].", show_default=False)] = None,
    shard: Annotated[str | None, typer.Option("--shard", help="I/N: only clips (images) I, I+N, ...: one machine's part, merged later with --merge.", show_default=False)] = None,
    batch_size: BatchOpt = None,
    precision: PrecisionOpt = None,
    run_dir=None, device="auto", seed=None, config=None, force=False, verbose=False,
) -> None:
    """Exact streaming PCA of patch features over images and videos into pca/<backbone>/{pca.json,pca.safetensors}."""
    from gesture_cli.core.errors import UsageError
    from gesture_cli.core.rundir import RunDir

    run = RunDir(run_dir)
    console = make_console()
    if merge:
        given = [n for n, v in (("--dataset", dataset), ("--shard", shard), ("--frame-stride", frame_stride), ("--max-samples", max_samples)) if v is not None]
        if given:
            raise UsageError(f"--merge combines finished runs; it takes no {', '.join(given)}")
        from gesture_cli.tasks.pca import merge_pca

        entry = merge_pca([str(p) for p in paths or []], run, n_components=n_components, backbone=backbone, force=force, argv=argv())
        _compute_summary(console, run, entry, "merge")
        return
    if paths:
        raise UsageError(f"unexpected argument '{paths[0]}': paths are only taken with --merge (gx pca-compute --merge RUN_A RUN_B)")

    from gesture_cli.cli.progress import Bars
    from gesture_cli.core.config import resolve_config
    from gesture_cli.tasks.datasets import config_as_recorded
    from gesture_cli.tasks.pca import PCAConfig, compute_pca

    cfg = config_as_recorded(resolve_config(
        PCAConfig,
        config,
        flags(backbone=backbone, dataset=dataset, n_components=n_components, frame_stride=frame_stride, max_samples=max_samples,
              image_size=image_size, foreground=foreground, foreground_threshold=foreground_threshold, reservoir_size=reservoir_size,
              shard=shard, batch_size=batch_size, precision=precision, seed=seed),
    ))
    err = make_console(stderr=True)
    with Bars(console, unit="frames") as bars:
        entry = compute_pca(
            cfg, run, device=device, force=force, argv=argv(), on_pass=bars.start, on_progress=bars.update,
            on_backoff=lambda bs: err.print(f"CUDA out of memory: batch size lowered to {bs}"),
            on_memory=err.print if _verbose(verbose) else None,
        )
    if entry.get("rank"):  # another process of a torchrun / accelerate launch: rank 0 reports
        return
    _compute_summary(console, run, entry, f"{cfg.backbone} on {cfg.dataset}")


@gx_command
def pca_visualize(
    input: Annotated[str | None, typer.Option("--input", "-i", help="A video, an image, or a folder of them.", show_default=False)] = None,
    backbone=None,
    pca: Annotated[str | None, typer.Option("--pca", help="PCA folder or run dir to use [default: pca/<backbone> of --run-dir, or its only PCA].", show_default=False)] = None,
    start_component: Annotated[int | None, typer.Option("--start-component", help="First component shown [default: 0].", show_default=False)] = None,
    n_components: Annotated[int | None, typer.Option("--n-components", "-k", help="1 grey, 2 red+green, 3 RGB [default: 3].", show_default=False)] = None,
    side_by_side: Annotated[bool | None, typer.Option("--side-by-side/--features-only", help="Input | features next to each other [default: features only].", show_default=False)] = None,
    upsample: Annotated[str | None, typer.Option("--upsample", help="nearest | bilinear [default: bilinear].", show_default=False)] = None,
    fps: Annotated[float | None, typer.Option("--fps", help="Output frame rate [default: the input's, divided by --frame-stride].", show_default=False)] = None,
    contact_frame: Annotated[int | None, typer.Option("--contact-frame", help="Input frame for the contact sheet of PC 0-2, 3-5, 6-8 [default: the middle one].", show_default=False)] = None,
    frame_stride: Annotated[int | None, typer.Option("--frame-stride", help="Render frames 0, s, 2s, ... [default: 1: every frame].", show_default=False)] = None,
    max_frames: Annotated[int | None, typer.Option("--max-frames", help="Cap on frames rendered per input.", show_default=False)] = None,
    mask_background: Annotated[bool | None, typer.Option("--mask-background/--no-mask-background", help="Black out background patches of a --foreground PCA [default: on].", show_default=False)] = None,
    batch_size: BatchOpt = None,
    precision: PrecisionOpt = None,
    run_dir=None, device="auto", config=None, force=False, verbose=False,
) -> None:
    """Render PCA components of patch features as colour videos / images into pca/<backbone>/renders/."""
    from gesture_cli.cli.progress import Bars
    from gesture_cli.core.config import resolve_config
    from gesture_cli.core.rundir import RunDir
    from gesture_cli.tasks.pca_visualize import VisualizeConfig, render_pca

    cfg = resolve_config(
        VisualizeConfig,
        config,
        flags(input=input, backbone=backbone, pca=pca, start_component=start_component, n_components=n_components,
              side_by_side=side_by_side, upsample=upsample, fps=fps, contact_frame=contact_frame, frame_stride=frame_stride,
              max_frames=max_frames, mask_background=mask_background, batch_size=batch_size, precision=precision),
    )
    run = RunDir(run_dir)
    console = make_console()
    err = make_console(stderr=True)
    with Bars(console, unit="frames") as bars:
        entry = render_pca(
            cfg, run, device=device, force=force, argv=argv(), on_input=bars.start, on_progress=bars.update,
            on_backoff=lambda bs: err.print(f"CUDA out of memory: batch size lowered to {bs}"),
            on_memory=err.print if _verbose(verbose) else None, notify=precision_line(console),
        )
    if entry.get("cached"):
        console.print(f"[dim]pca-visualize: cached renders of {cfg.input} (use --force to re-render)[/]")
        return
    console.print(f"PCA renders with {entry['pca']}{' (background masked)' if entry['masked'] else ''}:")
    for r in entry["renders"]:
        frames = f"{r['frames']} of {r['input_frames']}" if r["frames"] != r["input_frames"] else str(r["frames"])
        console.print(f"  {Path(r['input']).name}: {frames} frame(s) at {r['fps']:g} fps -> {r['render']}")
        console.print(f"  contact sheet of frame {r['contact_frame']} -> {r['contact_sheet']}")
        for w in r["warnings"]:
            err.print(f"[yellow]warning:[/] {w}")
    console.print(f"Wrote {run.root / Path(entry['renders'][0]['render']).parent}")


def _verbose(flag: bool) -> bool:
    from gesture_cli.cli.options import _debug_requested

    return _debug_requested({"verbose": flag})


def _compute_summary(console, run, entry: dict, what: str) -> None:
    if entry.get("cached"):
        console.print(f"[dim]pca-compute: cached result for {what} (use --force to recompute)[/]")
        return
    from rich.table import Table

    info = entry["pca"]
    out = entry["outputs"][0]
    fg = info.get("foreground")
    title = (
        f"{out}  ({info['model_name']}, {info['embed_dim']}-d, {info['grid_size']}x{info['grid_size']} patches of {info['patch_size']} px"
        f"{', foreground only' if fg else ''})"
    )
    table = Table(title=title)
    table.add_column("PC", justify="right")
    table.add_column("explained variance", justify="right")
    table.add_column("cumulative", justify="right")
    table.add_column("colour range (p1..p99)", justify="right")
    for i, (r, c) in enumerate(zip(info["explained_variance_ratio"], info["cumulative_explained_variance"], strict=True)):
        lo_hi = info["ranges"][i] if info.get("ranges") else None
        table.add_row(str(i), f"{r:.2%}", f"{c:.2%}", f"{lo_hi[0]:.3g} .. {lo_hi[1]:.3g}" if lo_hi else "-")
    console.print(table)
    line = (
        f"{info['total_frames']} frames, {info['total_patches']:,} patches, {info['unique_subjects']} subjects, "
        f"{info['unique_clips']} clips"
    )
    if info.get("merged_from"):
        line += f", merged from {len(info['merged_from'])} runs"
    if fg:
        line += f"; foreground: {fg['kept_fraction']:.0%} of patches above PC1 threshold {fg['threshold']:g}"
    if info.get("frames_per_s"):
        line += f"; {info['frames_per_s']:.1f} frames/s on {info['device']} ({info['dtype']})"
    console.print(line)
    err = make_console(stderr=True)
    for w in info.get("warnings", []):
        err.print(f"[yellow]warning:[/] {w}")
    console.print(f"Wrote {run.root / out}")


def register(app: typer.Typer) -> None:
    app.command("pca-compute", epilog=COMPUTE_EXAMPLE)(pca_compute)
    app.command("pca-visualize", epilog=VISUALIZE_EXAMPLE)(pca_visualize)
