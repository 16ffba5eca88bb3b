"""What the `$GX_HOME` cache holds (`gx download --list`): datasets, hub dataset snapshots, model snapshots."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gesture_cli.data.fetch import tree_size


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
            size, files = tree_size(entry)
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
                size, files = tree_size(snap)  # stat follows the blob symlinks
                out.append(CachedModel(repo_id, snap.name, tuple(refs.get(snap.name, ())), size, snap, files))
    return out
