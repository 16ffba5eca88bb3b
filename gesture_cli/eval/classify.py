"""Pure classification metrics on integer labels: accuracy, precision/recall/F1, per-class report,
confusion matrix. numpy only; shared by the probe, LoRA and any later classifier.

Conventions (those of scikit-learn's defaults, so numbers match `classification_report`):
- a class with no predictions has precision 0, one with no samples has recall 0 (no warning);
- macro averages run over the classes that occur in y_true or y_pred, weighted averages weight each
  class by its support (number of true samples).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion_matrix(y_true, y_pred, *, num_classes: int) -> np.ndarray:
    """int64 [num_classes, num_classes]: row = true class, column = predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} labels but y_pred {y_pred.size}")
    if y_true.size and (min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def accuracy(y_true, y_pred) -> float:
    y_true = np.asarray(y_true).reshape(-1)
    y_pred = np.asarray(y_pred).reshape(-1)
    return float((y_true == y_pred).mean()) if y_true.size else 0.0


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def per_class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """precision, recall, f1 (float64 [K]) and support (int64 [K]) from a confusion matrix."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64), "predicted": predicted.astype(np.int64)}


def averaged_scores(cm: np.ndarray) -> dict[str, float]:
    """macro_* and weighted_* precision/recall/f1 from a confusion matrix."""
    s = per_class_scores(cm)
    present = (s["support"] > 0) | (s["predicted"] > 0)  # classes seen in y_true or y_pred
    weights = s["support"].astype(np.float64)
    out: dict[str, float] = {}
    for name in ("precision", "recall", "f1"):
        v = s[name]
        out[f"macro_{name}"] = float(v[present].mean()) if present.any() else 0.0
        out[f"weighted_{name}"] = float((v * weights).sum() / weights.sum()) if weights.sum() else 0.0
    return out


def per_class_report(cm: np.ndarray, class_names: Sequence[str]) -> list[dict]:
    """One row per class: {class, precision, recall, f1, support}, in class-id order."""
    s = per_class_scores(cm)
    return [
        {
            "class": str(name),
            "precision": round(float(s["precision"][i]), 6),
            "recall": round(float(s["recall"][i]), 6),
            "f1": round(float(s["f1"][i]), 6),
            "support": int(s["support"][i]),
        }
        for i, name in enumerate(class_names)
    ]


def classification_metrics(y_true, y_pred, class_names: Sequence[str]) -> dict:
    """Everything a report needs: n, accuracy, macro/weighted P/R/F1, per_class rows, confusion matrix."""
    cm = confusion_matrix(y_true, y_pred, num_classes=len(class_names))
    out = {"n": int(cm.sum()), "accuracy": round(accuracy(y_true, y_pred), 6)}
    out.update({k: round(v, 6) for k, v in averaged_scores(cm).items()})
    out["per_class"] = per_class_report(cm, class_names)
    out["confusion"] = cm.tolist()
    return out


def top_k_indices(probs: np.ndarray, k: int) -> np.ndarray:
    """int64 [N, k]: the k most probable classes per row, most probable first."""
    probs = np.asarray(probs)
    k = max(1, min(int(k), probs.shape[1]))
    part = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(probs, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)
