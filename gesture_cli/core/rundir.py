"""The run directory: paths, the `run.json` manifest, atomic step outputs, a lock, a step cache.

A step goes through `RunDir.begin()`:

    step = run.begin("extract-features", config=cfg, inputs=[...], outputs=["features/tiny-vit"])
    if step.cached:                      # same config and inputs as a finished step: skip
        return step.entry
    with step:                           # commits on success, rolls back on any exception
        out = step.stage("features/tiny-vit")   # a temporary sibling directory
        ...write files into out...
        step.metrics["images"] = 1200

On success every staged output is renamed into place (replacing an older one) and the manifest
entry becomes `ok`; on an exception (Ctrl-C included) the staged files are deleted, what was in place
before is untouched, and the entry becomes `failed` or `interrupted`. `run.json` is only changed
under a file lock and written atomically, so parallel `gx` processes never lose an entry.

The cache follows the files: a finished entry records the content hash of each output it committed
(`output_hashes`), and a cache hit, `last_ok` and the report accept it only while that output on disk
still has that content (`holds_output`), whatever order racing writers started or finished in.
A running entry records its pid, host and process start time; the next `begin()` (and `gx runs`,
`gx report`) closes entries whose process died on this host and removes their staging
(`recover_dead_steps`). `step.set_aside(rel)` moves a live folder (a trainer's checkpoints/) out of the
way until the step ends, so that a failed step leaves the old one in place.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from gesture_cli import __version__
from gesture_cli.core.artifacts import atomic_write_text, follow_umask
from gesture_cli.core.errors import (
    ArtifactError,
    GxError,
    UsageError,
    broken_link_target,
    file_in_the_way,
    is_refused,
    write_error,
)

MANIFEST_SCHEMA = 1
DEFAULT_RUN_DIR = "runs/default"
LOCK_TIMEOUT_S = 120  # a manifest update takes milliseconds; waiting this long means a stuck process


def default_run_dir() -> Path:
    """$GX_RUN_DIR (`~` expanded; empty counts as unset), else runs/default."""
    return Path(os.environ.get("GX_RUN_DIR") or DEFAULT_RUN_DIR).expanduser()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def hash_file(path: Path, *, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint(path: Path) -> str:
    """A content hash of a file, or of a directory's file list with sizes and mtimes.

    Files are hashed by content (sha256). Directories (image folders with many thousands of files)
    are fingerprinted by relative path, size and mtime of each file, which is cheap and changes
    whenever a file is added, removed or rewritten.
    """
    path = Path(path)
    if path.is_file():
        return "sha256:" + hash_file(path)
    if path.is_dir():
        h = hashlib.sha256()
        for p in sorted(path.rglob("*")):
            if p.is_file():
                st = p.stat()
                h.update(f"{p.relative_to(path).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return "tree:" + h.hexdigest()
    return "missing"


def _output_files(path: Path, skip: tuple[Path, ...]) -> list[tuple[str, Path]]:
    """(relative name, path) of the files that make up a step's output, sorted. Hidden entries (staging
    `.x.tmp-*` of a nested output, a folder set aside) and the nested outputs of other steps in `skip`
    (pca-visualize's renders inside pca-compute's folder) are left out: they are not this step's files."""
    if path.is_file():
        return [("", path)]
    if not path.is_dir():
        return []
    out = []
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path)
        if any(part.startswith(".") for part in rel.parts) or any(p == s or s in p.parents for s in skip):
            continue
        if p.is_file():
            out.append((rel.as_posix(), p))
    return out


def output_hash(path: Path, *, skip: tuple[Path, ...] = ()) -> str:
    """The content hash of a step's output (a file, or a folder's files by name): what a step records of
    each output it commits. A copy of the run (`gx runs export`/`import`, cp, rsync) keeps it."""
    h = hashlib.sha256()
    for rel, p in _output_files(Path(path), skip):
        h.update(f"{rel}\0{hash_file(p)}\n".encode())
    return "sha256:" + h.hexdigest() if Path(path).exists() else "missing"


def output_stat(path: Path, *, skip: tuple[Path, ...] = ()) -> str:
    """Names, sizes and mtimes of a step's output: a cheap check that the files are still the very ones a
    step committed (a rename keeps them), so that `output_hash` is only computed when they are not."""
    h = hashlib.sha256()
    for rel, p in _output_files(Path(path), skip):
        st = p.stat()
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return "stat:" + h.hexdigest()


def _jsonable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        obj = asdict(obj)
    return json.loads(json.dumps(obj, default=str, sort_keys=True))


def cache_key(command: str, config: Any, input_hashes: dict[str, str]) -> str:
    payload = json.dumps({"command": command, "config": _jsonable(config), "inputs": input_hashes}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _versions() -> dict[str, str]:
    out = {"gx": __version__, "python": platform.python_version()}
    for mod in ("torch", "transformers"):
        m = sys.modules.get(mod)  # record only what this step actually imported; never import here
        if m is not None:
            out[mod] = getattr(m, "__version__", "?")
    return out


def _git_sha() -> str | None:
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def _process_start(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot (Linux /proc), to tell a reused pid apart; None elsewhere."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields else None  # field 22 of proc(5); the list starts at field 3


def _proc_stat(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": the name may hold spaces


def _process_gone(entry: dict) -> bool:
    """Whether the process of a `running` entry has certainly ended: it ran on this host, and its pid is
    free, a zombie, or taken by a process that started at another time. A step of another host (a shared
    disk) is never judged from here."""
    pid = entry.get("pid")
    if entry.get("host") != platform.node() or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    except OSError:
        return False
    fields = _proc_stat(pid)
    if fields is None:
        return False
    if fields[0] in ("Z", "X"):
        return True
    start = entry.get("pid_start")
    return start is not None and int(fields[19]) != start


def dangling_link(path: Path) -> Path | None:
    """The nearest part of `path` (itself or a parent) that exists only as a symbolic link to nothing, else None:
    mkdir would fail on it with a bare 'File exists'."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return None
        if broken_link_target(candidate) is not None:
            return candidate
    return None


class ManifestError(ArtifactError):
    """A run.json that cannot be used; `reason` is the short label `gx runs` puts in the run's row, `why` the detail."""

    def __init__(self, message: str, *, reason: str, why: str):
        super().__init__(message)
        self.reason, self.why = reason, why


def _json_kind(value: Any) -> str:
    kinds = {dict: "a mapping", list: "a list", str: "a string", bool: "true/false", type(None): "null"}
    return kinds.get(type(value), "a number")


# fields of a step entry that gx reads as a given JSON type (a hand-edited or foreign run.json may hold others)
_STEP_FIELDS = {"command": (str,), "status": (str,), "metrics": (dict,), "outputs": (list,), "output_hashes": (dict,),
                "output_stats": (dict,), "set_aside": (dict,), "duration_s": (int, float)}


def manifest_shape_problem(data: Any) -> str | None:
    """Why parsed run.json content is not a manifest (a list, steps that are no mappings, ...), or None."""
    if not isinstance(data, dict):
        return f"it holds {_json_kind(data)}, not a mapping of schema, name and steps"
    schema = data.get("schema", 0)
    if isinstance(schema, bool) or not isinstance(schema, int):
        return f"'schema' is {_json_kind(schema)}, not a whole number"
    steps = data.get("steps", [])
    if not isinstance(steps, list):
        return f"'steps' is {_json_kind(steps)}, not a list"
    for i, step in enumerate(steps, 1):
        if not isinstance(step, dict):
            return f"step {i} is {_json_kind(step)}, not a mapping"
        for key, kind in _STEP_FIELDS.items():
            value = step.get(key)
            if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
                return f"step {i}: '{key}' is {_json_kind(value)}, not {_json_kind(kind[0]())}"
    return None


class RunDir:
    """One run directory and its manifest."""

    def __init__(self, root: Path | str | None = None, *, given_as: str = "-r/--run-dir"):
        self.given_as = given_as  # the option or argument the path came from, for messages
        if isinstance(root, str) and not root:  # `-r ""` would make the current folder a run dir
            raise UsageError(f"{given_as} is empty; pass a folder, or leave it out for $GX_RUN_DIR (else {DEFAULT_RUN_DIR})")
        self.root = Path(root).expanduser() if root is not None else default_run_dir()
        self._refuse_a_file()  # every command, reading ones too: a file is never a run dir
        self.manifest_path = self.root / "run.json"
        self._lock = FileLock(str(self.root / ".run.json.lock"), timeout=LOCK_TIMEOUT_S)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    @property
    def name(self) -> str:
        return self.root.name

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def ensure(self) -> RunDir:
        self._refuse_a_file()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._unwritable(exc) from None
        return self

    def _refuse_a_file(self) -> None:
        """--run-dir must be a folder, or a path whose nearest existing part is one (not a file, not a link to nothing)."""
        how = f"to {self.given_as}" if self.given_as.startswith("-") else f"as {self.given_as}"
        link = dangling_link(self.root)
        if link is not None:
            where = "" if link == self.root else f" is inside {link}, which"
            raise UsageError(f"run dir {self.root}{where} is a symbolic link to {broken_link_target(link)}, which does not exist; "
                             f"create that folder, or remove the link, or pass another folder {how}")
        blocker = file_in_the_way(self.root)
        if blocker is not None:
            what = "is a file" if blocker == self.root else f"is inside {blocker}, which is a file"
            raise UsageError(f"run dir {self.root} {what}, not a folder; pass a folder {how}")

    def _unwritable(self, exc: OSError) -> GxError:
        refused = write_error(exc)
        if refused is None or not is_refused(exc):
            return refused or GxError(f"run dir {self.root}: {exc.strerror or exc}; pass another -r/--run-dir")
        return GxError(f"run dir {self.root} is not writable ({exc.strerror}); make it writable (chmod u+w) or pass another -r/--run-dir")

    # ---- manifest -------------------------------------------------------------------------
    def read_manifest(self) -> dict:
        """The manifest, or a ManifestError naming run.json: not JSON, not shaped like a manifest, too new, unreadable."""
        if not self.manifest_path.is_file():
            return {"schema": MANIFEST_SCHEMA, "name": self.name, "created": None, "steps": []}
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise self._corrupt(str(exc)) from None
        except OSError as exc:
            why = str(exc.strerror or exc)
            raise ManifestError(f"{self.manifest_path}: cannot read the manifest ({why}); make it readable",
                                reason="unreadable manifest", why=why) from None
        problem = manifest_shape_problem(data)
        if problem is not None:
            raise self._corrupt(problem)
        if data.get("schema", 0) > MANIFEST_SCHEMA:
            why = f"manifest schema {data.get('schema')} is newer than this gx understands"
            raise ManifestError(f"{self.manifest_path}: {why}; upgrade gx", reason="manifest of a newer gx", why=why)
        data.setdefault("steps", [])
        return data

    def _corrupt(self, why: str) -> ManifestError:
        return ManifestError(f"{self.manifest_path}: corrupt manifest ({why}); move it aside to start the run's history afresh",
                             reason="corrupt manifest", why=why)

    def update_manifest(self, fn) -> dict:
        """Apply fn(manifest) -> None under the lock and write the result atomically."""
        self.ensure()
        try:
            self._lock.acquire()
        except OSError as exc:  # a read-only run dir: the lock file cannot be created
            raise self._unwritable(exc) from None
        try:
            data = self.read_manifest()
            if not data.get("created"):
                data["created"] = _now()
            data["name"] = self.name
            fn(data)
            atomic_write_text(self.manifest_path, json.dumps(data, indent=2, default=str) + "\n")
            return data
        finally:
            self._lock.release()

    def steps(self, command: str | None = None) -> list[dict]:
        return [s for s in self.read_manifest()["steps"] if command is None or s.get("command") == command]

    def last_ok(self, command: str, output: str | None = None) -> dict | None:
        """The latest finished step of `command` (optionally the one whose files are at `output` now)."""
        steps = self.read_manifest()["steps"]
        memo: dict[str, dict] = {}
        for s in reversed(steps):
            if s.get("command") != command or s.get("status") != "ok":
                continue
            if output is None or (output in s.get("outputs", []) and self.holds_output(s, output, steps, memo=memo)):
                return s
        return None

    def holds_output(self, entry: dict, rel: str, steps: list[dict] | None = None, *, memo: dict[str, dict] | None = None) -> bool:
        """Whether run_dir/rel still holds the files that the finished step `entry` wrote there.

        A step records the content hash of each output it commits (`output_hashes`, with `output_stats`
        as a fast path); the files belong to it while the output on disk has that content. This holds
        under any interleaving of writers: two steps on one output commit in either order, and only
        the one whose files are in place matches. An entry from before output hashes (or an output it
        declared but never wrote) falls back to the order of the manifest: it holds rel unless a later
        finished step wrote rel too. `memo` saves looking at an output twice within one look at the run.
        """
        steps = self.read_manifest()["steps"] if steps is None else steps
        if entry.get("status") != "ok":
            return False
        recorded = (entry.get("output_hashes") or {}).get(rel)
        if recorded is None:
            idx = next((i for i, s in enumerate(steps) if s.get("id") == entry.get("id")), len(steps))
            return not any(t.get("status") == "ok" and rel in t.get("outputs", []) for t in steps[idx + 1 :])
        seen = (memo if memo is not None else {}).setdefault(rel, {})
        if "skip" not in seen:
            prefix = rel.rstrip("/") + "/"
            seen["skip"] = tuple(self.path(o) for s in steps for o in s.get("outputs", []) if o.startswith(prefix))
            seen["stat"] = output_stat(self.path(rel), skip=seen["skip"])
        if seen["stat"] == (entry.get("output_stats") or {}).get(rel):
            return True  # the very files the step committed: no need to read them
        if "hash" not in seen:
            seen["hash"] = output_hash(self.path(rel), skip=seen["skip"])
        return seen["hash"] == recorded

    def recover_dead_steps(self) -> list[dict]:
        """Close the steps whose process died without finishing (SIGKILL, OOM killer, power loss).

        A `running` entry whose process is gone on this host becomes `interrupted`, and what it left is
        cleaned up: its staging `.<name>.tmp-<id>` folders are removed, an output it was swapping in
        gets its previous files back, and a folder it set aside is put back unless it wrote something
        in its place (a checkpoint to --resume from). Only files named by the dead step's id are
        touched, so a live gx on the same run dir keeps working. Returns the entries it closed.
        """
        if not self.manifest_path.is_file():
            return []
        if not any(s.get("status") == "running" and _process_gone(s) for s in self.read_manifest()["steps"]):
            return []  # the common case, without taking the lock
        closed: list[dict] = []

        def close(m: dict) -> None:
            for s in m["steps"]:
                if s.get("status") == "running" and _process_gone(s):
                    self._clean_after(s)  # under the lock: a crash here leaves the entry running, to redo
                    s["status"] = "interrupted"
                    s["end"] = _now()
                    s["error"] = (f"process {s.get('pid')} on {s.get('host')} ended without finishing the step "
                                  "(killed?); its unfinished files were removed")
                    closed.append(dict(s))

        self.update_manifest(close)
        return closed

    def _clean_after(self, entry: dict) -> None:
        sid = entry.get("id")
        if not sid:
            return
        for rel in entry.get("outputs", []):
            target = self.path(rel)
            _remove(target.parent / f".{target.name}.tmp-{sid}")
            old = target.parent / f".{target.name}.old-{sid}"
            if old.exists() or old.is_symlink():
                if target.exists() or target.is_symlink():
                    _remove(old)
                else:  # killed between the two renames of its commit: the previous files come back
                    os.replace(old, target)
        for rel, backup in (entry.get("set_aside") or {}).items():
            _restore_aside(self.path(rel), self.path(backup), keep_new=True)

    # ---- steps ----------------------------------------------------------------------------
    def begin(
        self,
        command: str,
        *,
        config: Any,
        outputs: list[str],
        inputs: list[Path | str] | None = None,
        input_keys: dict[str, str] | None = None,
        argv: list[str] | None = None,
        force: bool = False,
    ) -> Step:
        """Open a step. `outputs` are paths relative to the run dir that the step replaces as a whole.

        `inputs` are files or directories whose content goes into the cache key; `input_keys` are
        extra (name -> hash) entries, e.g. a dataset spec that is generated rather than read.
        """
        self._refuse_a_file()  # before any work: a step cannot record itself in a file
        self.recover_dead_steps()
        hashes: dict[str, str] = {}
        for p in inputs or []:
            p = Path(p)
            hashes[str(p)] = fingerprint(p)
        hashes.update(input_keys or {})
        key = cache_key(command, config, hashes)
        step = Step(self, command=command, config=_jsonable(config), outputs=list(outputs), inputs=hashes, key=key, argv=argv)
        if not force:
            prior = self._find_cached(command, key, outputs)
            if prior is not None:
                step.cached = True
                step.entry = prior
        return step

    def _find_cached(self, command: str, key: str, outputs: list[str]) -> dict | None:
        """The finished step with this key whose files are still the ones on disk (`holds_output`).

        Another step that wrote the same output since (another dataset or config into the same folder,
        or a concurrent writer that committed after this one) makes it stale, even though its paths exist.
        """
        steps = self.read_manifest()["steps"]
        if not all(self.path(o).exists() for o in outputs):
            return None
        memo: dict[str, dict] = {}
        for s in reversed(steps):
            if s.get("command") != command or s.get("cache_key") != key or s.get("status") != "ok":
                continue
            if all(self.holds_output(s, o, steps, memo=memo) for o in outputs):
                return s
        return None


class Step:
    """One execution of a command inside a run directory (see the module docstring)."""

    def __init__(self, run: RunDir, *, command: str, config: Any, outputs: list[str], inputs: dict[str, str], key: str, argv: list[str] | None):
        self.run = run
        self.command = command
        self.config = config
        self.outputs = outputs
        self.inputs = inputs
        self.key = key
        self.argv = list(argv) if argv is not None else list(sys.argv)
        self.cached = False
        self.entry: dict | None = None
        self.metrics: dict[str, Any] = {}
        self.id = uuid.uuid4().hex[:12]
        self._staged: dict[str, Path] = {}
        self._set_aside: dict[str, Path] = {}  # rel -> hidden backup of what was there (see set_aside)
        self.output_hashes: dict[str, str] = {}  # rel -> output_hash of what this step committed
        self.output_stats: dict[str, str] = {}  # rel -> output_stat of the same files (holds_output's fast path)
        self._t0 = 0.0

    def stage(self, rel: str, *, is_dir: bool = True) -> Path:
        """A temporary sibling of run_dir/rel to write into; renamed into place on success."""
        if rel not in self.outputs:
            raise ValueError(f"{rel!r} is not a declared output of this step ({self.outputs})")
        target = self.run.path(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.tmp-{self.id}"
        if is_dir:
            tmp.mkdir(parents=True, exist_ok=False)
        self._staged[rel] = tmp
        return tmp

    def __enter__(self) -> Step:
        if self.cached:
            raise RuntimeError("a cached step has nothing to run")
        self._t0 = time.time()
        entry = {
            "id": self.id,
            "command": self.command,
            "argv": self.argv,
            "config": self.config,
            "versions": _versions(),
            "git_sha": _git_sha(),
            # who runs the step: a later gx on this host tells a dead step from a live one by these
            "host": platform.node(),
            "pid": os.getpid(),
            "pid_start": _process_start(os.getpid()),
            "start": _now(),
            "end": None,
            "duration_s": None,
            "status": "running",
            "inputs": [{"path": p, "hash": h} for p, h in self.inputs.items()],
            "outputs": self.outputs,
            "cache_key": self.key,
            "metrics": {},
        }
        self.entry = entry
        self.run.update_manifest(lambda m: m["steps"].append(entry))
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        ok = exc_type is None
        interrupted = exc_type is not None and issubclass(exc_type, KeyboardInterrupt)
        try:
            if ok:
                self._commit()
            else:
                self._rollback(interrupted=interrupted)
        except BaseException:
            self._rollback()
            self._finish("failed")
            raise
        if ok:
            self._finish("ok")
        elif interrupted:
            self._finish("interrupted", error="interrupted")
        else:
            self._finish("failed", error=str(exc).splitlines()[0][:500] if str(exc) else exc_type.__name__)
        return False

    def set_aside(self, rel: str) -> None:
        """Move run_dir/rel (inside a declared output) out of the way until the step ends.

        For a live directory that a step rewrites in place before its outputs are staged (a trainer's
        checkpoints/, which must outlive a crash for --resume). A failed step puts the old one back;
        a finished step drops it with the output it belonged to. An interrupted or killed step keeps
        what it wrote when that is anything (its checkpoint, for --resume), else the old one comes back.
        """
        if self.entry is None:
            raise RuntimeError("set_aside needs a started step (inside `with step:`)")
        if not any(rel == o or rel.startswith(o.rstrip("/") + "/") for o in self.outputs):
            raise ValueError(f"{rel!r} is not inside a declared output of this step ({self.outputs})")
        target = self.run.path(rel)
        if not (target.exists() or target.is_symlink()):
            return
        backup = target.parent / f".{target.name}.aside-{self.id}"
        step_id, entry_rel = self.id, backup.relative_to(self.run.root).as_posix()

        def record(m: dict) -> None:  # first in the manifest: a killed step's backup is found and put back
            for s in m["steps"]:
                if s.get("id") == step_id:
                    s.setdefault("set_aside", {})[rel] = entry_rel

        self.run.update_manifest(record)
        os.replace(target, backup)
        self._set_aside[rel] = backup

    def _commit(self) -> None:
        for rel, tmp in self._staged.items():
            follow_umask(tmp)  # third-party writers (save_pretrained) leave 0600 files; artifacts read like any file
            # Hash the staged files before they move (a rename keeps contents, sizes and mtimes): a step
            # that commits to the same output a moment later cannot slip its files under this record.
            self.output_hashes[rel] = output_hash(tmp)
            self.output_stats[rel] = output_stat(tmp)
            target = self.run.path(rel)
            old = None
            if target.exists() or target.is_symlink():
                old = target.parent / f".{target.name}.old-{self.id}"
                os.replace(target, old)
            os.replace(tmp, target)
            if old is not None:
                shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
        for backup in self._set_aside.values():  # still there when its output was not restaged
            _remove(backup)

    def _rollback(self, *, interrupted: bool = False) -> None:
        for tmp in self._staged.values():
            _remove(tmp)
        for rel, backup in self._set_aside.items():
            _restore_aside(self.run.path(rel), backup, keep_new=interrupted)

    def _finish(self, status: str, error: str | None = None) -> None:
        end = time.time()
        metrics = _jsonable(self.metrics)
        step_id = self.id
        hashes = dict(self.output_hashes) if status == "ok" else {}
        stats = dict(self.output_stats) if status == "ok" else {}

        def update(m: dict) -> None:
            for s in m["steps"]:
                if s.get("id") == step_id:
                    s["status"] = status
                    s["end"] = _now()
                    s["duration_s"] = round(end - self._t0, 3)
                    s["metrics"] = metrics
                    if error:
                        s["error"] = error
                    if hashes:
                        s["output_hashes"] = hashes
                        s["output_stats"] = stats
                    if self.entry is not None:
                        self.entry.update(s)

        self.run.update_manifest(update)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _restore_aside(target: Path, backup: Path, *, keep_new: bool) -> None:
    """Put a set-aside backup back over target, or (keep_new, and target holds something) drop it."""
    if not (backup.exists() or backup.is_symlink()):
        return
    holds_new = target.is_dir() and any(target.iterdir()) or target.is_file()
    if keep_new and holds_new:
        _remove(backup)
        return
    _remove(target)
    os.replace(backup, target)
