"""Read-only views of run directories for `gx runs`: one summary row per run, one row per step."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from gesture_cli.core.errors import GxError
from gesture_cli.core.rundir import ManifestError, RunDir

# Headline metrics of the overview, under the names the steps record in run.json (a trainer's test_/val_ scores,
# evaluate's and probe's own), grouped by task, best first within a task. The column takes the best of each task
# first, then the second of each, ...: a run of several tasks shows one number of each.
KEY_METRICS = (
    ("test_accuracy", "accuracy", "knn_top1", "val_accuracy"),  # classification: lora-train, evaluate, probe
    ("test_mIoU", "mIoU", "val_mIoU"),  # segmentation: segment-train, evaluate segment
    ("test_pck", "pck", "val_pck"),  # keypoints: keypoint-train, evaluate keypoint
    ("test_bleu4", "bleu4", "val_bleu4", "val_r1"),  # sign-to-text: pose-finetune, evaluate translate, pose-pretrain
    ("explained_variance_top3",),  # pca-compute
    ("images_per_s",),  # extract-features
)


def find_runs(root: Path) -> list[RunDir]:
    """Run directories (folders with a run.json) at `root` itself or directly below it, newest first."""
    root = Path(root)
    dirs = [root] if (root / "run.json").is_file() else []
    if root.is_dir():
        dirs += [p for p in root.iterdir() if p.is_dir() and (p / "run.json").is_file()]
    dirs.sort(key=lambda p: (p / "run.json").stat().st_mtime, reverse=True)
    return [RunDir(p) for p in dirs]


def _parse(ts: str | None) -> _dt.datetime | None:
    try:
        return _dt.datetime.fromisoformat(ts) if ts else None
    except ValueError:
        return None


def _recover(run: RunDir) -> None:
    """Close steps whose process was killed (RunDir.recover_dead_steps) before showing them; a run dir
    this user cannot write is still listed, as it is."""
    try:
        run.recover_dead_steps()
    except (OSError, GxError):
        pass


def summarize_run(run: RunDir) -> dict:
    """One row of `gx runs`. A run whose run.json cannot be used is still a row: status {reason: 1}, no steps,
    and `manifest_error` holding the one-line error (None for every readable run)."""
    _recover(run)
    try:
        m = run.read_manifest()
    except ManifestError as exc:
        return {"name": run.name, "path": str(run.root), "created": None, "steps": 0, "status": {exc.reason: 1},
                "last_status": None, "duration_s": 0.0, "commands": [], "metrics": {}, "key_metrics": {},
                "manifest_error": str(exc)}
    steps = m.get("steps", [])
    status_counts: dict[str, int] = {}
    for s in steps:
        status_counts[s.get("status", "?")] = status_counts.get(s.get("status", "?"), 0) + 1
    metrics: dict[str, object] = {}
    labels: dict[str, str] = {}
    for s in steps:  # later steps win
        if s.get("status") == "ok":
            command = s.get("command", "?")
            for k, v in (s.get("metrics") or {}).items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    metrics[f"{command}.{k}"] = v
                    labels[f"{command}.{k}"] = f"{command}.{_metric_label(k, s)}"
    return {
        "name": run.name,
        "path": str(run.root),
        "created": m.get("created"),
        "steps": len(steps),
        "status": status_counts,
        "last_status": steps[-1].get("status") if steps else None,
        "duration_s": round(sum(s.get("duration_s") or 0 for s in steps), 2),
        "commands": sorted({s.get("command", "?") for s in steps}),
        "metrics": metrics,
        "key_metrics": dict(key_metrics(metrics, labels=labels)),
        "manifest_error": None,
    }


def _metric_label(name: str, step: dict) -> str:
    """The name a metric is shown under: probe records the k-NN accuracy at its largest k as knn_top1, shown
    as knnK_accuracy, the name its metrics.json gives it (knn20_accuracy with the default k of 10 and 20)."""
    config = step.get("config")
    ks = config.get("knn_k") if isinstance(config, dict) else None
    if name == "knn_top1" and isinstance(ks, list) and ks and all(isinstance(k, int) for k in ks):
        return f"knn{max(ks)}_accuracy"
    return name


def key_metrics(metrics: dict, limit: int = 4, *, labels: dict[str, str] | None = None) -> list[tuple[str, object]]:
    """Up to `limit` (label, value) of `metrics` ("command.name" -> number) for the overview (KEY_METRICS)."""
    by_task = [[k for want in names for k in metrics if k.rsplit(".", 1)[-1] == want] for names in KEY_METRICS]
    picked = [task[depth] for depth in range(max(map(len, by_task))) for task in by_task if depth < len(task)]
    return [((labels or {}).get(k, k), metrics[k]) for k in picked[:limit]]


def step_rows(run: RunDir) -> list[dict]:
    _recover(run)
    rows = []
    for s in run.read_manifest().get("steps", []):
        rows.append(
            {
                "command": s.get("command"),
                "status": s.get("status"),
                "start": s.get("start"),
                "duration_s": s.get("duration_s"),
                "outputs": s.get("outputs", []),
                "metrics": s.get("metrics") or {},
                "error": s.get("error"),
            }
        )
    return rows
