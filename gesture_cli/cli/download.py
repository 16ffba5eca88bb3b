"""`gx download`: datasets, hub dataset repositories and model snapshots into the `$GX_HOME` cache;
`--list` shows what is there."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from gesture_cli.cli.options import ForceOpt, VerboseOpt, gx_command, make_console
from gesture_cli.cli.progress import byte_progress

EXAMPLE = (
    "Example: gx download sign-mnist --from ~/Downloads/archive.zip   |   gx download dinov2-small   |   "
    "gx download https://host/data.tar.gz --sha256 HEX --extract   |   gx download hf-dataset:me/asl-poses --include 'poses/*'   |   "
    "gx download --list"
)

# Which options make sense for which kind of NAME; anything else is a usage error, not silently ignored.
_ALLOWED = {
    "sign-mnist": {"--from", "--url", "--sha256"},
    "url": {"--sha256", "--name", "--extract"},
    "model": {"--revision"},
    "hf-dataset": {"--revision", "--include"},
}


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
    force: ForceOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Download a dataset or model into the gx cache ($GX_HOME, default ~/.cache/gx): resumable, verified, atomic.

    Gated models (DINOv3) need HF_TOKEN and an accepted licence on the model page; offline
    (HF_HUB_OFFLINE=1 or GX_OFFLINE=1) only what is cached is reported. A dataset repository is
    then used offline as --dataset hf-dataset:owner/name (images) or as a pose dataset spec.
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

    if target == dl.SIGN_MNIST:
        kind = "sign-mnist"
    elif target.startswith(("http://", "https://")):
        kind = "url"
    elif target.startswith(dl.HF_DATASET_PREFIX):
        kind = "hf-dataset"
    else:
        kind = "model"
    given = {"--from": from_path, "--url": url, "--sha256": sha256, "--name": name, "--extract": extract or None,
             "--revision": revision, "--include": include or None}
    stray = [opt for opt, value in given.items() if value is not None and opt not in _ALLOWED[kind]]
    if stray:
        raise UsageError(f"{', '.join(stray)} does not apply to `gx download {target}`; it takes {', '.join(sorted(_ALLOWED[kind]))}")

    offline = home.offline()
    label = name or (target.rsplit("/", 1)[-1].split("?")[0] if kind == "url" else target)
    with byte_progress(make_console(stderr=True), label) as on_progress:
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
        elif kind == "hf-dataset":
            result = dl.download_hub_dataset(
                target,
                cache_dir=home.datasets_dir(),
                revision=revision,
                include=include,
                token=os.environ.get("HF_TOKEN") or None,  # handed to huggingface_hub only; never stored or printed
                offline=offline,
                force=force,
                on_progress=on_progress,
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
