"""`gx runs`: a table of run directories with their steps, status, duration and key metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from gesture_cli.cli.options import VerboseOpt, gx_command, make_console

runs_app = typer.Typer(
    help="List run directories, or show the steps of one run.",
    invoke_without_command=True,
    no_args_is_help=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Example: gx runs --root runs   |   gx runs show runs/demo",
)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


@runs_app.callback()
@gx_command
def runs(
    ctx: typer.Context,
    root: Annotated[Path, typer.Option("--root", help="Folder holding run directories (or a run directory itself).")] = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """List the run directories under --root with steps, status, duration and key metrics."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from gesture_cli.core.runs import find_runs, key_metrics, summarize_run

    rows = [summarize_run(r) for r in find_runs(root)]
    console = make_console()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print(f"No runs under {root} (a run directory holds a run.json; `gx demo` makes one).")
        return
    table = Table(title=f"runs under {root}")
    for col in ("run", "steps", "status", "time", "commands", "key metrics"):
        table.add_column(col)
    for r in rows:
        status = ", ".join(f"{k} {v}" for k, v in sorted(r["status"].items()))
        metrics = "  ".join(f"{k}={_fmt(v)}" for k, v in key_metrics(r["metrics"]))
        table.add_row(r["name"], str(r["steps"]), status, f"{r['duration_s']:.1f}s", ", ".join(r["commands"]), metrics)
    console.print(table)


@runs_app.command("show", epilog="Example: gx runs show runs/demo")
@gx_command
def show(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Show every step of one run: command, status, start, duration, outputs and metrics."""
    from rich.table import Table

    from gesture_cli.core.errors import UsageError
    from gesture_cli.core.rundir import RunDir
    from gesture_cli.core.runs import step_rows

    run = RunDir(run_dir)
    if not run.manifest_path.is_file():
        raise UsageError(f"{run_dir}: not a run directory (no run.json)")
    rows = step_rows(run)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=str(run.root))
    for col in ("command", "status", "start", "time", "outputs", "metrics"):
        table.add_column(col)
    for s in rows:
        metrics = "  ".join(f"{k}={_fmt(v)}" for k, v in s["metrics"].items() if not isinstance(v, (dict, list)))
        status = s["status"] + (f": {s['error']}" if s.get("error") else "")
        dur = f"{s['duration_s']:.1f}s" if s["duration_s"] is not None else "-"
        table.add_row(s["command"], status, s["start"] or "-", dur, ", ".join(s["outputs"]), metrics)
    make_console().print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(runs_app, name="runs")
