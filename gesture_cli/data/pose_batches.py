"""Pose samples as model input: normalisation, frame subsampling, padded batches (`collate_pose`) and the
`PoseBatches` source that `fit()` draws from.

    batch = collate_pose(samples[:8], max_frames=256, normalize="shoulders")
    batch["keypoints"], batch["mask"]        # float32 [B, T, K, C] (NaN -> 0), bool [B, T, K]

Missing points arrive as NaN with mask False (data/pose_sample.py); here they become 0 for the
model, always next to the mask that says they are not real.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from gesture_cli.core.errors import UsageError
from gesture_cli.data.pose_sample import PoseSample

NORMALIZATIONS = ("none", "max-abs", "shoulders", "shoulders-frame")


# ---- normalisation -------------------------------------------------------------------------------
def normalize_max_abs(keypoints: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The original project's scaling: divide the whole sequence by max |coordinate| over its valid points.

    No centring; every channel (x, y and z) is divided by the same number, so aspect ratios hold.
    """
    kp = np.asarray(keypoints, dtype=np.float32)
    valid = np.asarray(mask, dtype=bool)
    if not valid.any():
        return kp.copy()
    m = float(np.abs(kp[valid]).max())
    return kp / m if m > 0 else kp.copy()


def normalize_shoulders(keypoints: np.ndarray, mask: np.ndarray, *, layout: str, per: str = "sequence") -> np.ndarray:
    """Centre at the shoulder midpoint and divide by the shoulder width (the x, y distance).

    per="sequence": one centre and one scale for the whole sample, the means over frames where both
    shoulders are seen; the signer's own movement (leaning, turning) stays in the data.
    per="frame": each frame by its own shoulders (removes that movement); frames where a shoulder is
    missing use the sequence values. A sample with no frame showing both shoulders falls back to
    centring at the mean of its valid points and dividing by their max |deviation| (as max-abs).
    Masked points stay NaN. z (if present) is shifted by the shoulders' mean z and divided by the same scale.
    """
    from gesture_cli.models.skeletons import get_skeleton

    if per not in ("sequence", "frame"):
        raise UsageError(f"per='{per}' must be 'sequence' or 'frame'")
    kp = np.asarray(keypoints, dtype=np.float32)
    valid = np.asarray(mask, dtype=bool)
    left, right = get_skeleton(layout).shoulders
    both = valid[:, left] & valid[:, right]  # [T]
    if not both.any():
        if not valid.any():
            return kp.copy()
        center = kp[valid].mean(axis=0)
        scale = float(np.abs(kp[valid] - center).max()) or 1.0
        return (kp - center) / scale
    mid = (kp[:, left] + kp[:, right]) / 2  # [T, C]
    width = np.linalg.norm(kp[:, left, :2] - kp[:, right, :2], axis=-1)  # [T]
    seq_center, seq_width = mid[both].mean(axis=0), float(width[both].mean())
    seq_width = seq_width if seq_width > 0 else 1.0
    if per == "sequence":
        return (kp - seq_center) / seq_width
    ok = both & (width > 0)
    center = np.where(ok[:, None], mid, seq_center)[:, None, :]  # [T, 1, C]
    scale = np.where(ok, width, seq_width)[:, None, None]  # [T, 1, 1]
    return ((kp - center) / scale).astype(np.float32)


def normalize_sample(sample: PoseSample, method: str = "shoulders") -> PoseSample:
    """A copy of `sample` normalised by `method`: none | max-abs | shoulders | shoulders-frame."""
    if method not in NORMALIZATIONS:
        raise UsageError(f"normalisation '{method}' is not one of {', '.join(NORMALIZATIONS)}")
    if method == "none":
        return sample
    if method == "max-abs":
        kp = normalize_max_abs(sample.keypoints, sample.mask)
    else:
        kp = normalize_shoulders(sample.keypoints, sample.mask, layout=sample.layout, per="frame" if method == "shoulders-frame" else "sequence")
    return replace(sample, keypoints=kp.astype(np.float32), mask=sample.mask.copy(), meta=dict(sample.meta))


# ---- frames and batches --------------------------------------------------------------------------
def subsample_frames(sample: PoseSample, *, max_frames: int | None = None, stride: int = 1, rng: np.random.Generator | None = None) -> PoseSample:
    """Keep every `stride`-th frame, then at most `max_frames` frames spread over the whole sequence.

    Without `rng` the kept frames are evenly spaced (evaluation); with it, one random frame from each
    of `max_frames` equal segments (training augmentation, TSN-style). fps is divided accordingly.
    """
    if stride < 1:
        raise UsageError("stride must be >= 1")
    idx = np.arange(0, sample.num_frames, stride)
    if max_frames is not None and max_frames > 0 and len(idx) > max_frames:
        edges = np.linspace(0, len(idx), max_frames + 1)
        if rng is None:
            pick = np.floor((edges[:-1] + edges[1:]) / 2).astype(np.int64)
        else:
            pick = np.floor(edges[:-1] + rng.random(max_frames) * np.diff(edges)).astype(np.int64)
        idx = idx[np.clip(pick, 0, len(idx) - 1)]
    if len(idx) == sample.num_frames:
        return sample
    fps = sample.fps * len(idx) / max(sample.num_frames, 1)
    return replace(sample, keypoints=sample.keypoints[idx], mask=sample.mask[idx], fps=float(fps), meta=dict(sample.meta))


def collate_pose(
    samples: Sequence[PoseSample], *, max_frames: int | None = None, points: np.ndarray | Sequence[int] | None = None,
    dims: int | None = None, normalize: str = "none", pad_multiple: int = 1, rng: np.random.Generator | None = None,
) -> dict[str, Any]:
    """Pad variable-length samples into one batch of tensors.

    Returns {"keypoints": float32 [B, T, K, C] (masked and padded points are 0), "point_mask": bool
    [B, T, K], "frame_mask": bool [B, T] (True = a real frame), "lengths": int64 [B], "ids", "texts",
    "glosses": lists}. `max_frames` subsamples longer sequences (`subsample_frames`, random with `rng`),
    `points` keeps a subset of the layout's points (e.g. `select_parts(...).indices`), `dims=2` drops z,
    `normalize` is one of NORMALIZATIONS, `pad_multiple` rounds T up (kernels like multiples of 8).
    """
    import torch

    if not samples:
        raise UsageError("collate_pose needs at least one sample")
    prepared = []
    for s in samples:
        s = subsample_frames(s, max_frames=max_frames, rng=rng) if max_frames else s
        s = normalize_sample(s, normalize)
        kp, m = s.keypoints, s.mask
        if points is not None:
            idx = np.asarray(points, dtype=np.int64)
            kp, m = kp[:, idx], m[:, idx]
        if dims is not None:
            if dims > kp.shape[-1]:
                raise UsageError(f"dims={dims} but sample '{s.id}' has only {kp.shape[-1]} coordinates per point")
            kp = kp[..., :dims]
        prepared.append((np.where(m[..., None], kp, 0.0).astype(np.float32), m))
    shapes = {p[0].shape[1:] for p in prepared}
    if len(shapes) > 1:
        raise UsageError(f"samples differ in points/coordinates {sorted(shapes)}; give points= and dims= or use one layout")
    lengths = [p[0].shape[0] for p in prepared]
    t = max(lengths)
    t = -(-t // pad_multiple) * pad_multiple if pad_multiple > 1 else t
    k, c = prepared[0][0].shape[1:]
    kp = np.zeros((len(prepared), t, k, c), dtype=np.float32)
    pm = np.zeros((len(prepared), t, k), dtype=bool)
    fm = np.zeros((len(prepared), t), dtype=bool)
    for i, (x, m) in enumerate(prepared):
        kp[i, : len(x)], pm[i, : len(x)], fm[i, : len(x)] = x, m, True
    return {
        "keypoints": torch.from_numpy(kp), "point_mask": torch.from_numpy(pm), "frame_mask": torch.from_numpy(fm),
        "lengths": torch.tensor(lengths, dtype=torch.int64), "ids": [s.id for s in samples], "texts": [s.text for s in samples],
        "glosses": [s.gloss for s in samples],
    }


class PoseBatches:
    """Pose samples as a `BatchSource` for fit(): get_batch(indices) -> collate_pose dict (+ "index", + extras).

    Samples are normalised once here. `random_frames`: training batches subsample long sequences with a
    generator seeded by (seed, indices); otherwise frames are evenly spaced. `extras` are per-sample
    tensors (first dim = len(samples)) added to each batch under their key, e.g. text embeddings.
    """

    def __init__(self, samples, *, points, normalize: str, max_frames: int, dims: int, seed: int = 0, random_frames: bool = False,
                 extras: dict | None = None, labels: list[list[int]] | None = None):
        self.samples = [normalize_sample(s, normalize) for s in samples]
        self.points = np.asarray(points, dtype=np.int64)
        self.max_frames, self.dims, self.seed, self.random_frames = max_frames, dims, seed, random_frames
        self.extras = extras or {}
        self.labels = labels  # token ids per sample (eos last): batched as "labels", padded with -100

    def __len__(self) -> int:
        return len(self.samples)

    def get_batch(self, indices):
        import torch

        idx = [int(i) for i in indices]
        rng = np.random.default_rng([self.seed % 2**32, *idx]) if self.random_frames else None
        batch = collate_pose([self.samples[i] for i in idx], max_frames=self.max_frames, points=self.points, dims=self.dims, rng=rng)
        batch["index"] = torch.tensor(idx, dtype=torch.int64)
        for key, values in self.extras.items():
            batch[key] = values[batch["index"]]
        if self.labels is not None:
            rows = [self.labels[i] for i in idx]
            out = torch.full((len(rows), max(len(r) for r in rows)), -100, dtype=torch.int64)
            for j, r in enumerate(rows):
                out[j, : len(r)] = torch.tensor(r, dtype=torch.int64)
            batch["labels"] = out
        return batch
