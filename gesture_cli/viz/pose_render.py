"""Draw a pose sequence as a skeleton, over black or over its source video, to MP4 and a PNG contact sheet.

    sample = pick_sample(make_pose_dataset("pose:clip.pose"), None)
    info = render_pose(sample, mp4=Path("clip.mp4"), png=Path("clip.png"), video=Path("clip_color.mp4"))

What is drawn: the edges of models/skeletons.py between the selected parts (`body,hands,face` by
default; any `--keypoints` list that `select_parts` takes) and a dot per body and hand point (face points show through their contours), coloured by part
(body white, legs grey, left hand green, right hand orange, face blue). A masked point (not detected,
zero confidence, NaN) is never drawn, nor any edge that touches it: a missing hand leaves no trace
instead of a line to (0, 0).

Where it is drawn (data/pose.py keeps coordinates in the source's units):
- over a video (`video=`): the video's frames, scaled to fit `size`. Pixel coordinates are scaled from
  the pose's recorded frame size (`.pose` headers) to the video's, or taken as the video's own pixels
  when the source records none (OpenPose JSON); image fractions (Kaggle parquet, ASL-App JSON,
  synthetic-signs) are multiplied by the frame size. The pose and the video must have the same
  number of frames (one frame of slack); `allow_mismatch=True` draws the frames both have.
- over black: the recorded frame (`.pose` files know their video's width and height), scaled so its
  longer side is `size`; without one, the box around every drawn point of the whole sequence, with
  a margin, scaled uniformly (fractions have no aspect ratio of their own: a 16:9 source looks narrower).

The MP4 is written with OpenCV's `mp4v` encoder (PyAV's `mpeg4` when OpenCV has no writer) at the
pose's frame rate; the contact sheet shows `sheet_frames` evenly spaced frames with their index and
time. Both files are written atomically (a temporary file renamed into place).
"""

from __future__ import annotations

import io
import math
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gesture_cli.core.errors import ArtifactError, DataError, UsageError, did_you_mean

DEFAULT_RENDER_PARTS = "body,hands,face"
DEFAULT_SIZE = 640  # longer side of the output in pixels
DEFAULT_SHEET_FRAMES = 8
FRACTION_FORMATS = frozenset({"kaggle-parquet", "asl-app-json", "synthetic"})  # x, y in [0, 1] of the image
PIXEL_FORMATS = frozenset({"pose", "openpose-json"})
# RGB colour per part; an edge between two parts (a wrist to its hand, the nose to the face) is drawn as body
PART_COLORS = {
    "body": (235, 235, 235), "legs": (140, 140, 140), "left-hand": (70, 215, 110), "right-hand": (255, 140, 50),
    "face": (90, 185, 255), "face-lite": (90, 185, 255),
}
_SHIFT = 4  # cv2 fixed-point fractional bits: sub-pixel positions for anti-aliased lines


# ---- what to draw -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drawing:
    """The drawable part of a layout: edges and points in layout indices, each with its colour and size."""

    layout: str
    parts: tuple[str, ...]
    edges: np.ndarray  # int64 [E, 2] layout indices
    edge_colors: np.ndarray  # uint8 [E, 3] RGB
    points: np.ndarray  # int64 [P] layout indices
    point_colors: np.ndarray  # uint8 [P, 3] RGB
    dots: np.ndarray  # bool [P]: drawn as a dot; face points are not (468 dots blot out a face): their contour edges show them


def make_drawing(layout: str, parts: str | None = None) -> Drawing:
    """Edges, points and colours of the selected parts of a layout (UsageError for an unknown part)."""
    from gesture_cli.models.skeletons import select_parts

    sel = select_parts(layout, parts or DEFAULT_RENDER_PARTS)
    part_names = [sel.parts[i] for i in sel.part_of]
    colors = np.array([PART_COLORS.get(p, PART_COLORS["body"]) for p in part_names], dtype=np.uint8)
    a, b = sel.edges[:, 0], sel.edges[:, 1]
    same = sel.part_of[a] == sel.part_of[b]
    edge_colors = np.where(same[:, None], colors[a], np.array(PART_COLORS["body"], dtype=np.uint8))
    dots = np.array([not p.startswith("face") for p in part_names], dtype=bool)
    return Drawing(layout=layout, parts=sel.parts, edges=sel.indices[sel.edges].reshape(-1, 2), edge_colors=edge_colors.astype(np.uint8),
                   points=sel.indices, point_colors=colors, dots=dots)


# ---- where to draw it ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Canvas:
    """Output frame size and the map from the sample's coordinates to its pixels: xy * scale + offset."""

    width: int
    height: int
    scale: tuple[float, float]
    offset: tuple[float, float]
    units: str  # "pixels" | "fractions" (of the source image)
    framing: str  # "video" | "recorded frame WxH" | "fitted to the points"

    def apply(self, xy: np.ndarray) -> np.ndarray:
        return xy[..., :2] * np.asarray(self.scale, dtype=np.float64) + np.asarray(self.offset, dtype=np.float64)


def _even(x: float) -> int:
    """Video encoders want even frame sides."""
    return max(2, int(round(x / 2.0)) * 2)


def coordinate_units(sample) -> str:
    """'fractions' (image fractions: Kaggle, ASL-App, synthetic-signs) or 'pixels', from the format or the values."""
    fmt = str(sample.meta.get("format") or "")
    if fmt in FRACTION_FORMATS:
        return "fractions"
    if fmt in PIXEL_FORMATS or sample.meta.get("width"):
        return "pixels"
    xy = sample.keypoints[..., :2][sample.mask]
    if not len(xy):
        return "pixels"
    return "fractions" if float(np.percentile(np.abs(xy), 99)) <= 2.5 else "pixels"


def _recorded_size(sample) -> tuple[int, int] | None:
    w, h = sample.meta.get("width"), sample.meta.get("height")
    try:
        w, h = int(w), int(h)
    except (TypeError, ValueError):
        return None
    return (w, h) if w > 0 and h > 0 else None


def make_canvas(sample, drawing: Drawing, *, size: int = DEFAULT_SIZE, video_size: tuple[int, int] | None = None,
                warnings: list[str] | None = None) -> Canvas:
    """The output frame and coordinate map for a sample (module docstring: over a video or over black)."""
    if size < 16:
        raise UsageError(f"--size must be at least 16 pixels; got {size}")
    units = coordinate_units(sample)
    recorded = _recorded_size(sample)
    if video_size is not None:
        vw, vh = video_size
        s = min(1.0, size / max(vw, vh))
        cw, ch = _even(vw * s), _even(vh * s)
        if units == "fractions":
            scale = (float(cw), float(ch))
        elif recorded is not None:
            mw, mh = recorded
            if warnings is not None and abs(mw / mh - vw / vh) > 0.02 * (vw / vh):
                warnings.append(f"the pose was recorded on a {mw}x{mh} frame, the video is {vw}x{vh}: the points are stretched to the video")
            scale = (cw / mw, ch / mh)
        else:
            scale = (cw / vw, ch / vh)
        return Canvas(cw, ch, scale, (0.0, 0.0), units, "video")
    if recorded is not None and units == "pixels":
        mw, mh = recorded
        s = size / max(mw, mh)
        cw, ch = _even(mw * s), _even(mh * s)
        return Canvas(cw, ch, (cw / mw, ch / mh), (0.0, 0.0), units, f"recorded frame {mw}x{mh}")
    xy = sample.keypoints[:, drawing.points, :2][sample.mask[:, drawing.points]]
    if len(xy):
        lo, hi = np.percentile(xy, 0.5, axis=0), np.percentile(xy, 99.5, axis=0)  # a few wild points do not shrink the skeleton
    else:
        lo, hi = np.zeros(2), np.ones(2)
        if warnings is not None:
            warnings.append(f"sample '{sample.id}' has no observed point in the parts drawn ({', '.join(drawing.parts)}): the frames are black")
    span = np.maximum(hi - lo, 1e-6)
    margin = 0.08 * float(span.max())
    lo, span = lo - margin, span + 2 * margin
    s = size / float(span.max())
    cw, ch = _even(span[0] * s), _even(span[1] * s)
    return Canvas(cw, ch, (s, s), (float(-lo[0] * s), float(-lo[1] * s)), units, "fitted to the points")


# ---- drawing ------------------------------------------------------------------------------------


def draw_skeleton(image: np.ndarray, xy: np.ndarray, valid: np.ndarray, drawing: Drawing, *, thickness: int = 2) -> np.ndarray:
    """Draw one frame's skeleton into `image` (uint8 HxWx3 RGB, in place) and return it.

    xy [K, 2] output pixels, valid bool [K]: only points with valid True are drawn, and only edges
    whose both ends are valid.
    """
    import cv2

    h, w = image.shape[:2]
    finite = valid & np.isfinite(xy).all(axis=-1)
    # far-off points (a detector's wild guess) stay drawable: clip to a band around the frame for cv2's int32 maths
    pts = np.rint(np.clip(np.nan_to_num(xy), -4 * max(w, h), 5 * max(w, h)) * (1 << _SHIFT)).astype(np.int64)
    for (a, b), color in zip(drawing.edges, drawing.edge_colors, strict=True):
        if finite[a] and finite[b]:
            cv2.line(image, (int(pts[a, 0]), int(pts[a, 1])), (int(pts[b, 0]), int(pts[b, 1])), tuple(int(c) for c in color),
                     thickness, cv2.LINE_AA, _SHIFT)
    radius = max(1, thickness)
    for p, color in zip(drawing.points[drawing.dots], drawing.point_colors[drawing.dots], strict=True):
        if finite[p]:
            cv2.circle(image, (int(pts[p, 0]), int(pts[p, 1])), radius << _SHIFT, tuple(int(c) for c in color), -1, cv2.LINE_AA, _SHIFT)
    return image


def _video_frames(path: Path, canvas: Canvas, n: int, warnings: list[str]) -> Iterator[np.ndarray]:
    import cv2

    from gesture_cli.data.video import read_video

    for i, frame in read_video(path, max_frames=n, warnings=warnings):
        if i >= n:
            break
        if frame.shape[1] != canvas.width or frame.shape[0] != canvas.height:
            frame = cv2.resize(frame, (canvas.width, canvas.height), interpolation=cv2.INTER_AREA)
        yield np.ascontiguousarray(frame)


def render_frames(sample, drawing: Drawing, canvas: Canvas, *, video: Path | None = None, num_frames: int | None = None,
                  warnings: list[str] | None = None) -> Iterator[np.ndarray]:
    """Yield uint8 RGB frames [H, W, 3]: the skeleton of frames 0..num_frames-1 over black or the video."""
    n = sample.num_frames if num_frames is None else min(num_frames, sample.num_frames)
    xy = canvas.apply(sample.keypoints.astype(np.float64))  # [T, K, 2]
    thickness = max(1, int(round(max(canvas.width, canvas.height) / 320)))
    backgrounds = _video_frames(video, canvas, n, warnings if warnings is not None else []) if video is not None else None
    for t in range(n):
        if backgrounds is not None:
            base = next(backgrounds, None)
            if base is None:  # the video ended early (read_video has said so in warnings)
                return
        else:
            base = np.zeros((canvas.height, canvas.width, 3), dtype=np.uint8)
        yield draw_skeleton(base, xy[t], sample.mask[t], drawing, thickness=thickness)


# ---- writers ------------------------------------------------------------------------------------


def _temp_beside(path: Path) -> Path:
    return path.parent / f".{path.stem}.tmp-{uuid.uuid4().hex[:8]}{path.suffix}"


class Mp4Writer:
    """Frames -> an MP4 file, atomically: OpenCV's mp4v writer, or PyAV's mpeg4 encoder when OpenCV has none."""

    def __init__(self, path: Path, *, fps: float, size: tuple[int, int]):
        import cv2

        self.path, self.fps, self.size = Path(path), float(fps), size
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = _temp_beside(self.path)
        self.frames = 0
        self._cv = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, size)
        self._av = None
        if not self._cv.isOpened():
            self._cv.release()
            self._cv = None
            self._open_av()

    def _open_av(self) -> None:
        from fractions import Fraction

        try:
            import av
        except ImportError:
            raise ArtifactError(f"{self.path}: OpenCV cannot write MP4 here and PyAV is not installed (pip install av)") from None
        self._container = av.open(str(self.tmp), mode="w")
        stream = self._container.add_stream("mpeg4", rate=Fraction(self.fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = self.size[0], self.size[1], "yuv420p"
        self._av = stream

    def write(self, frame_rgb: np.ndarray) -> None:
        import cv2

        if self._cv is not None:
            self._cv.write(cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR))
        else:
            import av

            for packet in self._av.encode(av.VideoFrame.from_ndarray(frame_rgb, format="rgb24")):
                self._container.mux(packet)
        self.frames += 1

    def close(self, *, keep: bool) -> None:
        if self._cv is not None:
            self._cv.release()
        elif self._av is not None:
            for packet in self._av.encode():
                self._container.mux(packet)
            self._container.close()
        if keep and self.frames and self.tmp.is_file() and self.tmp.stat().st_size:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
            if keep:
                raise ArtifactError(f"{self.path}: the video encoder wrote nothing ({self.frames} frames given)")


def sheet_indices(num_frames: int, k: int) -> list[int]:
    """k evenly spaced frame indices from first to last (fewer when the sequence is shorter)."""
    if num_frames < 1:
        return []
    return sorted({int(round(i)) for i in np.linspace(0, num_frames - 1, max(1, min(k, num_frames)))})


def write_contact_sheet(path: Path, frames: list[tuple[int, np.ndarray]], *, fps: float, title: str) -> Path:
    """A PNG grid of (frame index, RGB frame) tiles, each titled with its index and time, atomically."""
    from gesture_cli.core.artifacts import atomic_write_bytes
    from gesture_cli.viz.plots import _figure

    n = len(frames)
    cols = min(4, n)
    rows = -(-n // cols)
    h, w = frames[0][1].shape[:2]
    tile_w = 3.2
    tile_h = tile_w * h / w + 0.3
    fig = _figure(tile_w * cols, tile_h * rows + 0.5)
    for k, (t, img) in enumerate(frames):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.imshow(img, interpolation="bilinear")
        ax.set_title(f"frame {t}  ({t / fps:.2f} s)" if fps > 0 else f"frame {t}", fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", facecolor="white")
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


# ---- the command's core -------------------------------------------------------------------------


def pick_sample(ds, sample_id: str | None):
    """The sample `sample_id` of a pose dataset, or its only sample; a UsageError names the choices."""
    if not len(ds):
        raise DataError(f"{ds.spec}: no samples{f' in split {ds.split}' if ds.split else ''}")
    ids = [s.id for s in ds.samples]
    if sample_id is None:
        if len(ds) == 1:
            return ds.samples[0]
        raise UsageError(f"{ds.spec} holds {len(ds)} samples; pass --sample-id (e.g. {', '.join(ids[:3])})")
    by_id = {s.id: s for s in ds.samples}
    if sample_id in by_id:
        return by_id[sample_id]
    tails = [s for s in ds.samples if s.id.rsplit("/", 1)[-1] == sample_id]  # 'clip' for 'test/clip'
    if len(tails) == 1:
        return tails[0]
    shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
    raise UsageError(f"no sample '{sample_id}' in {ds.spec}{did_you_mean(sample_id, ids)}; {len(ids)} samples: {shown}")


def safe_name(sample_id: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", sample_id).strip("._") or "pose"


def _output_path(path: Path | str | None, sample_id: str, suffix: str, option: str) -> Path | None:
    """The file to write for `option PATH`: a folder (an existing one, or any PATH ending in /, made by the writer)
    means `<sample-id><suffix>` inside it; a file must end in `suffix`. `path` is the text as given (a str keeps
    its trailing /; Path drops it)."""
    from gesture_cli.core.output_paths import check_not_empty, names_folder

    if path is None:
        return None
    check_not_empty(path, option=option, what=f"a file name ending in {suffix}, or a folder")
    as_folder = names_folder(path)
    path = Path(path).expanduser()
    if as_folder and path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path}{os.sep} is not a folder; give a folder or a file name ending in {suffix}")
    if as_folder or path.is_dir():
        return path / f"{safe_name(sample_id)}{suffix}"
    if path.suffix.lower() != suffix:
        raise UsageError(f"{option} {path}: the file name must end in {suffix}")
    return path


def render_pose(sample, *, mp4: Path | None = None, png: Path | None = None, video: Path | None = None, parts: str | None = None,
                size: int = DEFAULT_SIZE, fps: float | None = None, sheet_frames: int = DEFAULT_SHEET_FRAMES,
                allow_mismatch: bool = False) -> dict:
    """Render one PoseSample to an MP4 and/or a PNG contact sheet (module docstring). Returns what was written.

    An existing MP4/PNG is replaced (a rerun), but never `video`. (A pose source is never an .mp4 or a .png.)"""
    from gesture_cli.core.output_paths import check_not_input

    mp4 = _output_path(mp4, sample.id, ".mp4", "--output")
    png = _output_path(png, sample.id, ".png", "--png")
    for path, option in ((mp4, "--output"), (png, "--png")):
        if path is not None and video is not None:
            check_not_input(path, [video], option=option)
    if mp4 is None and png is None:
        raise UsageError("nothing to write: pass --output FILE.mp4 and/or --png FILE.png")
    if sheet_frames < 1:
        raise UsageError(f"--sheet-frames must be at least 1; got {sheet_frames}")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise UsageError(f"--fps must be a positive number of frames per second; got {fps:g}")
    out_fps = float(fps) if fps is not None else float(sample.fps)
    if not out_fps > 0:
        raise UsageError(f"sample '{sample.id}' records no frame rate; pass --fps")
    warnings: list[str] = []
    drawing = make_drawing(sample.layout, parts)
    n = sample.num_frames
    video_size = None
    if video is not None:
        from gesture_cli.data.video import read_video, video_info

        video = Path(video).expanduser()
        info = video_info(video)  # DataError for a missing or unreadable file
        video_size = (info.width, info.height)
        frames = info.frames or sum(1 for _ in read_video(video))
        if frames != n:
            what = f"{video}: {frames} frames ({info.fps:g} fps), the pose '{sample.id}' {n} frames ({sample.fps:g} fps)"
            if abs(frames - n) > 1 and not allow_mismatch:
                raise DataError(f"{what}: not the same recording? Pass --allow-mismatch to draw the {min(frames, n)} frames both have")
            warnings.append(f"{what}: drawing the {min(frames, n)} frames both have")
            n = min(frames, n)
        if info.fps and abs(info.fps - out_fps) > 0.01 * out_fps:
            warnings.append(f"{video}: {info.fps:g} fps, the pose {sample.fps:g} fps; the MP4 plays at {out_fps:g} fps")
    canvas = make_canvas(sample, drawing, size=size, video_size=video_size, warnings=warnings)
    wanted = set(sheet_indices(n, sheet_frames)) if png is not None else set()
    sheet: list[tuple[int, np.ndarray]] = []
    writer = Mp4Writer(mp4, fps=out_fps, size=(canvas.width, canvas.height)) if mp4 is not None else None
    ok = False
    try:
        for t, frame in enumerate(render_frames(sample, drawing, canvas, video=video, num_frames=n, warnings=warnings)):
            if writer is not None:
                writer.write(frame)
            if t in wanted:
                sheet.append((t, frame))
            if writer is None and len(sheet) == len(wanted):
                break  # PNG only: no need to draw the rest
        ok = True
    finally:
        if writer is not None:
            writer.close(keep=ok)
    if png is not None:
        if not sheet:
            raise DataError(f"sample '{sample.id}': no frame to draw")
        title = sample.id + (f": {sample.text}" if sample.text else f": {sample.gloss}" if sample.gloss else "")
        write_contact_sheet(png, sheet, fps=out_fps, title=title[:160])
    return {
        "sample": sample.id, "layout": sample.layout, "frames": writer.frames if writer is not None else n, "fps": out_fps,
        "size": [canvas.width, canvas.height], "units": canvas.units, "framing": canvas.framing, "parts": list(drawing.parts),
        "mp4": str(mp4) if mp4 is not None else None, "png": str(png) if png is not None else None,
        "sheet_frames": [t for t, _ in sheet], "video": str(video) if video is not None else None, "warnings": warnings,
    }
