"""OpenPose JSON keypoints (How2Sign): one `<clip>_<12 digits>_keypoints.json` per frame, grouped
into clips -> `PoseSample`s on `openpose-137` (pixels, C = 2)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from gesture_cli.core.errors import DataError
from gesture_cli.data.label_tables import first_line
from gesture_cli.data.pose_points import OPENPOSE, OPENPOSE_COMPONENTS, masked_keypoints
from gesture_cli.data.pose_sample import PoseSample

DEFAULT_JSON_FPS = 24.0  # OpenPose JSON records no frame rate; pass fps= for your videos
OPENPOSE_FRAME_RE = re.compile(r"^(?P<clip>.+)_(?P<frame>\d{12})_keypoints\.json$")
_OP_KEYS = ("pose_keypoints_2d", "face_keypoints_2d", "hand_left_keypoints_2d", "hand_right_keypoints_2d")


def _openpose_frame(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One OpenPose JSON frame -> (xy [137, 2], confidence [137]); no person = all zero confidence."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({first_line(exc)})") from None
    if not isinstance(doc, dict) or "people" not in doc:
        raise DataError(f"{path}: missing key 'people' (not an OpenPose keypoints JSON)")
    people = doc["people"]
    if not isinstance(people, list):
        raise DataError(f"{path}: key 'people' must be a list, got {type(people).__name__}")
    xy = np.zeros((137, 2), dtype=np.float32)
    conf = np.zeros(137, dtype=np.float32)
    if not people:
        return xy, conf  # no person detected in this frame: a fully masked frame
    parsed = []
    for p, person in enumerate(people):
        if not isinstance(person, dict):
            raise DataError(f"{path}: people[{p}] is not an object")
        arrays = []
        for key in _OP_KEYS:
            if key not in person:
                raise DataError(f"{path}: people[{p}] lacks key '{key}'")
            values = person[key]
            (start, size) = OPENPOSE_COMPONENTS[key]
            if not isinstance(values, list) or (len(values) not in (0, 3 * size)):
                got = len(values) if isinstance(values, list) else type(values).__name__
                raise DataError(f"{path}: people[{p}].{key} has {got} values, expected {3 * size} ({size} points x (x, y, confidence)) or none")
            try:
                arr = np.asarray(values, dtype=np.float32).reshape(-1, 3) if values else np.zeros((size, 3), dtype=np.float32)
            except (TypeError, ValueError):
                raise DataError(f"{path}: people[{p}].{key} holds values that are not numbers") from None
            arrays.append(arr)
        parsed.append(np.concatenate(arrays))
    # several people: keep the one whose body keypoints are most confident (the signer faces the camera)
    best = max(parsed, key=lambda a: float(np.nansum(a[:25, 2])))
    return best[:, :2], best[:, 2]


def find_openpose_clips(root: Path, files: Iterable[Path] | None = None) -> dict[str, list[tuple[int, Path]]]:
    """Group `<clip>_<frame>_keypoints.json` files into clips: {clip id: [(frame number, file), ...]}.

    The clip id is the clip name, prefixed by its folder relative to root unless that folder is named
    after the clip (How2Sign's `json/<clip>/<clip>_000000000000_keypoints.json`).
    """
    clips: dict[str, list[tuple[int, Path]]] = {}
    for f in files if files is not None else root.rglob("*_keypoints.json"):
        m = OPENPOSE_FRAME_RE.match(f.name)
        if not m:
            continue
        rel_dir = f.parent.relative_to(root) if f.parent != root and root in f.parents else Path()
        if rel_dir.name == m["clip"]:
            rel_dir = rel_dir.parent
        cid = (rel_dir / m["clip"]).as_posix() if rel_dir.parts else m["clip"]
        clips.setdefault(cid, []).append((int(m["frame"]), f))
    return clips


def read_openpose_clip(frames: list[tuple[int, Path]], *, sample_id: str, fps: float | None = None) -> PoseSample:
    """OpenPose JSON frames of one clip -> PoseSample on openpose-137 (pixels, C = 2).

    Frames are ordered by their number; a missing number becomes a fully masked frame, as does a
    frame with no person (`"people": []`).
    """
    frames = sorted(frames)
    first = frames[0][0]
    t = frames[-1][0] - first + 1
    xy = np.zeros((t, 137, 2), dtype=np.float32)
    conf = np.zeros((t, 137), dtype=np.float32)
    for n, f in frames:
        xy[n - first], conf[n - first] = _openpose_frame(f)
    kp, ok = masked_keypoints(xy, conf > 0)
    meta = {"format": "openpose-json", "first_frame": int(first)}
    if t != len(frames):
        meta["missing_frames"] = int(t - len(frames))
    return PoseSample(id=sample_id, keypoints=kp, mask=ok, fps=float(fps or DEFAULT_JSON_FPS), layout=OPENPOSE,
                      source=str(frames[0][1].parent), meta=meta)
