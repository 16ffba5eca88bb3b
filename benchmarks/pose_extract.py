"""Pose extraction: `gx pose-extract` with 1 and 2 worker processes against pose-format's load_holistic, same videos.

Baseline: what pose-format's `video_to_pose` does per video, one after the other in one process:
read the frames (simple_video_utils.read_frames_exact, RGB), `load_holistic(...)` with its defaults
(pooled graphs), write the .pose. gx: `extract_poses` on the same videos (content hashing, resume
records, atomic writes included); with 1 worker in this process, with 2 in spawned worker processes,
whose start (Python + MediaPipe imports, ~1.5 s each) is inside the timed region. MediaPipe is
imported before any timing, so the baseline and the in-process run start warm alike.

Videos: the two real clips of the shared data (AUTSL 43 frames 512x512, pose-format's test video
58 frames 540x720), each copied --copies times under a new name (a copy is a separate video to both
routes), so the pool has enough work to amortise its start.

Usage: python benchmarks/pose_extract.py [--copies 6] [--data /work/shared/data/real]
Targets (issue 17): gx >= 0.95x the baseline with 1 worker, >= 1.8x with 2 workers on 2 cores.
The machine may be shared: the load average before and after each run is printed; compare ratios of one run.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_ONE, TARGET_TWO = 0.95, 1.8
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
CLIPS = ("sign_pose/autsl/signer0_sample1000_color.mp4", "video/pose_format_test_video.mp4")


def baseline(videos: list[Path], out: Path) -> tuple[float, int]:
    """pose-format's video_to_pose route, sequentially: (seconds, frames)."""
    from pose_format.utils.holistic import load_holistic
    from simple_video_utils.frames import read_frames_exact
    from simple_video_utils.metadata import video_metadata

    out.mkdir(parents=True, exist_ok=True)
    frames_total, t0 = 0, time.perf_counter()
    for v in videos:
        meta = video_metadata(str(v))
        frames = read_frames_exact(str(v))
        pose = load_holistic(frames, fps=meta.fps, width=meta.width, height=meta.height, additional_holistic_config={"model_complexity": 1})
        buf = io.BytesIO()
        pose.write(buf)
        (out / f"{v.stem}.pose").write_bytes(buf.getvalue())
        frames_total += pose.body.data.shape[0]
    return time.perf_counter() - t0, frames_total


def gx_route(videos_dir: Path, out: Path, workers: int) -> tuple[float, int]:
    from gesture_cli.data.pose_extract import ExtractConfig, collect_videos, extract_poses

    jobs = collect_videos([videos_dir])
    t0 = time.perf_counter()
    report = extract_poses(jobs, out, ExtractConfig(), workers=workers)
    dt = time.perf_counter() - t0
    if report.failed:
        raise SystemExit(f"gx failed on {report.failed[0].video}: {report.failed[0].error}")
    return dt, report.frames_done


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the pool's workers)."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=6, help="copies of each real clip (2 clips)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared real data folder")
    args = ap.parse_args()
    clips = [args.data / c for c in CLIPS]
    if not all(c.is_file() for c in clips):
        raise SystemExit(f"real clips not found under {args.data} (--data)")
    import pose_format.utils.holistic  # noqa: F401  (MediaPipe imported before any timing)

    with tempfile.TemporaryDirectory() as tmp:
        vdir = Path(tmp) / "videos"
        vdir.mkdir()
        videos = []
        for i in range(args.copies):
            for c in clips:
                videos.append(vdir / f"{c.stem}-{i}.mp4")
                shutil.copy(c, videos[-1])
        rows = []
        for name, fn in (("pose-format load_holistic, sequential", lambda: baseline(videos, Path(tmp) / "base")),
                         ("gx pose-extract, 1 worker", lambda: gx_route(vdir, Path(tmp) / "gx1", 1)),
                         ("gx pose-extract, 2 workers", lambda: gx_route(vdir, Path(tmp) / "gx2", 2))):
            load0, cpu0 = os.getloadavg()[0], cpu_seconds()
            dt, frames = fn()
            rows.append((name, dt, frames, load0, os.getloadavg()[0], cpu_seconds() - cpu0))
    base = rows[0][2] / rows[0][1]
    print(f"{len(videos)} videos, {rows[0][2]} frames; {os.cpu_count()} cores")
    # CPU seconds do not depend on how busy the machine is: the work each route does per frame
    print(f"{'route':40s} {'seconds':>8s} {'frames/s':>9s} {'ratio':>6s} {'cpu s':>7s} {'cpu ms/frame':>12s}  load avg before/after")
    for name, dt, frames, l0, l1, cpu in rows:
        print(f"{name:40s} {dt:8.1f} {frames / dt:9.1f} {frames / dt / base:6.2f} {cpu:7.1f} {1000 * cpu / frames:12.1f}  {l0:.1f}/{l1:.1f}")
    one, two = rows[1][2] / rows[1][1] / base, rows[2][2] / rows[2][1] / base
    print(f"1 worker: {one:.2f}x (target >= {TARGET_ONE}x) {'ok' if one >= TARGET_ONE else 'MISSED'}; "
          f"2 workers: {two:.2f}x (target >= {TARGET_TWO}x) {'ok' if two >= TARGET_TWO else 'MISSED'}")


if __name__ == "__main__":
    main()
