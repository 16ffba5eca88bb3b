"""Keypoint pictures: the predicted MPII skeleton drawn on an image."""

from __future__ import annotations

import numpy as np

from gesture_cli.data.keypoints import SKELETON, side_of

COLOURS = {"right": (230, 60, 50), "left": (40, 110, 240), "centre": (60, 200, 80)}  # RGB


def render_skeleton(img: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """Draw bones and joints (right red, left blue, centre green) on a copy of an RGB image; joints [16, 2] in pixels."""
    import cv2

    out = np.ascontiguousarray(img.copy())
    h, w = out.shape[:2]
    thick = max(1, round(max(h, w) / 200))
    pts = [tuple(int(round(v)) for v in p) for p in joints]
    for a, b in SKELETON:
        side = side_of(b) if side_of(b) != "centre" else side_of(a)
        cv2.line(out, pts[a], pts[b], COLOURS[side], thick, cv2.LINE_AA)
    for j, p in enumerate(pts):
        cv2.circle(out, p, thick + 2, COLOURS[side_of(j)], -1, cv2.LINE_AA)
        cv2.circle(out, p, thick + 2, (255, 255, 255), 1, cv2.LINE_AA)
    return out
