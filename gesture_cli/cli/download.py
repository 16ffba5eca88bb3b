"""`gx download`: datasets and model snapshots into the `$GX_HOME` cache; `--list` shows what is there."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from gesture_cli.cli.options import ForceOpt, VerboseOpt, gx_command, make_console

EXAMPLE = (
    "Example: gx download sign-mnist --from ~/Downloads/archive.zip   |   gx download dinov2-small   |   "
    "gx download https://host/data.tar.gz --sha256 HEX --extract   |   gx download --list"
)

# Which options make sense for which kind of NAME; anything else is a usage error, not silently ignored.
_ALLOWED = {
    "sign-mnist": {"--from", "--url", "--sha256"},
    "url": {"--sha256", "--name", "--extract"},
    "model": {"--revision"},
}


@gx_command
def download(
    target: Annotated[
        str | None,
        typer.Argument(metavar="NAME", help="sign-mnist, an http(s) URL, a backbone name (dinov2-small, ...) or a Hugging Face id (owner/name).", show_default=False),
    ] = None,
    list_cache: Annotated[bool, typer.Option("--list", help="Show the cached datasets and model snapshots and exit (works offline).")] = False,
    from_path: Annotated[
        Path | None, typer.Option("--from", help="sign-mnist: a local folder holding the two CSVs, or the Kaggle .zip.", show_default=False)
    ] = None,
    url: Annotated[
        str | None,
        typer.Option("--url", help="sign-mnist: zip URL \\[default: $GX_SIGN_MNIST_URL, else the Kaggle API download].", show_default=False),
    ] = None,
    sha256: Annotated[str | None, typer.Option("--sha256", help="Expected sha256 (hex) of the downloaded file; a mismatch deletes it.", show_default=False)] = None,
    name: Annotated[str | None, typer.Option("--name", help="URL: cache name under datasets/ \\[default: the URL's file name].", show_default=False)] = None,
    extract: Annotated[bool, typer.Option("--extract", help="URL: unpack a zip/tar(.gz/.bz2/.xz) archive into datasets/NAME.")] = False,
    revision: Annotated[str | None, typer.Option("--revision", help="Model: branch, tag or commit \\[default: main].", show_default=False)] = None,
    force: ForceOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Download a dataset or model into the gx cache ($GX_HOME, default ~/.cache/gx): resumable, verified, atomic.

    Gated models (DINOv3) need HF_TOKEN and an accepted licence on the model page; offline
    (HF_HUB_OFFLINE=1 or GX_OFFLINE=1) only what is cached is reported.
    """
    from gesture_cli.core import home
    from gesture_cli.core.errors import UsageError
    from gesture_cli.data import download as dl

    console = make_console()
    if list_cache:
        if target:
            raise UsageError("--list takes no NAME; run `gx download --list` alone")
        _print_listing(console, dl.list_cache(datasets_root=home.datasets_dir(), models_root=home.models_dir()))
        return
    if not target:
        raise UsageError("name what to download: sign-mnist, an http(s) URL, a backbone name or owner/name (or pass --list)")

    kind = "sign-mnist" if target == dl.SIGN_MNIST else "url" if target.startswith(("http://", "https://")) else "model"
    given = {"--from": from_path, "--url": url, "--sha256": sha256, "--name": name, "--extract": extract or None, "--revision": revision}
    stray = [opt for opt, value in given.items() if value is not None and opt not in _ALLOWED[kind]]
    if stray:
        raise UsageError(f"{', '.join(stray)} does not apply to `gx download {target}`; it takes {', '.join(sorted(_ALLOWED[kind]))}")

    offline = home.offline()
    label = name or (target.rsplit("/", 1)[-1].split("?")[0] if kind == "url" else target)
    with _byte_progress(make_console(stderr=True), label) as on_progress:
        if kind == "sign-mnist":
            if from_path is not None and url is not None:
                raise UsageError("pass either --from or --url for sign-mnist, not both")
            result = dl.download_sign_mnist(
                datasets_root=home.datasets_dir(),
                from_path=from_path,
                url=url or os.environ.get("GX_SIGN_MNIST_URL") or dl.SIGN_MNIST_KAGGLE_URL,
                sha256=sha256,
                force=force,
                offline=offline,
                on_progress=on_progress,
            )
        elif kind == "url":
            result = dl.download_url(
                target, datasets_root=home.datasets_dir(), name=name, sha256=sha256, extract=extract, force=force, offline=offline, on_progress=on_progress
            )
        else:
            result = dl.download_model(
                target,
                cache_dir=home.models_dir(),
                revision=revision,
                token=os.environ.get("HF_TOKEN") or None,  # handed to huggingface_hub only; never stored or printed
                offline=offline,
                force=force,
                on_progress=on_progress,
            )
    _print_result(console, target, result)


def _print_result(console, target: str, result) -> None:
    from rich.filesize import decimal
    from rich.markup import escape

    where = escape(str(result.path)) if result.path is not None else ""
    what = escape(result.name)
    files = f", {len(result.files)} file{'s' if len(result.files) != 1 else ''}" if result.files else ""
    detail = f"; {escape(result.detail)}" if result.detail else ""
    if result.status == "local":
        console.print(f"{escape(target)}: {escape(result.detail)}.")
    elif result.status == "cached":
        console.print(f"{what} is already cached in {where} ({decimal(result.size)}{files}{detail}); --force downloads it again.")
    else:
        console.print(f"[green]Downloaded[/] {what} -> {where} ({decimal(result.size)}{files}{detail}).")


def _print_listing(console, listing) -> None:
    from rich.filesize import decimal
    from rich.markup import escape
    from rich.table import Table

    if listing.datasets:
        console.print(f"[bold]Datasets[/] in {escape(str(listing.datasets_root))}")
        table = Table()
        for col in ("name", "size", "files"):
            table.add_column(col, justify="right" if col == "size" else "left")
        for d in listing.datasets:
            shown = ", ".join(d.files[:3]) + (f", ... ({len(d.files)} files)" if len(d.files) > 3 else "")
            table.add_row(escape(d.name), decimal(d.size), escape(shown))
        console.print(table)
    else:
        console.print(f"No datasets cached in {escape(str(listing.datasets_root))} (try `gx download sign-mnist`).")
    if listing.models:
        console.print(f"[bold]Model snapshots[/] in {escape(str(listing.models_root))}")
        table = Table()
        for col in ("repo id", "revision", "refs", "size"):
            table.add_column(col, justify="right" if col == "size" else "left")
        for m in listing.models:
            table.add_row(escape(m.repo_id), m.revision[:10], escape(", ".join(m.refs)), decimal(m.size))
        console.print(table)
    else:
        console.print(f"No model snapshots cached in {escape(str(listing.models_root))} (try `gx download dinov2-small`).")


@contextmanager
def _byte_progress(console, description: str, *, every_s: float = 10.0):
    """Yield on_progress(done, total) for core: a Rich bar (bytes, speed, ETA) on a terminal, a line every
    `every_s` seconds in logs. Nothing is drawn until the first bytes move, so cached hits stay quiet."""
    state: dict = {"progress": None, "task": None, "last": 0.0, "t0": 0.0, "done": 0, "total": None}

    def on_progress(done: int, total: int | None) -> None:
        state["done"], state["total"] = done, total
        if console.is_terminal:
            if state["progress"] is None:
                from rich.progress import (
                    BarColumn,
                    DownloadColumn,
                    Progress,
                    TextColumn,
                    TimeRemainingColumn,
                    TransferSpeedColumn,
                )

                state["progress"] = Progress(
                    TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                    console=console, transient=True,
                )
                state["progress"].start()
                state["task"] = state["progress"].add_task(description, total=total, completed=done)
            state["progress"].update(state["task"], completed=done, total=total)
            return
        now = time.monotonic()
        if not state["t0"]:
            state["t0"] = state["last"] = now
        if now - state["last"] >= every_s:
            state["last"] = now
            _progress_line(console, description, done, total, now - state["t0"])

    try:
        yield on_progress
    finally:
        if state["progress"] is not None:
            state["progress"].stop()


def _progress_line(console, description: str, done: int, total: int | None, dt: float) -> None:
    from rich.filesize import decimal

    rate = done / dt if dt > 0 else 0.0
    of = f" of {decimal(total)}" if total else ""
    eta = f", ETA {(total - done) / rate:.0f}s" if total and rate > 0 and done < total else ""
    console.print(f"{description}: {decimal(done)}{of} ({decimal(int(rate))}/s{eta})", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("download", epilog=EXAMPLE)(download)
