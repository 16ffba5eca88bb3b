"""One keypoint sequence (`PoseSample`) and split names: what data/pose.py and the pose readers (data/pose_*.py) share.

They live below both, so that the registry (pose.py) can load its readers and the readers can build
samples without the two modules importing each other. `from gesture_cli.data.pose import PoseSample`
keeps working: pose.py uses and re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

_SPLIT_ALIASES = {"training": "train", "dev": "val", "valid": "val", "validation": "val", "testing": "test"}


def normalize_split(name: str) -> str:
    """'dev'/'validation' -> 'val', 'training' -> 'train'; other names lower-cased; '' stays ''."""
    s = (name or "").strip().lower()
    return _SPLIT_ALIASES.get(s, s)


@dataclass
class PoseSample:
    id: str  # unique within its dataset: the path relative to the input without suffix, a clip name, ...
    keypoints: np.ndarray  # float32 [T, K, C]: C = 2 (x, y) or 3 (x, y, z), source units; NaN where mask is False
    mask: np.ndarray  # bool [T, K]: True = the point was observed
    fps: float  # frames per second
    layout: str  # models/skeletons.py layout: mediapipe-holistic | openpose-137 | coco-wholebody-133
    text: str = ""  # spoken-language sentence or word ('' when the source has none)
    gloss: str = ""  # gloss sequence, space-separated ('' when none)
    split: str = ""  # train | val | test, or '' when the source does not say
    signer: str = ""  # signer id ('' when unknown)
    source: str = ""  # file or folder it was read from
    meta: dict[str, Any] = field(default_factory=dict)  # format-specific extras: width/height, dropped points, ...

    def __post_init__(self) -> None:
        kp = np.asarray(self.keypoints, dtype=np.float32)
        mask = np.asarray(self.mask, dtype=bool)
        if kp.ndim != 3 or kp.shape[-1] not in (2, 3):
            raise ValueError(f"PoseSample {self.id!r}: keypoints must be [T, K, C] with C = 2 or 3, got {list(kp.shape)}")
        if mask.shape != kp.shape[:2]:
            raise ValueError(f"PoseSample {self.id!r}: mask shape {list(mask.shape)} != keypoints [T, K] {list(kp.shape[:2])}")
        # a point is finite when the sum of its coordinates is (NaN and inf propagate); channel by channel,
        # because numpy reductions over a 2-3 long last axis are ~10x slower
        finite = np.isfinite(sum(kp[..., c] for c in range(kp.shape[-1])))
        if (finite & ~mask).any():  # keep the invariant: masked points hold NaN, never a plausible value
            kp = np.where(mask[..., None], kp, np.float32(np.nan))
        mask = mask & finite
        self.keypoints, self.mask = kp, mask

    @property
    def num_frames(self) -> int:
        return int(self.keypoints.shape[0])

    @property
    def num_points(self) -> int:
        return int(self.keypoints.shape[1])

    @property
    def dims(self) -> int:
        return int(self.keypoints.shape[2])

    def __repr__(self) -> str:
        return (f"PoseSample(id={self.id!r}, {self.num_frames} frames x {self.num_points} points x {self.dims}, {self.layout}, "
                f"{self.fps:g} fps, valid {self.mask.mean():.0%}, text={self.text[:40]!r}, gloss={self.gloss[:40]!r}, split={self.split!r})")
