"""Linear-probe C sweep: gx's probe against the research notebook's plain loop, same data, same grid.

Data: scikit-learn `make_classification` shaped like Sign Language MNIST features of a ViT-S backbone,
27,455 train + 7,172 test rows x 384 features, 24 classes, 64 informative features. Columns are
scaled by factors drawn from [1, 100] (`scale=None`), as pooled ViT features spread their per-dimension
scales over orders of magnitude (`--unit-scale` keeps make_classification's unit scale instead).

Both sides hold out the same stratified 20% of the training split, score every C of the grid on it,
refit at the best C on the whole training split and report test accuracy:
- plain: `LogisticRegression(C=c, max_iter=1000)` per grid point on the raw features, each fit from
  zero (what the research notebook did);
- gx: `gesture_cli.eval.probe.fit_probe`: standardised features, the grid swept from strong to weak
  regularisation with warm starts, with its `--solver` (auto = sklearn on CPU, torch on CUDA).

The grid is 10^linspace(-6, 5, N), DINO's range; N = 8 by default (the plain loop takes minutes per
point on 2 cores), `--grid-points 45` for the full DINO grid.

Threads: one BLAS thread by default, for both sides. On a 2-core machine shared with other jobs,
OpenBLAS's 2-thread float64 GEMM of the gradient's shape ([24, N] x [N, 384]) ran 15x slower than one
thread (measured), which would make the baseline take hours; `--threads 0` keeps the libraries' default.

Usage: python benchmarks/probe.py [--grid-points 8] [--solver auto|sklearn|torch] [--unit-scale] [--threads 1]
Target (issue 3): gx no slower than the plain loop (ratio >= 1), test accuracies within 0.5 points.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np

N_TRAIN, N_TEST, DIM, CLASSES = 27455, 7172, 384, 24
CLASS_SEP = 2.0  # cluster spread: a linear probe reaches roughly the accuracy of a good backbone on Sign MNIST


def make_data(*, unit_scale: bool, seed: int = 0):
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=N_TRAIN + N_TEST, n_features=DIM, n_informative=64, n_redundant=0, n_classes=CLASSES,
        n_clusters_per_class=1, class_sep=CLASS_SEP, scale=1.0 if unit_scale else None, shift=0.0, random_state=seed,
    )
    x = x.astype(np.float32)  # features are stored as float32
    return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]


def plain_loop(xtr, ytr, xte, yte, grid, *, seed: int = 0) -> dict:
    """The notebook's way: one LogisticRegression per C on raw features, best C on the held-out slice."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from gesture_cli.data.images import stratified_split

    tr, va = stratified_split(ytr, test_fraction=0.2, seed=seed)
    t0 = time.perf_counter()
    best_acc, best_c = -1.0, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for c in grid:
            clf = LogisticRegression(C=float(c), max_iter=1000).fit(xtr[tr], ytr[tr])
            acc = clf.score(xtr[va], ytr[va])
            print(f"  plain  C={c:9.3g}  val acc {acc:.4f}  iterations {int(np.max(clf.n_iter_))}  ({time.perf_counter() - t0:.1f}s)", flush=True)
            if acc > best_acc:
                best_acc, best_c = acc, float(c)
        clf = LogisticRegression(C=best_c, max_iter=1000).fit(xtr, ytr)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "c": best_c, "test_accuracy": float(clf.score(xte, yte))}


def gx_probe(xtr, ytr, xte, yte, grid, *, solver: str, device: str, seed: int = 0) -> dict:
    from gesture_cli.eval.probe import fit_probe

    t0 = time.perf_counter()

    def on_point(p: dict) -> None:
        print(f"  gx     C={p['c']:9.3g}  val acc {p['val_accuracy']:.4f}  iterations {p['iterations']}  ({time.perf_counter() - t0:.1f}s)", flush=True)

    probe = fit_probe(xtr, ytr, num_classes=CLASSES, grid=grid, solver=solver, device=device, seed=seed, on_point=on_point)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "c": probe.c, "solver": probe.solver, "test_accuracy": float((probe.predict(xte) == yte).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid-points", type=int, default=8, help="C values in 10^linspace(-6, 5, N); 45 = DINO's full grid")
    ap.add_argument("--solver", default="auto", choices=["auto", "sklearn", "torch"], help="gx's solver")
    ap.add_argument("--device", default="auto", help="device for gx's torch solver")
    ap.add_argument("--unit-scale", action="store_true", help="keep make_classification's unit feature scale")
    ap.add_argument("--skip-plain", action="store_true", help="time gx only")
    ap.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads for both sides; 0 = the libraries' default")
    args = ap.parse_args()
    if args.threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)  # process-wide, both sides alike

    import torch

    from gesture_cli.core.device import resolve_device
    from gesture_cli.eval.probe import c_grid

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    grid = c_grid(full=True, points=args.grid_points)
    xtr, ytr, xte, yte = make_data(unit_scale=args.unit_scale)
    print(f"data: {len(xtr)} train + {len(xte)} test x {DIM} features, {CLASSES} classes, "
          f"{'unit' if args.unit_scale else 'per-column [1, 100]'} scale; {os.cpu_count()} CPUs ({args.threads or 'default'} BLAS threads), torch {torch.__version__}, device {device}")
    print(f"grid: {len(grid)} values of C = 10^linspace(-6, 5, {len(grid)}) "
          f"({'the full DINO grid' if len(grid) == 45 else 'a shorter grid over the DINO range; --grid-points 45 for the full one'}), "
          "same grid and held-out slice on both sides")

    g = gx_probe(xtr, ytr, xte, yte, grid, solver=args.solver, device=device)
    print(f"gx probe ({g['solver']} solver, standardised, warm starts): {g['seconds']:.1f}s, C={g['c']:.3g}, test accuracy {g['test_accuracy']:.4f}")
    if args.skip_plain:
        return
    p = plain_loop(xtr, ytr, xte, yte, grid)
    print(f"plain loop (LogisticRegression per C, raw features):   {p['seconds']:.1f}s, C={p['c']:.3g}, test accuracy {p['test_accuracy']:.4f}")
    ratio = p["seconds"] / g["seconds"]
    gap = 100 * (g["test_accuracy"] - p["test_accuracy"])
    print(f"speed-up gx vs plain: {ratio:.2f}x  (target >= 1.0: {'met' if ratio >= 1.0 else 'NOT met'}); "
          f"accuracy gx - plain: {gap:+.2f} points (target within 0.5 or better: {'met' if gap >= -0.5 else 'NOT met'})")


if __name__ == "__main__":
    main()
