"""Readers of keypoint-sequence formats -> `PoseSample`s on one of gx's layouts (see models/skeletons.py).

| format | files | layout |
| --- | --- | --- |
| pose-format `.pose` (v0.0-0.2) | one sequence per file | MediaPipe Holistic -> `mediapipe-holistic` (543); OpenPose -> `openpose-137` |
| OpenPose JSON | `<clip>_<12 digits>_keypoints.json`, one per frame (How2Sign) | `openpose-137` |
| Kaggle ASL-signs parquet | one sequence per file: frame, row_id, type, landmark_index, x, y[, z] | `mediapipe-holistic` |
| ASL-App landmark JSON | `{"sign", "fps", "frames": [{pose, left_hand, right_hand, face}]}` | `mediapipe-holistic` |
| pickle (`--allow-pickle` only) | list/dict of samples: name, keypoint [T, K, C], text, gloss | by K (543, 137, 133, ...) |
| label tables | CSV/TSV with a name/path/clip column and text/gloss/split/signer columns (data/label_tables.py) | - |

MediaPipe variants are mapped by point name onto the 543-point layout: 576-point files (with
POSE_WORLD_LANDMARKS, metric 3D, which gx drops), 553/586-point files (Face Mesh with the 10 iris
points 468-477, dropped) and reduced files (pose-format's 178-point subset: the absent points are
masked). Coordinates are kept in the source's units (pixels for `.pose` and OpenPose, [0, 1] image
fractions for Kaggle/ASL-App); the normalisation functions of data/pose.py remove the difference.

A point is missing when its confidence is 0, when the source gives NaN/null, or when the source masks
it: it is MASKED (mask False, coordinates NaN), never left as a zero that looks like a real position.
Every reader raises a one-line DataError naming the file (and key, column or row) on bad input.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from gesture_cli.core.errors import DataError, GxWarning, UsageError
from gesture_cli.data.label_tables import (
    LABEL_KEY_COLUMNS,
    LABELS_FILE,
    Labels,
    add_labels,
    first_line,
    gloss_from_name,
    label_keys,
    read_label_table,
)
from gesture_cli.data.pose_sample import PoseSample, normalize_split
from gesture_cli.models.skeletons import LAYOUT_SIZES, MP_HAND_NAMES, MP_POSE_NAMES

HOLISTIC = "mediapipe-holistic"
OPENPOSE = "openpose-137"
COCO_WB = "coco-wholebody-133"
_FACE0, _LH0, _RH0 = 33, 33 + 468, 33 + 468 + 21  # offsets of face, left hand, right hand in mediapipe-holistic

DEFAULT_JSON_FPS = 24.0  # OpenPose JSON records no frame rate; pass fps= for your videos
DEFAULT_PARQUET_FPS = 30.0  # Kaggle parquet records no frame rate either (GISLR clips are ~30 fps webcam video)
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pkl.gz", ".pickle.gz")
OPENPOSE_FRAME_RE = re.compile(r"^(?P<clip>.+)_(?P<frame>\d{12})_keypoints\.json$")
# ASL-App (shravnchandr/ASL-App) keeps 33 of the 468 Face Mesh points, in this (sorted) order.
ASL_APP_FACE_INDICES = (0, 1, 4, 13, 14, 17, 33, 61, 63, 66, 70, 78, 105, 107, 133, 145, 148, 152, 159, 176, 263, 291,
                        293, 296, 300, 308, 334, 336, 362, 374, 377, 386, 400)


# ---- small helpers -------------------------------------------------------------------------------
def _masked(keypoints: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 keypoints with NaN at invalid points (and at non-finite coordinates) + bool mask [T, K]."""
    kp = np.asarray(keypoints, dtype=np.float32)
    valid = np.asarray(valid, dtype=bool) & np.isfinite(kp).all(axis=-1)
    kp = np.where(valid[..., None], kp, np.float32(np.nan)).astype(np.float32)
    return kp, valid


def _check_layout(path: Path, native: str, wanted: str | None) -> str:
    if wanted in (None, "", "auto") or wanted == native:
        return native
    if wanted not in LAYOUT_SIZES:
        raise UsageError(f"unknown layout '{wanted}'; valid: auto, {', '.join(sorted(LAYOUT_SIZES))}")
    raise DataError(f"{path}: holds {native} keypoints; gx cannot convert them to layout {wanted} (use --layout auto)")


# ---- pose-format .pose ---------------------------------------------------------------------------
def _holistic_index(component: str, name: str, i: int, n: int) -> int | None:
    """Index on mediapipe-holistic of point `name` (the i-th of n) of a MediaPipe component; None = dropped."""
    comp = component.upper()
    if comp == "POSE_LANDMARKS":
        if name in MP_POSE_NAMES:
            return MP_POSE_NAMES.index(name)
        return i if n == 33 else None
    if comp == "FACE_LANDMARKS":
        idx = int(name) if name.isdigit() else (i if n in (468, 478) else -1)
        return _FACE0 + idx if 0 <= idx < 468 else None  # 468-477 are the iris points of refined meshes
    if comp in ("LEFT_HAND_LANDMARKS", "RIGHT_HAND_LANDMARKS"):
        base = _LH0 if comp.startswith("LEFT") else _RH0
        if name in MP_HAND_NAMES:
            return base + MP_HAND_NAMES.index(name)
        return base + i if n == 21 else None
    return None  # POSE_WORLD_LANDMARKS (metric 3D about the hips) and anything else


_MP_COMPONENTS = {"POSE_LANDMARKS", "FACE_LANDMARKS", "LEFT_HAND_LANDMARKS", "RIGHT_HAND_LANDMARKS", "POSE_WORLD_LANDMARKS"}
_OP_COMPONENTS = {"pose_keypoints_2d": (0, 25), "face_keypoints_2d": (25, 70), "hand_left_keypoints_2d": (95, 21), "hand_right_keypoints_2d": (116, 21)}


def pose_point_map(path: Path, header) -> tuple[str, np.ndarray, np.ndarray]:
    """(layout, source point indices, target layout indices) for a pose-format header."""
    names = [c.name for c in header.components]
    src, dst = [], []
    offset = 0
    if {n.upper() for n in names} <= _MP_COMPONENTS and any(n.upper() == "POSE_LANDMARKS" or "HAND" in n.upper() for n in names):
        layout = HOLISTIC
        for comp in header.components:
            for i, point in enumerate(comp.points):
                j = _holistic_index(comp.name, str(point), i, len(comp.points))
                if j is not None:
                    src.append(offset + i)
                    dst.append(j)
            offset += len(comp.points)
    elif set(names) <= set(_OP_COMPONENTS):
        layout = OPENPOSE
        for comp in header.components:
            start, size = _OP_COMPONENTS[comp.name]
            if len(comp.points) != size:
                raise DataError(f"{path}: OpenPose component {comp.name} has {len(comp.points)} points, expected {size}")
            src.extend(range(offset, offset + size))
            dst.extend(range(start, start + size))
            offset += size
    else:
        raise DataError(
            f"{path}: unrecognised .pose components ({', '.join(names)}); gx reads MediaPipe Holistic "
            "(POSE_LANDMARKS, FACE_LANDMARKS, LEFT/RIGHT_HAND_LANDMARKS) and OpenPose (pose_keypoints_2d, face_keypoints_2d, hand_*_keypoints_2d)"
        )
    if len(set(dst)) != len(dst):
        raise DataError(f"{path}: two points of the .pose header map to the same {layout} point; the header is inconsistent")
    return layout, np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)


def _check_pose_body_size(path: Path, header, reader) -> None:
    """pose-format derives the frame count of v0.1 files from the bytes left and reads a truncated file
    without complaint (half a file gives half the frames, with confidences read from coordinate bytes).
    Check the body's size against its header: every frame complete, and as many as the header says."""
    from pose_format.utils.reader import ConstStructs

    version = round(float(header.version), 3)
    if version not in (0.1, 0.2):
        return  # v0.0 reads frame by frame and fails on its own when bytes are missing
    try:
        if version == 0.1:
            _, frames = reader.unpack(ConstStructs.double_ushort)
        else:
            reader.unpack(ConstStructs.float)
            frames = reader.unpack(ConstStructs.uint)
        people = reader.unpack(ConstStructs.ushort)
    except struct.error:
        raise DataError(f"{path}: truncated .pose file (the body header is incomplete)") from None
    if people == 0:
        raise DataError(f"{path}: the .pose file holds no person")
    points = sum(len(c.points) for c in header.components)
    per_frame = people * points * (header.num_dims() + 1) * 4  # float32 coordinates + confidence
    left = reader.bytes_left()
    whole = left // per_frame if per_frame else 0
    # v0.1 stores the frame count as uint16 (it wraps past 65535), so only compare modulo 2**16 there
    count_ok = (whole % 65536 == frames) if version == 0.1 else whole == frames
    if per_frame == 0 or left % per_frame or not count_ok:
        raise DataError(
            f"{path}: truncated or corrupt .pose file: the header announces {frames} frames of {per_frame} bytes, "
            f"the body holds {left} bytes ({left / per_frame if per_frame else 0:.2f} frames)"
        )


def read_pose_file(path: Path | str, *, layout: str | None = None, sample_id: str | None = None) -> PoseSample:
    """One pose-format `.pose` file -> PoseSample on mediapipe-holistic (543) or openpose-137.

    Coordinates keep pose-format's units (pixels); extra dimensions beyond x, y, z (e.g. the K of an
    `XYZKC` format) are dropped; the first person is read when a file holds several (`meta["people"]`).
    """
    from pose_format import Pose
    from pose_format.pose_header import PoseHeader
    from pose_format.utils.reader import BufferReader

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        reader = BufferReader(data)
        header = PoseHeader.read(reader)
    except Exception as exc:  # struct.error, UnicodeDecodeError, ... from a truncated or foreign file
        raise DataError(f"{path}: not a readable .pose file ({first_line(exc)}); the file is truncated or not pose-format") from None
    _check_pose_body_size(path, header, reader)
    try:
        pose = Pose.read(data)
    except Exception as exc:
        raise DataError(f"{path}: not a readable .pose file ({first_line(exc)}); the file is truncated or corrupt") from None
    native, src, dst = pose_point_map(path, header)
    out_layout = _check_layout(path, native, layout)
    body = pose.body.data  # masked array [T, P, N, D]
    conf = np.asarray(pose.body.confidence, dtype=np.float32)  # [T, P, N]
    t, people = body.shape[0], body.shape[1]
    dims = min(3, body.shape[-1])
    coords = np.asarray(np.ma.getdata(body), dtype=np.float32)[:, 0, :, :dims]
    hidden = np.ma.getmaskarray(body)[:, 0].any(axis=-1)
    valid = (conf[:, 0] > 0) & ~hidden
    k = LAYOUT_SIZES[out_layout]
    kp = np.zeros((t, k, dims), dtype=np.float32)
    ok = np.zeros((t, k), dtype=bool)
    kp[:, dst] = coords[:, src]
    ok[:, dst] = valid[:, src]
    kp, ok = _masked(kp, ok)
    meta: dict[str, Any] = {"format": "pose", "width": int(header.dimensions.width), "height": int(header.dimensions.height)}
    if people > 1:
        meta["people"] = int(people)
    if len(src) < sum(len(c.points) for c in header.components):
        meta["dropped_points"] = int(sum(len(c.points) for c in header.components) - len(src))
    return PoseSample(
        id=sample_id or path.stem, keypoints=kp, mask=ok, fps=float(pose.body.fps), layout=out_layout,
        source=str(path), meta=meta,
    )


# ---- OpenPose JSON (How2Sign) --------------------------------------------------------------------
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
            (start, size) = _OP_COMPONENTS[key]
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
    kp, ok = _masked(xy, conf > 0)
    meta = {"format": "openpose-json", "first_frame": int(first)}
    if t != len(frames):
        meta["missing_frames"] = int(t - len(frames))
    return PoseSample(id=sample_id, keypoints=kp, mask=ok, fps=float(fps or DEFAULT_JSON_FPS), layout=OPENPOSE,
                      source=str(frames[0][1].parent), meta=meta)


# ---- Kaggle ASL-signs parquet --------------------------------------------------------------------
KAGGLE_TYPES = {"pose": (0, 33), "face": (_FACE0, 468), "left_hand": (_LH0, 21), "right_hand": (_RH0, 21)}
KAGGLE_COLUMNS = ("frame", "type", "landmark_index", "x", "y")


def read_kaggle_parquet(path: Path | str, *, sample_id: str | None = None, fps: float | None = None) -> PoseSample:
    """A Kaggle ASL-signs (GISLR) landmark parquet -> PoseSample on mediapipe-holistic.

    Rows are placed by (type, landmark_index), whatever their order (Kaggle writes face, left_hand,
    pose, right_hand; SILFA pose first). NaN coordinates (a hand not detected) are masked. Frame numbers
    are the sequence's own: a gap between them becomes a fully masked frame.
    """
    import pandas as pd

    path = Path(path)
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
        raise DataError(f"{path}: not a readable parquet file ({first_line(exc)})") from None
    missing = [c for c in KAGGLE_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing columns {', '.join(missing)} (a Kaggle ASL-signs parquet has frame, row_id, type, landmark_index, x, y, z)")
    if df.empty:
        raise DataError(f"{path}: no rows")
    types = df["type"].astype(str).to_numpy()
    bad = sorted(set(types) - set(KAGGLE_TYPES))
    if bad:
        row = int(np.flatnonzero(types == bad[0])[0])
        raise DataError(f"{path}: row {row}: unknown landmark type '{bad[0]}' (expected face, left_hand, pose, right_hand)")
    try:
        frame = df["frame"].to_numpy().astype(np.int64)
        lmk = df["landmark_index"].to_numpy().astype(np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{path}: columns frame and landmark_index must be integers") from None
    offset = np.array([KAGGLE_TYPES[t][0] for t in types], dtype=np.int64)
    size = np.array([KAGGLE_TYPES[t][1] for t in types], dtype=np.int64)
    out = np.flatnonzero((lmk < 0) | (lmk >= size))
    if len(out):
        r = int(out[0])
        raise DataError(f"{path}: row {r}: landmark_index {lmk[r]} is out of range for type '{types[r]}' (0..{size[r] - 1})")
    cols = ["x", "y", "z"] if "z" in df.columns else ["x", "y"]
    try:
        xyz = df[cols].to_numpy(dtype=np.float32)
    except (TypeError, ValueError):
        raise DataError(f"{path}: columns {', '.join(cols)} must be numbers") from None
    first = int(frame.min())
    t = int(frame.max()) - first + 1
    kp = np.full((t, 543, len(cols)), np.nan, dtype=np.float32)
    kp[frame - first, offset + lmk] = xyz
    ok = np.isfinite(kp).all(axis=-1)
    kp, ok = _masked(kp, ok)
    meta = {"format": "kaggle-parquet", "first_frame": first}
    n_frames = len(np.unique(frame))
    if n_frames != t:
        meta["missing_frames"] = int(t - n_frames)
    return PoseSample(id=sample_id or path.stem, keypoints=kp, mask=ok, fps=float(fps or DEFAULT_PARQUET_FPS), layout=HOLISTIC,
                      source=str(path), meta=meta)


# ---- ASL-App landmark JSON -----------------------------------------------------------------------
def is_asl_app_json(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("frames"), list) and (
        not doc["frames"] or (isinstance(doc["frames"][0], dict) and ("pose" in doc["frames"][0] or "left_hand" in doc["frames"][0]))
    )


def read_asl_app_json(path: Path | str, *, doc: Any = None, face_indices: Iterable[int] | None = None, sample_id: str | None = None) -> PoseSample:
    """An ASL-App sign file (`{"sign", "fps", "frames": [{"pose": [33], "left_hand": [21], "right_hand": [21],
    "face": [33]}]}`, points `[x, y, z]` or null) -> PoseSample on mediapipe-holistic.

    Its 33 face points are the Face Mesh indices of `face_indices` (from the folder's metadata.json;
    ASL_APP_FACE_INDICES when there is none); the other 435 face points are masked.
    """
    path = Path(path)
    if doc is None:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: not a readable JSON file ({first_line(exc)})") from None
    if not is_asl_app_json(doc):
        raise DataError(f"{path}: not an ASL-App landmark file (needs 'frames': a list of {{pose, left_hand, right_hand, face}})")
    face_map = np.asarray(list(face_indices if face_indices is not None else ASL_APP_FACE_INDICES), dtype=np.int64)
    targets = {"pose": np.arange(33), "left_hand": _LH0 + np.arange(21), "right_hand": _RH0 + np.arange(21), "face": _FACE0 + face_map}
    frames = doc["frames"]
    kp = np.full((len(frames), 543, 3), np.nan, dtype=np.float32)
    for f, fr in enumerate(frames):
        if not isinstance(fr, dict):
            raise DataError(f"{path}: frames[{f}] is not an object")
        for part, idx in targets.items():
            pts = fr.get(part)
            if pts is None:
                continue  # part not detected in this frame
            if not isinstance(pts, list) or len(pts) != len(idx):
                got = len(pts) if isinstance(pts, list) else type(pts).__name__
                raise DataError(f"{path}: frames[{f}].{part} has {got} points, expected {len(idx)}")
            for i, p in enumerate(pts):
                if p is None:
                    continue
                if not isinstance(p, list) or len(p) != 3:
                    raise DataError(f"{path}: frames[{f}].{part}[{i}] must be [x, y, z] or null")
                try:
                    kp[f, idx[i]] = p
                except (TypeError, ValueError):
                    raise DataError(f"{path}: frames[{f}].{part}[{i}] holds values that are not numbers") from None
    sign = str(doc.get("sign", path.stem))
    kp, ok = _masked(kp, np.isfinite(kp).all(axis=-1))
    return PoseSample(
        id=sample_id or path.stem, keypoints=kp, mask=ok, fps=float(doc.get("fps") or 30.0), layout=HOLISTIC,
        text=sign.replace("_", " "), gloss=sign, source=str(path), meta={"format": "asl-app-json"},
    )


def read_asl_app_face_indices(metadata: Path) -> tuple[int, ...] | None:
    """`face_indices` of an ASL-App metadata.json, or None when the file is not one."""
    try:
        doc = json.loads(Path(metadata).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    idx = doc.get("face_indices") if isinstance(doc, dict) else None
    if isinstance(idx, list) and idx and all(isinstance(i, int) and 0 <= i < 468 for i in idx):
        return tuple(idx)
    return None


# ---- pickle (the original project's samples) -----------------------------------------------------
_KP_KEYS = ("keypoint", "keypoints", "kps", "pose", "poses", "skeleton", "skeletons", "joints", "landmarks")
_SCORE_KEYS = ("scores", "score", "confidence", "confidences", "conf", "keypoint_score", "keypoint_scores")
_ID_KEYS = ("name", "id", "video", "video_name", "file", "filename", "sample_id", "clip")
_TEXT_KEYS = ("text", "translation", "sentence", "caption", "words")
_GLOSS_KEYS = ("gloss", "glosses", "orth")
_SIGNER_KEYS = ("signer", "speaker", "signer_id", "participant_id")
CHANNELS = ("auto", "xy", "xyc", "xyz", "xyzc")


def pickle_refused(path: Path) -> DataError:
    return DataError(
        f"{path}: pickle files can run arbitrary code when loaded; gx reads one only with --allow-pickle "
        "(allow_pickle=True): pass it only for a file you trust"
    )


def _load_pickle(path: Path, allow_pickle: bool) -> Any:
    if not allow_pickle:
        raise pickle_refused(path)
    import pickle

    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        return pickle.load(io.BytesIO(raw))  # allowed explicitly by the caller (--allow-pickle)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except Exception as exc:  # UnpicklingError, EOFError, ModuleNotFoundError (a class gx does not have), ...
        raise DataError(f"{path}: cannot unpickle ({type(exc).__name__}: {first_line(exc)})") from None


def _entries(obj: Any) -> list[tuple[str, Any]]:
    """(fallback id, entry) pairs from a list of dicts, a dict of dicts, or a dict holding a list."""
    if isinstance(obj, dict):
        for key in ("samples", "data", "annotations", "items"):
            if isinstance(obj.get(key), (list, tuple)):
                return _entries(obj[key])
        if any(k in obj for k in _KP_KEYS):
            return [("0", obj)]
        return [(str(k), v) for k, v in obj.items()]
    if isinstance(obj, (list, tuple)):
        return [(str(i), v) for i, v in enumerate(obj)]
    return []


def _pick(d: dict, keys: tuple[str, ...]) -> Any:
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    return None


def _layout_from_points(k: int) -> tuple[str, np.ndarray] | None:
    """Layout and kept point indices for a bare [T, K, C] array, from K alone."""
    if k == 543:
        return HOLISTIC, np.arange(543)
    if k == 576:  # + 33 pose world landmarks
        return HOLISTIC, np.arange(543)
    if k in (553, 586):  # refined face (478 points: + 10 iris) [+ 33 world]
        return HOLISTIC, np.r_[np.arange(0, 33 + 468), np.arange(33 + 478, 33 + 478 + 42)]
    if k == 137:
        return OPENPOSE, np.arange(137)
    if k == 133:
        return COCO_WB, np.arange(133)
    return None


def _as_tkc(path: Path, sid: str, arr: Any) -> np.ndarray:
    try:
        a = np.asarray(arr, dtype=np.float32)
    except (TypeError, ValueError):
        raise DataError(f"{path}: sample '{sid}': keypoints are not a numeric array") from None
    if a.ndim == 4:  # [T, P, K, C]: first person
        a = a[:, 0]
    if a.ndim != 3 or a.shape[-1] not in (2, 3, 4):
        raise DataError(f"{path}: sample '{sid}': keypoints must be [T, K, C] with C = 2, 3 or 4 (or [T, P, K, C]), got shape {list(a.shape)}")
    return a


def read_pickle_samples(
    path: Path | str, *, allow_pickle: bool = False, layout: str | None = None, channels: str = "auto", fps: float | None = None,
) -> tuple[list[PoseSample], dict[str, int]]:
    """Samples from a pickle (a list of dicts, or a dict of them): keypoints under 'keypoint'/'keypoints'/...
    ([T, K, C] or [T, P, K, C]), optional scores [T, K], 'name', 'text', 'gloss', 'signer', 'fps', 'split'.

    Read only with allow_pickle=True. `channels` says what C holds: xy, xyc (c = confidence), xyz or
    xyzc; auto: xy for C = 2, xyzc for 4, and for C = 3 xyc on 2D-detector layouts (OpenPose,
    COCO-WholeBody) and xyz on MediaPipe. The layout follows from K (543/576/553/586 MediaPipe
    Holistic, 137 OpenPose, 133 COCO-WholeBody) unless `layout` names it. Returns (samples, skipped).
    """
    path = Path(path)
    if channels not in CHANNELS:
        raise UsageError(f"channels '{channels}' is not one of {', '.join(CHANNELS)}")
    obj = _load_pickle(path, allow_pickle)
    entries = _entries(obj)
    samples: list[PoseSample] = []
    skipped: dict[str, int] = {}
    keys_seen: set[str] = set()
    for fallback, entry in entries:
        if not isinstance(entry, dict):
            skipped["pickle entry that is not a dict"] = skipped.get("pickle entry that is not a dict", 0) + 1
            continue
        keys_seen.update(map(str, entry))
        raw = _pick(entry, _KP_KEYS)
        if raw is None:
            skipped["pickle entry without keypoints"] = skipped.get("pickle entry without keypoints", 0) + 1
            continue
        sid = str(_pick(entry, _ID_KEYS) or fallback)
        a = _as_tkc(path, sid, raw)
        guess = _layout_from_points(a.shape[1])
        if layout not in (None, "", "auto"):
            if layout not in LAYOUT_SIZES:
                raise UsageError(f"unknown layout '{layout}'; valid: auto, {', '.join(sorted(LAYOUT_SIZES))}")
            if guess is None or guess[0] != layout:
                if a.shape[1] != LAYOUT_SIZES[layout]:
                    raise DataError(f"{path}: sample '{sid}' has {a.shape[1]} points; layout {layout} has {LAYOUT_SIZES[layout]}")
                guess = (layout, np.arange(a.shape[1]))
        if guess is None:
            raise DataError(
                f"{path}: sample '{sid}' has {a.shape[1]} points per frame; gx knows 543/553/576/586 (MediaPipe Holistic), "
                "137 (OpenPose) and 133 (COCO-WholeBody)"
            )
        lay, keep = guess
        c = a.shape[-1]
        kind = channels
        if kind == "auto":
            kind = {2: "xy", 4: "xyzc"}.get(c) or ("xyz" if lay == HOLISTIC else "xyc")
        if len(kind) != c:
            raise DataError(f"{path}: sample '{sid}': channels '{kind}' needs C = {len(kind)}, the keypoints have C = {c}")
        coords = a[..., : 3 if kind.startswith("xyz") else 2]
        valid = np.ones(a.shape[:2], dtype=bool)
        if kind.endswith("c"):
            valid &= a[..., -1] > 0
        scores = _pick(entry, _SCORE_KEYS)
        if scores is not None:
            s = np.asarray(scores, dtype=np.float32)
            s = s[:, 0] if s.ndim == 3 else s
            if s.shape != a.shape[:2]:
                raise DataError(f"{path}: sample '{sid}': scores have shape {list(s.shape)}, expected {list(a.shape[:2])}")
            valid &= s > 0
        kp, ok = _masked(coords[:, keep], valid[:, keep])
        samples.append(PoseSample(
            id=sid, keypoints=kp, mask=ok, fps=float(entry.get("fps") or fps or 25.0), layout=lay,
            text=str(_pick(entry, _TEXT_KEYS) or ""), gloss=str(_pick(entry, _GLOSS_KEYS) or ""),
            split=normalize_split(str(entry.get("split") or "")), signer=str(_pick(entry, _SIGNER_KEYS) or ""),
            source=str(path), meta={"format": "pickle"},
        ))
    if not samples:
        if keys_seen & {*_TEXT_KEYS, *_GLOSS_KEYS}:
            raise DataError(
                f"{path}: the pickle holds labels ({', '.join(sorted(keys_seen)[:6])}) but no keypoint arrays; "
                "use it as a label table: texts=FILE (--texts FILE) next to a pose folder"
            )
        raise DataError(f"{path}: no samples with keypoints found (expected a list of dicts with a 'keypoint' array [T, K, C])")
    return samples, skipped


def read_label_pickle(path: Path | str, *, allow_pickle: bool = False) -> dict[str, Labels]:
    """Labels from a pickle (Uni-Sign / GFSLT-VLP `labels.*`: {name: {name, gloss, text, ...}}); needs allow_pickle."""
    path = Path(path)
    obj = _load_pickle(path, allow_pickle)
    table: dict[str, Labels] = {}
    for fallback, entry in _entries(obj):
        if not isinstance(entry, dict):
            continue
        name = str(_pick(entry, _ID_KEYS) or fallback)
        labels = {
            "text": str(_pick(entry, _TEXT_KEYS) or "").strip(), "gloss": str(_pick(entry, _GLOSS_KEYS) or "").strip(),
            "split": normalize_split(str(entry.get("split") or "")), "signer": str(_pick(entry, _SIGNER_KEYS) or "").strip(),
        }
        add_labels(table, name, {k: v for k, v in labels.items() if v})
    if not table:
        raise DataError(f"{path}: no labels found (expected entries with a name and a text or gloss)")
    return table


def read_labels(path: Path | str, *, allow_pickle: bool = False) -> dict[str, Labels]:
    """An explicit label file (`texts=`): a CSV/TSV table or, with allow_pickle, a pickle of labels."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"texts file {path} not found")
    if path.name.lower().endswith(PICKLE_SUFFIXES):
        return read_label_pickle(path, allow_pickle=allow_pickle)
    table = read_label_table(path, class_lists=[p for p in path.parent.glob("*.csv") if p != path])
    if table is None:
        raise DataError(
            f"{path}: not a label table: it needs a header with a name column ({', '.join(LABEL_KEY_COLUMNS[:5])}, ...) "
            "and a text, gloss or split column"
        )
    return table


# ---- a file or a folder of any of the above ------------------------------------------------------
_SIGNER_IN_NAME_RE = re.compile(r"^(?P<signer>signer\d+)_sample\d+$")  # AUTSL: signer0_sample1000
_LABEL_SUFFIXES = (".csv", ".tsv")


def _is_pickle(p: Path) -> bool:
    return p.name.lower().endswith(PICKLE_SUFFIXES)


def _bump(skipped: dict[str, int], reason: str, n: int = 1) -> None:
    skipped[reason] = skipped.get(reason, 0) + n


def _split_from_path(rel: Path) -> str:
    for part in rel.parts[:-1]:
        s = normalize_split(part)
        if s in ("train", "val", "test"):
            return s
    return ""


def read_pose_path(
    path: Path | str, *, allow_pickle: bool = False, layout: str | None = None, texts: Path | str | None = None,
    fps: float | None = None, channels: str = "auto",
) -> tuple[list[PoseSample], dict[str, int], list[Path]]:
    """Every sample of a pose file or folder, labelled from the label tables next to them.

    A folder is scanned recursively: `.pose` files, OpenPose `*_keypoints.json` frames (grouped into
    clips), Kaggle `.parquet` files, ASL-App sign JSON (face map from a `metadata.json`) and CSV/TSV
    label tables. Pickles are read only when passed as the file itself (with allow_pickle) or as
    `texts=`; in a folder they are counted as skipped. Labels come from `texts` first, then from the
    tables (matched by path relative to the table, then by file or clip name); a split comes from the
    labels, else from a folder named train/val/dev/test on the path, else stays ''. `fps` is used
    where the format records none (JSON, parquet, pickle). With `layout`, samples of other layouts
    are skipped (counted); without it, a folder that mixes layouts is a DataError.

    Returns (samples, skipped reason -> count, source files).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    wanted = None if layout in (None, "", "auto") else layout
    if wanted is not None and wanted not in LAYOUT_SIZES:
        raise UsageError(f"unknown layout '{wanted}'; valid: auto, {', '.join(sorted(LAYOUT_SIZES))}")
    skipped: dict[str, int] = {}
    found: list[tuple[PoseSample, Path, Path]] = []  # (sample, file or clip path for label lookup, root it is relative to)

    if path.is_file():
        root = path.parent
        if _is_pickle(path):
            pick, skipped = read_pickle_samples(path, allow_pickle=allow_pickle, layout=wanted, channels=channels, fps=fps)
            return _finish(path, [(s, root / s.id, root) for s in pick], skipped, [path], wanted, texts, [], allow_pickle)
        files = [path]
        m = OPENPOSE_FRAME_RE.match(path.name)
        if m:  # one frame of a clip: read the whole clip
            files = sorted(p for p in path.parent.glob(f"{glob_escape(m['clip'])}_*_keypoints.json") if OPENPOSE_FRAME_RE.match(p.name))
        # label tables beside the file and one folder up (a lexicon's index.csv lists `ase/x.pose`)
        label_files = sorted(p for d in (root, root.parent) for p in d.iterdir() if p.is_file() and p.suffix.lower() in _LABEL_SUFFIXES)
        if path.suffix.lower() == ".parquet":  # Kaggle keeps train.csv at <root>/train_landmark_files/<pid>/<seq>.parquet
            label_files += [a / "train.csv" for a in path.parents[2:4] if (a / "train.csv").is_file()]
        # Only a table that names this file (or its clip) can label it: the others are not parsed at all
        names = {label_keys(path.name)[-1]} | ({m["clip"]} if m else set())
        label_files = [lf for lf in label_files if _table_names(lf, names, skipped)]
        metas = [root / "metadata.json", root.parent / "metadata.json"]
    else:
        root = path
        files = sorted(p for p in root.rglob("*") if p.is_file() and not any(x.startswith(".") for x in p.relative_to(root).parts))
        label_files = [p for p in files if p.suffix.lower() in _LABEL_SUFFIXES]
        metas = [p for p in files if p.name == "metadata.json"]

    face_maps = {m.parent: idx for m in metas if m.is_file() and (idx := read_asl_app_face_indices(m)) is not None}
    openpose_files: list[Path] = []
    for f in files:
        suffix = f.suffix.lower()
        name = f.name.lower()
        rel = f.relative_to(root)
        sid = rel.with_suffix("").as_posix()
        if _is_pickle(f):
            _bump(skipped, "pickle not read in a folder scan (pass it as the input with --allow-pickle, or as --texts)")
        elif suffix == ".pose":
            found.append((read_pose_file(f, sample_id=sid), f, root))
        elif OPENPOSE_FRAME_RE.match(f.name):
            openpose_files.append(f)
        elif suffix == ".parquet":
            found.append((read_kaggle_parquet(f, sample_id=sid, fps=fps), f, root))
        elif suffix == ".json":
            if name == "metadata.json" and f.parent in face_maps:
                continue
            try:
                doc = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
                if path.is_file():
                    raise DataError(f"{f}: not valid JSON ({first_line(exc)})") from None
                _bump(skipped, "unreadable JSON")
                continue
            if is_asl_app_json(doc):
                fmap = face_maps.get(f.parent) or face_maps.get(f.parent.parent)
                found.append((read_asl_app_json(f, doc=doc, face_indices=fmap, sample_id=sid), f, root))
            elif isinstance(doc, dict) and "people" in doc:
                openpose_files.append(f)
            elif path.is_file():
                raise DataError(f"{f}: JSON that is neither OpenPose keypoints ('people') nor ASL-App landmarks ('frames')")
            else:
                _bump(skipped, "JSON that is not a pose file")
        elif suffix in _LABEL_SUFFIXES:
            continue
        else:
            if path.is_file():
                raise DataError(
                    f"{f}: not a pose file gx reads (.pose, OpenPose *_keypoints.json, Kaggle .parquet, ASL-App .json, "
                    "or a pickle with --allow-pickle)"
                )
            _bump(skipped, "not a pose or label file")
    clips = find_openpose_clips(root, [f for f in openpose_files if OPENPOSE_FRAME_RE.match(f.name)])
    for f in openpose_files:  # a lone OpenPose JSON without the _<frame>_keypoints suffix: a one-frame clip
        if not OPENPOSE_FRAME_RE.match(f.name):
            clips[f.relative_to(root).with_suffix("").as_posix()] = [(0, f)]
    for cid, frames in sorted(clips.items()):
        found.append((read_openpose_clip(frames, sample_id=cid, fps=fps), root / cid, root))
    return _finish(path, found, skipped, files, wanted, texts, label_files, allow_pickle)


def _table_names(table: Path, names: set[str], skipped: dict[str, int]) -> bool:
    """Whether the bytes of a label table hold any of `names` (a table lists samples by path or name, so
    one that can label a file holds its base name). One that cannot be opened is noted in `skipped`."""
    try:
        data = table.read_bytes()
    except OSError as exc:
        _bump(skipped, f"label table not read: {table}: {first_line(exc)}")
        return False
    return any(n and n.encode("utf-8") in data for n in names)


def _warn(message: str) -> None:
    import warnings

    warnings.warn(GxWarning(message), stacklevel=3)


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _finish(
    path: Path, found: list[tuple[PoseSample, Path, Path]], skipped: dict[str, int], files: list[Path], wanted: str | None,
    texts: Path | str | None, label_files: list[Path], allow_pickle: bool,
) -> tuple[list[PoseSample], dict[str, int], list[Path]]:
    tables: list[tuple[Path, dict[str, Labels]]] = []
    table_files: list[Path] = []
    for lf in label_files:
        try:
            table = read_label_table(lf, class_lists=[p for p in lf.parent.glob("*.csv") if p != lf])
        except DataError as exc:  # one bad table among many is a note, not the end of the whole read
            _bump(skipped, f"label table not read: {exc}")
            _warn(f"{exc}; its samples get no texts from it")
            continue
        if table:
            tables.append((lf.parent, table))
            table_files.append(lf)
        elif lf.name.lower() == LABELS_FILE:  # other CSVs may be class lists or notes; this name says it is a label table
            _bump(skipped, f"label table not read: {lf}")
            _warn(f"{lf}: not a label table (it needs a header with a path or name column and a text, gloss or split column); "
                  "its samples get no texts from it")
    explicit = read_labels(texts, allow_pickle=allow_pickle) if texts else None
    from_tables = from_explicit = 0  # samples a table / --texts labelled

    samples: list[PoseSample] = []
    layouts: dict[str, str] = {}
    for sample, where, root in found:
        if wanted is not None and sample.layout != wanted:
            _bump(skipped, f"layout {sample.layout}, not {wanted}")
            continue
        if sample.num_frames == 0:
            _bump(skipped, "empty (0 frames)")
            continue
        labels: Labels = {}
        for table_dir, table in tables:
            rel = where.relative_to(table_dir).as_posix() if table_dir in where.parents else where.name
            hit = next((table[k] for k in (*label_keys(rel), *label_keys(where.name)) if k in table), None)
            if hit is not None:
                labels = dict(hit)
                from_tables += 1
                break
        if explicit is not None:
            hit = next((explicit[k] for k in (*label_keys(sample.id), *label_keys(where.name)) if k in explicit), None)
            labels.update(hit or {})
            from_explicit += hit is not None
        sample.text = labels.get("text", sample.text)
        sample.gloss = labels.get("gloss", sample.gloss) or gloss_from_name(where.stem)
        sample.split = labels.get("split") or sample.split or _split_from_path(where.relative_to(root) if root in where.parents else Path(where.name))
        m = _SIGNER_IN_NAME_RE.match(where.stem)
        sample.signer = labels.get("signer", sample.signer) or (m["signer"] if m else "")
        layouts.setdefault(sample.layout, sample.source)
        samples.append(sample)
    if explicit is not None and samples and not from_explicit:
        raise DataError(f"{texts}: none of its rows names one of the {len(samples)} samples (e.g. '{samples[0].id}'); "
                        "check its path or name column")
    if tables and samples and not from_tables:
        _warn(f"{', '.join(map(str, table_files))}: names none of the {len(samples)} samples of {path} (e.g. '{samples[0].id}'); "
              "they get no texts from it")
    if len(layouts) > 1:
        desc = " and ".join(f"{lay} ({Path(src).name})" for lay, src in layouts.items())
        raise DataError(f"{path}: mixes keypoint layouts: {desc}; keep one with `gx pose-convert --layout NAME` (a dataset: --dataset-opt layout=NAME), or put each layout in its own folder")
    if not samples:
        what = f" of layout {wanted}" if wanted else ""
        raise DataError(
            f"{path}: no pose samples{what} found (gx reads .pose, OpenPose *_keypoints.json, Kaggle .parquet, "
            "ASL-App sign .json, a gx pose folder with index.jsonl, or a pickle with --allow-pickle)"
        )
    seen: dict[str, int] = {}
    for s in samples:  # the same stem in two formats (a.pose, a.parquet): keep both, tell them apart
        if s.id in seen:
            seen[s.id] += 1
            s.id = f"{s.id}#{seen[s.id]}"
        else:
            seen[s.id] = 1
    return samples, skipped, [*files, *label_files]
