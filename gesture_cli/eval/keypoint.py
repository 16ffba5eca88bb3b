"""Keypoint metrics (the steps `gx evaluate keypoint` and `gx infer keypoint` are `gesture_cli.tasks.keypoint`).

Metrics (pure functions on numpy arrays in crop units; the ratios do not depend on the unit):

  PCKh@0.5   a joint is correct when its error is at most 0.5 x the person's head size (error <= 0.5 h,
             as MPII's official evaluation, computePCK.m, and the HRNet / mmpose 0.x port test it;
             mmpose 1.x's MpiiPCKAccuracy tests <, which differs only exactly at the threshold); per joint,
             and a mean over the annotated joints of every person with a known head size. As in the
             MPII benchmark, pelvis and thorax are left out of the mean (they sit on the torso, where
             every method is near-perfect) and "head" in the summary table is the head top. A body
             part of the summary table (shoulder, elbow, ...) is the mean of its left and right joints'
             PCKh, as in MPII's summary and mmpose, not hits over counts pooled over both sides: the
             two differ whenever the sides are annotated a different number of times.
  PCK@0.2    the same with 0.2 x the torso diameter (left shoulder to right hip, else right shoulder
             to left hip): the protocol for data without head sizes. Always computed where the torso
             is annotated, so two datasets can be compared on it.

Only annotated joints count (MPII `joints_vis` = 1); a person without a usable norm size is left
out of that metric and counted in `skipped`.
"""

from __future__ import annotations

import numpy as np

from gesture_cli.data.keypoints import MPII_JOINTS, NUM_JOINTS

PCKH_THRESHOLD = 0.5
TORSO_THRESHOLD = 0.2
MEAN_EXCLUDED = (6, 7)  # pelvis, thorax: outside the MPII mean
GROUPS = {  # the MPII summary table: head top and the left/right pairs
    "head": (9,), "shoulder": (12, 13), "elbow": (11, 14), "wrist": (10, 15),
    "hip": (2, 3), "knee": (1, 4), "ankle": (0, 5),
}
PCK_CONVENTIONS = {  # written into every PCK table, so a number says how it was made
    "threshold_test": "a joint is correct when error <= threshold x norm size (<=, as MPII's computePCK.m and the HRNet / mmpose 0.x "
                      "MPII evaluation; mmpose 1.x tests <)",
    "groups": "a body part is the mean of its left and right joints' PCK (MPII summary, mmpose); a side never annotated is left out",
    "mean": "annotated joints pooled over all people, pelvis and thorax left out (MPII's PCKh total)",
}
PCK_NOTE = "correct: error <= threshold (MPII); a part = mean of its left and right joints' PCK (MPII summary, mmpose)"


def _round(x: float | None, nd: int = 6) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), nd)


def pck_table(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, norm: np.ndarray, *, threshold: float) -> dict | None:
    """PCK of predictions [N, K, 2] against gt [N, K, 2], joints counted where visible [N, K] > 0,
    errors divided by norm [N] (NaN / non-positive: that person is skipped). None when nothing counts."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    norm = np.asarray(norm, np.float64).reshape(-1)
    has_norm = np.isfinite(norm) & (norm > 0)
    valid = (np.asarray(visible) > 0) & has_norm[:, None]
    if not valid.any():
        return None
    dist = np.linalg.norm(pred - gt, axis=-1) / np.where(has_norm, norm, 1.0)[:, None]
    correct = (dist <= threshold) & valid
    counts, hits = valid.sum(0), correct.sum(0)
    per_joint = {MPII_JOINTS[j] if pred.shape[1] == NUM_JOINTS else str(j): _round(hits[j] / counts[j]) if counts[j] else None
                 for j in range(pred.shape[1])}
    keep = [j for j in range(pred.shape[1]) if j not in MEAN_EXCLUDED] if pred.shape[1] == NUM_JOINTS else list(range(pred.shape[1]))
    groups = {}
    if pred.shape[1] == NUM_JOINTS:
        for name, joints in GROUPS.items():
            sides = [hits[j] / counts[j] for j in joints if counts[j]]  # per-joint PCK of each annotated side
            groups[name] = _round(sum(sides) / len(sides)) if sides else None
    return {
        "threshold": threshold,
        "mean": _round(hits[keep].sum() / max(1, counts[keep].sum())),
        "mean_all_joints": _round(hits.sum() / counts.sum()),
        "groups": groups,
        "per_joint": per_joint,
        "people": int(has_norm.sum()),
        "joints_counted": int(counts.sum()),
        "skipped_people": int((~has_norm).sum()),
        "conventions": dict(PCK_CONVENTIONS),
    }


def keypoint_metrics(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, *, head_size: np.ndarray, torso_size: np.ndarray) -> dict:
    """PCKh@0.5 (head-size normalised), PCK@0.2 (torso) and the mean error, plus `pck`: the headline
    number (PCKh@0.5 when any person has a head size, else PCK@0.2) and `pck_kind` naming it."""
    pckh = pck_table(pred, gt, visible, head_size, threshold=PCKH_THRESHOLD)
    torso = pck_table(pred, gt, visible, torso_size, threshold=TORSO_THRESHOLD)
    vis = np.asarray(visible) > 0
    err = np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(gt, np.float64), axis=-1)
    headline, kind = (pckh, "pckh@0.5") if pckh is not None else (torso, "pck@0.2")
    return {
        "n": int(len(pred)),
        "pck": headline["mean"] if headline is not None else None,
        "pck_kind": kind,
        "pckh@0.5": pckh,
        "pck@0.2": torso,
        "mean_error": _round(err[vis].mean()) if vis.any() else None,  # in crop sides (1 = the crop's width)
    }


def masked_mse(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray) -> float | None:
    """Mean squared coordinate error over annotated joints (the training loss, in numpy)."""
    vis = np.asarray(visible) > 0
    if not vis.any():
        return None
    return float((((np.asarray(pred) - np.asarray(gt)) ** 2).sum(-1)[vis]).mean() / 2)


# ---- a model over a dataset ---------------------------------------------------------------------


def predict_keypoints(model, dataset, *, size: int, batch_size: int = 64, on_progress=None):
    """(pred float32 [N, K, 2], the KeypointBatch fields of every sample concatenated) in eval mode."""
    import torch

    from gesture_cli.models.augment import to_float_images

    was_training = model.training
    model.eval()
    preds, parts = [], {"keypoints": [], "visible": [], "head_size": [], "torso_size": []}
    n = len(dataset)
    dev = model.backbone.device
    if on_progress is not None:
        on_progress(0, n)
    with torch.no_grad():
        for lo in range(0, n, batch_size):
            b = dataset.batch(range(lo, min(lo + batch_size, n)), size=size)
            x = to_float_images(torch.from_numpy(np.ascontiguousarray(b.images)).to(dev))
            preds.append(model(model.backbone.preprocess(x)).float().cpu().numpy())
            for k in parts:
                parts[k].append(getattr(b, k))
            if on_progress is not None:
                on_progress(min(lo + batch_size, n), n)
    model.train(was_training)
    k = NUM_JOINTS
    if not preds:
        return np.zeros((0, k, 2), np.float32), {"keypoints": np.zeros((0, k, 2)), "visible": np.zeros((0, k)),
                                                  "head_size": np.zeros(0), "torso_size": np.zeros(0)}
    return np.concatenate(preds), {key: np.concatenate(v) for key, v in parts.items()}


def summary_rows(metrics: dict) -> list[tuple[str, str, str]]:
    """(group, PCKh@0.5, PCK@0.2) rows for a summary table: the MPII groups, then the mean."""
    pckh, torso = metrics.get("pckh@0.5") or {}, metrics.get("pck@0.2") or {}

    def fmt(table: dict, key: str) -> str:
        v = table.get("groups", {}).get(key) if key != "mean" else table.get("mean")
        return f"{v:.4f}" if isinstance(v, (int, float)) else "-"

    return [(g, fmt(pckh, g), fmt(torso, g)) for g in [*GROUPS, "mean"]]
