"""Self-describing artifacts: safetensors tensors with a JSON metadata header, and JSON files.

Every artifact carries `schema` (an integer version) and `kind`, so a reader can refuse a file it
does not understand with a clear message instead of misreading it. Nothing here ever pickles.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from gesture_cli.core.errors import ArtifactError, write_error

SCHEMA_VERSION = 1


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old content or the new one, never a torn file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_error(exc, path) or exc from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts should be readable like any file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        # a full disk or a file-size limit: the OSError of write() names no file; this one names it
        refused = write_error(exc, path) if isinstance(exc, OSError) else None
        if refused is not None:
            raise refused from None
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def follow_umask(root: Path) -> None:
    """Give every regular file at or under `root` the mode a plain open() would: 0666 & ~umask (0777 &
    ~umask where the owner may execute). Some writers ignore the umask: safetensors' save_file, which
    transformers' and PEFT's save_pretrained call, creates 0600 files. Symbolic links are left alone."""
    root = Path(root)
    mask = _umask()
    if root.is_symlink():
        return
    if root.is_file():
        files = [root]
    else:
        files = [Path(d) / f for d, _dirs, names in os.walk(root) for f in names]  # os.walk does not follow links
    for f in files:
        if f.is_symlink() or not f.is_file():
            continue
        mode = (0o777 if f.stat().st_mode & 0o100 else 0o666) & ~mask
        if f.stat().st_mode & 0o777 != mode:
            os.chmod(f, mode)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_json(path: Path, obj: Any, *, kind: str | None = None) -> None:
    """Write JSON atomically; with `kind`, stamp `schema` and `kind` keys into a dict."""
    if kind is not None:
        obj = {"schema": SCHEMA_VERSION, "kind": kind, **obj}
    atomic_write_text(Path(path), json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):  # numpy / torch scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def load_json(path: Path, *, kind: str | None = None) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: file not found")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc}); delete it and rerun the step that wrote it") from None
    if kind is not None:
        _check_header(path, obj if isinstance(obj, dict) else {}, kind)
    return obj


def _check_header(path: Path, meta: dict, kind: str) -> None:
    got_kind = meta.get("kind")
    if got_kind != kind:
        raise ArtifactError(f"{path}: expected a '{kind}' artifact, found '{got_kind}'")
    schema = int(meta.get("schema", -1))
    if schema > SCHEMA_VERSION or schema < 1:
        raise ArtifactError(f"{path}: schema version {schema} is not supported by this gx (supports {SCHEMA_VERSION}); upgrade gx or rerun the step")


def save_tensors(path: Path, tensors: dict, *, kind: str, meta: dict | None = None) -> None:
    """Save tensors with safetensors; `meta` (any JSON) goes into the header under `gx`."""
    from safetensors.torch import save

    header = {"schema": SCHEMA_VERSION, "kind": kind, **(meta or {})}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write_bytes(Path(path), save(tensors, metadata={"gx": json.dumps(header, default=_json_default)}))


def safetensors_device(device: object) -> str:
    """A device as safetensors' loader takes it: it refuses an indexed CPU ('cpu:0', what a CPU process under
    torchrun runs on), which torch itself accepts."""
    import torch

    dev = torch.device(device) if not isinstance(device, torch.device) else device
    return dev.type if dev.type == "cpu" or dev.index is None else f"{dev.type}:{dev.index}"


def load_tensors(path: Path, *, kind: str, device: object = "cpu") -> tuple[dict, dict]:
    """Load (tensors, meta) from a gx safetensors file onto `device` (a torch.device or its name), checking its
    kind and schema version."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    device = safetensors_device(device)
    if not path.is_file():
        raise ArtifactError(f"{path}: file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("gx")
        tensors = load_file(str(path), device=device)
    except Exception as exc:  # safetensors raises several types for corrupt files
        raise ArtifactError(f"{path}: not a readable safetensors file ({exc}); delete it and rerun the step that wrote it") from None
    meta = json.loads(raw) if raw else {}
    _check_header(path, meta, kind)
    return tensors, meta
