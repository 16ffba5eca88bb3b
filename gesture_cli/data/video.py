"""Frames of videos, frame folders and image datasets, one at a time: `FrameSource` and `video:FILE|DIR`.

Patch-feature PCA (`gx pca-compute`) needs every frame with where it came from, but never all of
them at once. A `FrameSource` yields `(frame, FrameMeta)` pairs, frame a uint8 HxWx3 RGB array:

    src = make_frame_source("video:data/signers", seed=0)
    src.count(stride=5)                                   # frames iter_frames would yield (header counts)
    for frame, meta in src.iter_frames(stride=5, max_frames=1000):
        meta.subject, meta.clip, meta.frame_index          # "signer03", "signer03/clip07", 35

Layouts read by `video:DIR` (a clip's subject is the first folder below DIR that holds it, or DIR's
own name for clips directly in DIR):

    DIR/<subject>/<clip>.mp4                 one clip per video file (.mp4 .avi .mov .mkv .webm .m4v ...)
    DIR/<subject>/<clip>/frame_0001.png      one clip per folder of frame images (natural sort order)
    DIR/<clip>.mp4, DIR/*.png                flat: every video is a clip; a folder of images is one clip

`video:FILE` is one clip. Any other dataset spec that `make_dataset` accepts (`synthetic-hands`,
`folder:DIR`, ...) becomes a frame source through `DatasetFrames`: every image of every split is a
one-frame clip whose subject is its class name. Frame sources are the registry's kind "frames"
(`@register_dataset(name, kind="frames")`): `video:` here, `synthetic-video` in data/synthetic_video.py.

Stride is applied per clip (frames 0, s, 2s, ... of each clip; `frame_index` keeps the clip's own
numbering); `max_frames` caps the total. Videos are read with cv2.VideoCapture and converted to RGB.
A video that yields no frame is a DataError naming the file; one that ends before its header's frame
count (truncated, corrupt) keeps the frames it gave and is reported in `warnings`.

Registered datasets: `video:FILE|DIR` (an `ImageDataset` of frames, label = subject, split `all`,
decoded lazily: usable by `gx extract-features`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from gesture_cli.core.errors import DataError, UsageError
from gesture_cli.data.images import IMAGE_EXTENSIONS, ImageDataset, decode_image, to_rgb
from gesture_cli.data.registry import DatasetSpec, dataset_sources, make_dataset, parse_dataset, parse_spec, register_dataset

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".gif"})
_LAYOUT_HELP = "expected DIR/<subject>/<clip>.mp4, DIR/<subject>/<clip>/frame*.png, or videos / images directly in DIR"


@dataclass(frozen=True)
class FrameMeta:
    subject: str  # who: the folder holding the clip (video:), the class name (image datasets)
    clip: str  # which clip: its path below the dataset root without suffix, unique within a source
    frame_index: int  # position of the frame in its clip, before any stride


@runtime_checkable
class FrameSource(Protocol):
    """Anything that yields RGB frames with their (subject, clip, frame_index)."""

    spec: str  # the dataset spec it was built from
    source_files: list[Path]  # files/dirs read (fingerprinted for the step's cache key)
    cache_token: str  # changes when a generator or its parameters change
    warnings: list[str]  # filled while iterating: short reads and other non-fatal problems

    def iter_frames(self, stride: int = 1, max_frames: int | None = None) -> Iterator[tuple[np.ndarray, FrameMeta]]: ...

    def count(self, stride: int = 1, max_frames: int | None = None) -> int | None:
        """Frames iter_frames would yield (from headers for videos; None when a header has no count)."""
        ...

    def shard(self, index: int, count: int) -> FrameSource:
        """Part `index` of `count` disjoint parts (for runs on several machines, merged afterwards)."""
        ...


# ----------------------------------------------------------------------------------------------
# Reading one video file
# ----------------------------------------------------------------------------------------------


def _cv2():
    # FFmpeg prints decoder chatter ("Invalid NAL unit size", "moov atom not found") straight to
    # stderr; gx reports the problem itself as one line. Read at the first capture: set it before.
    # Set OPENCV_FFMPEG_LOGLEVEL yourself (e.g. 32) to see FFmpeg's messages.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    import cv2

    return cv2


@dataclass(frozen=True)
class VideoInfo:
    frames: int  # frame count from the container header (0 when unknown); may exceed what decodes
    fps: float  # frames per second from the header (0.0 when unknown)
    width: int
    height: int


def open_video(path: Path):
    """An opened cv2.VideoCapture, or a DataError naming the file."""
    cv2 = _cv2()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such video file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file, not a readable video")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise DataError(f"{path}: not a readable video (no decodable stream: corrupt, truncated or unsupported format)")
    return cap


def video_info(path: Path) -> VideoInfo:
    cv2 = _cv2()
    cap = open_video(path)
    try:
        frames = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        fps = cap.get(cv2.CAP_PROP_FPS)
        return VideoInfo(
            frames=int(frames) if np.isfinite(frames) and frames > 0 else 0,
            fps=float(fps) if np.isfinite(fps) and fps > 0 else 0.0,
            width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
    finally:
        cap.release()


def read_video(path: Path, *, stride: int = 1, max_frames: int | None = None, warnings: list[str] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (frame index, uint8 HxWx3 RGB) for frames 0, stride, 2*stride, ... of a video file.

    Skipped frames are only grabbed (demuxed and decoded, not converted), which is cheaper than
    seeking for small strides. No decodable frame at all -> DataError; fewer frames than the header
    promises -> a line in `warnings` ("read 23 of 58 frames") and the frames read are kept.
    """
    cv2 = _cv2()
    path = Path(path)
    cap = open_video(path)
    header = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    header = int(header) if np.isfinite(header) and header > 0 else 0
    read = yielded = 0
    stopped_early = False
    try:
        while True:
            if max_frames is not None and yielded >= max_frames:
                stopped_early = True
                break
            if read % stride:
                ok = cap.grab()
                frame = None
            else:
                ok, frame = cap.read()
                ok = ok and frame is not None
            if not ok:
                break
            if frame is not None:
                if frame.ndim == 2:
                    frame = to_rgb(frame)
                elif frame.shape[2] == 4:
                    frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
                else:
                    frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                yield read, frame
                yielded += 1
            read += 1
    finally:
        cap.release()
    if read == 0:
        raise DataError(f"{path}: not a readable video (0 frames decoded{f' of {header} in its header' if header else ''}: corrupt or truncated)")
    if not stopped_early and header and read < header and warnings is not None:
        warnings.append(f"{path}: read {read} of {header} frames (truncated or corrupt); kept the {read} frames read")


def natural_key(name: str) -> list:
    """'frame10.png' sorts after 'frame9.png'."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


# ----------------------------------------------------------------------------------------------
# Clips
# ----------------------------------------------------------------------------------------------


@dataclass
class VideoClip:
    path: Path
    subject: str
    clip: str

    def count(self, stride: int) -> int | None:
        n = video_info(self.path).frames  # opens the file: an unreadable video fails here, early
        return -(-n // stride) if n else None

    def frames(self, stride: int, max_frames: int | None, warnings: list[str]) -> Iterator[tuple[int, np.ndarray]]:
        return read_video(self.path, stride=stride, max_frames=max_frames, warnings=warnings)


@dataclass
class FrameFolderClip:
    files: list[Path]  # frame images in natural sort order
    subject: str
    clip: str

    def count(self, stride: int) -> int:
        return -(-len(self.files) // stride)

    def frames(self, stride: int, max_frames: int | None, warnings: list[str]) -> Iterator[tuple[int, np.ndarray]]:
        for n, i in enumerate(range(0, len(self.files), stride)):
            if max_frames is not None and n >= max_frames:
                return
            yield i, to_rgb(decode_image(self.files[i]))


@dataclass
class ArrayClip:
    """Frames held in memory (synthetic data): uint8 [T, H, W, 3] RGB."""

    array: np.ndarray
    subject: str
    clip: str

    def count(self, stride: int) -> int:
        return -(-len(self.array) // stride)

    def frames(self, stride: int, max_frames: int | None, warnings: list[str]) -> Iterator[tuple[int, np.ndarray]]:
        for n, i in enumerate(range(0, len(self.array), stride)):
            if max_frames is not None and n >= max_frames:
                return
            yield i, self.array[i]


@dataclass
class ClipFrames:
    """A FrameSource over a list of clips (video files, frame folders or in-memory arrays)."""

    spec: str
    clips: list
    source_files: list[Path] = field(default_factory=list)
    cache_token: str = ""
    warnings: list[str] = field(default_factory=list)

    def shard(self, index: int, count: int) -> ClipFrames:
        """Every `count`-th clip starting at `index`: disjoint parts for different machines, merged later."""
        return replace(self, clips=self.clips[index::count], warnings=[])

    def count(self, stride: int = 1, max_frames: int | None = None) -> int | None:
        counts = [c.count(stride) for c in self.clips]
        if None in counts:  # a video whose header has no frame count: known only after reading it
            return max_frames
        return sum(counts) if max_frames is None else min(sum(counts), max_frames)

    def iter_frames(self, stride: int = 1, max_frames: int | None = None) -> Iterator[tuple[np.ndarray, FrameMeta]]:
        _check_stride(stride, max_frames)
        left = max_frames
        for clip in self.clips:
            if left is not None and left <= 0:
                return
            for index, frame in clip.frames(stride, left, self.warnings):
                yield frame, FrameMeta(clip.subject, clip.clip, index)
                if left is not None:
                    left -= 1


def _check_stride(stride: int, max_frames: int | None) -> None:
    if stride < 1:
        raise UsageError(f"--frame-stride must be at least 1; got {stride}")
    if max_frames is not None and max_frames < 1:
        raise UsageError(f"--max-samples must be at least 1; got {max_frames}")


def scan_clips(root: Path) -> list:
    """The clips under a `video:` path (a file, or a DIR laid out as in the module docstring)."""
    root = Path(root).expanduser()
    if root.is_file():
        if root.suffix.lower() not in VIDEO_EXTENSIONS:
            raise DataError(f"{root}: not a video file (suffix {root.suffix or 'none'}; expected one of {', '.join(sorted(VIDEO_EXTENSIONS))})")
        return [VideoClip(root, subject=root.parent.name or "video", clip=root.stem)]
    if not root.is_dir():
        raise DataError(f"{root}: no such file or directory (video:FILE|DIR: {_LAYOUT_HELP})")
    clips: list = []
    for folder, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted((d for d in dirnames if not d.startswith(".")), key=natural_key)
        here = Path(folder)
        rel = here.relative_to(root)
        files = sorted((f for f in filenames if not f.startswith(".")), key=natural_key)
        for f in files:
            if Path(f).suffix.lower() in VIDEO_EXTENSIONS:
                clip_rel = rel / Path(f).stem
                clips.append(VideoClip(here / f, subject=_subject(root, clip_rel), clip=clip_rel.as_posix()))
        images = [here / f for f in files if Path(f).suffix.lower() in IMAGE_EXTENSIONS]
        if images:
            clip_rel = rel if rel.parts else Path(root.name)
            clips.append(FrameFolderClip(images, subject=_subject(root, rel) if rel.parts else root.name, clip=clip_rel.as_posix()))
    if not clips:
        raise DataError(f"{root}: no videos ({', '.join(sorted(VIDEO_EXTENSIONS)[:5])}, ...) or frame images found; {_LAYOUT_HELP}")
    return clips


def _subject(root: Path, clip_rel: Path) -> str:
    return clip_rel.parts[0] if len(clip_rel.parts) > 1 else root.name


# ----------------------------------------------------------------------------------------------
# Frame sources by spec: the registry's "frames" kind (video:, generators), and any image dataset
# ----------------------------------------------------------------------------------------------


@register_dataset(
    "video",
    kind="frames",
    help="clips of a video file or a folder of videos / frame folders (DIR/<subject>/<clip>.mp4), subject = folder; read one frame at a time",
    splits=("all",),
    arg="FILE|DIR",
    arg_required=True,  # the registry answers a missing FILE|DIR with KIND_RULES["frames"].needs_arg
)
def make_video_frames(arg: str, *, spec: str, seed: int) -> ClipFrames:
    root = Path(arg).expanduser()
    return ClipFrames(spec=spec, clips=scan_clips(root), source_files=[root])


@dataclass
class DatasetFrames:
    """An image dataset as a frame source: each image is a one-frame clip whose subject is its class."""

    spec: str
    datasets: list[ImageDataset]
    source_files: list[Path] = field(default_factory=list)
    cache_token: str = ""
    warnings: list[str] = field(default_factory=list)
    shard_of: tuple[int, int] = (0, 1)  # (index, count): take images index, index+count, ...

    def shard(self, index: int, count: int) -> DatasetFrames:
        return replace(self, shard_of=(index, count), warnings=[])

    def _rows(self, stride: int) -> Iterator[tuple[ImageDataset, int]]:
        k = 0
        for ds in self.datasets:
            for i in range(len(ds)):
                if k % self.shard_of[1] == self.shard_of[0] and (k // self.shard_of[1]) % stride == 0:
                    yield ds, i
                k += 1

    def count(self, stride: int = 1, max_frames: int | None = None) -> int:
        total = sum(1 for _ in self._rows(stride))
        return total if max_frames is None else min(total, max_frames)

    def iter_frames(self, stride: int = 1, max_frames: int | None = None) -> Iterator[tuple[np.ndarray, FrameMeta]]:
        _check_stride(stride, max_frames)
        for n, (ds, i) in enumerate(self._rows(stride)):
            if max_frames is not None and n >= max_frames:
                return
            yield to_rgb(ds.image(i)), FrameMeta(ds.classes[ds.labels[i]], image_clip(ds, i), 0)


def image_clip(ds: ImageDataset, i: int) -> str:
    """A per-image clip id: the file's path below the dataset root (no suffix), else split/index."""
    if ds.paths is None:
        return f"{ds.split}/{i}"
    path = ds.paths[i].with_suffix("")
    for root in ds.source_files:
        if path.is_relative_to(root):
            return path.relative_to(root).as_posix()
    return path.as_posix()


def parse_frame_spec(spec: str | DatasetSpec) -> DatasetSpec:
    """A spec read once: kind "frames" where its name is a frame source (`video:`, `synthetic-video`), else "image"."""
    if isinstance(spec, DatasetSpec) and spec.kind == "frames":
        return spec
    name = spec.name if isinstance(spec, DatasetSpec) else parse_spec(spec)[0]
    if name in dataset_sources("frames"):
        # an image spec's options belong to its image maker; the frame maker reads the text alone
        return parse_dataset(str(spec), kind="frames")
    return parse_dataset(spec)


def make_frame_source(spec: str | DatasetSpec, *, seed: int = 0) -> FrameSource:
    """A FrameSource for any dataset spec: `video:`, `synthetic-video`, or an image dataset (all its splits)."""
    spec = parse_frame_spec(spec)
    if spec.kind == "frames":
        return spec.source.make(spec.arg, spec=spec.text, seed=int(seed), **spec.options)
    splits = spec.splits()
    # PCA is unsupervised: every image counts once. A flat folder offers train/test/all: take all.
    splits = ["all"] if "all" in splits else splits
    datasets = [make_dataset(spec, split=s, seed=seed) for s in splits]
    files = sorted({Path(p) for d in datasets for p in d.source_files}, key=str)
    token = ";".join(d.cache_token for d in datasets if d.cache_token)
    return DatasetFrames(spec=spec.text, datasets=datasets, source_files=files, cache_token=token)


# ----------------------------------------------------------------------------------------------
# video: as an ImageDataset (extract-features and friends): frames decoded lazily, label = subject
# ----------------------------------------------------------------------------------------------


@dataclass
class VideoFrameDataset(ImageDataset):
    """Frames of clips as an ImageDataset. `paths[i]` is the file frame i comes from."""

    clips: list = field(default_factory=list)
    frame_refs: list[tuple[int, int]] = field(default_factory=list)  # row -> (clip index, frame index)
    _reader: dict = field(default_factory=dict, repr=False)  # open capture of the last video clip read

    def image(self, i: int) -> np.ndarray:
        clip_idx, index = self.frame_refs[i]
        clip = self.clips[clip_idx]
        if isinstance(clip, FrameFolderClip):
            return to_rgb(decode_image(clip.files[index]))
        return self._video_frame(clip, index)

    def _video_frame(self, clip: VideoClip, index: int) -> np.ndarray:
        # Rows are read in order by extract-features: keep one capture open and read forward;
        # seek only when going back or far ahead.
        cv2 = _cv2()
        r = self._reader
        if r.get("path") != clip.path or index < r["pos"] or index - r["pos"] > 64:
            if r.get("cap") is not None:
                r["cap"].release()
            cap = open_video(clip.path)
            if index:
                cap.set(cv2.CAP_PROP_POS_FRAMES, index)
            r.update(path=clip.path, cap=cap, pos=index)
        cap = r["cap"]
        while r["pos"] < index:
            cap.grab()
            r["pos"] += 1
        ok, frame = cap.read()
        r["pos"] += 1
        if not ok or frame is None:
            raise DataError(f"{clip.path}: cannot decode frame {index} (truncated or corrupt video)")
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if frame.ndim == 3 else to_rgb(frame)

    def subset(self, idx, *, split: str | None = None) -> VideoFrameDataset:
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        out = super().subset(idx, split=split)
        return replace(out, frame_refs=[self.frame_refs[i] for i in idx], _reader={})


@register_dataset(
    "video",
    help="frames of a video file or a folder of videos / frame folders (DIR/<subject>/<clip>.mp4), label = subject; decoded lazily",
    splits=("all",),
    arg="FILE|DIR",
    arg_required=True,
)
def make_video_dataset(arg: str, *, spec: str, split: str, seed: int, stride: int = 1) -> ImageDataset:
    if int(stride) < 1:
        raise UsageError(f"stride must be at least 1; got {stride}")
    root = Path(arg).expanduser()
    clips = scan_clips(root)
    subjects = sorted({c.subject for c in clips}, key=natural_key)
    refs, paths, labels = [], [], []
    for ci, clip in enumerate(clips):
        n = clip.count(1) if isinstance(clip, VideoClip) else len(clip.files)
        if not n:
            raise DataError(f"{clip.path}: the header gives no frame count; read it with gx pca-compute --dataset video:{clip.path}")
        for index in range(0, n, int(stride)):
            refs.append((ci, index))
            paths.append(clip.path if isinstance(clip, VideoClip) else clip.files[index])
            labels.append(subjects.index(clip.subject))
    return VideoFrameDataset(
        spec=spec, split=split, classes=subjects, labels=np.asarray(labels, dtype=np.int64), paths=paths,
        source_files=[root], cache_token=f"video:stride={stride}", color=True, clips=clips, frame_refs=refs,
    )
