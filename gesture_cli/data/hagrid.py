"""`hagrid:DIR`: HaGRID hand-gesture images, cropped to the annotated hand boxes.

Two layouts are read (the split names are whatever DIR holds: train / val / test):

  full images  DIR/annotations/<split>/<gesture>.json   HaGRID v1 per-class annotation files:
               DIR/<split>/<gesture>/<image_id>.jpg       {image_id: {"bboxes": [[x, y, w, h], ...] (normalised
                                                          to 0..1, top-left corner), "labels": [gesture or
                                                          "no_gesture", ...], "user_id": ...}}
               Every box becomes one sample: the box grown by `margin` of its size on each side, made
               square around its centre (a hand's shape is not squashed), clipped to the image.
               "no_gesture" boxes (the other hand) are skipped and counted unless `no_gesture=True`,
               which makes them a class of their own.
  crops only   DIR/images_crops/dataset_<split>/<gesture>/<image_id>.jpg
               pre-cropped hands, used as they are; the folder name is the label.

A split with full images uses them; a split with only crops uses the crops. Classes are the sorted
gesture names over all splits of that layout, so label ids agree between splits. Images are read
lazily; the crop happens when an image is read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from gesture_cli.core.errors import DataError, UsageError, broken_link_target
from gesture_cli.data.images import BROKEN_LINK, IMAGE_EXTENSIONS, ImageDataset, decode_image
from gesture_cli.data.registry import register_dataset

NO_GESTURE = "no_gesture"
CROPS_DIR = "images_crops"
_LAYOUT_HELP = (
    "expected DIR/annotations/<split>/<gesture>.json with images in DIR/<split>/<gesture>/<id>.jpg, "
    "or pre-cropped hands in DIR/images_crops/dataset_<split>/<gesture>/<id>.jpg"
)


@dataclass
class HagridDataset(ImageDataset):
    """An ImageDataset whose image i is `paths[i]` cropped around `boxes[i]`: float [N, 4] rows of
    (x0, y0, x1, y1) as fractions of the image width / height, margin included; None = whole images."""

    boxes: np.ndarray | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.boxes is not None:
            self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
            if len(self.boxes) != len(self.labels):
                raise ValueError(f"HagridDataset: {len(self.boxes)} boxes but {len(self.labels)} labels")

    def image(self, i: int) -> np.ndarray:
        img = decode_image(self.paths[i])
        if self.boxes is not None and not np.isnan(self.boxes[i]).any():
            h, w = img.shape[:2]
            x0, y0, x1, y1 = self.boxes[i] * (w, h, w, h)  # pixels
            side = max(x1 - x0, y1 - y0)  # square in pixels around the box centre: no squashed hands
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            c0, r0 = max(0, int(np.floor(cx - side / 2))), max(0, int(np.floor(cy - side / 2)))
            c1, r1 = min(w, int(np.ceil(cx + side / 2))), min(h, int(np.ceil(cy + side / 2)))
            if c1 - c0 < 2 or r1 - r0 < 2:
                raise DataError(f"{self.paths[i]}: the hand box {self.boxes[i].round(4).tolist()} is empty in a {w}x{h} image")
            img = np.ascontiguousarray(img[r0:r1, c0:c1])
        return img if img.ndim == 3 else np.repeat(img[:, :, None], 3, axis=2)

    def subset(self, idx, *, split: str | None = None) -> HagridDataset:
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        out = super().subset(idx, split=split)
        return replace(out, boxes=self.boxes[idx] if self.boxes is not None else None)


def crop_box(bbox, *, margin: float) -> tuple[float, float, float, float]:
    """HaGRID [x, y, w, h] (normalised, top-left corner) -> (x0, y0, x1, y1) grown by `margin` of w, h per side."""
    x, y, w, h = (float(v) for v in bbox)
    return x - margin * w, y - margin * h, x + (1 + margin) * w, y + (1 + margin) * h


def _root(arg: str) -> Path:
    root = Path(arg).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: no such directory; hagrid:DIR {_LAYOUT_HELP}")
    return root


def _annotation_splits(root: Path) -> dict[str, Path]:
    ann = root / "annotations"
    if not ann.is_dir():
        return {}
    return {d.name: d for d in sorted(ann.iterdir()) if d.is_dir() and any(d.glob("*.json"))}


def _crop_splits(root: Path) -> dict[str, Path]:
    crops = root / CROPS_DIR
    if not crops.is_dir():
        return {}
    return {d.name[len("dataset_"):]: d for d in sorted(crops.iterdir()) if d.is_dir() and d.name.startswith("dataset_")}


def _full_image_dir(root: Path, split: str) -> Path | None:
    """DIR/<split> when it holds gesture folders (the full-image layout), else None."""
    d = root / split
    return d if d.is_dir() and any(p.is_dir() for p in d.iterdir()) else None


def hagrid_splits(arg: str | None) -> list[str]:
    root = _root(arg or "")
    names = {s for s in _annotation_splits(root) if _full_image_dir(root, s)} | set(_crop_splits(root))
    if not names:
        raise DataError(f"{root}: no HaGRID split with images found; {_LAYOUT_HELP}")
    order = {"train": 0, "val": 1, "test": 2}
    return sorted(names, key=lambda s: (order.get(s, 3), s))


def _read_annotations(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable HaGRID annotation file ({exc}); re-download it") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object {{image_id: {{bboxes, labels, ...}}}}, got {type(data).__name__}")
    return data


def _full_samples(ann_dir: Path, image_dir: Path, *, classes: list[str], margin: float, no_gesture: bool):
    paths: list[Path] = []
    labels: list[int] = []
    boxes: list[tuple[float, float, float, float]] = []
    skipped: dict[str, int] = {}
    index = {c: i for i, c in enumerate(classes)}

    def skip(reason: str, n: int = 1) -> None:
        skipped[reason] = skipped.get(reason, 0) + n

    for ann_path in sorted(ann_dir.glob("*.json")):
        gesture = ann_path.stem
        for image_id, entry in _read_annotations(ann_path).items():
            if not isinstance(entry, dict) or not isinstance(entry.get("bboxes"), list) or not isinstance(entry.get("labels"), list):
                raise DataError(f"{ann_path}: image '{image_id}': expected 'bboxes' and 'labels' lists")
            if len(entry["bboxes"]) != len(entry["labels"]):
                raise DataError(f"{ann_path}: image '{image_id}': {len(entry['bboxes'])} bboxes but {len(entry['labels'])} labels")
            image = next((p for p in (image_dir / gesture / f"{image_id}{ext}" for ext in (".jpg", ".jpeg", ".png")) if p.is_file()), None)
            if image is None:
                skip("image file missing", len(entry["bboxes"]))
                continue
            for bbox, label in zip(entry["bboxes"], entry["labels"], strict=True):
                if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
                    raise DataError(f"{ann_path}: image '{image_id}': bbox {bbox!r} is not [x, y, w, h]")
                try:
                    box = crop_box(bbox, margin=margin)
                except (TypeError, ValueError):
                    raise DataError(f"{ann_path}: image '{image_id}': bbox {bbox!r} is not four numbers") from None
                if not (float(bbox[2]) > 0 and float(bbox[3]) > 0):
                    skip("empty box")
                    continue
                if label == NO_GESTURE and not no_gesture:
                    skip("no_gesture box (use no_gesture=True to keep)")
                    continue
                if label not in index:
                    skip(f"label not among the annotation files ({label})")
                    continue
                paths.append(image)
                labels.append(index[label])
                boxes.append(box)
    return paths, labels, boxes, skipped


def _crop_samples(split_dir: Path, *, classes: list[str]):
    paths: list[Path] = []
    labels: list[int] = []
    skipped: dict[str, int] = {}
    for label, name in enumerate(classes):
        d = split_dir / name
        if not d.is_dir():
            continue
        for f in sorted(p for p in d.rglob("*") if p.is_file() or broken_link_target(p) is not None):
            if not f.is_file():  # a link to an image that is gone (an unmounted drive): counted, not dropped unseen
                skipped[BROKEN_LINK] = skipped.get(BROKEN_LINK, 0) + 1
            elif f.suffix.lower() in IMAGE_EXTENSIONS:
                paths.append(f)
                labels.append(label)
            else:
                skipped["not an image file (suffix)"] = skipped.get("not an image file (suffix)", 0) + 1
    return paths, labels, skipped


@register_dataset(
    "hagrid",
    help="HaGRID gestures: DIR/annotations/<split>/<gesture>.json + DIR/<split>/<gesture>/<id>.jpg (hand boxes cropped), or DIR/images_crops/dataset_<split>/",
    splits=hagrid_splits,
    arg="DIR",
    arg_required=True,
)
def make_hagrid(arg: str, *, spec: str, split: str, seed: int, no_gesture: bool = False, margin: float = 0.1) -> HagridDataset:
    if not 0.0 <= float(margin) <= 1.0:
        raise UsageError(f"hagrid margin must lie in [0, 1] (fraction of the box size per side); got {margin}")
    root = _root(arg)
    ann_splits = _annotation_splits(root)
    image_dir = _full_image_dir(root, split) if split in ann_splits else None
    if image_dir is not None:
        classes = sorted({p.stem for d in ann_splits.values() for p in d.glob("*.json")} - {NO_GESTURE})
        if no_gesture:
            classes.append(NO_GESTURE)
        paths, labels, boxes, skipped = _full_samples(
            ann_splits[split], image_dir, classes=classes, margin=float(margin), no_gesture=bool(no_gesture)
        )
        sources = [ann_splits[split], image_dir]
        token = f"hagrid:full:margin={margin}:no_gesture={bool(no_gesture)}"
    else:
        crops = _crop_splits(root)
        split_dir = crops[split]
        names = {d.name for c in crops.values() for d in c.iterdir() if d.is_dir()}
        classes = sorted(names - ({NO_GESTURE} if not no_gesture else set()))
        paths, labels, skipped = _crop_samples(split_dir, classes=classes)
        if NO_GESTURE in names and not no_gesture:
            n = sum(1 for p in (split_dir / NO_GESTURE).rglob("*") if p.is_file())
            if n:
                skipped["no_gesture crop (use no_gesture=True to keep)"] = n
        boxes = None
        sources = [split_dir]
        token = f"hagrid:crops:no_gesture={bool(no_gesture)}"
    if not paths:
        detail = f" (skipped: {', '.join(f'{k}: {v}' for k, v in skipped.items())})" if skipped else ""
        raise DataError(f"{root}: HaGRID split '{split}' has no usable images{detail}; {_LAYOUT_HELP}")
    return HagridDataset(
        spec=spec, split=split, classes=classes, labels=np.asarray(labels, dtype=np.int64), paths=paths,
        skipped=skipped, source_files=sources, cache_token=token, color=True,
        boxes=np.asarray(boxes, dtype=np.float64) if boxes is not None else None,
    )
