"""`hf-dataset:OWNER/NAME[@REVISION][/SUBDIR]`: a Hugging Face dataset repository from the gx cache.

`gx download hf-dataset:OWNER/NAME` puts the repository in `$GX_HOME/datasets/datasets--OWNER--NAME/`
(the hub's cache layout); this spec finds its snapshot on disk, without the network, and reads it
with the existing readers:

- as an image dataset (`make_dataset`), the snapshot (or SUBDIR of it) is read like `folder:DIR`;
- as a pose dataset (`make_pose_dataset`), like `pose:DIR` (gx pose folders, .pose files, OpenPose
  JSON, Kaggle parquet, ...); a relative `texts=` table is looked up inside the snapshot.

REVISION is a branch, tag or commit that was downloaded (default: main, or the only snapshot there
is). The snapshot folder itself also works with `folder:PATH` / `pose:PATH`: `gx download` prints it.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from gesture_cli.core.errors import DataError, UsageError
from gesture_cli.data.folder import folder_splits, make_folder
from gesture_cli.data.pose import POSE_SPLITS, PoseDataset, make_pose_files
from gesture_cli.data.registry import register_dataset

SPEC = "hf-dataset"
_ARG = "OWNER/NAME[@REV][/SUBDIR]"


def parse_arg(arg: str) -> tuple[str, str | None, str]:
    """'me/poses@v1/train' -> ('me/poses', 'v1', 'train'); revision None when not given, subdir '' for the root."""
    text = (arg or "").strip().strip("/")
    parts = text.split("/")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise UsageError(f"'{SPEC}:{arg}' needs a repository id: write {SPEC}:{_ARG}, e.g. {SPEC}:me/asl-poses")
    name, at, revision = parts[1].partition("@")
    if not name or (at and not revision):
        raise UsageError(f"'{SPEC}:{arg}': empty name or revision; write {SPEC}:{_ARG}")
    sub = PurePosixPath(*parts[2:]) if len(parts) > 2 else PurePosixPath()
    if ".." in sub.parts:
        raise UsageError(f"'{SPEC}:{arg}': SUBDIR may not contain '..'")
    return f"{parts[0]}/{name}", revision or None, sub.as_posix() if sub.parts else ""


def snapshot_dir(repo_id: str, revision: str | None = None, *, cache_dir: Path | None = None) -> Path:
    """The cached snapshot of a dataset repository (offline), or a DataError naming `gx download`."""
    from gesture_cli.core import home
    from gesture_cli.data.hub import cached_snapshot, repo_folder

    cache_dir = Path(cache_dir) if cache_dir is not None else home.datasets_dir()
    get = f"gx download {SPEC}:{repo_id}" + (f" --revision {revision}" if revision else "")
    found = cached_snapshot(cache_dir, repo_id, revision, repo_type="dataset")
    if found is not None:
        return found
    snapshots_dir = repo_folder(cache_dir, repo_id, "dataset") / "snapshots"
    snapshots = sorted(p for p in snapshots_dir.iterdir() if p.is_dir()) if snapshots_dir.is_dir() else []
    if revision is None and len(snapshots) == 1:
        return snapshots[0]  # downloaded by tag or commit only: the one there is
    if revision is None and snapshots:
        refs = _refs(snapshots_dir.parent)
        shown = ", ".join(refs) if refs else ", ".join(p.name[:10] for p in snapshots)
        raise UsageError(f"{SPEC}:{repo_id} has {len(snapshots)} cached snapshots and no 'main'; name one as {SPEC}:{repo_id}@REV ({shown})")
    what = f"revision '{revision}' of {SPEC}:{repo_id}" if revision else f"{SPEC}:{repo_id}"
    raise DataError(f"{what} is not in the dataset cache {cache_dir}; run `{get}` first (where there is network)")


def _refs(repo_folder: Path) -> list[str]:
    refs_dir = repo_folder / "refs"
    return sorted(str(p.relative_to(refs_dir)) for p in refs_dir.rglob("*") if p.is_file()) if refs_dir.is_dir() else []


def resolve(arg: str) -> Path:
    """The folder an `hf-dataset:` spec argument names: the cached snapshot, or SUBDIR inside it."""
    repo_id, revision, sub = parse_arg(arg)
    root = snapshot_dir(repo_id, revision)
    path = root / sub if sub else root
    if not path.exists():
        top = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())[:12]
        raise DataError(f"{SPEC}:{arg}: no '{sub}' in the snapshot {root}; it holds {', '.join(top) or 'nothing'}")
    return path


@register_dataset(
    SPEC,
    help="a dataset repository fetched with `gx download hf-dataset:OWNER/NAME`, read like folder:DIR (offline)",
    splits=lambda arg: folder_splits(str(resolve(arg or ""))),
    arg=_ARG,
    arg_required=True,
)
def make_hub_images(arg: str, *, spec: str, split: str, seed: int, verify: bool = False, test_fraction: float = 0.2):
    return make_folder(str(resolve(arg)), spec=spec, split=split, seed=seed, verify=verify, test_fraction=test_fraction)


@register_dataset(
    SPEC, kind="pose", splits=POSE_SPLITS, arg=_ARG, arg_required=True,
    help="a dataset repository fetched with `gx download hf-dataset:OWNER/NAME`, read like pose:DIR (offline); relative texts= inside it",
)
def make_hub_poses(
    arg: str, *, spec: str, split: str | None, seed: int, allow_pickle: bool = False, layout: str | None = None,
    texts: str | None = None, fps: float | None = None, channels: str = "auto",
) -> PoseDataset:
    path = resolve(arg)
    if texts and not Path(texts).expanduser().is_absolute() and not Path(texts).exists():
        repo_id, revision, _ = parse_arg(arg)
        inside = snapshot_dir(repo_id, revision) / texts
        if inside.exists():
            texts = str(inside)
    return make_pose_files(str(path), spec=spec, split=split, seed=seed, allow_pickle=allow_pickle, layout=layout,
                           texts=texts, fps=fps, channels=channels)
