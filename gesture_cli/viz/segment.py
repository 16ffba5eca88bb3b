"""Segmentation pictures: class-id maps -> colour masks, overlays, labelled detection boxes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

OVERLAY_ALPHA = 0.5  # weight of the colour mask in overlays/*.png


def render_mask(pred: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] colour image of a class-id map."""
    return palette[np.minimum(pred, len(palette) - 1)]


def render_overlay(image: np.ndarray, colour: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    return np.clip(image.astype(np.float32) * (1 - alpha) + colour.astype(np.float32) * alpha, 0, 255).astype(np.uint8)


def draw_boxes(image: np.ndarray, boxes: Sequence[tuple[str, Sequence[float]]]) -> np.ndarray:
    """A copy of uint8 [H, W, 3] `image` with each (class, x0 y0 x1 y1 box) outlined and labelled."""
    import cv2

    out = np.ascontiguousarray(image.copy())
    for label, (x0, y0, x1, y1) in boxes:
        p0, p1 = (int(round(x0)), int(round(y0))), (int(round(x1)), int(round(y1)))
        cv2.rectangle(out, p0, p1, (255, 255, 0), 1)
        cv2.putText(out, str(label), (p0[0] + 2, max(p0[1] + 10, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 0), 1, cv2.LINE_AA)
    return out
