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
from gesture_cli.core.errors import ArtifactError

MANIFEST_SCHEMA = 1
DEFAULT_RUN_DIR = "runs/default"
LOCK_TIMEOUT_S = 120  # a manifest update takes milliseconds; waiting this long means a stuck process


def default_run_dir() -> Path:
    return Path(os.environ.get("GX_RUN_DIR") or DEFAULT_RUN_DIR)


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


class RunDir:
    """One run directory and its manifest."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root is not None else default_run_dir()
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
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    # ---- manifest -------------------------------------------------------------------------
    def read_manifest(self) -> dict:
        if not self.manifest_path.is_file():
            return {"schema": MANIFEST_SCHEMA, "name": self.name, "created": None, "steps": []}
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(
                f"{self.manifest_path}: corrupt manifest ({exc}); move it aside to start the run's history afresh"
            ) from None
        if int(data.get("schema", 0)) > MANIFEST_SCHEMA:
            raise ArtifactError(f"{self.manifest_path}: manifest schema {data.get('schema')} is newer than this gx understands; upgrade gx")
        data.setdefault("steps", [])
        return data

    def update_manifest(self, fn) -> dict:
        """Apply fn(manifest) -> None under the lock and write the result atomically."""
        self.ensure()
        with self._lock:
            data = self.read_manifest()
            if not data.get("created"):
                data["created"] = _now()
            data["name"] = self.name
            fn(data)
            atomic_write_text(self.manifest_path, json.dumps(data, indent=2, default=str) + "\n")
            return data

    def steps(self, command: str | None = None) -> list[dict]:
        return [s for s in self.read_manifest()["steps"] if command is None or s.get("command") == command]

    def last_ok(self, command: str, output: str | None = None) -> dict | None:
        """The latest finished step of `command` (optionally the one that wrote `output`)."""
        for s in reversed(self.steps(command)):
            if s.get("status") == "ok" and (output is None or output in s.get("outputs", [])):
                return s
        return None

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
        """The finished step with this key, if its outputs are still the ones it wrote.

        A later finished step that wrote any of the same outputs (another dataset or config into
        the same folder) makes the earlier one stale, even though its paths still exist.
        """
        steps = self.read_manifest()["steps"]
        for i in range(len(steps) - 1, -1, -1):
            s = steps[i]
            if s.get("command") != command or s.get("cache_key") != key or s.get("status") != "ok":
                continue
            later = steps[i + 1 :]
            overwritten = any(
                t.get("status") == "ok" and set(t.get("outputs", [])) & set(s.get("outputs", [])) for t in later
            )
            if overwritten or not all(self.path(o).exists() for o in outputs):
                return None
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
            "host": platform.node(),
            "pid": os.getpid(),
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
        try:
            if ok:
                self._commit()
            else:
                self._rollback()
        except BaseException:
            self._rollback()
            self._finish("failed")
            raise
        if ok:
            self._finish("ok")
        elif exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self._finish("interrupted", error="interrupted")
        else:
            self._finish("failed", error=str(exc).splitlines()[0][:500] if str(exc) else exc_type.__name__)
        return False

    def _commit(self) -> None:
        for rel, tmp in self._staged.items():
            follow_umask(tmp)  # third-party writers (save_pretrained) leave 0600 files; artifacts read like any file
            target = self.run.path(rel)
            old = None
            if target.exists() or target.is_symlink():
                old = target.parent / f".{target.name}.old-{self.id}"
                os.replace(target, old)
            os.replace(tmp, target)
            if old is not None:
                shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()

    def _rollback(self) -> None:
        for tmp in self._staged.values():
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)

    def _finish(self, status: str, error: str | None = None) -> None:
        end = time.time()
        metrics = _jsonable(self.metrics)
        step_id = self.id

        def update(m: dict) -> None:
            for s in m["steps"]:
                if s.get("id") == step_id:
                    s["status"] = status
                    s["end"] = _now()
                    s["duration_s"] = round(end - self._t0, 3)
                    s["metrics"] = metrics
                    if error:
                        s["error"] = error
                    if self.entry is not None:
                        self.entry.update(s)

        self.run.update_manifest(update)
