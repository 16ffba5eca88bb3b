"""`gx pose-extract`: signing videos -> pose-format .pose files (MediaPipe Holistic, a process pool, resumable).

The extraction itself is `gesture_cli.data.pose_extract`; this module turns the command's settings into
its config and runs it over the collected videos.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from gesture_cli.core.errors import UsageError
from gesture_cli.data.pose_extract import DETECTED

__all__ = ["DETECTED", "default_workers", "extract_pose_videos"]


def default_workers() -> int:
    """Videos extracted at once by default: the cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def extract_pose_videos(inputs: list[Path], output: Path, *, model_complexity: int, refine_face: bool, components: str | None,
                        fps: float | None, max_frames: int | None, static: bool, min_detection_confidence: float,
                        min_tracking_confidence: float, workers: int | None, force: bool, quiet: bool,
                        on_start: Callable, on_frames: Callable, on_video: Callable):
    """Extract every video of `inputs` (files, folders, CSV/TSV tables) into `output`; returns the extraction report."""
    from gesture_cli.data.pose_extract import (
        TABLE_SUFFIXES,
        ExtractConfig,
        check_labels_writable,
        collect_videos,
        extract_poses,
        parse_components,
    )

    if workers is not None and workers < 0:  # checked before the inputs are read: 0 is the default, the number of cores
        raise UsageError(f"--workers must be 0 (the number of cores) or more; got {workers}")
    cfg = ExtractConfig(model_complexity=model_complexity, refine_face=refine_face, components=parse_components(components), fps=fps,
                        max_frames=max_frames, static=static, min_detection_confidence=min_detection_confidence,
                        min_tracking_confidence=min_tracking_confidence)
    # before any video is read: OUTDIR/labels.csv, which the run rewrites, must not be an input table or one gx did not write
    check_labels_writable(output, [p for p in inputs if Path(p).suffix.lower() in TABLE_SUFFIXES])
    jobs = collect_videos(list(inputs))
    return extract_poses(jobs, output, cfg, workers=workers or default_workers(), force=force,
                         on_start=on_start, on_frames=on_frames, on_video=on_video, quiet=quiet)

