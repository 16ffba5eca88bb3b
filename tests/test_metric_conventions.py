"""Metric conventions (DESIGN section 10; issue #18, items 10-12): each number names its convention,
and matches the reference it claims to follow on hand-computed or independent numbers."""

from __future__ import annotations

import numpy as np
import pytest

# ---- segmentation: mIoU and mean class accuracy -----------------------------------------------------

# 4 classes; class 2 is in neither labels nor predictions, class 3 is predicted once but never labelled.
SEG_TARGET = np.array([0, 0, 0, 1, 1, 1, 255], np.uint8)
SEG_PRED = np.array([0, 0, 1, 1, 1, 3, 2], np.uint8)


def test_segmentation_means_follow_their_named_conventions():
    from gesture_cli.eval.segment import confusion_matrix, segmentation_metrics

    m = segmentation_metrics(confusion_matrix(SEG_PRED, SEG_TARGET, 4), ["a", "b", "c", "d"])
    # IoU: a 2/3, b 2/4, d 0/1 (predicted, never labelled); c is in neither and left out
    assert m["mIoU"] == pytest.approx((2 / 3 + 2 / 4 + 0) / 3, abs=1e-6)
    # accuracy TP/(TP+FN): a 2/3, b 2/3; d has no labelled pixel and is left out (not counted as 0)
    assert m["mean_acc"] == pytest.approx((2 / 3 + 2 / 3) / 2, abs=1e-6)
    conv = m["conventions"]
    assert "present in the labels or the predictions" in conv["mIoU"] and "255" in conv["mIoU"]
    assert "present in the labels" in conv["mean_acc"] and "not counted as 0" in conv["mean_acc"]


def test_segmentation_means_against_torchmetrics():
    """torchmetrics is no dependency: this runs where it is installed (e.g. a reference venv)."""
    pytest.importorskip("torchmetrics")
    import torch
    from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

    from gesture_cli.eval.segment import confusion_matrix, segmentation_metrics

    m = segmentation_metrics(confusion_matrix(SEG_PRED, SEG_TARGET, 4), ["a", "b", "c", "d"])
    p, t = torch.from_numpy(SEG_PRED.astype(np.int64)), torch.from_numpy(SEG_TARGET.astype(np.int64))
    assert float(MulticlassJaccardIndex(num_classes=4, average="macro", ignore_index=255)(p, t)) == pytest.approx(m["mIoU"], abs=1e-5)
    # torchmetrics averages class d in as 0: (2/3 + 2/3 + 0) / 3, below gx's (2/3 + 2/3) / 2
    tm_acc = float(MulticlassAccuracy(num_classes=4, average="macro", ignore_index=255)(p, t))
    assert tm_acc == pytest.approx(4 / 9, abs=1e-5) and m["mean_acc"] == pytest.approx(2 / 3, abs=1e-6)


# ---- PCKh per body part: MPII's mean of left and right, and its <= test ------------------------------


def _mpii_reference(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, head: np.ndarray, threshold: float = 0.5) -> dict:
    """The MPII summary as the Python port of MPII's evaluation computes it (HRNet / mmpose `_report_metric`):
    arrays in its [K, N] layout, `scaled_uv_err <= threshold`, a part = 0.5 * (PCKh[left] + PCKh[right])."""
    uv_err = np.linalg.norm(pred - gt, axis=-1).T  # [K, N]
    jnt_visible = visible.T
    scaled = uv_err / head[None, :] * jnt_visible
    less = (scaled <= threshold) * jnt_visible
    pckh = less.sum(1) / jnt_visible.sum(1)
    lsho, lelb, lwri, lhip, lkne, lank = 13, 14, 15, 3, 4, 5
    rsho, relb, rwri, rhip, rkne, rank = 12, 11, 10, 2, 1, 0
    return {"head": pckh[9], "shoulder": 0.5 * (pckh[lsho] + pckh[rsho]), "elbow": 0.5 * (pckh[lelb] + pckh[relb]),
            "wrist": 0.5 * (pckh[lwri] + pckh[rwri]), "hip": 0.5 * (pckh[lhip] + pckh[rhip]), "knee": 0.5 * (pckh[lkne] + pckh[rkne]),
            "ankle": 0.5 * (pckh[lank] + pckh[rank])}


def test_pckh_parts_average_left_and_right_as_mpii_does():
    from gesture_cli.eval.keypoint import pck_table

    rng = np.random.default_rng(0)
    n = 4
    gt = rng.uniform(0, 10, (n, 16, 2))
    pred = gt.copy()
    visible = np.ones((n, 16))
    visible[1:, 10] = 0  # right wrist annotated once only, and that prediction is wrong
    pred[0, 10] += [3.0, 0.0]
    head = np.full(n, 2.0)  # threshold 0.5 x 2 = 1 pixel
    t = pck_table(pred, gt, visible, head, threshold=0.5)
    assert t["per_joint"]["r_wrist"] == 0.0 and t["per_joint"]["l_wrist"] == 1.0
    assert t["groups"]["wrist"] == 0.5  # pooled hits over counts would say 4/5
    ref = _mpii_reference(pred, gt, visible, head)
    assert t["groups"] == pytest.approx(ref)
    assert "mean of its left and right" in t["conventions"]["groups"]


def test_pckh_threshold_is_inclusive_as_in_mpii():
    from gesture_cli.eval.keypoint import keypoint_metrics

    gt = np.zeros((1, 16, 2))
    pred = gt.copy()
    pred[0, :, 0] = 1.0  # every error is exactly 0.5 x the head size of 2
    m = keypoint_metrics(pred, gt, np.ones((1, 16)), head_size=np.array([2.0]), torso_size=np.array([np.nan]))
    assert m["pckh@0.5"]["mean"] == 1.0 == _mpii_reference(pred, gt, np.ones((1, 16)), np.array([2.0]))["head"]
    assert m["pckh@0.5"]["conventions"]["threshold_test"].startswith("a joint is correct when error <= threshold")
