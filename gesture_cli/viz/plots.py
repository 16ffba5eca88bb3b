"""Static plots as PNG files: confusion matrix, grouped bar chart across backbones, t-SNE scatter.

matplotlib is used through `Figure` + the Agg canvas, never `pyplot`: no GUI backend, no global
figure registry, nothing to close, and safe on headless servers and in threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path


def _class_colors(n: int) -> list:
    """n distinguishable colours: tab20 then tab20b (40 in all), cycling beyond that."""
    import matplotlib

    base = list(matplotlib.colormaps["tab20"].colors) + list(matplotlib.colormaps["tab20b"].colors)
    return [base[i % len(base)] for i in range(n)]


def render_confusion(cm: np.ndarray, class_names: Sequence[str], path: Path, *, title: str = "", normalize: bool = True) -> Path:
    """Confusion matrix heat map (rows = true, columns = predicted), class names on both axes.

    normalize: colour by the row fraction (recall per class). Counts are written on the diagonal and on
    confusions of at least 5% of a class, up to 30 classes.
    """
    cm = np.asarray(cm)
    k = len(class_names)
    side = max(4.0, 0.32 * k + 2.0)
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot(1, 1, 1)
    rows = cm.sum(axis=1, keepdims=True)
    shown = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0) if normalize else cm
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class" if normalize else "count")
    ax.set_xticks(range(k), labels=list(class_names), fontsize=8)
    ax.set_yticks(range(k), labels=list(class_names), fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 30:  # counts stay legible up to about 30 classes
        # The diagonal and the notable confusions (>= 5% of the true class) only: a text per cell
        # costs about 3 ms to draw, and 576 of them made a 24-class plot take 2.8 s instead of 0.8.
        frac = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)
        for i, j in zip(*np.nonzero((np.eye(k, dtype=bool) | (frac >= 0.05)) & (cm > 0)), strict=True):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=6, color="white" if shown[i, j] > 0.5 else "black")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def render_grouped_bars(rows: Sequence[dict], metrics: Sequence[str], path: Path, *, label_key: str = "backbone", title: str = "",
                        chance: float | None = None) -> Path:
    """One group of bars per row (e.g. backbone), one bar per metric (values in 0..1).

    `chance` draws a dashed line at the accuracy of guessing (1 / number of classes).
    """
    n, m = len(rows), len(metrics)
    fig = _figure(max(5.0, 1.3 * n * max(1, m) / 2 + 2.0), 4.2)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, m)
    x = np.arange(n)
    import matplotlib

    colors = [matplotlib.colormaps["tab10"].colors[j % 10] for j in range(m)]
    for j, metric in enumerate(metrics):
        vals = [float(r.get(metric) or 0.0) for r in rows]
        bars = ax.bar(x + (j - (m - 1) / 2) * width, vals, width, label=metric, color=colors[j])
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in vals], fontsize=7, padding=1)
    ax.set_xticks(x, labels=[str(r[label_key]) for r in rows], rotation=15 if n > 4 else 0)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("score")
    if chance is not None:
        ax.axhline(chance, color="0.35", linestyle="--", linewidth=1, label=f"chance ({chance:.3f})")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=min(m + (chance is not None), 5), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def render_tsne(
    features: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    path: Path,
    *,
    max_points: int = 2000,
    seed: int = 0,
    title: str = "",
) -> Path:
    """2-D t-SNE (scikit-learn) of features [N, D], coloured by class, with a legend of class names.

    At most `max_points` points, drawn stratified by class so small classes stay visible.
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    idx = _subsample(labels, max_points, seed)
    x, y = features[idx], labels[idx]
    if len(x) < 5:
        raise ValueError(f"t-SNE needs at least 5 points, got {len(x)}")
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    # One OpenMP thread: in a process where torch has run, its spinning OpenMP pool and scikit-learn's
    # fight for the cores, and 2 threads took 13 s where 1 took 2.8 s for 360 points (measured).
    with threadpool_limits(limits=1, user_api="openmp"):
        emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    fig = _figure(8.0, 6.5)
    ax = fig.add_subplot(1, 1, 1)
    colors = _class_colors(len(class_names))
    for c in np.unique(y):
        pts = emb[y == c]
        ax.scatter(pts[:, 0], pts[:, 1], s=6, color=colors[c], label=str(class_names[c]), alpha=0.8, linewidths=0)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), ncol=2 if len(class_names) > 12 else 1, fontsize=8,
              markerscale=2.5, frameon=False, title="class")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"t-SNE of {len(x)} points")
    return _save(fig, path)


def _subsample(labels: np.ndarray, max_points: int, seed: int) -> np.ndarray:
    """Sorted indices of at most max_points rows, the same fraction from every class."""
    n = len(labels)
    if n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    frac = max_points / n
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        keep.append(rng.choice(idx, size=max(1, int(len(idx) * frac)), replace=False))
    out = np.sort(np.concatenate(keep))
    return out[:max_points] if len(out) > max_points else out
