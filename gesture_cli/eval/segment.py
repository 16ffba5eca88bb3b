"""Segmentation metrics and the two inference modes (a model and an image in, scores and numbers out).

Metrics come from one confusion matrix over every labelled pixel (ignore 255 excluded): IoU per class
= TP / (TP + FP + FN), mIoU = mean over classes that occur in the labels or the predictions, pixel
accuracy = TP / labelled pixels, mean class accuracy = mean of TP / (TP + FN) over the classes that
occur in the labels, and, as a yardstick, the mIoU of always predicting the split's most frequent
class. The averaging conventions differ between libraries, so every result names its own under
"conventions" (MEAN_CONVENTIONS): torchmetrics' macro accuracy (1.x) also averages in a class that is
predicted but absent from the labels, as 0, and gives a lower number whenever that happens.

Inference modes, both scored at each image's own resolution:
  whole   the image is resized to S x S (the backbone's input side), scores are upsampled to H x W.
  slide   the image is resized so that its short side is S (aspect kept), S x S windows with stride
          2S/3 cover it, overlapping scores are averaged, then upsampled to H x W.

The run-dir steps (`gx evaluate segment`, `gx infer segment`) are `gesture_cli.tasks.segment`; the
pictures (masks, overlays, boxes) `gesture_cli.viz.segment`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from gesture_cli.core.errors import ArtifactError, unknown_choice

IGNORE_INDEX = 255
MEAN_CONVENTIONS = {  # written beside the numbers: which classes each mean runs over
    "mIoU": "mean IoU over the classes present in the labels or the predictions (pixels labelled 255 ignored)",
    "mean_acc": "mean per-class accuracy TP/(TP+FN) over the classes present in the labels; a class absent from the labels is "
                "left out, not counted as 0 (torchmetrics' macro accuracy counts a class predicted but absent from the labels as 0)",
}
INFERENCE_MODES = ("whole", "slide")
SLIDE_OVERLAP = 1 / 3  # windows overlap by a third of their side: stride = 2S/3


# ---- metrics --------------------------------------------------------------------------------------


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 [K, K], rows = true class, columns = predicted class, over pixels whose target is not 255."""
    pred, target = np.asarray(pred).ravel(), np.asarray(target).ravel()
    valid = target != IGNORE_INDEX
    idx = target[valid].astype(np.int64) * num_classes + pred[valid].astype(np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def segmentation_metrics(cm: np.ndarray, classes: Sequence[str]) -> dict:
    """mIoU, pixel accuracy, mean class accuracy, per-class rows and the majority-class baseline."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    gt, pred = cm.sum(1), cm.sum(0)
    union = gt + pred - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
    total = cm.sum()
    present = gt > 0
    # Predicting the most frequent class everywhere: IoU = its share of the pixels for it, 0 for the rest.
    majority = float(gt.max() / total / max(1, present.sum())) if total else float("nan")
    rows = [
        {"class": str(c), "iou": _num(iou[i]), "acc": _num(acc[i]), "pixels": int(gt[i]), "predicted": int(pred[i])}
        for i, c in enumerate(classes)
    ]
    return {
        "mIoU": _num(np.nanmean(iou)) if np.isfinite(iou).any() else None,
        "pixel_acc": _num(tp.sum() / total) if total else None,
        "mean_acc": _num(np.nanmean(acc)) if np.isfinite(acc).any() else None,
        "majority_mIoU": _num(majority),
        "labelled_pixels": int(total),
        "classes_present": int(present.sum()),
        "conventions": dict(MEAN_CONVENTIONS),
        "per_class": rows,
    }


def _num(x) -> float | None:
    x = float(x)
    return round(x, 6) if math.isfinite(x) else None


# ---- inference ------------------------------------------------------------------------------------


def slide_windows(length: int, size: int, stride: int) -> list[int]:
    """Start offsets of windows of `size` covering [0, length) with `stride`, the last one flush with the end."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size, stride))
    return starts + [length - size]


def image_scores(model, image: np.ndarray, *, size: int, mode: str, aggregate=None):
    """float32 [K', H, W] scores of one uint8 [H, W, 3] image (see the module docstring); `aggregate`
    [K, G] folds class scores into group scores."""
    import torch
    import torch.nn.functional as F

    dev = next(model.head.parameters()).device
    h, w = image.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(image)).to(dev).permute(2, 0, 1)[None].float().div_(255.0)  # [1, 3, H, W]
    if mode == "whole":
        scores = model.scores(images=x, size=(h, w))[0]
    elif mode == "slide":
        scale = size / min(h, w)
        sh, sw = max(size, round(h * scale)), max(size, round(w * scale))
        xr = F.interpolate(x, size=(sh, sw), mode="bilinear", align_corners=False, antialias=True)
        stride = max(1, round(size * (1 - SLIDE_OVERLAP)))
        boxes = [(top, left) for top in slide_windows(sh, size, stride) for left in slide_windows(sw, size, stride)]
        crops = torch.cat([xr[:, :, top : top + size, left : left + size] for top, left in boxes])
        win = model.scores(images=crops, size=(size, size))  # [n, K, S, S]
        acc = torch.zeros((win.shape[1], sh, sw), device=dev)
        count = torch.zeros((1, sh, sw), device=dev)
        for (top, left), s in zip(boxes, win, strict=True):
            acc[:, top : top + size, left : left + size] += s
            count[:, top : top + size, left : left + size] += 1
        scores = F.interpolate((acc / count)[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    else:
        raise unknown_choice("--inference mode", mode, INFERENCE_MODES)
    if aggregate is not None:
        scores = torch.einsum("khw,kg->ghw", scores, aggregate.to(scores.device))
    return scores.float()


def predict_image(model, image: np.ndarray, *, size: int, mode: str, aggregate=None, precision=None) -> np.ndarray:
    """uint8 [H, W] predicted class (or group) ids. `precision` (the core.device.Precision the model runs in):
    NaN/Inf scores stop with a one-line error instead of becoming an arbitrary argmax."""
    import torch

    with torch.inference_mode():
        scores = image_scores(model, image, size=size, mode=mode, aggregate=aggregate)
        if precision is not None:
            precision.check_finite(scores, what="the segmentation scores")
        return scores.argmax(0).to(torch.uint8).cpu().numpy()


def evaluate_dataset(model, ds, *, size: int, mode: str = "whole", aggregate=None, max_samples: int | None = None,
                     on_progress: Callable[[int, int], None] | None = None, precision=None) -> dict:
    """segmentation_metrics of `model` on a SegDataset at each image's own resolution (`precision`: see predict_image)."""
    n = len(ds) if max_samples is None else min(len(ds), max_samples)
    k = ds.num_classes
    cm = np.zeros((k, k), dtype=np.int64)
    for i in range(n):
        image, mask = ds.sample(i)
        pred = predict_image(model, image, size=size, mode=mode, aggregate=aggregate, precision=precision)
        if int(pred.max(initial=0)) >= k:
            raise ArtifactError(f"the head predicts {int(pred.max()) + 1}+ classes but dataset {ds.spec!r} has {k}; evaluate on its label set")
        cm += confusion_matrix(pred, mask, k)
        if on_progress is not None:
            on_progress(i + 1, n)
    return {"images": n, "mode": mode, **segmentation_metrics(cm, ds.classes)}
