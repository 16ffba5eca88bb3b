"""`gx download`: datasets, hub dataset repositories and model snapshots into the `$GX_HOME` cache;
`--list` shows what is there."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gesture_cli.cli.options import gx_command, make_console
from gesture_cli.cli.progress import byte_progress

EXAMPLE = (
    "Example: gx download sign-mnist --from ~/Downloads/archive.zip   |   gx download dinov2-small   |   "
    "gx download https://host/data.tar.gz --sha256 HEX --extract   |   gx download hf-dataset:me/asl-poses --include 'poses/*'   |   "
    "gx download --list"
)

@gx_command
def download(
    target: Annotated[
        str | None,
        typer.Argument(
            metavar="NAME",
            help="sign-mnist, an http(s) URL, a backbone name (dinov2-small, ...), a Hugging Face model id (owner/name) "
            "or a Hugging Face dataset repository (hf-dataset:owner/name).",
            show_default=False,
        ),
    ] = None,
    list_cache: Annotated[bool, typer.Option("--list", help="Show the cached datasets and model snapshots and exit (works offline).")] = False,
    from_path: Annotated[
        Path | None, typer.Option("--from", help="sign-mnist: a local folder holding the two CSVs, or the Kaggle .zip.", show_default=False)
    ] = None,
    url: Annotated[
        str | None,
        typer.Option("--url", help="sign-mnist: zip URL [default: $GX_SIGN_MNIST_URL, else the Kaggle API download].", show_default=False),
    ] = None,
    sha256: Annotated[str | None, typer.Option("--sha256", help="Expected sha256 (hex) of the downloaded file; a mismatch deletes it.", show_default=False)] = None,
    name: Annotated[str | None, typer.Option("--name", help="URL: cache name under datasets/ [default: the URL's file name].", show_default=False)] = None,
    extract: Annotated[bool, typer.Option("--extract", help="URL: unpack a zip/tar(.gz/.bz2/.xz) archive into datasets/NAME.")] = False,
    revision: Annotated[str | None, typer.Option("--revision", help="Model or hf-dataset: branch, tag or commit [default: main].", show_default=False)] = None,
    include: Annotated[
        list[str] | None,
        typer.Option("--include", help="hf-dataset: only files matching this glob (repeatable), e.g. 'poses/*' or '*.parquet' [default: all].", show_default=False),
    ] = None,
    force=False, verbose=False,
) -> None:
    """Download a dataset or model into the gx cache ($GX_HOME, default ~/.cache/gx): resumable, verified, atomic.

    Gated models (DINOv3) need HF_TOKEN and an accepted licence on the model page; offline
    (HF_HUB_OFFLINE=1 or GX_OFFLINE=1) only what is cached is reported. A dataset repository is
    then used offline as --dataset hf-dataset:owner/name (images) or as a pose dataset spec.
    """
    from gesture_cli.core.errors import UsageError
    from gesture_cli.tasks.download import check_download_options, download_kind
    from gesture_cli.tasks.download import download as fetch
    from gesture_cli.tasks.download import list_cache as cache_listing

    console = make_console()
    if list_cache:
        if target:
            raise UsageError("--list takes no NAME; run `gx download --list` alone")
        _print_listing(console, cache_listing())
        return
    if not target:
        raise UsageError("name what to download: sign-mnist, an http(s) URL, a backbone name or owner/name (or pass --list)")

    kind = download_kind(target)
    check_download_options(target, kind, {"--from": from_path, "--url": url, "--sha256": sha256, "--name": name, "--extract": extract or None,
                                          "--revision": revision, "--include": include or None})
    label = name or (target.rsplit("/", 1)[-1].split("?")[0] if kind == "url" else target)
    with byte_progress(make_console(stderr=True), label) as on_progress:
        result = fetch(target, kind=kind, from_path=from_path, url=url, sha256=sha256, name=name, extract=extract, revision=revision,
                       include=include, force=force, on_progress=on_progress)
    _print_result(console, target, result)
    if kind == "hf-dataset":
        from rich.markup import escape

        console.print(
            f"Use it as --dataset {escape(target)} (images, read like folder:DIR) or as the pose dataset {escape(target)} "
            f"(read like pose:DIR); add /SUBDIR for a folder inside it, @REV for another downloaded revision."
        )


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
    if listing.hub_datasets:
        console.print(f"[bold]Hub dataset repositories[/] in {escape(str(listing.datasets_root))}")
        table = Table()
        for col in ("spec", "revision", "refs", "size", "files"):
            table.add_column(col, justify="right" if col in ("size", "files") else "left")
        for d in listing.hub_datasets:
            table.add_row(escape(f"hf-dataset:{d.repo_id}"), d.revision[:10], escape(", ".join(d.refs)), decimal(d.size), str(len(d.files)))
        console.print(table)
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


def register(app: typer.Typer) -> None:
    app.command("download", epilog=EXAMPLE)(download)
