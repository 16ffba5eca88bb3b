"""Files over http(s) into the `$GX_HOME` cache, and the archives they may be: resumable, verified, atomic.

Three promises, because gx runs on rented GPUs with flaky networks and preemptible machines:

- resumable: a download streams into `<target>.part`; a rerun asks for `Range: bytes=N-` and appends
  when the server answers 206 (restarts on 200);
- verified: the byte count must match Content-Length, and the sha256 when one is given;
- atomic: the `.part` is renamed onto the target only once verified, and datasets / archives are
  unpacked into a temporary sibling directory that is renamed into place. A failed run leaves nothing
  behind except the resumable `.part` (and not even that when the checksum did not match).

Core code: no printing, no exits, no environment reads. The CLI passes roots, offline flag and an
`on_progress(done_bytes, total_bytes_or_None)` callback explicitly.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    from typing_extensions import Unpack
from pathlib import Path, PurePosixPath

from gesture_cli import __version__
from gesture_cli.core.errors import DownloadError, UsageError
from gesture_cli.core.transfer import archive_name_problem

ProgressFn = Callable[[int, "int | None"], None]


class TransferOptions(TypedDict, total=False):
    """The keywords every download function takes for how it transfers (see `Transfer`)."""

    force: bool
    offline: bool
    on_progress: ProgressFn | None
    retries: int
    backoff_s: float


@dataclass(frozen=True)
class Transfer:
    """How a download behaves, whatever it fetches: read once from a call's keywords."""

    force: bool = False  # fetch again even when the cache has it
    offline: bool = False  # never touch the network: report the cache, or fail saying how to fill it
    on_progress: ProgressFn | None = None  # called with (done_bytes, total_bytes or None) as bytes arrive
    retries: int = 3  # extra attempts after a transient network error
    backoff_s: float = 1.0  # seconds before the first retry, doubled for each next one

DOWNLOADS_SUBDIR = ".downloads"  # archives waiting to be unpacked (and their .part files) live here
CHUNK_BYTES = 1 << 20
ARCHIVE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tbz2", ".txz", ".tar", ".zip")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class DownloadResult:
    """What a download call did. status: downloaded | cached | local."""

    name: str  # what the user asked for: sign-mnist, a file name, a repo id
    path: Path | None  # where it now lives (None for tiny-* backbones built locally)
    status: str
    size: int = 0  # bytes on disk
    files: tuple[str, ...] = ()  # file names, relative to path when path is a directory
    source: str = ""  # URL, local path or repo id it came from
    detail: str = ""  # one extra line for the summary (revision, resumed bytes, ...)


class HTTPStatusError(DownloadError):
    """The server answered with an HTTP error that retrying will not fix (4xx)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class _Transient(Exception):
    """A network hiccup worth retrying (the .part keeps what arrived)."""


# --------------------------------------------------------------------------------------------------
# plain files over http(s)


def check_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise UsageError(f"'{url}' is not an http(s) URL; pass a URL like https://host/file.zip")
    return url


def normalize_sha256(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    value = sha256.strip().lower().removeprefix("sha256:")
    if not _SHA256_RE.match(value):
        raise UsageError(f"--sha256 '{sha256}' is not 64 hex digits")
    return value


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def part_path(target: Path) -> Path:
    return target.with_name(target.name + ".part")


def fetch_url(url: str, target: Path, *, sha256: str | None = None, timeout: float = 30.0, **transfer: Unpack[TransferOptions]) -> DownloadResult:
    """Download `url` to `target` through `<target>.part`: resumable, verified, atomic.

    `retries` extra attempts follow connection errors, waiting backoff_s, 2*backoff_s, ... seconds;
    each attempt resumes from what the .part already holds.
    """
    return fetch(url, target, sha256=sha256, timeout=timeout, transfer=Transfer(**transfer))


def fetch(url: str, target: Path, *, sha256: str | None, transfer: Transfer, timeout: float = 30.0) -> DownloadResult:
    """`fetch_url` with its transfer settings read."""
    check_url(url)
    expected = normalize_sha256(sha256)
    target = Path(target)
    if target.is_file() and not transfer.force:
        if expected and sha256_file(target) != expected:
            raise DownloadError(f"{target} already exists but its sha256 differs from --sha256; rerun with --force to download {url} again")
        return DownloadResult(target.name, target, "cached", target.stat().st_size, (target.name,), url)
    if transfer.offline:
        raise DownloadError(f"offline mode is on (HF_HUB_OFFLINE/GX_OFFLINE) and {target} is not cached; unset it to download {url}")

    target.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(target)
    resumed_from = part.stat().st_size if part.is_file() else 0
    attempt = 0
    while True:
        try:
            _fetch_into(url, part, timeout=timeout, on_progress=transfer.on_progress)
            break
        except _Transient as exc:
            if attempt >= transfer.retries:
                kept = f"; rerun the same command to resume from {part.name}" if part.is_file() and part.stat().st_size else ""
                raise DownloadError(f"download of {url} failed after {attempt + 1} attempts: {exc}{kept}") from None
            time.sleep(transfer.backoff_s * 2**attempt)
            attempt += 1

    if expected:
        actual = sha256_file(part)
        if actual != expected:
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"checksum mismatch for {url}: expected sha256 {expected}, got {actual}; the download was deleted, check the URL and --sha256"
            )
    os.replace(part, target)
    detail = f"resumed from {resumed_from} bytes" if resumed_from else ""
    return DownloadResult(target.name, target, "downloaded", target.stat().st_size, (target.name,), url, detail)


def _fetch_into(url: str, part: Path, *, timeout: float, on_progress: ProgressFn | None) -> None:
    """One HTTP attempt that appends to (206) or rewrites (200) `part`; raises _Transient on hiccups."""
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": f"gx/{__version__}", "Accept-Encoding": "identity"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            part.unlink()  # our .part is longer than the file (it changed on the server): start over
            raise _Transient("the server refused to resume; restarting") from None
        if exc.code in {408, 425, 429} or exc.code >= 500:
            raise _Transient(f"HTTP {exc.code} {exc.reason}") from None
        raise HTTPStatusError(f"{url} answered HTTP {exc.code} {exc.reason}; check the URL (and that it needs no login)", exc.code) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _Transient(f"{type(reason).__name__}: {reason}") from None

    with response:
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if response.status == 206 and offset:
            start, total = _parse_content_range(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink()
                raise _Transient("the server resumed at the wrong offset; restarting")
            done = offset
            total = total if total is not None else (offset + length if length is not None else None)
            mode = "ab"
        elif response.status == 200:
            done, total, mode = 0, length, "wb"  # no range support (or a fresh start): rewrite
        else:
            raise DownloadError(f"{url} answered HTTP {response.status}, expected 200; check the URL")
        if on_progress:
            on_progress(done, total)
        with open(part, mode) as f:
            while True:
                try:
                    chunk = response.read(CHUNK_BYTES)
                except (http.client.HTTPException, OSError) as exc:  # IncompleteRead, reset, timeout
                    raise _Transient(f"connection lost after {done} bytes ({type(exc).__name__})") from None
                if not chunk:
                    break
                try:
                    f.write(chunk)
                except OSError as exc:  # disk full, quota: retrying will not help
                    raise DownloadError(f"cannot write {part}: {exc.strerror}; free some space (or point GX_HOME elsewhere) and rerun to resume") from None
                done += len(chunk)
                if on_progress:
                    on_progress(done, total)
            f.flush()
            os.fsync(f.fileno())
    if total is not None and done != total:
        if done > total:
            part.unlink()
            raise DownloadError(f"{url} sent {done} bytes but announced {total}; the download was deleted, try again")
        raise _Transient(f"connection closed after {done} of {total} bytes")


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """'bytes 100-199/200' -> (100, 200); total None when '*'."""
    m = re.match(r"^\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*$", value or "")
    if not m:
        return None, None
    return int(m.group(1)), (int(m.group(2)) if m.group(2) != "*" else None)


def file_name_from_url(url: str) -> str:
    name = urllib.parse.unquote(PurePosixPath(urllib.parse.urlsplit(url).path).name)
    if not name or name in {".", ".."}:
        raise UsageError(f"cannot tell a file name from {url}; pass --name NAME")
    return name


def strip_archive_suffix(name: str) -> str:
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def check_cache_name(name: str) -> str:
    if not name or name.startswith(".") or "/" in name or "\\" in name or name.endswith(".part"):
        raise UsageError(f"--name '{name}' must be a plain file or folder name (no '/', not starting with '.', not ending in .part)")
    return name


def download_url(
    url: str, *, datasets_root: Path, name: str | None = None, sha256: str | None = None, extract: bool = False,
    **transfer: Unpack[TransferOptions],
) -> DownloadResult:
    """Any http(s) file into `datasets_root/NAME`; with extract=True, NAME is a folder of its contents."""
    check_url(url)
    file_name = file_name_from_url(url)
    settings = Transfer(**transfer)
    if not extract:
        return fetch(url, datasets_root / check_cache_name(name or file_name), sha256=sha256, transfer=settings)

    dest = datasets_root / check_cache_name(name or strip_archive_suffix(file_name))
    if dest.is_dir() and not settings.force:
        return dataset_result(dest, "cached", url)
    if settings.offline:
        raise DownloadError(f"offline mode is on (HF_HUB_OFFLINE/GX_OFFLINE) and {dest} is not cached; unset it to download {url}")
    archive = datasets_root / DOWNLOADS_SUBDIR / f"{url_tag(url)}-{file_name}"
    fetch_archive(url, archive, sha256=sha256, transfer=settings)
    try:
        safe_extract(archive, dest, replace=settings.force, label=file_name)
    finally:
        discard(archive)  # unpacked or refused: either way the archive has done its job
    return dataset_result(dest, "downloaded", url)


def url_tag(url: str) -> str:
    """Short URL hash in cached archive names, so a .part is only ever resumed from the same URL."""
    return hashlib.sha1(url.encode()).hexdigest()[:10]


def fetch_archive(url: str, archive: Path, *, sha256: str | None, transfer: Transfer) -> None:
    """An archive into DOWNLOADS_SUBDIR (always fetched: it is deleted once unpacked); on failure only a
    resumable .part may stay there."""
    try:
        fetch(url, archive, sha256=sha256, transfer=replace(transfer, force=True))
    except BaseException:
        _discard_dir_if_empty(archive.parent)
        raise


def _discard_dir_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()  # only when empty: other archives' .part files stay resumable
    except OSError:
        pass


def discard(archive: Path) -> None:
    archive.unlink(missing_ok=True)
    _discard_dir_if_empty(archive.parent)


# --------------------------------------------------------------------------------------------------
# archives


def _link_problem(member: str, target: str, *, hard: bool) -> str | None:
    """Why a link member escapes: symlinks resolve against the member's folder, hard links against the root."""
    norm = target.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        return f"a link to the absolute path {target}"
    base = "" if hard else os.path.dirname(member.replace("\\", "/"))
    resolved = os.path.normpath(os.path.join(base, norm))
    if resolved == ".." or resolved.startswith("../"):
        return f"a link pointing outside ({target})"
    return None


def _check_zip(zf: zipfile.ZipFile, label: str) -> None:
    for info in zf.infolist():
        problem = archive_name_problem(info.filename)
        mode = info.external_attr >> 16
        if problem is None and stat.S_ISLNK(mode):
            problem = _link_problem(info.filename, zf.read(info).decode("utf-8", "replace"), hard=False)
        if problem is None and stat.S_ISFIFO(mode):
            problem = "the type FIFO (a named pipe)"
        elif problem is None and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)):
            problem = "a device file"
        if problem:
            raise DownloadError(f"refusing to unpack {label}: member '{info.filename}' has {problem}")


def _check_tar(tf: tarfile.TarFile, label: str) -> None:
    for m in tf.getmembers():
        problem = archive_name_problem(m.name)
        if problem is None and m.issym():
            problem = _link_problem(m.name, m.linkname, hard=False)
        elif problem is None and m.islnk():
            problem = archive_name_problem(m.linkname) and f"a hard link to {m.linkname}"
        if problem is None and m.isfifo():
            problem = "the type FIFO (a named pipe)"
        elif problem is None and (m.ischr() or m.isblk()):
            problem = "a device file"
        if problem is None and not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
            problem = "an unsupported type"
        if problem:
            raise DownloadError(f"refusing to unpack {label}: member '{m.name}' has {problem}")


def _check_tree(root: Path, label: str) -> None:
    """Second line of defence after unpacking: every path must resolve inside root."""
    real_root = os.path.realpath(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for entry in dirnames + filenames:
            path = os.path.join(dirpath, entry)
            if os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:
                raise DownloadError(f"refusing to unpack {label}: '{os.path.relpath(path, root)}' points outside the destination")


def safe_extract(archive: Path, dest: Path, *, replace: bool = False, label: str | None = None) -> Path:
    """Unpack a zip / tar(.gz/.bz2/.xz) into `dest`, all or nothing.

    Every member is checked before anything is written: absolute paths, '..' components, links
    pointing outside and device files are refused with a DownloadError naming the member. Members
    are unpacked into a temporary sibling of `dest` that is renamed into place at the end, so a
    failure leaves no half-unpacked folder and whatever was at `dest` untouched. An existing `dest`
    is only replaced when `replace` is true. `label` names the archive in errors (default: its file name).
    """
    archive, dest = Path(archive), Path(dest)
    label = label or archive.name
    if not archive.is_file():
        raise DownloadError(f"archive {archive} does not exist")
    if dest.exists() and not replace:
        raise DownloadError(f"{dest} already exists; pass --force to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.unpack-", dir=dest.parent))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                _check_zip(zf, label)
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                _check_tar(tf, label)
                try:
                    # Python's own "data" filter repeats our checks and drops odd permission bits.
                    tf.extractall(tmp, filter="data") if hasattr(tarfile, "data_filter") else tf.extractall(tmp)  # noqa: S202
                except tarfile.TarError as exc:
                    raise DownloadError(f"refusing to unpack {label}: {exc}") from None
        else:
            raise DownloadError(f"{label} is not a zip or tar archive; drop --extract to keep it as a file")
        _check_tree(tmp, label)
        replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def replace_dir(new: Path, dest: Path) -> None:
    """Rename `new` onto `dest`; an old `dest` is moved aside first and deleted only after the swap."""
    if not dest.exists():
        os.replace(new, dest)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
    os.replace(dest, old / dest.name)
    try:
        os.replace(new, dest)
    except BaseException:
        os.replace(old / dest.name, dest)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def dataset_result(path: Path, status: str, source: str) -> DownloadResult:
    size, files = tree_size(path)
    return DownloadResult(path.name, path, status, size, files, source)


def tree_size(path: Path) -> tuple[int, tuple[str, ...]]:
    if path.is_file():
        return path.stat().st_size, (path.name,)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return sum(p.stat().st_size for p in files), tuple(str(p.relative_to(path)) for p in files)


