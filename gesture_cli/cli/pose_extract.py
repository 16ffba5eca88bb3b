"""`gx pose-extract`: signing videos -> .pose files (MediaPipe Holistic, a process pool, resumable);
`gx pose-view`: a pose file or dataset -> one self-contained HTML player."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from gesture_cli.cli.options import gx_command, make_console

EXAMPLE = (
    "Example: gx pose-extract videos/ -o poses   |   gx pose-extract how2sign/train.csv -o data/h2s-poses --workers 8 --fps 15   |   "
    "gx pose-extract clip.mp4 -o poses --components body,hands --max-frames 300"
)
VIEW_EXAMPLE = "Example: gx pose-view poses/clip.pose -o clip.html   |   gx pose-view poses --max-samples 20 -o poses.html   |   gx pose-view synthetic-signs --split test"
SHOW_ROWS = 30  # videos listed one per row in the summary; more are summed up


@gx_command
def pose_extract(
    inputs: Annotated[list[Path], typer.Argument(metavar="INPUT", help="Videos, folders (searched recursively) or CSV/TSV tables of video paths with their texts (a name/path column and text, gloss, split, signer columns).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the .pose files (and labels.csv when the inputs have texts); a rerun continues in it.", show_default=False)],
    workers: Annotated[int | None, typer.Option("--workers", "-j", help="Videos extracted at once, one process each; 0 means the number of cores [default: the number of cores].", show_default=False)] = None,
    model_complexity: Annotated[int, typer.Option("--model-complexity", help="Holistic pose landmark model: 0 lite, 1 full, 2 heavy (the wheel ships only 1).")] = 1,
    refine_face: Annotated[bool, typer.Option("--refine-face", help="Refined face mesh: 478 points with the irises instead of 468.")] = False,
    components: Annotated[str | None, typer.Option("--components", help="Components to keep: body, face, left-hand, right-hand, body-world, hands, all [default: all, as pose-format].", show_default=False)] = None,
    fps: Annotated[float | None, typer.Option("--fps", help="Subsample to about this frame rate (frames are dropped, never repeated) [default: every frame].", show_default=False)] = None,
    max_frames: Annotated[int | None, typer.Option("--max-frames", help="At most this many frames per video, from its start [default: all].", show_default=False)] = None,
    static: Annotated[bool, typer.Option("--static", help="Detect in every frame on its own (static_image_mode) instead of tracking between frames.")] = False,
    min_detection_confidence: Annotated[float, typer.Option("--min-detection-confidence", help="Holistic's threshold for a person/hand/face detection.")] = 0.5,
    min_tracking_confidence: Annotated[float, typer.Option("--min-tracking-confidence", help="Holistic's threshold below which tracking falls back to detection.")] = 0.5,
    force: Annotated[bool, typer.Option("--force", help="Extract again the videos an earlier run finished.")] = False,
    verbose=False,
) -> None:
    """Extract MediaPipe Holistic keypoints from signing videos into pose-format .pose files, many videos at once.

    Each .pose holds pose-format's standard Holistic components (body 33, face 468, hands 21 + 21, body
    world 33 points) with the video's frame rate and size, exactly as pose-format's load_holistic
    computes them; frames without a person have confidence 0 (masked). With texts, OUTDIR is a pose
    dataset: gx pose-pretrain --dataset pose:OUTDIR. A finished video is skipped on a rerun (by the
    content of the video and the settings); a broken one is reported and the others go on; the exit
    code is 1 when any video failed. Needs the holistic extra: pip install 'gesture-cli[holistic]'.
    """
    from gesture_cli.tasks.pose_extract import extract_pose_videos

    console = make_console()
    with _ExtractProgress(console) as bar:
        report = extract_pose_videos(inputs, output, model_complexity=model_complexity, refine_face=refine_face, components=components, fps=fps,
                                     max_frames=max_frames, static=static, min_detection_confidence=min_detection_confidence,
                                     min_tracking_confidence=min_tracking_confidence, workers=workers, force=force, quiet=not verbose,
                                     on_start=bar.start, on_frames=bar.frames, on_video=bar.video)
    _summary(console, report)


class _ExtractProgress:
    """One bar: videos done of all, frames and frames/s; on a non-terminal, a line every 10 seconds."""

    def __init__(self, console, every_s: float = 10.0):
        self.console, self.every_s = console, every_s
        self.total = self.done = self.nframes = 0
        self.t0 = self.last = time.perf_counter()
        self.progress = self.task = None

    def start(self, todo: int, skipped: int) -> None:
        self.total, self.t0 = todo, time.perf_counter()
        self.last = self.t0
        if skipped:
            self.console.print(f"{skipped} video(s) already extracted by an earlier run: skipped (--force extracts them again)", highlight=False)
        if self.console.is_terminal and todo:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("[bold]pose-extract"), BarColumn(), MofNCompleteColumn(), TextColumn("videos, {task.fields[rate]}"),
                                     TimeElapsedColumn(), TimeRemainingColumn(), console=self.console)
            self.progress.start()
            self.task = self.progress.add_task("pose-extract", total=todo, rate="")

    def _rate(self) -> str:
        dt = time.perf_counter() - self.t0
        return f"{self.nframes:,} frames, {self.nframes / dt:,.1f} frames/s" if dt > 0 else ""

    def _tick(self, final: bool = False) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=self.done, rate=self._rate())
        elif self.total and (final or time.perf_counter() - self.last >= self.every_s):
            self.last = time.perf_counter()
            self.console.print(f"pose-extract: {self.done}/{self.total} videos, {self._rate()}", highlight=False)

    def frames(self, n: int) -> None:
        self.nframes += n
        self._tick()

    def video(self, result) -> None:
        if result.status == "skipped":
            return
        self.done += 1
        self._tick(final=self.done == self.total)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()


def _summary(console, report) -> None:
    from rich.markup import escape
    from rich.table import Table

    from gesture_cli.core.errors import DataError
    from gesture_cli.tasks.pose_extract import DETECTED

    ok = [r for r in report.results if r.status != "failed"]
    table = Table(title=f"pose-extract: {report.count('done')} extracted, {report.count('skipped')} already done, {report.count('failed')} failed; "
                        f"{report.workers} worker(s), mediapipe {report.versions.get('mediapipe')}")
    for col in ("video", "status", "frames", *DETECTED, "time s"):
        table.add_column(col, justify="left" if col in ("video", "status") else "right")

    def rates(rs) -> list[str]:
        n = sum(r.frames for r in rs)
        return [f"{sum(r.detected.get(c, 0) for r in rs) / n:.0%}" if n and any(c in r.detected for r in rs) else "-" for c in DETECTED]

    for r in report.results[:SHOW_ROWS]:
        if r.status == "failed":
            table.add_row(escape(r.id), "[red]failed[/]", "-", *("-" for _ in DETECTED), "-")
        else:
            table.add_row(escape(r.id), r.status, str(r.frames), *rates([r]), f"{r.seconds:.1f}")
    if len(report.results) > SHOW_ROWS:
        table.add_row(f"... {len(report.results) - SHOW_ROWS} more", "", "", *("" for _ in DETECTED), "")
    done = [r for r in report.results if r.status == "done"]
    rate = f"{report.frames_done / report.seconds:.1f} frames/s" if report.seconds > 0 and done else ""
    table.add_row("[bold]all[/]", f"{len(ok)}/{len(report.results)} ok", str(sum(r.frames for r in ok)), *rates(ok), f"{report.seconds:.1f}",
                  end_section=True)
    console.print(table)
    if rate:
        console.print(f"{report.frames_done:,} frames extracted in {report.seconds:.1f} s ({rate}, {report.workers} worker(s))", highlight=False)
    lines = [r.error if r.error.startswith(r.video) else f"{r.video}: {r.error}" for r in report.failed]
    for line in lines:
        console.print(f"[red]failed[/] {escape(line)}", highlight=False)
    if ok:
        console.print(f"Wrote {report.out_dir}" + (f" (labels: {report.labels.name}; train with --dataset pose:{report.out_dir})" if report.labels else ""),
                      highlight=False, markup=False)
    if len(lines) == 1:
        raise DataError(lines[0] + (f" ({len(ok)} other video(s) extracted)" if ok else ""))
    if lines:
        raise DataError(f"{len(lines)} of {len(report.results)} videos failed (listed above); first: {lines[0]}")


@gx_command
def pose_view(
    source: Annotated[str, typer.Argument(metavar="FILE|DATASET", help="A .pose file, a folder of them (e.g. a pose-extract OUTDIR), a gx pose folder, or a pose spec: pose:PATH, synthetic-signs.", show_default=False)],
    # path_type=str: the text as typed, so that a trailing / (a folder, made if it is not there) survives
    output: Annotated[Path | None, typer.Option("--output", "-o", help="HTML file to write [default: <name>.html here].", show_default=False, path_type=str)] = None,
    split: Annotated[str | None, typer.Option("--split", help="Only this split: train | val | test [default: all samples].", show_default=False)] = None,
    sample_id: Annotated[list[str] | None, typer.Option("--sample-id", "-s", help="Show these samples (repeatable) [default: the first --max-samples].", show_default=False)] = None,
    max_samples: Annotated[int, typer.Option("--max-samples", help="Samples in the page at most (a menu picks one); each adds ~0.1-1 MB.")] = 20,
    max_frames: Annotated[int, typer.Option("--max-frames", help="Frames per sample at most; longer ones are shown at evenly spaced frames.")] = 600,
    keypoints: Annotated[str | None, typer.Option("--keypoints", help="Parts to draw: body, legs, hands, face, face-lite, all [default: body,hands,face].", show_default=False)] = None,
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Read pickle files (they can run arbitrary code: only for files you trust).")] = False,
    verbose=False,
) -> None:
    """Write one self-contained HTML page that plays pose sequences: play/pause, frame slider, speed, part toggles, confidence shading, text and gloss.

    The page has its data and its script inline and fetches nothing, so it can be mailed or opened
    offline. gx report shows the same player for the pose datasets and translation samples of a run.
    """
    from gesture_cli.tasks.pose import write_pose_view

    res = write_pose_view(source, output=output, split=split, sample_ids=sample_id, max_samples=max_samples, max_frames=max_frames,
                          keypoints=keypoints, allow_pickle=allow_pickle)
    ds, samples, out = res["dataset"], res["samples"], res["output"]
    console = make_console()
    more = f" (the first {len(samples)}; --max-samples shows more)" if not sample_id and len(ds) > len(samples) else ""
    console.print(f"{len(samples)} sample(s){more}, {ds.layout}, {sum(s.num_frames for s in samples):,} frames, "
                  f"{res['page_chars'] / 1e6:.1f} MB", highlight=False)
    console.print(f"Wrote {out}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("pose-extract", epilog=EXAMPLE)(pose_extract)
    app.command("pose-view", epilog=VIEW_EXAMPLE)(pose_view)
