"""Scene features: object counts from a detector, joined to the segmentation fractions of `gx infer segment`.

`gx infer segment --detect DETECTOR` runs an object detector (models/detect.py) on every input image
next to the segmentation head. For each chosen class (`--detect-classes`, default the ten below) the
feature table gets ONE column, `det_count_<class>`: how many objects of that class the detector finds
with a score of at least `--detect-threshold` (default 0.5). With the 26 groups of
configs/ade20k_to_26.json that makes 26 + 10 = 36 features per image. Counts, not areas, because the
segmentation columns already measure how much of the image each kind of thing covers; the detector adds
how many separate objects there are (three pedestrians versus one crowd-sized blob). Each detection's box,
score and class, and the share of the image the boxes of each chosen class cover, go to predictions.json.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from gesture_cli.core.errors import UsageError

DEFAULT_DETECT_CLASSES = ("person", "bicycle", "car", "motorcycle", "bus", "truck", "traffic light", "stop sign", "bench", "dog")
DEFAULT_DETECT_THRESHOLD = 0.5
COLUMN_PREFIX = "det_count_"


def column_slug(name: str) -> str:
    """A CSV-friendly column fragment: 'traffic light' -> 'traffic_light'.

    Both column families of the feature table use it (seg_<group> in tasks/segment.py, det_count_<class>
    here); it lives in this module because tasks/segment.py imports it, never the other way round."""
    return re.sub(r"[^0-9a-z]+", "_", str(name).strip().lower()).strip("_") or "class"


def parse_detect_classes(values: Sequence[str] | str | None) -> tuple[str, ...]:
    """`--detect-classes` values (repeatable, each comma-separated) -> class names; None gives the default ten."""
    from gesture_cli.models.detect import label_key

    if values is None:
        return DEFAULT_DETECT_CLASSES
    if isinstance(values, str):
        values = [values]
    names = [n.strip() for v in values for n in str(v).split(",") if n.strip()]
    if not names:
        raise UsageError("--detect-classes names no class; give comma-separated detector classes, e.g. 'person,car,traffic light'")
    seen: dict[str, str] = {}
    for n in names:
        if label_key(n) in seen:
            raise UsageError(f"--detect-classes names '{seen[label_key(n)]}' twice" + (f" (as '{n}')" if n != seen[label_key(n)] else ""))
        seen[label_key(n)] = n
    return tuple(names)


def check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise UsageError(f"--detect-threshold must be between 0 and 1 (a detection score); got {threshold:g}")
    return threshold


class SceneDetector:
    """A detector, the classes to count and the score threshold: per image, one count per class."""

    def __init__(self, detector, classes: Sequence[str], threshold: float = DEFAULT_DETECT_THRESHOLD):
        self.detector = detector
        self.classes = list(classes)
        self.threshold = check_threshold(threshold)
        self.label_ids = detector.class_ids(self.classes)  # UsageError with close matches for an unknown name
        self.columns = [f"{COLUMN_PREFIX}{column_slug(c)}" for c in self.classes]

    def run(self, image: np.ndarray) -> tuple[np.ndarray, dict]:
        """(int64 [C] counts, record for predictions.json) of one uint8 [H, W, 3] image."""
        found = self.detector.detect(image, threshold=self.threshold)
        counts = np.array([int(np.isin(found.labels, ids).sum()) for ids in self.label_ids], dtype=np.int64)
        id2label = self.detector.id2label
        objects = [{"class": id2label[int(lab)], "score": round(float(s), 4), "box": [round(float(v), 1) for v in box]}
                   for box, s, lab in zip(found.boxes, found.scores, found.labels, strict=True)]
        areas = {c: round(found.select(ids).union_area_fraction(), 6) for c, ids in zip(self.classes, self.label_ids, strict=True)}
        record = {"counts": dict(zip(self.classes, counts.tolist(), strict=True)), "box_area_fraction": areas, "objects": objects}
        return counts, record

    def boxes(self, record: dict) -> list[tuple[str, list[float]]]:
        """(class, box) of the chosen classes in a record, for drawing."""
        from gesture_cli.models.detect import label_key

        keys = {label_key(c): c for c in self.classes}
        return [(keys[label_key(o["class"])], o["box"]) for o in record["objects"] if label_key(o["class"]) in keys]

    def schema(self) -> dict[str, dict]:
        """features.schema.json entries of the count columns."""
        d = self.detector
        return {col: {"type": "int", "source": "detector class", "class": c, "unit": "objects (count)",
                      "description": f"number of '{c}' objects detected with score >= {self.threshold:g} by {d.name}"}
                for col, c in zip(self.columns, self.classes, strict=True)}

    def describe(self) -> dict:
        return {**self.detector.describe(), "classes": self.classes, "threshold": self.threshold, "feature": "count",
                "columns": self.columns}


__all__ = ["DEFAULT_DETECT_CLASSES", "DEFAULT_DETECT_THRESHOLD", "SceneDetector", "check_threshold", "column_slug", "parse_detect_classes"]
