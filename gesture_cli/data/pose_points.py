"""What every pose reader shares: gx's layout names, where each MediaPipe part starts on
mediapipe-holistic, OpenPose's components on openpose-137, and the masking rule.

A point is missing when its confidence is 0, when the source gives NaN/null, or when the source masks
it: it is MASKED (mask False, coordinates NaN), never left as a zero that looks like a real position.
"""

from __future__ import annotations

import numpy as np

HOLISTIC = "mediapipe-holistic"
OPENPOSE = "openpose-137"
COCO_WB = "coco-wholebody-133"
# first index of the face, left hand and right hand on mediapipe-holistic (pose 0-32, face 33-500, hands 501-521, 522-542)
HOLISTIC_FACE0, HOLISTIC_LEFT_HAND0, HOLISTIC_RIGHT_HAND0 = 33, 33 + 468, 33 + 468 + 21
# OpenPose JSON key / .pose component -> (first index on openpose-137, number of points)
OPENPOSE_COMPONENTS = {"pose_keypoints_2d": (0, 25), "face_keypoints_2d": (25, 70), "hand_left_keypoints_2d": (95, 21), "hand_right_keypoints_2d": (116, 21)}


def masked_keypoints(keypoints: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 keypoints with NaN at invalid points (and at non-finite coordinates) + bool mask [T, K]."""
    kp = np.asarray(keypoints, dtype=np.float32)
    valid = np.asarray(valid, dtype=bool) & np.isfinite(kp).all(axis=-1)
    kp = np.where(valid[..., None], kp, np.float32(np.nan)).astype(np.float32)
    return kp, valid
