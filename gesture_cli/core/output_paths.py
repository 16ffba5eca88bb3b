"""Checks on the files and folders a command writes outside a run dir (`-o`), so that it never writes onto,
into or over what it reads: pose-convert's OUTDIR, pose-view's and report's HTML page, pose-render's MP4/PNG.

Every check raises a one-line UsageError naming the path and what to do; nothing here writes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from gesture_cli.core.errors import UsageError

HTML_SUFFIXES = (".html", ".htm")


def _resolved(path: Path) -> Path:
    return Path(path).expanduser().resolve()


def check_not_input(out: Path, inputs: Iterable[Path], *, option: str = "-o") -> None:
    """UsageError when the file `out` is one of `inputs` (files the command reads; absent ones are ignored).

    Only inputs with `out`'s suffix (any case) are looked at on disk: `out` is replaced atomically, so a link
    named `out` pointing at a file of another suffix loses the link, never that file; and a run's thousands of
    files of other kinds cost no stat."""
    o = _resolved(out)
    suffix = Path(out).suffix.lower()
    for inp in inputs:
        if inp is None or Path(inp).suffix.lower() != suffix:
            continue
        if Path(inp).expanduser().exists() and _resolved(inp) == o:
            raise UsageError(f"{option} {out} is the input {inp}; write to another file")


def check_apart_from_inputs(out: Path, inputs: Iterable[Path], *, option: str = "-o") -> None:
    """UsageError when the folder `out` is one of `inputs`, holds one (a folder above it) or lies inside one (an
    input folder): replacing it, or reading the inputs again later, would take in what it holds.

    `inputs` are files or folders the command reads; those that do not exist are ignored."""
    o = _resolved(out)
    for inp in inputs:
        if inp is None or not Path(inp).expanduser().exists():
            continue
        i = _resolved(inp)
        if o == i:
            raise UsageError(f"{option} {out} is the input {inp}; write to another folder")
        if o in i.parents:
            raise UsageError(f"{option} {out} holds the input {inp}; write to a folder outside it")
        if i in o.parents:
            raise UsageError(f"{option} {out} is inside the input {inp}; write to a folder outside it")


def check_not_cwd(out: Path, *, option: str = "-o") -> None:
    """UsageError when the existing folder `out` is the current folder or one above it: it cannot be replaced."""
    o, cwd = _resolved(out), Path.cwd().resolve()
    if o == cwd or o in cwd.parents:
        raise UsageError(f"{option} {out} is the current folder{'' if o == cwd else ' or holds it'}; it will not be replaced: "
                         "write to a new folder, e.g. -o gx-poses")


def names_folder(path: Path | str) -> bool:
    """Whether the -o text ends in a path separator (`newdir/`): a folder, made if it is not there."""
    text = str(path)
    return text.endswith(os.sep) or (os.altsep is not None and text.endswith(os.altsep))


def check_not_empty(text: Path | str | None, *, option: str, what: str) -> None:
    """UsageError when the option's text is empty: `Path("")` is ".", the current folder, which nobody means.
    `what` says what to pass instead, e.g. "an HTML file name or a folder"."""
    if text is not None and not str(text):
        raise UsageError(f"{option} is empty; pass {what}")


def html_output(path: Path | str, *, default_name: str, option: str = "-o") -> Path:
    """The HTML file to write for `-o PATH`: a folder (an existing one, or any PATH ending in /) means `<default_name>`
    inside it, the caller making the folder; a file must end in .html or .htm (an existing one is replaced, as a rerun
    does). The caller checks that it is none of the files the command reads (check_not_input).

    `path` is the -o text as given (a str keeps its trailing /; Path drops it); an empty one is refused."""
    check_not_empty(path, option=option, what="an HTML file name, or a folder (-o pages/)")
    as_folder = names_folder(path)
    path = Path(path).expanduser()
    if as_folder and path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path}{os.sep} is not a folder; give a folder or a file name ending in .html")
    if as_folder or path.is_dir():
        path = path / default_name
    if path.suffix.lower() not in HTML_SUFFIXES:
        raise UsageError(f"{option} {path}: the file name must end in .html; or a folder: an existing one, "
                         f"or end it with {os.sep} to make it ({option} {path}{os.sep})")
    if path.is_dir():  # FOLDER/<default_name> is itself a folder
        raise UsageError(f"{option} {path} is a folder; give a file name ending in .html")
    return path
