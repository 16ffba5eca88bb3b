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
