"""`gx pose-render`: draw a pose sequence (skeleton over black or over its source video) to MP4 and/or PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gesture_cli.cli.options import gx_command, make_console

EXAMPLE = (
    "Example: gx pose-render clip.pose -o clip.mp4 --png clip.png   |   gx pose-render clip.pose --video clip_color.mp4 -o overlay.mp4   |   "
    "gx pose-render data/signs-gx --sample-id test-00003 --png sheet.png   |   gx pose-render synthetic-signs --sample-id train-00000 -o s.mp4"
)


@gx_command
def pose_render(
    source: Annotated[str, typer.Argument(metavar="INPUT", help="A .pose file, a gx pose folder, an OpenPose JSON folder, a Kaggle .parquet, ... or a pose spec: pose:PATH, synthetic-signs.", show_default=False)],
    sample_id: Annotated[str | None, typer.Option("--sample-id", "-s", help="Which sample, when INPUT holds several (a gx pose folder, OpenPose clips, synthetic-signs).", show_default=False)] = None,
    # path_type=str (-o, --png): the text as typed, so that a trailing / (a folder, made if it is not there) survives
    output: Annotated[Path | None, typer.Option("--output", "-o", help="MP4 file to write (or a folder: <sample-id>.mp4 in it) [default: <sample-id>.mp4 here when no --png].", show_default=False, path_type=str)] = None,
    png: Annotated[Path | None, typer.Option("--png", help="PNG contact sheet of --sheet-frames evenly spaced frames (or a folder: <sample-id>.png in it).", show_default=False, path_type=str)] = None,
    video: Annotated[Path | None, typer.Option("--video", help="Draw over this video's frames (the recording the pose was extracted from) instead of black.", show_default=False)] = None,
    split: Annotated[str | None, typer.Option("--split", help="Load only this split: train | val | test (faster for synthetic-signs) [default: all samples].", show_default=False)] = None,
    keypoints: Annotated[str | None, typer.Option("--keypoints", help="Parts to draw: body, legs, hands, left-hand, right-hand, face, face-lite, all [default: body,hands,face].", show_default=False)] = None,
    size: Annotated[int, typer.Option("--size", help="Longer side of the output in pixels (a video is never enlarged).")] = 640,
    fps: Annotated[float | None, typer.Option("--fps", help="Frame rate of the MP4 [default: the pose's own].", show_default=False)] = None,
    sheet_frames: Annotated[int, typer.Option("--sheet-frames", help="Frames on the PNG contact sheet.")] = 8,
    allow_mismatch: Annotated[bool, typer.Option("--allow-mismatch", help="Draw over a --video whose frame count differs from the pose's (the frames both have).")] = False,
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Read pickle files (they can run arbitrary code: only for files you trust).")] = False,
    verbose=False,
) -> None:
    """Draw a pose sequence as a skeleton (masked points are left out) to an MP4 video and/or a PNG contact sheet.

    Over black, a .pose file keeps its recorded frame (width x height from its header); other formats
    are framed around the drawn points. With --video the skeleton is drawn over the video's frames,
    which must match the pose frame for frame.
    """
    from gesture_cli.tasks.pose import render_pose_sample

    ds, res = render_pose_sample(source, sample_id=sample_id, output=output, png=png, video=video, split=split, keypoints=keypoints, size=size,
                                 fps=fps, sheet_frames=sheet_frames, allow_mismatch=allow_mismatch, allow_pickle=allow_pickle)
    console, err = make_console(), make_console(stderr=True)
    if ds.skipped:  # what INPUT held that was not read (a label table that cannot be read, ...)
        err.print("Skipped: " + "; ".join(f"{k}: {v}" for k, v in ds.skipped.items()), markup=False, highlight=False)
    for w in res["warnings"]:
        err.print(f"[yellow]warning:[/] {w}")
    w, h = res["size"]
    over = f"over {res['video']}" if res["video"] else f"over black, {res['framing']}"
    console.print(f"{res['sample']}: {res['frames']} frames at {res['fps']:g} fps, {res['layout']} ({', '.join(res['parts'])}), {w}x{h} {over}")
    for key in ("mp4", "png"):
        if res[key]:
            console.print(f"Wrote {res[key]}")


def register(app: typer.Typer) -> None:
    app.command("pose-render", epilog=EXAMPLE)(pose_render)
