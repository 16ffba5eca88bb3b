"""Kaggle ASL-signs (GISLR) landmark parquet files, one sequence per file (columns frame, row_id, type,
landmark_index, x, y[, z]) -> `PoseSample`s on `mediapipe-holistic`, in [0, 1] image fractions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gesture_cli.core.errors import DataError
from gesture_cli.data.label_tables import first_line
from gesture_cli.data.pose_points import HOLISTIC, HOLISTIC_FACE0, HOLISTIC_LEFT_HAND0, HOLISTIC_RIGHT_HAND0, masked_keypoints
from gesture_cli.data.pose_sample import PoseSample

DEFAULT_PARQUET_FPS = 30.0  # Kaggle parquet records no frame rate either (GISLR clips are ~30 fps webcam video)
# landmark type -> (first index on mediapipe-holistic, number of points)
KAGGLE_TYPES = {"pose": (0, 33), "face": (HOLISTIC_FACE0, 468), "left_hand": (HOLISTIC_LEFT_HAND0, 21),
                "right_hand": (HOLISTIC_RIGHT_HAND0, 21)}
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
    kp, ok = masked_keypoints(kp, ok)
    meta = {"format": "kaggle-parquet", "first_frame": first}
    n_frames = len(np.unique(frame))
    if n_frames != t:
        meta["missing_frames"] = int(t - n_frames)
    return PoseSample(id=sample_id or path.stem, keypoints=kp, mask=ok, fps=float(fps or DEFAULT_PARQUET_FPS), layout=HOLISTIC,
                      source=str(path), meta=meta)
