"""`gx runs`: a table of run directories with their steps, status, duration and key metrics; `gx runs
export` / `gx runs import` move a run between machines (core/transfer.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from gesture_cli.cli.options import gx_command, make_console

runs_app = typer.Typer(
    help="List run directories, show the steps of one run, or move runs between machines (export / import).",
    invoke_without_command=True,
    no_args_is_help=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Example: gx runs --root runs   |   gx runs show runs/demo   |   gx runs export runs/demo -o demo.tar.zst",
)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _check_root(ctx: typer.Context, root: Path | str) -> Path:
    """--root must be a folder. Left at its default, a missing runs/ is just no runs yet; given, it is a mistake."""
    from gesture_cli.core.errors import UsageError, broken_link_target

    if not str(root):  # `--root ""` would list the current folder
        raise UsageError("--root is empty; pass the folder that holds the run directories (or one run directory), "
                         "or leave it out for runs")
    root = Path(root).expanduser()
    if root.is_dir():
        return root
    if root.exists() or root.is_symlink():
        what = "a file" if root.exists() else f"a symbolic link to {broken_link_target(root)}, which does not exist"
        raise UsageError(f"--root {root} is {what}; pass the folder that holds the run directories (or one run directory)")
    source = ctx.get_parameter_source("root")  # click's ParameterSource (typer vendors its own click: compare by name)
    if source is not None and source.name != "DEFAULT":
        raise UsageError(f"--root {root} does not exist; pass the folder that holds the run directories (or one run directory)")
    return root


def _cmd(*words: object) -> str:
    """A command line to copy into a shell: each path quoted where it needs it (spaces, quotes, $), markup-safe."""
    from rich.markup import escape

    from gesture_cli.core.errors import shell_word

    return escape(" ".join(shell_word(w) for w in words))


@runs_app.callback()
@gx_command
def runs(
    ctx: typer.Context,
    # path_type=str: the text as typed, so that `--root ""` is refused (a Path makes it ".", the current folder)
    root: Annotated[Path, typer.Option("--root", help="Folder holding run directories (or a run directory itself).", path_type=str)] = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    verbose=False,
) -> None:
    """List the run directories under --root with steps, status, duration and key metrics."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.markup import escape
    from rich.table import Table

    from gesture_cli.core.runs import find_runs, summarize_run

    root = _check_root(ctx, root)
    rows = [summarize_run(r) for r in find_runs(root)]
    console = make_console()
    # A run whose run.json cannot be used is listed and marked, with the file and the fix on stderr; the exit
    # stays 0: the listing is complete, and `gx runs --json | ...` in a script should not fail for one bad run.
    for r in rows:
        if r["manifest_error"]:
            make_console(stderr=True).print(f"[yellow]warning:[/] {escape(r['manifest_error'])}")
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print(f"No runs under {escape(str(root))} (a run directory holds a run.json; `gx demo` makes one).")
        return
    table = Table(title=escape(f"runs under {root}"))
    for col in ("run", "steps", "status", "time", "commands", "key metrics"):
        table.add_column(col)
    for r in rows:
        status = ", ".join(f"{k} {v}" for k, v in sorted(r["status"].items()))
        if r["manifest_error"]:  # no steps to count: just what is wrong with its run.json
            status = ", ".join(r["status"])
        metrics = "  ".join(f"{k}={_fmt(v)}" for k, v in r["key_metrics"].items())
        table.add_row(r["name"], str(r["steps"]), status, f"{r['duration_s']:.1f}s", ", ".join(r["commands"]), metrics)
    console.print(table)


@runs_app.command("show", epilog="Example: gx runs show runs/demo")
@gx_command
def show(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    verbose=False,
) -> None:
    """Show every step of one run: command, status, start, duration, outputs and metrics."""
    from rich.markup import escape
    from rich.table import Table

    from gesture_cli.core.errors import UsageError
    from gesture_cli.core.rundir import RunDir
    from gesture_cli.core.runs import step_rows

    run_dir = run_dir.expanduser()  # a `~` the shell did not expand (quoted)
    run = RunDir(run_dir, given_as="RUN_DIR")
    if not run.manifest_path.is_file():
        raise UsageError(f"{run_dir}: not a run directory (no run.json)")
    rows = step_rows(run)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=escape(str(run.root)))
    for col in ("command", "status", "start", "time", "outputs", "metrics"):
        table.add_column(col)
    for s in rows:
        metrics = "  ".join(f"{k}={_fmt(v)}" for k, v in s["metrics"].items() if not isinstance(v, (dict, list)))
        status = s["status"] + (f": {s['error']}" if s.get("error") else "")
        dur = f"{s['duration_s']:.1f}s" if s["duration_s"] is not None else "-"
        table.add_row(s["command"], status, s["start"] or "-", dur, ", ".join(s["outputs"]), metrics)
    make_console().print(table)


@runs_app.command(
    "export",
    epilog="Example: gx runs export runs/mnist --only best -o mnist.tar.zst   (then: scp mnist.tar.zst laptop: && gx runs import mnist.tar.zst)",
)
@gx_command
def export(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="The run directory to pack.", show_default=False)],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Archive to write: NAME.tar.zst, NAME.tar.gz or NAME.tar [default: RUN_NAME.tar.zst here].", show_default=False),
    ] = None,
    only: Annotated[
        str | None,
        typer.Option("--only", help="best: leave out checkpoints/last/ (resume state); the best weights, artifacts and run.json stay.", show_default=False),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing archive.")] = False,
    verbose=False,
) -> None:
    """Pack a run directory into one archive with a SHA256SUMS inside, to copy it to another machine."""
    from rich.filesize import decimal
    from rich.markup import escape

    from gesture_cli.cli.progress import byte_progress
    from gesture_cli.core.errors import UsageError
    from gesture_cli.core.transfer import default_archive_name, export_run

    if only not in (None, "best"):
        raise UsageError(f"--only takes 'best' (leave out checkpoints/last/); got '{only}'")
    run_dir = run_dir.expanduser()  # `~` the shell left alone (`-o=~/x`, quoted values)
    out = output.expanduser() if output is not None else default_archive_name(run_dir)
    with byte_progress(make_console(stderr=True), f"export {run_dir.name}") as on_progress:
        res = export_run(run_dir, out, only_best=only == "best", force=force, on_progress=on_progress)
    console = make_console()
    for command in res.running:
        console.print(f"[yellow]Note:[/] step {escape(command)} is still marked running; the archive holds what was on disk now.")
    left = ""
    if res.left_out:
        left = f"; left out {', '.join(escape(p) + '/' for p in res.left_out)} ({res.left_out_files} files, {decimal(res.left_out_size)})"
    console.print(
        f"[green]Exported[/] {escape(str(run_dir))} -> {escape(str(res.archive))} ({res.files} files, {decimal(res.size)} "
        f"-> {decimal(res.archive_size)}, with SHA256SUMS{left})."
    )
    console.print(f"On the other machine: {_cmd('gx', 'runs', 'import', res.archive.name, '--into', 'runs')}")


@runs_app.command("import", epilog="Example: gx runs import mnist.tar.zst --into runs   (then: gx runs show runs/mnist)")
@gx_command
def import_(
    archive: Annotated[Path, typer.Argument(metavar="FILE", help="An archive written by `gx runs export`.", show_default=False)],
    # path_type=str: the text as typed, so that `--into ""` is refused (a Path makes it ".", the current folder)
    into: Annotated[Path, typer.Option("--into", help="Folder to put the run in; the run keeps its name.", path_type=str)] = Path("runs"),
    force: Annotated[bool, typer.Option("--force", help="Replace a run of the same name (only after the archive verified).")] = False,
    verbose=False,
) -> None:
    """Unpack a run archive: every file checked against SHA256SUMS, nothing outside the target, all or nothing."""
    from rich.filesize import decimal
    from rich.markup import escape

    from gesture_cli.cli.progress import byte_progress
    from gesture_cli.core.errors import UsageError
    from gesture_cli.core.transfer import import_run

    if not str(into):
        raise UsageError("--into is empty; pass the folder to put the run in, or leave it out for runs (nothing was imported)")
    archive, into = archive.expanduser(), Path(into).expanduser()  # `~` the shell left alone (`--into=~/runs`, quoted values)
    with byte_progress(make_console(stderr=True), f"import {archive.name}") as on_progress:
        res = import_run(archive, into, force=force, on_progress=on_progress)
    what = "Replaced" if res.replaced else "Imported"
    make_console().print(
        f"[green]{what}[/] {escape(str(res.run_dir))} from {escape(archive.name)} ({res.files} files, {decimal(res.size)}, checksums verified). "
        f"Next: {_cmd('gx', 'runs', 'show', res.run_dir)}"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(runs_app, name="runs")
