"""Render patch-feature PCA as colours (the pictures of `gx pca-visualize`, whose step is `gesture_cli.tasks.pca_visualize`).

Each frame's patch tokens are projected on the stored components; components
`start .. start+n-1` become the channels of a picture (n=1 grey, n=2 red+green, n=3 RGB), each mapped
to 0..255 with the fixed range measured at compute time (1st..99th percentile), so colours mean
the same thing in every frame and do not flicker. The patch grid is upsampled to the frame's size
(nearest: one block per patch, or bilinear), optionally next to the input (`--side-by-side`).

Videos become MP4 (OpenCV VideoWriter, fourcc mp4v), images PNG, into `pca/<backbone>/renders/`,
plus a contact sheet of one frame: input | PC 0-2 | PC 3-5 | PC 6-8. Every frame is rendered by
default (`--frame-stride 1`): the output has as many frames as the input and the same fps; with
stride s it has frames 0, s, 2s, ... at fps/s, so it lasts as long as the input. MPEG-4 needs even
sizes: an odd width or height is padded with one black row or column.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gesture_cli.core.errors import ArtifactError, DataError

UPSAMPLE_MODES = ("nearest", "bilinear")
DEFAULT_FPS = 25.0  # when a video's header has no frame rate
CONTACT_GROUPS = ((0, 1, 2), (3, 4, 5), (6, 7, 8))  # components per contact-sheet tile
CONTACT_HEIGHT = 256  # pixels per contact-sheet tile (label bar not included)
LABEL_BAR = 22  # pixels above each tile for its caption


# ----------------------------------------------------------------------------------------------
# Pure rendering: scores -> colours -> pictures
# ----------------------------------------------------------------------------------------------


def colorize(scores: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """float [..., n] scores, [n, 2] (lo, hi) ranges -> uint8 [..., 3]: n=1 grey, n=2 (R, G, 0), n=3 RGB."""
    ranges = np.asarray(ranges, dtype=np.float32)
    n = scores.shape[-1]
    if n not in (1, 2, 3) or ranges.shape != (n, 2):
        raise ValueError(f"colorize: need 1-3 channels and matching [n, 2] ranges, got {scores.shape} and {ranges.shape}")
    v = (scores.astype(np.float32) - ranges[:, 0]) / (ranges[:, 1] - ranges[:, 0])
    v = (np.clip(v, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if n == 1:
        return np.repeat(v, 3, axis=-1)
    if n == 2:
        return np.concatenate([v, np.zeros_like(v[..., :1])], axis=-1)
    return v


def upsample(grid: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """[gh, gw, c] (float or uint8) -> [H, W, c] with cv2 (nearest: blocks; bilinear: smooth)."""
    import cv2

    h, w = size
    interp = cv2.INTER_NEAREST if mode == "nearest" else cv2.INTER_LINEAR
    out = cv2.resize(np.ascontiguousarray(grid), (w, h), interpolation=interp)
    return out.reshape(h, w, -1) if out.ndim == 2 else out


def render_features(scores: np.ndarray, ranges: np.ndarray, size: tuple[int, int], *, mode: str, mask: np.ndarray | None = None) -> np.ndarray:
    """Grid scores [gh, gw, n] -> uint8 [H, W, 3] picture; `mask` [gh, gw] bool keeps foreground patches.

    Colours (and the mask) are applied on the patch grid, then upsampled: 30x cheaper than colouring
    every output pixel, identical for nearest, and for bilinear it blends colours instead of scores
    (the same except where a score leaves its range between two patches).
    """
    grid = colorize(scores, ranges)
    if mask is not None:
        grid[~mask] = 0
    return upsample(grid, size, mode)


def render_frame(frame: np.ndarray, scores: np.ndarray, ranges: np.ndarray, *, mode: str, side_by_side: bool, mask=None) -> np.ndarray:
    """One output frame: features at the input's size, or input | features."""
    pic = render_features(scores, ranges, frame.shape[:2], mode=mode, mask=mask)
    return np.concatenate([frame, pic], axis=1) if side_by_side else pic


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    import cv2

    bar = np.zeros((LABEL_BAR, tile.shape[1], 3), np.uint8)
    cv2.putText(bar, text, (4, LABEL_BAR - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([bar, tile], axis=0)


def render_contact_sheet(
    frame: np.ndarray, scores: np.ndarray, ranges: np.ndarray, *, mode: str, mask=None, caption: str = "input", groups=CONTACT_GROUPS
) -> np.ndarray:
    """uint8 picture under a `caption` bar: input | PC 0-2 | PC 3-5 | PC 6-8 (groups past the stored components left out).

    scores [gh, gw, k] and ranges [k, 2] hold every stored component.
    """
    import cv2

    h, w = frame.shape[:2]
    th, tw = CONTACT_HEIGHT, max(1, round(w * CONTACT_HEIGHT / h))
    tiles = [_label(cv2.resize(frame, (tw, th), interpolation=cv2.INTER_AREA), "input")]
    k = scores.shape[-1]
    for group in groups:
        comps = [c for c in group if c < k]
        if not comps:
            continue
        pic = render_features(scores[..., comps], ranges[comps], (th, tw), mode=mode, mask=mask)
        name = f"PC {comps[0]}" if len(comps) == 1 else f"PC {comps[0]}-{comps[-1]}"
        tiles.append(_label(pic, name))
    gap = np.zeros((th + LABEL_BAR, 4, 3), np.uint8)
    row = [tiles[0]]
    for t in tiles[1:]:
        row += [gap, t]
    return _label(np.concatenate(row, axis=1), caption)  # title bar: which input and frame


def write_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ArtifactError(f"{path}: cannot encode PNG")
    Path(path).write_bytes(buf.tobytes())


class VideoWriter:
    """MP4 (fourcc mp4v) from RGB frames of one size; odd sizes are padded to even with black.

        with VideoWriter(path, fps=25.0) as out:
            out.write(frame_rgb)
    """

    def __init__(self, path: Path, *, fps: float):
        self.path, self.fps = Path(path), float(fps)
        self.frames = 0
        self._writer = None
        self._size: tuple[int, int] | None = None

    def write(self, rgb: np.ndarray) -> None:
        import cv2

        h, w = rgb.shape[:2]
        if self._writer is None:
            self._size = (h, w)
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w + w % 2, h + h % 2))
            if not self._writer.isOpened():
                raise ArtifactError(f"{self.path}: OpenCV cannot write MP4 (mp4v) here; check the folder is writable")
        elif (h, w) != self._size:
            raise DataError(f"{self.path}: frame {self.frames} is {w}x{h}, earlier frames {self._size[1]}x{self._size[0]}; a video needs one size")
        if h % 2 or w % 2:
            rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)))
        self._writer.write(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_video(path: Path, frames, *, fps: float) -> int:
    """Write RGB frames to an MP4; returns the number written."""
    with VideoWriter(path, fps=fps) as out:
        for f in frames:
            out.write(f)
    return out.frames
