"""ASL-App (shravnchandr/ASL-App) landmark JSON: `{"sign", "fps", "frames": [{pose, left_hand, right_hand,
face}]}`, one sign per file, with the face map in the folder's metadata.json -> `PoseSample`s on
`mediapipe-holistic`, in [0, 1] image fractions."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from gesture_cli.core.errors import DataError
from gesture_cli.data.label_tables import first_line
from gesture_cli.data.pose_points import HOLISTIC, HOLISTIC_FACE0, HOLISTIC_LEFT_HAND0, HOLISTIC_RIGHT_HAND0, masked_keypoints
from gesture_cli.data.pose_sample import PoseSample

# ASL-App (shravnchandr/ASL-App) keeps 33 of the 468 Face Mesh points, in this (sorted) order.
ASL_APP_FACE_INDICES = (0, 1, 4, 13, 14, 17, 33, 61, 63, 66, 70, 78, 105, 107, 133, 145, 148, 152, 159, 176, 263, 291,
                        293, 296, 300, 308, 334, 336, 362, 374, 377, 386, 400)


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
    targets = {"pose": np.arange(33), "left_hand": HOLISTIC_LEFT_HAND0 + np.arange(21), "right_hand": HOLISTIC_RIGHT_HAND0 + np.arange(21),
               "face": HOLISTIC_FACE0 + face_map}
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
    kp, ok = masked_keypoints(kp, np.isfinite(kp).all(axis=-1))
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
