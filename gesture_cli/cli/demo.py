"""`gx demo`: run the whole toolchain on synthetic data with tiny backbones into runs/demo."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from gesture_cli.cli.options import gx_command, make_console
from gesture_cli.core.errors import GxError, UsageError

EXAMPLE = "Example: gx demo   (then open runs/demo/report.html; gx demo --fresh recomputes every step)"


@gx_command
def demo(
    # path_type=str: the text as typed, so that `-r ""` is refused (a Path makes it ".") and a `~` the shell left is expanded
    run_dir: Annotated[Path, typer.Option("--run-dir", "-r", help="Where the demo run goes.", path_type=str)] = Path("runs/demo"),
    fresh: Annotated[bool, typer.Option("--fresh", help="Recompute every step instead of reusing cached results.")] = False,
    verbose=False,
) -> None:
    """Run every gx command on the embedded defaults (synthetic data, tiny backbones, no network) and write a report.

    The steps are ordinary gx command lines, each printed before it runs, so any of them can be
    copied and rerun by hand. A rerun reuses cached results and takes seconds; --fresh recomputes.
    Ends with a table of the steps and their times, and RUN/report.html.
    """
    from rich.markup import escape
    from rich.table import Table

    from gesture_cli.tasks.demo import run_demo

    if not str(run_dir):
        raise UsageError("-r/--run-dir is empty; pass a folder, or leave it out for runs/demo")
    run_dir = Path(run_dir).expanduser()
    console = make_console()

    def on_step(i: int, n: int, step) -> None:
        console.rule(f"[bold][{i + 1}/{n}] {escape(step.title)}[/]")
        console.print(escape("gx " + " ".join(step.args)), style="cyan")

    res = run_demo(run_dir, fresh=fresh, on_step=on_step, invoke=invoke_gx)
    table = Table(title=f"gx demo: {run_dir}")
    for col in ("#", "step", "command", "status", "time"):
        table.add_column(col, justify="right" if col in ("#", "time") else "left")
    for i, r in enumerate(res.results):
        style = {"ran": "green", "cached": "dim", "failed": "bold red"}[r.status]
        table.add_row(str(i + 1), r.step.title, escape(_command(r.step.args)), f"[{style}]{r.status}[/]", f"{r.seconds:.1f}s")
    console.print(table)
    if not res.ok:
        failed = res.results[-1]
        raise GxError(f"demo step {len(res.results)} ({failed.step.title}) failed with exit code {failed.exit_code}; "
                      f"rerun it alone to see why: gx {' '.join(failed.step.args)}")
    console.print(f"[bold]Done in {res.seconds:.0f}s.[/] Open {run_dir / 'report.html'} in a browser.")


def invoke_gx(args: list[str]) -> int:
    """Run one gx command line in this process through the gx Typer app; returns its exit code."""
    # imported here, not at the top: cli/app.py imports this module to register `gx demo`
    from gesture_cli.cli.app import app

    saved = sys.argv
    sys.argv = ["gx", *args]  # what the step records as its command line
    try:
        result = app(args=args, prog_name="gx", standalone_mode=False)
        return int(result) if isinstance(result, int) else 0
    except SystemExit as exc:  # pragma: no cover - click exits this way for some usage errors
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except GxError as exc:
        return exc.exit_code
    except Exception as exc:  # click usage errors when standalone_mode is off
        code = getattr(exc, "exit_code", None)
        if code is None:
            raise
        if hasattr(exc, "show"):
            exc.show()
        return int(code)
    finally:
        sys.argv = saved


def _command(args: tuple[str, ...]) -> str:
    """`gx evaluate classify`, `gx probe`: the command and its task argument, without options."""
    return "gx " + " ".join([args[0], *(a for a in args[1:2] if not a.startswith("-"))])


def register(app: typer.Typer) -> None:
    app.command("demo", epilog=EXAMPLE)(demo)
