"""pose-format `.pose` files (v0.0-0.2, one sequence per file) -> `PoseSample`s.

MediaPipe Holistic files land on `mediapipe-holistic` (543), OpenPose files on `openpose-137`.
MediaPipe variants are mapped by point name onto the 543-point layout: 576-point files (with
POSE_WORLD_LANDMARKS, metric 3D, which gx drops), 553/586-point files (Face Mesh with the 10 iris
points 468-477, dropped) and reduced files (pose-format's 178-point subset: the absent points are
masked). Coordinates stay in pose-format's units (pixels).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

from gesture_cli.core.errors import DataError, UsageError
from gesture_cli.data.label_tables import first_line
from gesture_cli.data.pose_points import (
    HOLISTIC,
    HOLISTIC_FACE0,
    HOLISTIC_LEFT_HAND0,
    HOLISTIC_RIGHT_HAND0,
    OPENPOSE,
    OPENPOSE_COMPONENTS,
    masked_keypoints,
)
from gesture_cli.data.pose_sample import PoseSample
from gesture_cli.models.skeletons import LAYOUT_SIZES, MP_HAND_NAMES, MP_POSE_NAMES


def _check_layout(path: Path, native: str, wanted: str | None) -> str:
    if wanted in (None, "", "auto") or wanted == native:
        return native
    if wanted not in LAYOUT_SIZES:
        raise UsageError(f"unknown layout '{wanted}'; valid: auto, {', '.join(sorted(LAYOUT_SIZES))}")
    raise DataError(f"{path}: holds {native} keypoints; gx cannot convert them to layout {wanted} (use --layout auto)")


def _holistic_index(component: str, name: str, i: int, n: int) -> int | None:
    """Index on mediapipe-holistic of point `name` (the i-th of n) of a MediaPipe component; None = dropped."""
    comp = component.upper()
    if comp == "POSE_LANDMARKS":
        if name in MP_POSE_NAMES:
            return MP_POSE_NAMES.index(name)
        return i if n == 33 else None
    if comp == "FACE_LANDMARKS":
        idx = int(name) if name.isdigit() else (i if n in (468, 478) else -1)
        return HOLISTIC_FACE0 + idx if 0 <= idx < 468 else None  # 468-477 are the iris points of refined meshes
    if comp in ("LEFT_HAND_LANDMARKS", "RIGHT_HAND_LANDMARKS"):
        base = HOLISTIC_LEFT_HAND0 if comp.startswith("LEFT") else HOLISTIC_RIGHT_HAND0
        if name in MP_HAND_NAMES:
            return base + MP_HAND_NAMES.index(name)
        return base + i if n == 21 else None
    return None  # POSE_WORLD_LANDMARKS (metric 3D about the hips) and anything else


_MP_COMPONENTS = {"POSE_LANDMARKS", "FACE_LANDMARKS", "LEFT_HAND_LANDMARKS", "RIGHT_HAND_LANDMARKS", "POSE_WORLD_LANDMARKS"}


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
    elif set(names) <= set(OPENPOSE_COMPONENTS):
        layout = OPENPOSE
        for comp in header.components:
            start, size = OPENPOSE_COMPONENTS[comp.name]
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
    kp, ok = masked_keypoints(kp, ok)
    meta: dict[str, Any] = {"format": "pose", "width": int(header.dimensions.width), "height": int(header.dimensions.height)}
    if people > 1:
        meta["people"] = int(people)
    if len(src) < sum(len(c.points) for c in header.components):
        meta["dropped_points"] = int(sum(len(c.points) for c in header.components) - len(src))
    return PoseSample(
        id=sample_id or path.stem, keypoints=kp, mask=ok, fps=float(pose.body.fps), layout=out_layout,
        source=str(path), meta=meta,
    )
