"""Pose datasets outside a run dir: `gx pose-convert` (keypoint sequences -> a gx pose folder),
`gx pose-render` (one sample -> MP4 / PNG contact sheet) and `gx pose-view` (samples -> one HTML player).

Reading is `gesture_cli.data.pose`; drawing `gesture_cli.viz.pose_render` and `gesture_cli.viz.pose_view`.
"""

from __future__ import annotations

from pathlib import Path

from gesture_cli.core.errors import UsageError


def input_spec(source: str) -> str:
    """A file or folder -> `pose:PATH`; a pose dataset spec (`pose:PATH`, `synthetic-signs`) stays; anything else is a UsageError."""
    from gesture_cli.data.registry import list_datasets

    if Path(source).expanduser().exists():
        return f"pose:{source}"
    names = [name for name, _ in list_datasets("pose")]
    head = source.split("/", 1)[0]
    if (":" in head and head.split(":", 1)[0].strip().lower() in names) or source.strip().lower() in names:
        return source
    raise UsageError(f"INPUT '{source}': no such file or folder, and not a pose dataset spec (pose:PATH, {', '.join(n for n in names if n != 'pose')})")


def convert_poses(source: str, output: Path, *, allow_pickle: bool = False, layout: str | None = None, texts: Path | None = None,
                  fps: float | None = None, split: str | None = None, dataset_opts: list[str] | None = None, seed: int | None = None,
                  force: bool = False):
    """`gx pose-convert`: read `source` (a path or a pose spec) and write it as a gx pose folder; returns (dataset, folder written)."""
    from gesture_cli.data.pose import check_pose_outdir, make_pose_dataset, write_pose_folder
    from gesture_cli.data.registry import parse_dataset

    spec = source if ":" in source.split("/", 1)[0] or not Path(source).expanduser().exists() else f"pose:{source}"
    given = {"allow_pickle": allow_pickle or None, "layout": layout, "texts": str(texts) if texts else None, "fps": fps}
    ds_spec = parse_dataset(spec, dataset_opts or [], kind="pose")  # the flags above win over --dataset-opt
    ds_spec = parse_dataset(ds_spec, {k: v for k, v in given.items() if v is not None}, kind="pose")
    # OUTDIR is checked before reading (a large corpus takes a while) and again, with every file read, when written
    inputs = [Path(p) for p in (ds_spec.arg if ds_spec.name == "pose" else None, ds_spec.options.get("texts")) if p]
    check_pose_outdir(output, overwrite=force, inputs=inputs)
    ds = make_pose_dataset(ds_spec, split=split, seed=seed or 0)
    return ds, write_pose_folder(ds, output, overwrite=force, inputs=inputs)


def render_pose_sample(source: str, *, sample_id: str | None, output: Path | None, png: Path | None, video: Path | None,
                       split: str | None, keypoints: str | None, size: int, fps: float | None, sheet_frames: int,
                       allow_mismatch: bool, allow_pickle: bool):
    """`gx pose-render`: draw one sample of `source`; returns (dataset, viz.pose_render.render_pose's result)."""
    from gesture_cli.data.pose import make_pose_dataset
    from gesture_cli.viz.pose_render import pick_sample, render_pose, safe_name

    opts = {"allow_pickle": True} if allow_pickle else {}
    ds = make_pose_dataset(input_spec(source), split=split, **opts)
    sample = pick_sample(ds, sample_id)
    if output is None and png is None:
        output = Path(f"{safe_name(sample.id)}.mp4")
    return ds, render_pose(sample, mp4=output, png=png, video=video, parts=keypoints, size=size, fps=fps, sheet_frames=sheet_frames,
                           allow_mismatch=allow_mismatch)


def write_pose_view(source: str, *, output: Path | str | None, split: str | None, sample_ids: list[str] | None, max_samples: int,
                    max_frames: int, keypoints: str | None, allow_pickle: bool) -> dict:
    """`gx pose-view`: write one self-contained HTML player of samples of `source`; returns what the summary shows
    (dataset, samples, page size in characters, file written)."""
    from gesture_cli.core.artifacts import atomic_write_text
    from gesture_cli.core.output_paths import html_output
    from gesture_cli.data.pose import make_pose_dataset
    from gesture_cli.data.pose_extract import read_pose_confidence
    from gesture_cli.viz.pose_render import pick_sample, safe_name
    from gesture_cli.viz.pose_view import render_pose_viewer

    if max_samples < 1 or max_frames < 2:
        raise UsageError("--max-samples must be at least 1 and --max-frames at least 2")
    name = Path(source.split(":", 1)[-1]).expanduser()
    page_name = f"{safe_name(name.stem if name.suffix else name.name) or 'poses'}.html"
    # checked before reading; the page is an .html file and no pose source is one, so it never replaces an input
    out = html_output(Path(page_name) if output is None else output, default_name=page_name)
    ds = make_pose_dataset(input_spec(source), split=split, **({"allow_pickle": True} if allow_pickle else {}))
    samples = [pick_sample(ds, sid) for sid in sample_ids] if sample_ids else ds.samples[:max_samples]
    if not samples:
        raise UsageError(f"{source}: no samples{f' in split {split}' if split else ''}")
    confidences = {s.id: c for s in samples if (c := read_pose_confidence(s)) is not None}
    page = render_pose_viewer(samples, title=f"{source}: {len(samples)} of {len(ds)} sample(s)", parts=keypoints, max_frames=max_frames,
                              confidences=confidences)
    atomic_write_text(out, page)
    return {"dataset": ds, "samples": samples, "page_chars": len(page), "output": out}
