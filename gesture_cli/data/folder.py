"""`folder:DIR`: images in class subfolders, read lazily.

Two layouts:
  DIR/train/<class>/*.png  DIR/test/<class>/*.png  (and/or DIR/val/...)  -> those are the splits
  DIR/<class>/*.png                                                      -> train/test: a deterministic
                                                                            stratified 80/20 split by seed; all
(A DIR with only train/ is read as the flat layout rooted at DIR/train.)

Classes are the sorted subfolder names (the union over all splits, so label ids agree between splits);
images may sit in nested folders below their class folder. Every file that is not used is counted in
`skipped` by reason: files with a non-image suffix, files outside a class folder, empty (0-byte) files,
links whose target is missing (a deleted file, an unmounted drive) and images whose header cannot be read
(checked with Pillow, header only; `verify=True` decodes every image instead, which also catches truncated
files but costs a full read). In the flat layout the counts
are the whole folder's, reported on both splits (a skipped file belongs to neither). Skipped files are
also named (the first few) in a GxWarning, which the CLI prints; `strict=True` makes them a DataError.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from gesture_cli.core.errors import DataError, UsageError, broken_link_target
from gesture_cli.data.images import (
    BROKEN_LINK,
    IMAGE_EXTENSIONS,
    NAMED_SKIPS,
    ImageDataset,
    decode_image,
    probe_image,
    report_skipped,
    stratified_split,
)
from gesture_cli.data.registry import register_dataset

SPLIT_DIRS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
_LAYOUT_HELP = "expected DIR/<class>/<images> or DIR/train/<class>/<images> + DIR/test/<class>/<images>"


def _split_dirs(root: Path) -> dict[str, Path]:
    """Split name -> its folder, for the split layout; {} for the flat layout."""
    found: dict[str, Path] = {}
    for split, names in SPLIT_DIRS.items():
        for name in names:
            if (root / name).is_dir():
                found[split] = root / name
                break
    return found if "train" in found and len(found) >= 2 else {}


def _root(arg: str) -> Path:
    root = Path(arg).expanduser()
    if root.is_file():
        raise UsageError(f"{root} is a file, not a folder; folder:DIR {_LAYOUT_HELP}{_file_spec_hint(root)}")
    if not root.is_dir():
        raise DataError(f"{root}: no such directory; folder:DIR {_LAYOUT_HELP}")
    return root


def _file_spec_hint(path: Path) -> str:
    """"; pass ..." naming the spec that reads a file like `path`, given to folder: by mistake; "" for other files."""
    from gesture_cli.data.video import VIDEO_EXTENSIONS

    suffix = path.suffix.lower()
    if suffix == ".csv":
        return f"; for a CSV of pixel rows pass csv:{path}"
    if suffix in IMAGE_EXTENSIONS:
        return "; pass the folder that holds the class folders, not one image"
    if suffix in VIDEO_EXTENSIONS:
        return f"; for the frames of a video pass video:{path}"
    return ""


def _flat_root(root: Path) -> Path:
    return root / "train" if (root / "train").is_dir() and not _split_dirs(root) else root


def folder_splits(arg: str | None) -> list[str]:
    root = _root(arg or "")
    dirs = _split_dirs(root)
    return [s for s in SPLIT_DIRS if s in dirs] if dirs else ["train", "test", "all"]


def _class_dirs(split_dir: Path) -> list[Path]:
    return sorted((p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _scan(split_dir: Path, classes: list[str], *, verify: bool) -> tuple[list[Path], list[int], dict[str, int], bool, list[str]]:
    """(image paths, label ids, skipped reason -> count, any colour image, "name (reason)" of the first
    skipped files) under split_dir/<class>/."""
    paths: list[Path] = []
    labels: list[int] = []
    skipped: dict[str, int] = {}
    named: list[str] = []
    color = False

    def skip(f: Path, reason: str, detail: str | None = None) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1
        if len(named) < NAMED_SKIPS:
            named.append(f"{f.relative_to(split_dir).as_posix()} ({detail or reason})")

    def skip_if_broken_link(f: Path) -> bool:
        target = broken_link_target(f)
        if target is not None:
            skip(f, BROKEN_LINK, f"broken link: its target {target} does not exist")
        return target is not None

    for entry in sorted(split_dir.iterdir()):
        if entry.is_file():
            skip(entry, "file outside a class folder")
        else:
            skip_if_broken_link(entry)  # a file or a class folder that links to nothing
    for label, name in enumerate(classes):
        class_dir = split_dir / name
        if not class_dir.is_dir():
            continue  # a class this split lacks (e.g. only in train/)
        for f in sorted(p for p in class_dir.rglob("*") if p.is_file() or broken_link_target(p) is not None):
            if skip_if_broken_link(f):
                continue
            if f.suffix.lower() not in IMAGE_EXTENSIONS:
                skip(f, "not an image file (suffix)")
                continue
            if f.stat().st_size == 0:
                skip(f, "empty file (0 bytes)")
                continue
            if verify:
                try:
                    is_color = decode_image(f).ndim == 3
                except DataError:
                    is_color = None
            else:
                is_color = probe_image(f)
            if is_color is None:
                skip(f, "unreadable image")
                continue
            color = color or is_color
            paths.append(f)
            labels.append(label)
    return paths, labels, skipped, color, named



@register_dataset(
    "folder",
    help="images in class subfolders, DIR/<class>/*.png (80/20 split by seed) or DIR/{train,val,test}/<class>/*.png; read lazily",
    splits=folder_splits,
    arg="DIR",
    arg_required=True,
)
def make_folder(arg: str, *, spec: str, split: str, seed: int, verify: bool = False, test_fraction: float = 0.2,
                strict: bool = False) -> ImageDataset:
    if not 0.0 < float(test_fraction) < 1.0:
        raise UsageError(f"test_fraction must be between 0 and 1 (exclusive); got {test_fraction}")
    root = _root(arg)
    dirs = _split_dirs(root)
    if dirs:
        classes = sorted({d.name for split_dir in dirs.values() for d in _class_dirs(split_dir)})
        split_dir = dirs[split]
        token = ""
    else:
        split_dir = _flat_root(root)
        classes = [d.name for d in _class_dirs(split_dir)]
        token = "" if split == "all" else f"split=stratified,test_fraction={test_fraction},seed={seed}"
    if not classes:
        raise DataError(f"{split_dir}: no class subfolders; folder:DIR {_LAYOUT_HELP}")
    paths, labels, skipped, color, named = _scan(split_dir, classes, verify=bool(verify))
    report_skipped(split_dir, skipped, named, what="file(s)", strict=bool(strict))
    if not paths:
        detail = f" (skipped: {', '.join(f'{k}: {v}' for k, v in skipped.items())})" if skipped else ""
        raise DataError(f"{split_dir}: no readable images in its class folders{detail}; {_LAYOUT_HELP}")
    ds = ImageDataset(spec=spec, split=split, classes=classes, labels=np.asarray(labels, dtype=np.int64), paths=paths,
                      skipped=skipped, source_files=[split_dir], cache_token=token, color=color)
    if dirs or split == "all":
        return ds
    train_idx, test_idx = stratified_split(ds.labels, test_fraction=float(test_fraction), seed=seed)
    rows = train_idx if split == "train" else test_idx
    return replace(ds.subset(rows), all_rows=rows)
