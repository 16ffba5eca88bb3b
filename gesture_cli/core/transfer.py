"""Moving a run directory between machines: `gx runs export` packs it, `gx runs import` unpacks it.

An archive (.tar.zst, .tar.gz/.tgz or plain .tar) holds one folder named after the run:

    NAME/run.json, NAME/<every artifact>, NAME/SHA256SUMS

`SHA256SUMS` is the last member, in `sha256sum -c` format (`HEX  relative/path`, paths relative to
NAME/): every other file is listed exactly once. Only regular files are stored (symbolic links to
files are stored as the file they point to), so an export never carries a link. `only_best=True`
leaves out every `checkpoints/last/` folder (resume state: optimizer moments, RNG) and keeps
`checkpoints/best/`, the final artifacts and the manifest (with a GxWarning for a `last/` whose training
never finished: the run has no final weights there). Lock files and half-written temporary
folders of an ongoing step are never exported.

An import is all or nothing. Each member is checked before it is written: an absolute path, a '..'
component, a symbolic or hard link, a device file, or a second top-level folder refuses the whole
archive. Members are streamed into a temporary folder next to the target (so checking and hashing
happen in one pass, also for .tar.zst), every file is compared with SHA256SUMS (a changed, missing
or unlisted file refuses the archive), `run.json` must parse, and only then is the folder renamed
onto INTO/NAME. An existing run there is replaced only with `force`, and then only after everything
verified; `force` replaces nothing but a gx run (a folder with run.json) or an empty folder. A refused
or interrupted import leaves nothing behind.

Core code: no printing; progress goes to an `on_progress(done_bytes, total_bytes)` callback.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from gesture_cli.core.errors import ArtifactError, GxError, UsageError, broken_link_target, is_refused, write_error

SUMS_NAME = "SHA256SUMS"
MANIFEST = "run.json"
CHUNK = 1 << 20
# suffix -> compression; longest first so that '.tar.gz' wins over '.gz'-like checks
FORMATS = {".tar.zst": "zst", ".tar.gz": "gz", ".tgz": "gz", ".tar": "tar"}
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_GZIP_MAGIC = b"\x1f\x8b"
_SUMS_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")

ProgressFn = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class TransferResult:
    name: str  # the run's folder name
    run_dir: Path  # exported from / imported to
    archive: Path
    files: int  # files in the archive besides SHA256SUMS
    size: int  # their bytes, uncompressed
    archive_size: int
    left_out: tuple[str, ...] = ()  # folders left out by only_best (relative to the run)
    left_out_files: int = 0
    left_out_size: int = 0
    replaced: bool = False  # import: an existing run was replaced (force)
    running: tuple[str, ...] = field(default_factory=tuple)  # export: steps still marked running


# ---- formats ---------------------------------------------------------------------------------------


def archive_format(path: Path | str) -> str:
    """'zst' | 'gz' | 'tar' from the file name, or a UsageError naming the accepted suffixes."""
    name = Path(path).name.lower()
    for suffix, fmt in FORMATS.items():
        if name.endswith(suffix):
            return fmt
    raise UsageError(f"{path}: name the archive NAME.tar.zst, NAME.tar.gz (or .tgz) or NAME.tar; the suffix picks the compression")


def zstd_available() -> bool:
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return False
    return True


def _zstandard(action: str):
    try:
        import zstandard
    except ImportError:
        raise UsageError(
            f"{action} .tar.zst needs the zstandard package (pip install zstandard, a gx dependency); or use .tar.gz instead"
        ) from None
    return zstandard


def default_archive_name(run_dir: Path) -> Path:
    return Path(f"{Path(run_dir).resolve().name}.tar.{'zst' if zstd_available() else 'gz'}")


# ---- export ----------------------------------------------------------------------------------------


def _skipped_name(name: str) -> bool:
    """Lock files and the temporary siblings of RunDir steps / checkpoints that are being written."""
    if name == ".run.json.lock" or (name.startswith(".") and name.endswith(".lock")):
        return True
    return name.startswith(".") and any(tag in name for tag in (".tmp-", ".old-", ".new-", ".part", ".import-"))


def collect_files(run_dir: Path, *, only_best: bool = False) -> tuple[list[tuple[str, Path, int]], list[str], int, int]:
    """(files as (posix path relative to the run, path, size), left-out folders, left-out file count and bytes)."""
    run_dir = Path(run_dir)
    files: list[tuple[str, Path, int]] = []
    left_out: list[str] = []
    left_files = left_bytes = 0
    for dirpath, dirnames, filenames in os.walk(run_dir):
        here = Path(dirpath)
        rel_here = here.relative_to(run_dir)
        keep = []
        for d in sorted(dirnames):
            full = here / d
            rel = (rel_here / d).as_posix()
            if _skipped_name(d):
                continue
            if full.is_symlink():
                raise ArtifactError(f"{full} is a symbolic link to a folder; an exported run holds files and folders only: replace it with a copy")
            if only_best and d == "last" and here.name == "checkpoints":
                left_out.append(rel)
                for p in full.rglob("*"):
                    if p.is_file():
                        left_files += 1
                        left_bytes += p.stat().st_size
                continue
            keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            if _skipped_name(f) or (rel_here == Path(".") and f == SUMS_NAME):
                continue
            full = here / f
            if not full.is_file():  # a broken link, a socket, a fifo
                raise ArtifactError(f"{full} is not a regular file (a broken link or a special file); remove it and export again")
            files.append(((rel_here / f).as_posix(), full, full.stat().st_size))
    return files, left_out, left_files, left_bytes


def _warn_unfinished(run_dir: Path, left_out: list[str]) -> None:
    """A GxWarning for each left-out checkpoints/last/ whose training did not finish (interrupted, killed): the
    checkpoint's own state.json says so (trainer.finished), whatever steps the manifest lists (an older finished
    step may still list the output of a retraining killed halfway). Then last/ is what a --resume needs; it stays
    left out, as --only best asked (the archive stays the size asked for), and the warning says how to keep it.
    A last/ without a readable state.json is no checkpoint a --resume could read: nothing to say."""
    import json
    import warnings

    from gesture_cli.core.errors import GxWarning

    for rel in left_out:
        try:
            state = json.loads((Path(run_dir) / rel / "state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        trainer = state.get("trainer") if isinstance(state, dict) else None
        trainer = trainer if isinstance(trainer, dict) else {}
        if trainer.get("finished"):
            continue
        step, total = trainer.get("step"), trainer.get("total_steps")
        how = (f"its training did not finish; its last checkpoint is at step {step}/{total}" if step is not None and total
               else "its training did not finish")
        owner = rel.removesuffix("/last").removesuffix("checkpoints").rstrip("/")
        warnings.warn(GxWarning(
            f"{owner or 'the run'} has no finished weights ({how}): --only best left out {rel}/, "
            "the checkpoint to --resume from; export without --only best to keep it"), stacklevel=2)


class _Reader(io.RawIOBase):
    """A file read through sha256 and a byte counter (what tarfile copies into the archive)."""

    def __init__(self, f, digest, tick: Callable[[int], None]):
        self._f, self._digest, self._tick = f, digest, tick

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = self._f.readinto(buf)
        if n:
            self._digest.update(memoryview(buf)[:n])
            self._tick(n)
        return n or 0


def _tarinfo(name: str, size: int, mtime: float, executable: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.type = size, int(mtime), tarfile.REGTYPE
    info.mode = 0o755 if executable else 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def export_run(run_dir: Path | str, out: Path | str, *, only_best: bool = False, force: bool = False,
               on_progress: ProgressFn | None = None, level: int | None = None) -> TransferResult:
    """Pack `run_dir` into the archive `out` (format from its suffix), written atomically."""
    from gesture_cli.core.rundir import RunDir

    run_dir, out = Path(run_dir), Path(out)
    fmt = archive_format(out)
    run = RunDir(run_dir, given_as="RUN")
    if not run.manifest_path.is_file():
        raise UsageError(f"{run_dir}: not a run directory (no {MANIFEST}); pass the folder a gx command wrote with -r")
    manifest = run.read_manifest()  # a corrupt manifest is refused here, not on the other machine
    running = tuple(s.get("command", "?") for s in manifest.get("steps", []) if s.get("status") == "running")
    real_run, real_out = run_dir.resolve(), out.resolve()
    if real_run == real_out or real_run in real_out.parents:
        raise UsageError(f"{out} is inside the run directory {run_dir}; write the archive somewhere else")
    if out.exists() and not force:
        raise UsageError(f"{out} already exists; pass --force to overwrite it")
    zstandard = _zstandard("writing") if fmt == "zst" else None

    name = real_run.name
    files, left_out, left_files, left_bytes = collect_files(run_dir, only_best=only_best)
    _warn_unfinished(run_dir, left_out)
    total = sum(size for _, _, size in files)
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if on_progress is not None:
            on_progress(done, total)

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    tmp = Path(tmp_name)
    sums: list[str] = []
    try:
        with os.fdopen(fd, "wb") as raw:
            if fmt == "zst":
                cctx = zstandard.ZstdCompressor(level=level or 3, threads=-1)
                stream = cctx.stream_writer(raw, closefd=False)
            elif fmt == "gz":
                stream = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=level or 6, mtime=0)
            else:
                stream = raw
            with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for rel, path, size in files:
                    st = path.stat()
                    digest = hashlib.sha256()
                    with open(path, "rb") as f:
                        try:
                            tar.addfile(_tarinfo(f"{name}/{rel}", size, st.st_mtime, bool(st.st_mode & stat.S_IXUSR)),
                                        io.BufferedReader(_Reader(f, digest, tick), CHUNK))
                        except OSError as exc:
                            raise ArtifactError(f"{path} changed while it was exported ({exc}); export again once the step writing it has finished") from None
                    sums.append(f"{digest.hexdigest()}  {rel}\n")
                body = "".join(sums).encode()
                tar.addfile(_tarinfo(f"{name}/{SUMS_NAME}", len(body), os.path.getmtime(run.manifest_path)), io.BytesIO(body))
            if stream is not raw:
                stream.close()  # flushes the compressor's last frame; raw stays open (closefd=False / fileobj)
            raw.flush()
            os.fsync(raw.fileno())
        tmp.chmod(0o644)  # mkstemp's 0600 would surprise whoever copies the archive on
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return TransferResult(
        name=name, run_dir=run_dir, archive=out, files=len(files), size=total, archive_size=out.stat().st_size,
        left_out=tuple(left_out), left_out_files=left_files, left_out_size=left_bytes, running=running,
    )


# ---- import ----------------------------------------------------------------------------------------


DOTDOT = "a '..' component"


def archive_name_problem(name: str) -> str | None:
    """Why an archive member name would land outside the destination, or None: an empty name, an absolute
    path (POSIX or a Windows drive) or a '..' component (DOTDOT), with either slash. Used by every unpacker."""
    norm = name.replace("\\", "/")
    if not norm.strip("/"):
        return "an empty name"
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        return "an absolute path"
    if ".." in norm.split("/"):
        return DOTDOT
    return None


def _member_problem(member: tarfile.TarInfo) -> str | None:
    """Why a member may not be unpacked, or None."""
    problem = archive_name_problem(member.name)
    if problem is not None:
        return f"{problem} (it would land outside the target folder)" if problem == DOTDOT else problem
    if member.issym():
        return f"a symbolic link (to {member.linkname}); run archives hold regular files only"
    if member.islnk():
        return f"a hard link (to {member.linkname}); run archives hold regular files only"
    if member.isfifo():
        return "a FIFO (a named pipe); run archives hold regular files only"
    if member.ischr() or member.isblk():
        return "a device file"
    if not (member.isfile() or member.isdir()):
        return "an unsupported member type"
    return None


class _Counter(io.RawIOBase):
    """The archive file, counting the (compressed) bytes read for the progress display."""

    def __init__(self, f, tick: Callable[[int], None]):
        self._f, self._tick = f, tick

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = self._f.readinto(buf)
        if n:
            self._tick(n)
        return n or 0


def _open_stream(head: bytes, raw):
    """A readable stream of the tar bytes, from the archive's magic bytes (not its name)."""
    if head.startswith(_ZSTD_MAGIC):
        zstandard = _zstandard("reading")
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=False)
    if head.startswith(_GZIP_MAGIC):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    return raw


def _parse_sums(text: str, label: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _SUMS_LINE.match(line)
        if m is None:
            raise ArtifactError(f"refusing to import {label}: {SUMS_NAME} line {i} is not 'SHA256  PATH'; nothing was imported")
        digest, rel = m.group(1), m.group(2)
        parts = PurePosixPath(rel).parts
        if rel.startswith("/") or ".." in parts or rel in out:
            raise ArtifactError(f"refusing to import {label}: {SUMS_NAME} line {i} names '{rel}' badly (absolute, '..' or twice); nothing was imported")
        out[PurePosixPath(rel).as_posix()] = digest
    return out


def _remove_empty(folders: list[Path]) -> None:
    """Remove these folders (deepest first) where they are empty: the ones a failed import created."""
    for d in folders:
        with contextlib.suppress(OSError):
            d.rmdir()


def _check_replaceable(dest: Path, *, force: bool) -> bool:
    """Whether `dest` is there to be replaced; refuses (UsageError) unless `force` and it is a gx run (a folder
    with a run.json) or an empty folder: --force never deletes a folder of other files (someone's thesis)."""
    if not (dest.exists() or dest.is_symlink()):
        return False
    if not force:
        raise UsageError(f"{dest} already exists; pass --force to replace it, or --into another folder (nothing was imported)")
    if dest.is_dir() and ((dest / MANIFEST).is_file() or not any(dest.iterdir())):
        return True
    if dest.is_dir():
        what = f"a folder that is not a gx run (no {MANIFEST}, not empty)"
    else:
        what = "a broken symbolic link" if broken_link_target(dest) is not None else "a file"
    raise UsageError(f"{dest} is {what}; --force replaces only a gx run: move it away or import --into another folder (nothing was imported)")


def import_run(archive: Path | str, into: Path | str, *, force: bool = False, on_progress: ProgressFn | None = None) -> TransferResult:
    """Unpack a `gx runs export` archive into INTO/NAME, verified against its SHA256SUMS (module docstring)."""
    from gesture_cli.core.rundir import ManifestError, RunDir

    archive, into = Path(archive), Path(into)
    label = archive.name
    if not archive.is_file():
        raise UsageError(f"{archive} does not exist (or is not a file); pass the archive `gx runs export` wrote")
    total = archive.stat().st_size
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if on_progress is not None:
            on_progress(done, total)

    def refuse(why: str) -> ArtifactError:
        return ArtifactError(f"refusing to import {label}: {why}; nothing was imported")

    created = [d for d in (into, *into.parents) if not d.exists()]  # the folders this import makes, removed again if it fails
    try:
        into.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".import-", dir=into))
    except OSError as exc:
        _remove_empty(created)
        refused = write_error(exc, into)
        if refused is not None and is_refused(exc):
            raise GxError(f"cannot write to {into} ({exc.strerror}); make it writable or pass another --into") from None
        raise refused or exc from None
    top: str | None = None
    hashes: dict[str, str] = {}
    size = 0
    imported = False
    try:
        with archive.open("rb") as f:
            head = f.read(4)
            f.seek(0)
            raw = io.BufferedReader(_Counter(f, tick), CHUNK)
            try:
                stream = _open_stream(head, raw)
                with tarfile.open(fileobj=stream, mode="r|") as tar:
                    for member in tar:
                        problem = _member_problem(member)
                        if problem:
                            raise refuse(f"member '{member.name}' is {problem}")
                        parts = PurePosixPath(member.name.replace("\\", "/")).parts
                        parts = tuple(p for p in parts if p not in ("", "."))
                        if not parts:
                            continue
                        if top is None:
                            top = parts[0]
                            if top.startswith("."):
                                raise refuse(f"its top folder '{top}' is hidden; expected the run's folder name")
                            _check_replaceable(into / top, force=force)
                        elif parts[0] != top:
                            raise refuse(f"member '{member.name}' is outside its top folder '{top}/' (a run archive holds one run)")
                        target = tmp.joinpath(*parts)
                        rel = PurePosixPath(*parts[1:]).as_posix() if len(parts) > 1 else ""
                        if member.isdir():
                            target.mkdir(parents=True, exist_ok=True)
                            continue
                        if not rel:
                            raise refuse(f"member '{member.name}' is a file where the run's folder should be")
                        if rel in hashes:
                            raise refuse(f"member '{member.name}' appears twice")
                        target.parent.mkdir(parents=True, exist_ok=True)
                        digest = hashlib.sha256()
                        src = tar.extractfile(member)
                        with open(target, "xb") as dst:
                            while chunk := src.read(CHUNK):
                                digest.update(chunk)
                                dst.write(chunk)
                        os.utime(target, (member.mtime, member.mtime))
                        if member.mode & 0o100:
                            target.chmod(0o755)
                        hashes[rel] = digest.hexdigest()
                        size += member.size if rel != SUMS_NAME else 0
            except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
                raise refuse(f"not a readable tar archive ({type(exc).__name__}: {exc})") from None
            except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
                raise refuse(f"two members claim the same path ({Path(exc.filename or '').name or exc})") from None
            except ArtifactError:
                raise
            except Exception as exc:
                if type(exc).__module__.startswith("zstandard"):
                    raise refuse(f"damaged zstd stream ({exc})") from None
                raise
        if top is None:
            raise refuse("it is empty")
        root = tmp / top
        if SUMS_NAME not in hashes:
            raise refuse(f"no {top}/{SUMS_NAME} in it (archives from `gx runs export` carry one)")
        expected = _parse_sums((root / SUMS_NAME).read_text(encoding="utf-8", errors="replace"), label)
        hashes.pop(SUMS_NAME)
        for rel, digest in sorted(hashes.items()):
            if rel not in expected:
                raise refuse(f"{top}/{rel} is not listed in {SUMS_NAME}")
            if expected[rel] != digest:
                raise refuse(f"{top}/{rel} does not match its checksum in {SUMS_NAME} (changed or damaged since the export)")
        missing = sorted(set(expected) - set(hashes))
        if missing:
            raise refuse(f"{top}/{missing[0]} is listed in {SUMS_NAME} but missing from the archive" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        if MANIFEST not in hashes:
            raise refuse(f"no {top}/{MANIFEST}: not a gx run")
        try:
            RunDir(root).read_manifest()  # parses, and a newer schema than this gx understands is refused
        except ManifestError as exc:
            raise refuse(f"{top}/{MANIFEST}: {exc.reason} ({exc.why})") from None
        (root / SUMS_NAME).unlink()
        dest = into / top
        replaced = _check_replaceable(dest, force=force)  # again: the folder may have appeared while unpacking
        if replaced:
            old = tmp / ".replaced"
            os.replace(dest, old)
            try:
                os.replace(root, dest)
            except BaseException:
                os.replace(old, dest)
                raise
        else:
            os.replace(root, dest)
        imported = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # imported or refused, the temporary folder (and a replaced run) goes
        if not imported:
            _remove_empty(created)  # after tmp: a refused import leaves no empty --into folder behind
    return TransferResult(name=top, run_dir=into / top, archive=archive, files=len(hashes), size=size, archive_size=total, replaced=replaced)
