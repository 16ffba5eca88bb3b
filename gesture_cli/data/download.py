"""Downloads into the `$GX_HOME` cache: Sign Language MNIST, any http(s) file, Hugging Face snapshots
(model repositories under `models/`, dataset repositories `hf-dataset:OWNER/NAME` under `datasets/`,
both in the hub's own cache layout, so huggingface_hub verifies, resumes and reuses them).

Three promises, because gx runs on rented GPUs with flaky networks and preemptible machines:

- resumable: a download streams into `<target>.part`; a rerun asks for `Range: bytes=N-` and appends
  when the server answers 206 (restarts on 200);
- verified: the byte count must match Content-Length, and the sha256 when one is given;
- atomic: the `.part` is renamed onto the target only once verified, and datasets / archives are
  unpacked into a temporary sibling directory that is renamed into place. A failed run leaves nothing
  behind except the resumable `.part` (and not even that when the checksum did not match).

Core code: no printing, no exits, no environment reads. The CLI passes roots, token, offline flag and
an `on_progress(done_bytes, total_bytes_or_None)` callback explicitly.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import socket
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from gesture_cli import __version__
from gesture_cli.core.errors import DataError, DownloadError, UsageError, did_you_mean

ProgressFn = Callable[[int, "int | None"], None]

SIGN_MNIST = "sign-mnist"
SIGN_MNIST_KAGGLE_URL = "https://www.kaggle.com/api/v1/datasets/download/datamunge/sign-language-mnist"
SIGN_MNIST_PAGE = "https://www.kaggle.com/datasets/datamunge/sign-language-mnist"
SIGN_MNIST_FILES = ("sign_mnist_train.csv", "sign_mnist_test.csv")
SIGN_MNIST_COLUMNS = 785  # label + 28*28 pixels

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


@dataclass(frozen=True)
class CachedDataset:
    name: str
    path: Path
    size: int
    files: tuple[str, ...]


@dataclass(frozen=True)
class CachedModel:
    repo_id: str
    revision: str  # commit hash
    refs: tuple[str, ...]  # branch / tag names pointing at it (main, ...)
    size: int
    path: Path
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class CacheListing:
    datasets_root: Path
    models_root: Path
    datasets: list[CachedDataset] = field(default_factory=list)
    models: list[CachedModel] = field(default_factory=list)
    hub_datasets: list[CachedModel] = field(default_factory=list)  # hf-dataset:OWNER/NAME snapshots under datasets_root


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


def fetch_url(
    url: str,
    target: Path,
    *,
    sha256: str | None = None,
    force: bool = False,
    offline: bool = False,
    on_progress: ProgressFn | None = None,
    timeout: float = 30.0,
    retries: int = 3,
    backoff_s: float = 1.0,
) -> DownloadResult:
    """Download `url` to `target` through `<target>.part`: resumable, verified, atomic.

    `retries` extra attempts follow connection errors, waiting backoff_s, 2*backoff_s, ... seconds;
    each attempt resumes from what the .part already holds.
    """
    check_url(url)
    expected = normalize_sha256(sha256)
    target = Path(target)
    if target.is_file() and not force:
        if expected and sha256_file(target) != expected:
            raise DownloadError(f"{target} already exists but its sha256 differs from --sha256; rerun with --force to download {url} again")
        return DownloadResult(target.name, target, "cached", target.stat().st_size, (target.name,), url)
    if offline:
        raise DownloadError(f"offline mode is on (HF_HUB_OFFLINE/GX_OFFLINE) and {target} is not cached; unset it to download {url}")

    target.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(target)
    resumed_from = part.stat().st_size if part.is_file() else 0
    attempt = 0
    while True:
        try:
            _fetch_into(url, part, timeout=timeout, on_progress=on_progress)
            break
        except _Transient as exc:
            if attempt >= retries:
                kept = f"; rerun the same command to resume from {part.name}" if part.is_file() and part.stat().st_size else ""
                raise DownloadError(f"download of {url} failed after {attempt + 1} attempts: {exc}{kept}") from None
            time.sleep(backoff_s * 2**attempt)
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
    url: str,
    *,
    datasets_root: Path,
    name: str | None = None,
    sha256: str | None = None,
    extract: bool = False,
    force: bool = False,
    offline: bool = False,
    on_progress: ProgressFn | None = None,
    retries: int = 3,
    backoff_s: float = 1.0,
) -> DownloadResult:
    """Any http(s) file into `datasets_root/NAME`; with extract=True, NAME is a folder of its contents."""
    check_url(url)
    file_name = file_name_from_url(url)
    if not extract:
        target = datasets_root / check_cache_name(name or file_name)
        return fetch_url(url, target, sha256=sha256, force=force, offline=offline, on_progress=on_progress, retries=retries, backoff_s=backoff_s)

    dest = datasets_root / check_cache_name(name or strip_archive_suffix(file_name))
    if dest.is_dir() and not force:
        return _dataset_result(dest, "cached", url)
    if offline:
        raise DownloadError(f"offline mode is on (HF_HUB_OFFLINE/GX_OFFLINE) and {dest} is not cached; unset it to download {url}")
    archive = datasets_root / DOWNLOADS_SUBDIR / f"{_url_tag(url)}-{file_name}"
    _fetch_archive(url, archive, sha256=sha256, offline=offline, on_progress=on_progress, retries=retries, backoff_s=backoff_s)
    try:
        safe_extract(archive, dest, replace=force, label=file_name)
    finally:
        _discard(archive)  # unpacked or refused: either way the archive has done its job
    return _dataset_result(dest, "downloaded", url)


def _url_tag(url: str) -> str:
    """Short URL hash in cached archive names, so a .part is only ever resumed from the same URL."""
    return hashlib.sha1(url.encode()).hexdigest()[:10]


def _fetch_archive(url: str, archive: Path, **kwargs) -> None:
    """fetch_url into DOWNLOADS_SUBDIR; on failure only a resumable .part may stay there."""
    try:
        fetch_url(url, archive, force=True, **kwargs)
    except BaseException:
        _discard_dir_if_empty(archive.parent)
        raise


def _discard_dir_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()  # only when empty: other archives' .part files stay resumable
    except OSError:
        pass


def _discard(archive: Path) -> None:
    archive.unlink(missing_ok=True)
    _discard_dir_if_empty(archive.parent)


# --------------------------------------------------------------------------------------------------
# archives


def _name_problem(name: str) -> str | None:
    """Why an archive member name would land outside the destination, or None."""
    norm = name.replace("\\", "/")
    if not norm.strip("/"):
        return "an empty name"
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        return "an absolute path"
    if ".." in norm.split("/"):
        return "a '..' component"
    return None


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
        problem = _name_problem(info.filename)
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
        problem = _name_problem(m.name)
        if problem is None and m.issym():
            problem = _link_problem(m.name, m.linkname, hard=False)
        elif problem is None and m.islnk():
            problem = _name_problem(m.linkname) and f"a hard link to {m.linkname}"
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
        _replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _replace_dir(new: Path, dest: Path) -> None:
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


# --------------------------------------------------------------------------------------------------
# Sign Language MNIST


def check_sign_mnist_csv(path: Path, *, source: str = "") -> None:
    """The first line (header or data) must have 785 comma-separated fields."""
    where = f" (from {source})" if source else ""
    with open(path, "rb") as f:
        first = f.readline(1 << 16).decode("utf-8", "replace").strip()
    if not first:
        raise DataError(f"{path.name}{where} is empty; expected Sign Language MNIST CSV rows (label + 784 pixels)")
    n = len(first.split(","))
    if n != SIGN_MNIST_COLUMNS:
        raise DataError(f"{path.name}{where}, line 1: {n} columns, expected {SIGN_MNIST_COLUMNS} (label + 784 pixels); is this Sign Language MNIST?")


def sign_mnist_ready(dest: Path) -> bool:
    try:
        for name in SIGN_MNIST_FILES:
            check_sign_mnist_csv(dest / name)
    except (OSError, DataError):
        return False
    return True


def download_sign_mnist(
    *,
    datasets_root: Path,
    from_path: Path | None = None,
    url: str = SIGN_MNIST_KAGGLE_URL,
    sha256: str | None = None,
    force: bool = False,
    offline: bool = False,
    on_progress: ProgressFn | None = None,
    retries: int = 3,
    backoff_s: float = 1.0,
) -> DownloadResult:
    """Place sign_mnist_{train,test}.csv in `datasets_root/sign-mnist` from a folder, a zip, or a URL."""
    dest = datasets_root / SIGN_MNIST
    if not force and sign_mnist_ready(dest):
        return _dataset_result(dest, "cached", str(from_path or url))
    if from_path is not None:
        from_path = Path(from_path).expanduser()
        if not from_path.exists():
            raise DownloadError(f"--from {from_path} does not exist; pass the folder or the .zip holding {' and '.join(SIGN_MNIST_FILES)}")
        expected = normalize_sha256(sha256)
        if expected and (from_path.is_dir() or sha256_file(from_path) != expected):
            what = "is a folder" if from_path.is_dir() else "does not match"
            raise DownloadError(f"--sha256 checks the archive, and --from {from_path} {what}; drop --sha256 or pass the right archive")
        _install_sign_mnist(from_path, dest)
        return _dataset_result(dest, "downloaded", str(from_path))
    if offline:
        raise DownloadError(
            f"sign-mnist is not in {dest} and offline mode is on (HF_HUB_OFFLINE/GX_OFFLINE); pass --from FOLDER_OR_ZIP, or unset it to download {url}"
        )

    archive = datasets_root / DOWNLOADS_SUBDIR / f"{_url_tag(url)}-sign-language-mnist.zip"
    try:
        _fetch_archive(url, archive, sha256=sha256, offline=offline, on_progress=on_progress, retries=retries, backoff_s=backoff_s)
    except HTTPStatusError as exc:
        if exc.status in {401, 403}:
            raise DownloadError(
                f"{url} refused the download (HTTP {exc.status}); download the archive from {SIGN_MNIST_PAGE} "
                "and run `gx download sign-mnist --from archive.zip`"
            ) from None
        raise
    try:
        _install_sign_mnist(archive, dest, label=url)
    finally:
        _discard(archive)
    return _dataset_result(dest, "downloaded", url)


def _install_sign_mnist(source: Path, dest: Path, *, label: str | None = None) -> None:
    """Copy and check the two CSVs from a folder or zip into a temporary sibling, then swap it in."""
    label = label or str(source)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.new-", dir=dest.parent))
    try:
        if source.is_dir():
            for name in SIGN_MNIST_FILES:
                found = sorted(source.rglob(name), key=lambda p: (len(p.parts), str(p)))
                if not found:
                    raise DownloadError(f"no {name} below {source}; pass the folder or Kaggle .zip that holds {' and '.join(SIGN_MNIST_FILES)}")
                shutil.copyfile(found[0], tmp / name)
        elif zipfile.is_zipfile(source):
            with zipfile.ZipFile(source) as zf:
                members = [i for i in zf.infolist() if not i.is_dir() and not i.filename.startswith("__MACOSX/")]
                for name in SIGN_MNIST_FILES:
                    found = sorted((i for i in members if PurePosixPath(i.filename.replace("\\", "/")).name == name), key=lambda i: len(i.filename))
                    if not found:
                        raise DownloadError(f"no {name} in {label}; expected the Kaggle archive layout ({name.removesuffix('.csv')}/{name})")
                    # Stream the member into a name we choose: member paths never touch the disk.
                    with zf.open(found[0]) as src, open(tmp / name, "wb") as dst:
                        shutil.copyfileobj(src, dst, CHUNK_BYTES)
        else:
            raise DownloadError(f"{label} is neither a folder nor a zip archive; pass the folder or Kaggle .zip holding the two CSVs")
        for name in SIGN_MNIST_FILES:
            check_sign_mnist_csv(tmp / name, source=label)
        _replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _dataset_result(path: Path, status: str, source: str) -> DownloadResult:
    size, files = _tree_size(path)
    return DownloadResult(path.name, path, status, size, files, source)


def _tree_size(path: Path) -> tuple[int, tuple[str, ...]]:
    if path.is_file():
        return path.stat().st_size, (path.name,)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return sum(p.stat().st_size for p in files), tuple(str(p.relative_to(path)) for p in files)


# --------------------------------------------------------------------------------------------------
# Hugging Face model snapshots


# Weights in other frameworks' formats: never needed by gx, often as large as the torch weights.
FOREIGN_WEIGHT_PATTERNS = ["*.h5", "*.msgpack", "*.onnx", "*.onnx_data", "onnx/*", "*.tflite", "*.ot", "tf_model*", "flax_model*", "rust_model*", "coreml/*", "openvino/*"]


@dataclass(frozen=True)
class ModelSource:
    """What `gx download NAME` fetches for a model name: a hub repo and which of its files."""

    repo_id: str | None  # None: nothing to download (why says so)
    allow_patterns: list[str] | None = None  # registry backbones: exactly the files build_backbone reads
    ignore_patterns: list[str] | None = None
    gated: bool = False
    why: str = ""
    repo_type: str = "model"  # "dataset" for hf-dataset:OWNER/NAME

    @property
    def page(self) -> str:
        prefix = "datasets/" if self.repo_type == "dataset" else ""
        return f"https://huggingface.co/{prefix}{self.repo_id}"


def resolve_model_source(name: str) -> ModelSource:
    """Registry name or owner/name -> the hub repo to fetch; repo_id None for tiny-*, timm: and local paths."""
    if name.startswith("tiny-"):
        return ModelSource(None, why="built locally from a small config: nothing to download")
    if name.startswith("timm:"):
        return ModelSource(None, why="timm fetches its own weights on first use: nothing to download")
    if Path(name).expanduser().exists():
        return ModelSource(None, why="a local path, used in place: nothing to download")
    if "/" in name:
        owner, _, repo = name.partition("/")
        if not owner or not repo or "/" in repo:
            raise UsageError(f"'{name}' is not a Hugging Face id; write it as owner/name, e.g. facebook/dinov2-small")
        return ModelSource(name, ignore_patterns=FOREIGN_WEIGHT_PATTERNS)

    from gesture_cli.core.errors import GxError
    from gesture_cli.models import backbones  # imports torch: only reached for registry names

    entries = {e.name: e for e in backbones.list_backbones()}
    try:
        repo_id = backbones.hub_id(name)
    except (GxError, KeyError, ValueError):
        repo_id = ""
    if repo_id is None:
        return ModelSource(None, why="nothing to download")
    if not repo_id or "/" not in repo_id:
        raise UsageError(
            f"don't know how to download '{name}'{did_you_mean(name, [SIGN_MNIST, *entries])}; pass sign-mnist, an http(s) URL, "
            f"a Hugging Face id (owner/name) or a backbone name ({_families(entries)})"
        )
    entry = entries.get(name)
    if entry is not None and entry.family == "sapiens":
        patterns = list(backbones.TORCHSCRIPT_ALLOW_PATTERNS)
    else:
        patterns = [*backbones.HF_ALLOW_PATTERNS, "*.pt2", "*.pt"]
    return ModelSource(repo_id, allow_patterns=patterns, gated=bool(entry and entry.gated))


def _families(entries: dict) -> str:
    """'dinov2-*, dinov3-*, ...' : the registry in a few words for an error line."""
    stems = sorted({name.split("-")[0] + "-*" for name in entries})
    return ", ".join(stems)


def _repo_folder(cache_dir: Path, repo_id: str, repo_type: str = "model") -> Path:
    return Path(cache_dir) / (f"{repo_type}s--" + repo_id.replace("/", "--"))


def cached_snapshot(cache_dir: Path, repo_id: str, revision: str | None = None, *, repo_type: str = "model") -> Path | None:
    """The snapshot folder for `revision` (branch, tag or commit; default main) if it is on disk."""
    folder = _repo_folder(cache_dir, repo_id, repo_type)
    revision = revision or "main"
    commit = revision
    ref = folder / "refs" / revision
    if ref.is_file():
        commit = ref.read_text().strip()
    snapshot = folder / "snapshots" / commit
    return snapshot if snapshot.is_dir() else None


def download_model(
    name: str,
    *,
    cache_dir: Path,
    revision: str | None = None,
    token: str | None = None,
    offline: bool = False,
    force: bool = False,
    on_progress: ProgressFn | None = None,
    retries: int = 2,
    backoff_s: float = 2.0,
) -> DownloadResult:
    """A Hugging Face snapshot into `cache_dir` (hub cache layout); offline, only report the cache.

    `token` goes to huggingface_hub only: never stored, never part of a message.
    """
    source = resolve_model_source(name)
    if source.repo_id is None:
        return DownloadResult(name, None, "local", detail=source.why)
    return _hub_snapshot(
        source, name=name, cache_dir=cache_dir, revision=revision, token=token, offline=offline, force=force,
        on_progress=on_progress, retries=retries, backoff_s=backoff_s,
    )


def _hub_snapshot(
    source: ModelSource,
    *,
    name: str,
    cache_dir: Path,
    revision: str | None,
    token: str | None,
    offline: bool,
    force: bool,
    on_progress: ProgressFn | None,
    retries: int,
    backoff_s: float,
) -> DownloadResult:
    """snapshot_download of a model or dataset repository into `cache_dir`, with retries and one-line errors."""
    repo_id = source.repo_id
    if offline and force:
        raise UsageError(f"--force re-downloads {repo_id}, but offline mode is on (HF_HUB_OFFLINE/GX_OFFLINE); unset it or drop --force")

    from huggingface_hub import snapshot_download

    before = cached_snapshot(cache_dir, repo_id, revision, repo_type=source.repo_type)
    before_files = _tree_size(before)[1] if before is not None else None
    kwargs = dict(
        repo_type=source.repo_type,
        cache_dir=str(cache_dir),
        revision=revision,
        token=token or None,
        local_files_only=offline,
        force_download=force,
        allow_patterns=source.allow_patterns,
        ignore_patterns=source.ignore_patterns,
    )
    if on_progress is not None:
        kwargs["tqdm_class"] = _reporting_tqdm(on_progress)
    attempt = 0
    while True:
        try:
            path = Path(snapshot_download(repo_id, **kwargs))
            break
        except Exception as exc:  # noqa: BLE001 - mapped to one GxError below, or re-raised
            if not offline and attempt < retries and _is_transient(exc):
                time.sleep(backoff_s * 2**attempt)  # hub downloads resume their .incomplete blobs
                attempt += 1
                continue
            error = _hub_error(exc, name=name, source=source, revision=revision, token=token, offline=offline, cache_dir=cache_dir)
            if error is None:
                raise
            raise error from None

    size, files = _tree_size(path) if path.is_dir() else (0, ())
    if source.repo_type == "dataset" and source.allow_patterns and not _matching(files, source.allow_patterns):
        shown = " ".join(f"--include '{p}'" for p in source.allow_patterns)
        where = "in the cache (offline mode is on)" if offline else "in the repository"
        raise DownloadError(f"no file of {repo_id} {where} matches {shown}; patterns are globs on paths like 'data/*.parquet' ({source.page})")
    rev = f"revision {revision}, " if revision else ""
    if offline:
        return DownloadResult(repo_id, path, "cached", size, files, repo_id, f"{rev}commit {path.name[:10]} (offline: not checked for updates)")
    unchanged = before is not None and before == path and before_files == files
    status = "cached" if unchanged and not force else "downloaded"
    return DownloadResult(repo_id, path, status, size, files, repo_id, f"{rev}commit {path.name[:10]}")


def _matching(files: tuple[str, ...], patterns: list[str]) -> list[str]:
    """The files huggingface_hub's allow_patterns would keep (fnmatch on the posix path; 'dir/' means 'dir/*')."""
    import fnmatch

    globs = [p + "*" if p.endswith("/") else p for p in patterns]
    return [f for f in files if any(fnmatch.fnmatch(Path(f).as_posix(), g) for g in globs)]


# --------------------------------------------------------------------------------------------------
# Hugging Face dataset repositories


HF_DATASET_PREFIX = "hf-dataset:"


def parse_hub_dataset(target: str) -> str:
    """'hf-dataset:OWNER/NAME' -> 'OWNER/NAME', or a UsageError saying how to write it."""
    repo_id = target.removeprefix(HF_DATASET_PREFIX).strip()
    owner, _, repo = repo_id.partition("/")
    if not owner or not repo or "/" in repo or any(c in repo_id for c in " @:"):
        raise UsageError(f"'{target}' is not a Hugging Face dataset id; write it as hf-dataset:OWNER/NAME, e.g. hf-dataset:me/asl-poses")
    return repo_id


def download_hub_dataset(
    target: str,
    *,
    cache_dir: Path,
    revision: str | None = None,
    include: list[str] | None = None,
    token: str | None = None,
    offline: bool = False,
    force: bool = False,
    on_progress: ProgressFn | None = None,
    retries: int = 2,
    backoff_s: float = 2.0,
) -> DownloadResult:
    """A Hugging Face dataset repository (`hf-dataset:OWNER/NAME`) into `cache_dir` in the hub cache layout
    (`datasets--OWNER--NAME/snapshots/<commit>/`); `include` globs keep only matching files. Offline, only
    the cache is reported. `token` goes to huggingface_hub only."""
    repo_id = parse_hub_dataset(target)
    patterns = [p.strip() for p in include or [] if p.strip()] or None
    source = ModelSource(repo_id, allow_patterns=patterns, repo_type="dataset")
    return _hub_snapshot(
        source, name=f"{HF_DATASET_PREFIX}{repo_id}", cache_dir=cache_dir, revision=revision, token=token, offline=offline,
        force=force, on_progress=on_progress, retries=retries, backoff_s=backoff_s,
    )


def _reporting_tqdm(on_progress: ProgressFn):
    """A tqdm class for snapshot_download that draws nothing and forwards its byte counts."""
    from tqdm.std import tqdm as std_tqdm

    class _Sink:
        def write(self, _s):
            pass

        def flush(self):
            pass

    class ReportingTqdm(std_tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            kwargs["file"] = _Sink()
            # snapshot_download opens a network-transfer bar (fuzzy total) and a bytes-written bar: report the latter.
            self._gx_report = kwargs.get("unit") == "B" and "Downloading bytes" not in str(kwargs.get("desc", ""))
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            shown = super().update(n)
            if self._gx_report:
                on_progress(int(self.n), int(self.total) if self.total else None)
            return shown

    return ReportingTqdm


def _is_transient(exc: BaseException) -> bool:
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(exc, OfflineModeIsEnabled):
        return False
    if isinstance(exc, HfHubHTTPError):
        code = getattr(getattr(exc, "response", None), "status_code", None)
        return code is not None and (code >= 500 or code == 429)
    for e in (exc, exc.__cause__):
        if e is None:
            continue
        if isinstance(e, (ConnectionError, TimeoutError, socket.timeout, http.client.IncompleteRead)):
            return True
        # httpx / httpx2 / requests transport errors, without importing a specific client
        if any(c.__name__ in {"TransportError", "ConnectionError", "Timeout", "ChunkedEncodingError"} for c in type(e).__mro__):
            return True
    return False


def _hub_error(exc: Exception, *, name: str, source: ModelSource, revision: str | None, token: str | None, offline: bool, cache_dir: Path):
    """A one-line GxError for what huggingface_hub raised, or None for the unexpected."""
    from huggingface_hub import errors as hf

    repo_id = source.repo_id
    page = source.page
    cache_kind = "dataset cache" if source.repo_type == "dataset" else "model cache"
    gated = (
        f"{repo_id} is gated on the Hugging Face hub: accept its licence on {page} while logged in, "
        f"then set HF_TOKEN to a read token of that account"
    )
    if token:
        gated += " (the HF_TOKEN given was refused: check it belongs to the account that accepted the licence)"
    incomplete = getattr(hf, "IncompleteSnapshotError", None)
    if isinstance(exc, hf.LocalEntryNotFoundError) and isinstance(exc.__cause__, hf.HfHubHTTPError):
        exc = exc.__cause__  # "not cached, and the hub said no": report what the hub said
    code = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, hf.GatedRepoError):
        return DownloadError(gated)
    if isinstance(exc, hf.RevisionNotFoundError):
        return DownloadError(f"revision '{revision}' of {repo_id} does not exist on the hub; pass a branch, tag or commit of {page}")
    if isinstance(exc, hf.RepositoryNotFoundError) and (source.gated or code in {401, 403}):
        return DownloadError(gated)
    if isinstance(exc, hf.RepositoryNotFoundError):
        hint = "check the spelling" if token else "check the spelling, or set HF_TOKEN if it is private"
        return DownloadError(f"{repo_id} was not found on the Hugging Face hub; {hint}")
    if isinstance(exc, hf.HfHubHTTPError) and code in {401, 403}:
        return DownloadError(gated)
    if isinstance(exc, hf.HfHubHTTPError):
        return DownloadError(f"the Hugging Face hub answered HTTP {code} for {repo_id}; try again later")
    if incomplete is not None and isinstance(exc, incomplete):
        return DownloadError(f"the cached snapshot of {repo_id} in {cache_dir} is incomplete; run `gx download {name}` with network access to finish it")
    if isinstance(exc, hf.LocalEntryNotFoundError):
        if offline:
            return DownloadError(
                f"{name} is not in the {cache_kind} {cache_dir} and offline mode is on (HF_HUB_OFFLINE/GX_OFFLINE); "
                f"run `gx download {name}` where there is network, or copy its cache folder there"
            )
        return DownloadError(f"could not reach the Hugging Face hub for {repo_id} and it is not cached; check the network (or HF_ENDPOINT) and rerun")
    if isinstance(exc, getattr(hf, "HFValidationError", ())):
        how = "hf-dataset:OWNER/NAME" if source.repo_type == "dataset" else "owner/name"
        return UsageError(f"'{name}' is not a valid Hugging Face id; write it as {how}")
    if _is_transient(exc):
        return DownloadError(f"download of {repo_id} was interrupted ({type(exc).__name__}); rerun `gx download {name}` to resume")
    return None


# --------------------------------------------------------------------------------------------------
# what is cached


def list_cache(*, datasets_root: Path, models_root: Path) -> CacheListing:
    """Datasets (folders or files under datasets_root), hub dataset snapshots (datasets--OWNER--NAME under
    datasets_root) and model snapshots (hub layout under models_root).

    Reads the folders directly, so it works offline; hidden entries (.downloads, .locks, temporary
    folders) and .part files are not listed.
    """
    listing = CacheListing(Path(datasets_root), Path(models_root))
    if listing.datasets_root.is_dir():
        for entry in sorted(listing.datasets_root.iterdir()):
            if entry.name.startswith(".") or entry.name.endswith(".part") or entry.name.startswith("datasets--"):
                continue
            size, files = _tree_size(entry)
            listing.datasets.append(CachedDataset(entry.name, entry, size, files))
        listing.hub_datasets.extend(_hub_snapshots(listing.datasets_root, "dataset"))
    listing.models.extend(_hub_snapshots(listing.models_root, "model"))
    return listing


def _hub_snapshots(root: Path, repo_type: str) -> list[CachedModel]:
    out: list[CachedModel] = []
    if not root.is_dir():
        return out
    prefix = f"{repo_type}s--"
    for folder in sorted(root.glob(prefix + "*")):
        repo_id = folder.name.removeprefix(prefix).replace("--", "/")
        refs: dict[str, list[str]] = {}
        refs_dir = folder / "refs"
        if refs_dir.is_dir():
            for ref in sorted(p for p in refs_dir.rglob("*") if p.is_file()):
                refs.setdefault(ref.read_text().strip(), []).append(str(ref.relative_to(refs_dir)))
        snapshots = folder / "snapshots"
        for snap in sorted(snapshots.iterdir()) if snapshots.is_dir() else []:
            if snap.is_dir():
                size, files = _tree_size(snap)  # stat follows the blob symlinks
                out.append(CachedModel(repo_id, snap.name, tuple(refs.get(snap.name, ())), size, snap, files))
    return out
