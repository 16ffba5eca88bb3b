"""Read-only views of run directories for `gx runs`: one summary row per run, one row per step."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from gesture_cli.core.errors import GxError
from gesture_cli.core.rundir import ManifestError, RunDir

# Metrics worth a column in the overview, in display order (whichever a step recorded).
KEY_METRICS = ("accuracy", "top1", "knn_top1", "miou", "pckh", "bleu4", "rougeL", "images_per_s", "images", "val_loss")


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
                "last_status": None, "duration_s": 0.0, "commands": [], "metrics": {}, "manifest_error": str(exc)}
    steps = m.get("steps", [])
    status_counts: dict[str, int] = {}
    for s in steps:
        status_counts[s.get("status", "?")] = status_counts.get(s.get("status", "?"), 0) + 1
    metrics: dict[str, object] = {}
    for s in steps:  # later steps win
        if s.get("status") == "ok":
            for k, v in (s.get("metrics") or {}).items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    metrics[f"{s.get('command', '?')}.{k}"] = v
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
        "manifest_error": None,
    }


def key_metrics(metrics: dict, limit: int = 4) -> list[tuple[str, object]]:
    out = []
    for want in KEY_METRICS:
        for k, v in metrics.items():
            if k.rsplit(".", 1)[-1] == want:
                out.append((k, v))
    return out[:limit]


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
