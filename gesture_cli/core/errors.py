"""Errors that gx turns into one red line and an exit code at the CLI boundary.

Core code raises these with a message that says what is wrong and how to fix it; it never prints
or exits. `exit_code` follows DESIGN §2: 1 for runtime/data errors, 2 for usage errors.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import os
import shlex
from collections.abc import Iterable
from pathlib import Path


class GxError(Exception):
    """Base class: a problem the user can fix, reported as one line."""

    exit_code = 1


class UsageError(GxError):
    """A bad option, flag combination or config key."""

    exit_code = 2


class DataError(GxError):
    """A dataset file or row that cannot be read; the message names file, row/field and reason."""


class NonFiniteError(GxError):
    """A model produced NaN or Inf (often an fp16/bf16 range problem): the message suggests --precision fp32."""


class ArtifactError(GxError):
    """A missing, stale or mismatched artifact in the run directory."""


class ModelError(GxError):
    """A backbone or model that cannot be found or built."""


class DownloadError(GxError):
    """A download that failed, did not verify, or would be unsafe to unpack."""


class GxWarning(Warning):
    """Something gx worked around and the user should hear about (files it skipped); core code emits it
    with `warnings.warn`, never prints, and the CLI shows each distinct message once as a yellow line."""


@contextlib.contextmanager
def sigterm_raises_terminated():
    """While inside, SIGTERM raises Terminated in the main thread instead of killing the process outright, so that
    open steps roll back and worker pools stop (elsewhere: nothing, signals reach the main thread only). Trainers
    put their own handler over this one (stop at the next step boundary, save checkpoints/last)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated("SIGTERM received")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as an exception by the CLI boundary so that an open step rolls back its staged
    files and records `interrupted` instead of dying with them. Exit 143 (128 + 15), as the shell reports
    a process that SIGTERM killed; Ctrl-C stays 130."""

    exit_code = 143


# errno values of a write the file system refused: no space or quota left, a file-size limit (ulimit -f),
# no permission, a read-only mount
_FULL = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})
_REFUSED = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def is_refused(exc: OSError) -> bool:
    """Whether the file system refused the operation (permissions, a read-only mount), as opposed to a full disk."""
    return exc.errno in _REFUSED


def write_error(exc: OSError, path: Path | str | None = None) -> GxError | None:
    """A one-line GxError for a write the file system refused, naming the path (`path`, else the one the
    OSError carries) and the cause, or for a path that runs through a file; None for any other OSError."""
    where = path if path is not None else exc.filename
    at = f" {where}" if where else " a file"
    why = exc.strerror or str(exc)
    if exc.errno in _FULL:
        return GxError(f"disk full or file-size limit while writing{at} ({why}); free space (or raise `ulimit -f`) and rerun")
    if exc.errno in _REFUSED:
        return GxError(f"cannot write{at} ({why}); make it writable{_elsewhere(where)}")
    if exc.errno in (errno.EEXIST, errno.ENOTDIR) and where:
        blocker = file_in_the_way(Path(where))
        if blocker is not None:
            return GxError(f"{where}: {blocker} is a file where a folder is needed; move it or choose another path")
    return None


# options with which a command chooses where it writes; a refused write names those the running command has
WHERE_OPTIONS = ("--run-dir", "--output", "--into", "--png")


def _elsewhere(where: Path | str | None) -> str:
    """How to write somewhere else instead: GX_HOME for a path in gx's cache of downloads, else the options of the
    running command (click's current context) that choose where it writes; "" when it has none or no command runs."""
    if where is not None:
        # the root core.home.gx_home returns (not imported: core.home imports this module)
        home = Path(os.environ.get("GX_HOME") or Path.home() / ".cache" / "gx").expanduser()
        try:
            home = home.resolve()
            in_cache = Path(where).resolve().is_relative_to(home)
        except (OSError, RuntimeError):
            in_cache = False
        if in_cache:
            return f" or point GX_HOME at a writable folder (gx's cache of downloads, now {home})"
    try:  # typer >= 0.20 runs commands on its own copy of click
        from typer._click.globals import get_current_context
    except ImportError:
        from click import get_current_context
    ctx = get_current_context(silent=True)
    params = ctx.command.params if ctx is not None else []
    have = [opt for opt in WHERE_OPTIONS if any(opt in p.opts for p in params)]
    return f" or write somewhere else ({', '.join(have)})" if have else ""


def file_in_the_way(path: Path) -> Path | None:
    """The nearest existing part of `path` (itself or a parent) when it is a file, not a folder (mkdir hit a file,
    or a path runs through one); None when that part is a folder."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def broken_link_target(path: Path) -> str | None:
    """The target `path` points to when it is a symbolic link to nothing there (a deleted file, a drive that is
    not mounted), else None ("?" when the link cannot be read). `Path.is_file()` and `exists()` are False for such
    a link, so a walk that keeps files only would drop it without a word, and mkdir fails on it with 'File exists'."""
    if not path.is_symlink() or path.exists():
        return None
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return " (did you mean 'x'?)" for the closest choice, or "" when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_choice(kind: str, name: str, choices: Iterable[str]) -> UsageError:
    """A UsageError for an unknown registry name, with a suggestion and the valid names."""
    choices = sorted(choices)
    return UsageError(f"unknown {kind} '{name}'{did_you_mean(name, choices)}; valid: {', '.join(choices)}")


# what users type for a validation split; a dataset names its own one of these (most say 'val')
VALIDATION_SPLIT_NAMES = ("val", "validation", "valid", "dev")


def unknown_split(dataset: str, split: str, splits: Iterable[str], *, kind: str = "dataset") -> UsageError:
    """A UsageError for a split the dataset lacks, e.g. kind='keypoint dataset'. A validation split asked of a
    dataset with none gets that said and what to use instead: a closest-name guess would offer 'all' for 'val'."""
    splits = list(splits)
    valid = ", ".join(splits) or "none"
    if split.lower() in VALIDATION_SPLIT_NAMES:
        own = [s for s in splits if s.lower() in VALIDATION_SPLIT_NAMES]
        if own:
            return UsageError(f"{kind} '{dataset}' has no split '{split}' (did you mean '{own[0]}'?); valid splits: {valid}")
        test = "; to score data no trainer saw, pass --split test" if "test" in splits else ""
        return UsageError(f"{kind} '{dataset}' has no split '{split}' nor any other validation split; valid splits: {valid}; "
                          f"the trainers hold out part of the training split for validation themselves (--val-fraction){test}")
    return UsageError(f"{kind} '{dataset}' has no split '{split}'{did_you_mean(split, splits)}; valid splits: {valid}")


def shell_word(value: object) -> str:
    """`value` as one word of a command line a message tells the user to run: a path with a space or a quote
    stays one argument when pasted into a POSIX shell (shlex.quote); a plain name is unchanged."""
    return shlex.quote(str(value))
