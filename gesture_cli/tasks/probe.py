"""`gx probe`: linear probes and k-NN on the extracted features of every backbone of a run.

Three layers, as in `dinov2/eval/log_regression.py`:
    run_probes(cfg, run)            every backbone under features/, one run-dir step each + a summary step
    probe_backbone(cfg, run, name)  one backbone: load features, fit, score, write probe/<name>/
    fit_probe(x, y, ...)            standardise, choose C on a held-out slice, refit (`gesture_cli.eval.probe`)

This module holds the first two and the probe classifier's file (probe/<backbone>/classifier.safetensors).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gesture_cli.core.errors import ArtifactError, UsageError, shell_word, unknown_choice
from gesture_cli.eval.probe import SOLVER_CHOICES, LinearProbe, c_grid, fit_probe, knn_accuracy, resolve_solver
from gesture_cli.models.backbone_ref import backbone_dirname

CLASSIFIER_KIND = "linear-probe"


PROBE_COMMAND = "probe"


SUMMARY_COMMAND = "probe-summary"


SUMMARY_METRICS = ("accuracy", "macro_f1", "weighted_f1", "knn20_accuracy")  # bars of summary.png


@dataclass(frozen=True)
class ProbeConfig:
    backbones: tuple[str, ...] = ()  # folders under features/; empty = every one with both splits extracted
    train_split: str = "train"  # split the probe (and the k-NN bank) is fit on
    test_split: str = "test"  # split the probe is scored on
    c: float | None = None  # fixed inverse L2 strength (scikit-learn's C); None = choose on a held-out slice
    full_grid: bool = False  # sweep C over 10^linspace(-6, 5, 45) (DINO) instead of 10^linspace(-4, 3, 8)
    val_fraction: float = 0.2  # stratified fraction of the training split held out to choose C
    solver: str = "auto"  # auto | sklearn | torch (auto: torch on CUDA, sklearn on CPU)
    max_iter: int = 1000  # L-BFGS iterations per fit
    tol: float = 1e-4  # L-BFGS stop: max |gradient| of the mean objective (scikit-learn's tol)
    knn_k: tuple[int, ...] = (10, 20)  # neighbours of the k-NN classifier (one accuracy column each)
    knn_temperature: float = 0.07  # DINO's T: neighbour votes weigh exp(cosine / T)
    tsne: bool = False  # also render probe/<backbone>/tsne.png of the test features
    tsne_points: int = 2000  # at most this many test points in the t-SNE (stratified subsample)
    seed: int = 0  # held-out slice and t-SNE seed

    def validate(self) -> None:
        if self.solver not in SOLVER_CHOICES:
            raise unknown_choice("solver", self.solver, SOLVER_CHOICES)
        if self.c is not None and not self.c > 0:
            raise UsageError(f"--c must be positive, got {self.c}")
        if not 0.0 < self.val_fraction < 1.0:
            raise UsageError(f"--val-fraction must lie strictly between 0 and 1, got {self.val_fraction}")
        if self.max_iter < 1:
            raise UsageError("--max-iter must be at least 1")
        if not self.knn_k or any(k < 1 for k in self.knn_k):
            raise UsageError(f"knn_k must be positive neighbour counts, got {list(self.knn_k)}")
        if not self.knn_temperature > 0:
            raise UsageError("knn_temperature must be positive")
        if self.tsne_points < 10:
            raise UsageError("tsne_points must be at least 10")
        if self.train_split == self.test_split:
            raise UsageError(f"--train-split and --test-split are both '{self.train_split}'; the probe must be scored on held-out data")


def save_classifier(path: Path, probe: LinearProbe, *, meta: dict) -> None:
    """classifier.safetensors: weight, bias, scaler mean/scale; `meta` (classes, C, backbone, pool...) in the header."""
    import torch

    from gesture_cli.core.artifacts import save_tensors

    tensors = {
        "weight": torch.from_numpy(probe.weight),
        "bias": torch.from_numpy(probe.bias),
        "scaler_mean": torch.from_numpy(probe.mean),
        "scaler_scale": torch.from_numpy(probe.scale),
    }
    save_tensors(path, tensors, kind=CLASSIFIER_KIND, meta={**meta, "c": probe.c, "solver": probe.solver,
                                                             "feature_dim": probe.feature_dim, "num_classes": probe.num_classes})


def load_classifier(path: Path) -> tuple[LinearProbe, dict]:
    from gesture_cli.core.artifacts import load_tensors

    t, meta = load_tensors(Path(path), kind=CLASSIFIER_KIND)
    missing = [k for k in ("weight", "bias", "scaler_mean", "scaler_scale") if k not in t]
    if missing:
        raise ArtifactError(f"{path}: missing tensors {', '.join(missing)}; rerun `gx probe --force`")
    probe = LinearProbe(
        weight=t["weight"].float().numpy(), bias=t["bias"].float().numpy(), mean=t["scaler_mean"].float().numpy(),
        scale=t["scaler_scale"].float().numpy(), c=float(meta.get("c", 0.0)), solver=str(meta.get("solver", "")),
    )
    classes = meta.get("classes") or []
    if len(classes) != probe.num_classes:
        raise ArtifactError(f"{path}: {probe.num_classes} output classes but {len(classes)} class names; rerun `gx probe --force`")
    return probe, meta


def classifier_path(run, backbone: str) -> Path:

    return run.path("probe", backbone_dirname(backbone), "classifier.safetensors")


def require_classifier(run, backbone: str | None) -> tuple[str, Path]:
    """(backbone folder name, classifier path) of a probe in the run dir, with errors that say what to run.

    backbone None picks the only probed backbone, and is a UsageError when there are several.
    """

    probed = sorted(p.parent.name for p in run.path("probe").glob("*/classifier.safetensors"))
    if backbone is None:
        if len(probed) == 1:
            return probed[0], classifier_path(run, probed[0])
        if not probed:
            raise ArtifactError(f"no probe classifier in {run.path('probe')}; run `gx probe -r {shell_word(run.root)}` first")
        raise UsageError(f"{len(probed)} probed backbones in {run.root}: pass --backbone, one of {', '.join(probed)}")
    path = classifier_path(run, backbone)
    if not path.is_file():
        hint = f" (probed: {', '.join(probed)})" if probed else ""
        raise ArtifactError(f"{path}: no probe classifier for backbone '{backbone}'{hint}; run `gx probe --backbones {shell_word(backbone)} -r {shell_word(run.root)}` first")
    return backbone_dirname(backbone), path


def discover_backbones(run, *, train_split: str = "train", test_split: str = "test") -> list[str]:
    """Folders under features/ that hold both splits, sorted by name."""
    root = run.path("features")
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir()
        if p.is_dir() and (p / f"{train_split}.safetensors").is_file() and (p / f"{test_split}.safetensors").is_file()
    )


def _features_meta(run, name: str) -> dict:
    from gesture_cli.core.artifacts import load_json

    path = run.path("features", name, "meta.json")
    return load_json(path, kind="features-meta") if path.is_file() else {}


def _dataset_seed(run, name: str) -> int | None:
    entry = run.last_ok("extract-features", output=f"features/{name}")
    seed = ((entry or {}).get("config") or {}).get("seed")
    return int(seed) if seed is not None else None


def probe_backbone(cfg: ProbeConfig, run, name: str, *, device, force: bool = False, argv=None,
                   on_event: Callable[[str], None] | None = None) -> dict:
    """Probe one backbone's features into probe/<name>/; returns its metrics (+ `cached`)."""
    from gesture_cli.core.artifacts import load_json, save_json
    from gesture_cli.core.config import config_to_dict
    from gesture_cli.data.images import check_two_classes
    from gesture_cli.eval.classify import classification_metrics
    from gesture_cli.tasks.features import load_features
    from gesture_cli.viz.plots import render_confusion, render_tsne

    solver = resolve_solver(cfg.solver, device)
    out_rel = f"probe/{name}"
    key_cfg = {k: v for k, v in config_to_dict(cfg).items() if k not in ("backbones",)}
    key_cfg.update(backbone=name, solver=solver, device=str(device) if solver == "torch" else "cpu")
    feats_dir = run.path("features", name)
    inputs = [feats_dir / f"{cfg.train_split}.safetensors", feats_dir / f"{cfg.test_split}.safetensors"]
    step = run.begin(PROBE_COMMAND, config=key_cfg, outputs=[out_rel], inputs=inputs, argv=argv, force=force)
    if step.cached:
        return {**load_json(run.path(out_rel, "metrics.json"), kind="probe-metrics"), "cached": True}

    xtr_t, ytr_t, meta_tr = load_features(run, name, cfg.train_split)
    xte_t, yte_t, meta_te = load_features(run, name, cfg.test_split)
    xtr, ytr, xte, yte = xtr_t.numpy(), ytr_t.numpy(), xte_t.numpy(), yte_t.numpy()
    classes = list(meta_tr.get("classes") or [])
    if xtr.shape[1] != xte.shape[1]:
        raise ArtifactError(
            f"{inputs[0]} has {xtr.shape[1]}-d features but {inputs[1]} has {xte.shape[1]}-d; "
            f"re-extract both splits with one `gx extract-features --backbone {name} --force`"
        )
    if classes != list(meta_te.get("classes") or []):
        raise ArtifactError(f"{feats_dir}: the {cfg.train_split} and {cfg.test_split} splits have different class lists; re-extract them together")
    if not classes:
        classes = [str(i) for i in range(int(max(ytr.max(), yte.max())) + 1)]
    fmeta = _features_meta(run, name)
    dataset = str(fmeta.get("dataset") or feats_dir)
    check_two_classes(dataset, classes, ytr, folder=dataset.startswith("folder:"), what="a probe")
    grid = c_grid(full=cfg.full_grid)
    say = on_event or (lambda _msg: None)

    with step:
        out = step.stage(out_rel)
        what = f"C = {cfg.c:g}" if cfg.c is not None else f"C from {len(grid)} values in [{grid[0]:.0e}, {grid[-1]:.0e}]"
        say(f"{name}: {len(xtr)} train / {len(xte)} test x {xtr.shape[1]}-d, {len(classes)} classes; {solver} solver, {what}")
        probe = fit_probe(
            xtr, ytr, num_classes=len(classes), grid=grid, c=cfg.c, val_fraction=cfg.val_fraction, solver=solver,
            device=device, max_iter=cfg.max_iter, tol=cfg.tol, seed=cfg.seed,
        )
        pred = probe.predict(xte)
        metrics = classification_metrics(yte, pred, classes)
        knn = knn_accuracy(xtr, ytr, xte, yte, num_classes=len(classes), ks=tuple(cfg.knn_k), temperature=cfg.knn_temperature,
                           device=device)
        backbone_desc = meta_tr.get("backbone") or fmeta.get("backbone") or {"name": name}
        pool = meta_tr.get("pool") or fmeta.get("pool") or "cls"
        result = {
            "backbone": name,
            "family": backbone_desc.get("family"),
            "dataset": fmeta.get("dataset"),
            "pool": pool,
            "feature_dim": int(xtr.shape[1]),
            "num_classes": len(classes),
            "classes": classes,
            "train_samples": int(len(xtr)),
            "test_samples": int(len(xte)),
            "c": probe.c,
            "c_chosen_by": "fixed (--c)" if cfg.c is not None else f"accuracy on a {cfg.val_fraction:.0%} stratified slice of '{cfg.train_split}'",
            "solver": probe.solver,
            "iterations": probe.iterations,
            "converged": probe.iterations < cfg.max_iter,  # the final fit stopped on the gradient tolerance
            "fit_seconds": probe.fit_seconds,
            "sweep": probe.sweep,
            **{k: v for k, v in metrics.items() if k not in ("per_class", "confusion")},
            **{f"knn{k}_accuracy": round(v, 6) for k, v in knn.items()},
            "knn_temperature": cfg.knn_temperature,
            "per_class": metrics["per_class"],
            "confusion": metrics["confusion"],
        }
        save_classifier(
            out / "classifier.safetensors", probe,
            meta={"classes": classes, "backbone": backbone_desc, "pool": pool, "dataset": fmeta.get("dataset"),
                  "dataset_seed": _dataset_seed(run, name), "train_split": cfg.train_split, "test_split": cfg.test_split,
                  "features_dtype": fmeta.get("dtype"), "image_size": backbone_desc.get("image_size")},
        )
        save_json(out / "metrics.json", result, kind="probe-metrics")
        render_confusion(np.asarray(metrics["confusion"]), classes, out / "confusion.png",
                         title=f"{name} linear probe: accuracy {metrics['accuracy']:.3f} (C = {probe.c:.3g})")
        if cfg.tsne:
            say(f"{name}: t-SNE of {min(len(xte), cfg.tsne_points)} test points")
            render_tsne(xte, yte, classes, out / "tsne.png", max_points=cfg.tsne_points, seed=cfg.seed, title=f"{name}: t-SNE of test features")
        step.metrics.update({k: result[k] for k in ("accuracy", "macro_f1", "weighted_f1", "c", "fit_seconds")})
        step.metrics["knn_top1"] = result.get(f"knn{max(cfg.knn_k)}_accuracy")
    return {**result, "cached": False}


SUMMARY_COLUMNS = (
    "backbone", "family", "pool", "feature_dim", "train_samples", "test_samples", "c", "accuracy", "macro_precision",
    "macro_recall", "macro_f1", "weighted_precision", "weighted_recall", "weighted_f1",
)


def summary_rows(results: list[dict], knn_k: tuple[int, ...]) -> list[dict]:
    cols = list(SUMMARY_COLUMNS) + [f"knn{k}_accuracy" for k in knn_k] + ["solver", "fit_seconds"]
    return [{c: r.get(c) for c in cols} for r in results]


def _write_csv(path: Path, rows: list[dict]) -> None:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _markdown(rows: list[dict]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}" if v < 0.01 or v >= 1000 or not 0 <= v <= 1 else f"{v:.4f}"
        return "" if v is None else str(v)

    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    return "# Linear probes\n\n" + "\n".join(lines) + "\n"


def run_probes(cfg: ProbeConfig, run, *, device="auto", force: bool = False, argv=None,
               on_event: Callable[[str], None] | None = None) -> dict:
    """Probe every requested backbone, then write probe/summary.{csv,md,png}.

    Returns {"rows": summary rows, "results": per-backbone metrics, "cached": [names reused],
    "summary_cached": bool, "outputs": [paths]}.
    """
    from gesture_cli.core.device import resolve_device
    from gesture_cli.viz.plots import render_grouped_bars

    names = [backbone_dirname(b) for b in cfg.backbones] or discover_backbones(run, train_split=cfg.train_split, test_split=cfg.test_split)
    if not names:
        raise ArtifactError(
            f"no extracted features in {run.path('features')} (need {cfg.train_split}.safetensors and {cfg.test_split}.safetensors "
            f"per backbone); run `gx extract-features --backbone NAME -r {shell_word(run.root)}` first"
        )
    for given, name in zip(cfg.backbones or names, names, strict=True):
        for split in (cfg.train_split, cfg.test_split):
            path = run.path("features", name, f"{split}.safetensors")
            if not path.is_file():
                raise ArtifactError(f"{path}: no '{split}' features for backbone '{given}'; run `gx extract-features --backbone {shell_word(given)} -r {shell_word(run.root)}` first")
    names = list(dict.fromkeys(names))
    dev = resolve_device(device)
    results = [probe_backbone(cfg, run, n, device=dev, force=force, argv=argv, on_event=on_event) for n in names]
    rows = summary_rows(results, tuple(cfg.knn_k))
    outs = ["probe/summary.csv", "probe/summary.md", "probe/summary.png"]
    step = run.begin(SUMMARY_COMMAND, config={"backbones": names, "knn_k": list(cfg.knn_k)}, outputs=outs,
                      inputs=[run.path("probe", n, "metrics.json") for n in names], argv=argv, force=force)
    if not step.cached:
        with step:
            _write_csv(step.stage(outs[0], is_dir=False), rows)
            step.stage(outs[1], is_dir=False).write_text(_markdown(rows), encoding="utf-8")
            classes = _features_meta(run, names[0]).get("classes") or []
            render_grouped_bars(rows, [m for m in SUMMARY_METRICS if m in rows[0]], step.stage(outs[2], is_dir=False),
                                title="Linear probes on frozen features (test split)",
                                chance=1.0 / len(classes) if classes else None)
            best = max(rows, key=lambda r: r["accuracy"] or 0.0)
            step.metrics.update({"backbones": len(rows), "accuracy": best["accuracy"], "best_backbone": best["backbone"]})
    return {"rows": rows, "results": results, "cached": [r["backbone"] for r in results if r.get("cached")],
            "summary_cached": step.cached, "outputs": [f"probe/{n}" for n in names] + outs}
