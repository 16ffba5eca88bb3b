"""`gx report`: write RUN/report.html (the page itself is built by `gesture_cli.viz.report`)."""

from __future__ import annotations

from pathlib import Path

from gesture_cli.core.artifacts import atomic_write_text
from gesture_cli.core.errors import GxError, UsageError
from gesture_cli.core.rundir import RunDir
from gesture_cli.viz.report import build_report, current_steps


def write_report(run_dir: Path | None, output: Path | None = None) -> tuple[Path, int]:
    """Write the report (atomically) and return its path and the number of steps shown."""
    run = RunDir(run_dir)
    if not run.manifest_path.is_file():
        raise UsageError(f"{run.root}: not a run directory (no run.json); run a gx command with -r {run.root} first")
    try:
        run.recover_dead_steps()  # a killed step is shown as interrupted, not as running forever
    except (OSError, GxError):
        pass  # a run dir this user cannot write is still reported (with -o elsewhere), as it is
    page = build_report(run)
    out = Path(output) if output else run.root / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, page)
    return out, len(current_steps(run))
