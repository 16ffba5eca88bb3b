"""Semantic-segmentation datasets: spec strings -> `SegDataset` (images + label masks).

    ds = make_seg_dataset("seg:data/cityscapes", split="val")
    images, masks = ds.batch(range(4), size=224)   # uint8 [4, 224, 224, 3], uint8 [4, 224, 224]

Specs:
  seg:DIR            a folder in one of these layouts (detected from its subfolders):
                       Cityscapes  leftImg8bit/<split>/<city>/*_leftImg8bit.png and
                                   gtFine/<split>/<city>/*_gtFine_labelIds.png; labelIds are mapped to
                                   the 19 train ids, every other id to ignore
                       ADE20K      images/<split>/*.jpg and annotations/<split>/*.png (training ->
                                   train, validation -> val); 0 = "other" is ignored and 1..150
                                   become 0..149 (reduce_zero_label)
                       generic     images/[<split>/]*.{jpg,png,...} and masks/[<split>/]<stem>.png, or
                                   <split>_images/ and <split>_segmentations/ (or <split>_masks/), with
                                   a class-names file: classes.txt (one name a line) or classes.json
  synthetic-scenes   seeded street scenes with labelled regions (see data/synthetic_scenes.py)

Masks hold class ids (PNG, 8 or 16 bit, greyscale or palette); 255 is ignore everywhere. A mask
whose size differs from its image, or that holds an id that is no class of the dataset (or that the
class map leaves out) is a DataError naming the file. An image without a mask is skipped, counted
and named in a warning (`strict=true`: an error). Options, for every source: `class_map=FILE`
(data/class_map.py); for `seg:` also `classes=FILE`, `reduce_zero_label=true|false` and `strict=true|false`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from gesture_cli.core.errors import DataError, UsageError, broken_link_target, unknown_split
from gesture_cli.data.class_map import IGNORE_INDEX, ClassMap, load_class_map
from gesture_cli.data.images import (
    BROKEN_LINK,
    IMAGE_EXTENSIONS,
    NAMED_SKIPS,
    decode_image,
    report_skipped,
    resize_image,
    to_rgb,
)
from gesture_cli.data.registry import DatasetSpec, parse_dataset, register_dataset
from gesture_cli.data.synthetic_scenes import GENERATOR_VERSION, SCENE_CLASSES, SPLIT_IDS, render_scene

UNKNOWN = -1  # lookup value of a raw mask value that is no class of the dataset
LUT_SIZE = 1 << 16  # masks may be 16-bit PNGs

# Cityscapes: the 19 evaluated classes, in train-id order, and labelId -> trainId (cityscapesScripts
# labels.py). Every other labelId (unlabeled, ego vehicle, rectification border, out of roi, static,
# dynamic, ground, parking, rail track, guard rail, bridge, tunnel, polegroup, caravan, trailer) is ignored.
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation", "terrain",
    "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)
CITYSCAPES_LABEL_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
                             27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_MAX_LABEL_ID = 33

# ADE20K SceneParsing (ADEChallengeData2016): the 150 classes of mask values 1..150 (objectInfo150).
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet", "sidewalk",
    "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water", "painting", "sofa", "shelf",
    "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper",
    "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow", "screen door",
    "stairway", "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel",
    "bus", "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool",
    "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board",
    "shower", "radiator", "glass", "clock", "flag",
)
assert len(ADE20K_CLASSES) == 150 and len(CITYSCAPES_CLASSES) == 19
ADE20K_SPLIT_NAMES = {"training": "train", "validation": "val"}
CLASS_FILES = ("classes.txt", "class_names.txt", "classes.json")
MASK_DIR_SUFFIXES = ("_segmentations", "_masks", "_labels", "_annotations")


@dataclass
class SegDataset:
    """One split of a segmentation dataset: images and label masks, in memory or as files."""

    spec: str
    split: str
    classes: list[str]  # class names; index = class id in the masks `mask()` returns
    lut: np.ndarray  # int16 [LUT_SIZE]: raw mask value -> class id, IGNORE_INDEX, UNKNOWN or UNMAPPED
    images: np.ndarray | None = None  # uint8 [N, H, W, 3], when held in memory
    masks: np.ndarray | None = None  # uint8 [N, H, W] raw values, when held in memory
    image_paths: list[Path] | None = None
    mask_paths: list[Path] | None = None
    names: list[str] | None = None  # display name per sample; default the image file name
    layout: str = ""  # cityscapes | ade20k | generic | synthetic
    source_classes: list[str] | None = None  # classes before a class map (for messages); None = classes
    class_map: ClassMap | None = None
    source_lut: np.ndarray | None = None  # the lut before the class map: raw value -> source class id
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    source_files: list[Path] = field(default_factory=list)  # files / dirs read (fingerprinted for cache keys)
    cache_token: str = ""

    def __post_init__(self) -> None:
        if (self.images is None) == (self.image_paths is None):
            raise ValueError("SegDataset needs exactly one of images= (in memory) or image_paths= (files)")
        n = len(self.images) if self.images is not None else len(self.image_paths)
        m = len(self.masks) if self.masks is not None else len(self.mask_paths or [])
        if n != m:
            raise ValueError(f"SegDataset: {n} images but {m} masks")
        if len(self.classes) >= IGNORE_INDEX:
            raise ValueError(f"SegDataset: {len(self.classes)} classes; at most {IGNORE_INDEX - 1} fit a uint8 mask")

    def __len__(self) -> int:
        return len(self.images) if self.images is not None else len(self.image_paths)

    def __repr__(self) -> str:
        held = "in memory" if self.images is not None else "files"
        return f"SegDataset(spec={self.spec!r}, split={self.split!r}, {len(self)} samples, {len(self.classes)} classes, {self.layout}, {held})"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def name(self, i: int) -> str:
        if self.names is not None:
            return self.names[i]
        return self.image_paths[i].name if self.image_paths is not None else f"{self.split}-{i:05d}"

    def image(self, i: int) -> np.ndarray:
        """uint8 [H, W, 3] RGB."""
        if self.images is not None:
            return self.images[i]
        return to_rgb(decode_image(self.image_paths[i]))

    def raw_mask(self, i: int) -> np.ndarray:
        """The mask's stored values, uint8 or uint16 [H, W]."""
        if self.masks is not None:
            return self.masks[i]
        return read_mask(self.mask_paths[i])

    def sample(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(image uint8 [H, W, 3], mask uint8 [H, W] of class ids / IGNORE_INDEX), checked against each other."""
        img, raw = self.image(i), self.raw_mask(i)
        where = str(self.mask_paths[i]) if self.mask_paths is not None else f"{self.spec} {self.split} #{i}"
        if raw.shape[:2] != img.shape[:2]:
            other = self.image_paths[i].name if self.image_paths is not None else "its image"
            raise DataError(
                f"{where}: mask is {raw.shape[1]}x{raw.shape[0]} but {other} is {img.shape[1]}x{img.shape[0]}; "
                "a mask must match its image pixel for pixel"
            )
        return img, self.apply_lut(raw, where=where)

    def mask(self, i: int) -> np.ndarray:
        return self.sample(i)[1]

    def apply_lut(self, raw: np.ndarray, *, where: str) -> np.ndarray:
        """Raw values -> class ids (uint8); DataError for a value that is no class or outside the class map."""
        mapped = self.lut[raw]
        bad = mapped < 0
        if bad.any():
            values = np.unique(raw[bad])
            v = int(values[0])
            src = self.source_classes or self.classes
            if mapped[bad].min() == UNKNOWN or self.class_map is None:
                raise DataError(
                    f"{where}: label {v} is not a class of this {self.layout} dataset ({len(src)} classes"
                    f"{', ' + repr(self.spec) if self.spec else ''}); found {_values_preview(values)}. "
                    "Fix the mask, the class-names file, or the reduce_zero_label option"
                )
            sid = int(self._source_id(v))
            raise DataError(
                f"{where}: label {v} ('{src[sid]}') is outside class map {self.class_map.path or self.class_map.name}; "
                "add it to a group, list it under \"ignore\", or set \"unmapped\": \"ignore\""
            )
        return mapped.astype(np.uint8)

    def _source_id(self, raw_value: int) -> int:
        return int(self.source_lut[raw_value]) if self.source_lut is not None else raw_value

    def batch(self, idx: Sequence[int], size: int) -> tuple[np.ndarray, np.ndarray]:
        """(images uint8 [B, size, size, 3], masks uint8 [B, size, size]); masks resized nearest-neighbour."""
        import cv2

        imgs, masks = [], []
        for i in np.asarray(idx, dtype=np.int64).reshape(-1):
            img, mask = self.sample(int(i))
            imgs.append(resize_image(img, size))
            masks.append(mask if mask.shape == (size, size) else cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST))
        if not imgs:
            return np.zeros((0, size, size, 3), np.uint8), np.zeros((0, size, size), np.uint8)
        return np.stack(imgs), np.stack(masks)

    def subset(self, idx: Sequence[int], *, split: str | None = None) -> SegDataset:
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        out = replace(
            self,
            split=split if split is not None else self.split,
            images=self.images[idx] if self.images is not None else None,
            masks=self.masks[idx] if self.masks is not None else None,
            image_paths=[self.image_paths[i] for i in idx] if self.image_paths is not None else None,
            mask_paths=[self.mask_paths[i] for i in idx] if self.mask_paths is not None else None,
            names=[self.names[i] for i in idx] if self.names is not None else None,
            skipped=dict(self.skipped),
            source_files=list(self.source_files),
        )
        return out

    def with_class_map(self, cmap: ClassMap) -> SegDataset:
        """The same samples with labels folded into the map's groups (see data/class_map.py)."""
        if self.class_map is not None:
            raise UsageError(f"dataset {self.spec!r} already has class map {self.class_map.name}")
        group_of = cmap.lookup(self.classes, what=f"dataset {self.spec!r}")  # [K] -> group, IGNORE or UNMAPPED
        lut = self.lut.copy()
        valid = (lut >= 0) & (lut != IGNORE_INDEX)
        lut[valid] = group_of[lut[valid]]
        return replace(self, classes=list(cmap.groups), lut=lut, source_classes=list(self.classes), class_map=cmap, source_lut=self.lut,
                       cache_token=f"{self.cache_token}|map:{cmap.token}", skipped=dict(self.skipped), source_files=list(self.source_files))


def _values_preview(values: np.ndarray, n: int = 6) -> str:
    shown = ", ".join(str(int(v)) for v in values[:n])
    return f"value(s) {shown}" + (" ..." if len(values) > n else "")


def read_mask(path: Path) -> np.ndarray:
    """A label PNG as stored: uint8 or uint16 [H, W] (palette PNGs give their indices, not colours)."""
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
                raise DataError(
                    f"{path}: mask is a {mode} colour image; expected one channel of class ids (greyscale or palette PNG); "
                    "convert colour-coded masks to id masks first"
                )
            if mode == "LA":
                im = im.getchannel(0)
            arr = np.asarray(im)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: mask file not found") from None
    except Exception as exc:  # Pillow raises many types for broken files
        raise DataError(f"{path}: not a readable mask image ({type(exc).__name__}: {exc})") from None
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.ndim != 2:
        raise DataError(f"{path}: mask has shape {arr.shape}; expected [H, W] class ids")
    if arr.dtype not in (np.uint8, np.uint16):
        if arr.min() < 0 or arr.max() >= LUT_SIZE:
            raise DataError(f"{path}: mask values {int(arr.min())}..{int(arr.max())} do not fit 0..65535")
        arr = arr.astype(np.uint16)
    return arr


# ---- lookup tables --------------------------------------------------------------------------------


def identity_lut(num_classes: int, *, reduce_zero_label: bool = False) -> np.ndarray:
    """Raw value v -> class v (or v-1 with reduce_zero_label, 0 -> ignore); 255 -> ignore; other -> UNKNOWN."""
    lut = np.full(LUT_SIZE, UNKNOWN, dtype=np.int16)
    if reduce_zero_label:
        lut[0] = IGNORE_INDEX
        lut[1 : num_classes + 1] = np.arange(num_classes)
    else:
        lut[:num_classes] = np.arange(num_classes)
    lut[IGNORE_INDEX] = IGNORE_INDEX
    return lut


def cityscapes_lut() -> np.ndarray:
    lut = np.full(LUT_SIZE, UNKNOWN, dtype=np.int16)
    lut[: CITYSCAPES_MAX_LABEL_ID + 1] = IGNORE_INDEX
    for label_id, train_id in CITYSCAPES_LABEL_TO_TRAIN.items():
        lut[label_id] = train_id
    lut[IGNORE_INDEX] = IGNORE_INDEX
    return lut


# ---- seg:DIR --------------------------------------------------------------------------------------


def detect_layout(root: Path) -> str:
    if not root.is_dir():
        raise DataError(f"{root}: segmentation folder not found; check the path (seg:DIR takes a Cityscapes, ADE20K, "
                        "or images/ + masks/ folder)")
    if (root / "leftImg8bit").is_dir() and (root / "gtFine").is_dir():
        return "cityscapes"
    if (root / "images").is_dir() and (root / "annotations").is_dir():
        return "ade20k"
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "generic"
    if _paired_splits(root):
        return "paired"
    raise DataError(
        f"{root}: no segmentation layout found; expected leftImg8bit/ + gtFine/ (Cityscapes), images/ + annotations/ (ADE20K), "
        "images/ + masks/ with classes.txt (generic), or <split>_images/ + <split>_segmentations/"
    )


def _paired_splits(root: Path) -> dict[str, tuple[Path, Path]]:
    """LIP-style folders: {split: (<split>_images, <split>_segmentations|_masks|...)}."""
    out = {}
    for d in sorted(root.glob("*_images")):
        split = d.name[: -len("_images")]
        for suffix in MASK_DIR_SUFFIXES:
            if (root / f"{split}{suffix}").is_dir():
                out[split] = (d, root / f"{split}{suffix}")
                break
    return out


def _subdirs(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _has_images(path: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir() if p.is_file())


def seg_splits(arg: str | None) -> list[str]:
    root = Path(arg or "").expanduser()
    layout = detect_layout(root)
    if layout == "cityscapes":
        return _subdirs(root / "leftImg8bit")
    if layout == "paired":
        return list(_paired_splits(root))
    images = root / "images"
    subs = _subdirs(images)
    names = [ADE20K_SPLIT_NAMES.get(s, s) if layout == "ade20k" else s for s in subs]
    return names if names else (["all"] if _has_images(images) else [])


def _split_dirs(root: Path, layout: str, split: str) -> tuple[Path, Path]:
    """(image dir, mask dir) of a split."""
    if layout == "cityscapes":
        return root / "leftImg8bit" / split, root / "gtFine" / split
    if layout == "paired":
        return _paired_splits(root)[split]
    mask_root = root / ("annotations" if layout == "ade20k" else "masks")
    if split == "all" and not _subdirs(root / "images"):
        return root / "images", mask_root
    folder = {v: k for k, v in ADE20K_SPLIT_NAMES.items()}.get(split, split) if layout == "ade20k" else split
    if not (root / "images" / folder).is_dir():
        folder = split
    return root / "images" / folder, mask_root / folder


def _pairs(layout: str, image_dir: Path, mask_dir: Path) -> tuple[list[Path], list[Path], dict[str, int], list[str]]:
    """(images, their masks, skipped reason -> count, "image (why)" of the first skipped images: no mask, or the
    image or its mask a link whose target is missing)."""
    images, masks, skipped, named = [], [], {}, []

    def skip(rel: Path, reason: str, detail: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1
        if len(named) < NAMED_SKIPS:
            named.append(f"{rel.as_posix()} ({detail})")

    if layout == "cityscapes":
        candidates = sorted(image_dir.rglob("*_leftImg8bit.png"))
    else:
        candidates = sorted(p for p in image_dir.rglob("*") if (p.is_file() or broken_link_target(p) is not None)
                            and p.suffix.lower() in IMAGE_EXTENSIONS)
    for img in candidates:
        rel = img.relative_to(image_dir)
        if layout == "cityscapes":
            stem = img.name[: -len("_leftImg8bit.png")]
            mask = mask_dir / rel.parent / f"{stem}_gtFine_labelIds.png"
        else:
            mask = mask_dir / rel.with_suffix(".png")
        mask_rel = f"{mask_dir.name}/{mask.relative_to(mask_dir).as_posix()}"
        target = broken_link_target(img)
        if target is not None:
            skip(rel, BROKEN_LINK, f"broken link: its target {target} does not exist")
            continue
        target = broken_link_target(mask)
        if target is not None:
            skip(rel, BROKEN_LINK, f"its mask {mask_rel} is a broken link: its target {target} does not exist")
            continue
        if not mask.is_file():
            skip(rel, "image without a mask", f"expected {mask_rel}")
            continue
        images.append(img)
        masks.append(mask)
    return images, masks, skipped, named


def read_class_names(path: Path) -> list[str]:
    """Class names from classes.txt (one per line; blank lines and #-comments skipped) or a JSON list
    (or {"classes": [...]})."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: class-names file not found")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc})") from None
        if isinstance(data, dict):
            data = data.get("classes")
        if not isinstance(data, list) or not all(isinstance(c, str) for c in data):
            raise DataError(f"{path}: expected a JSON list of class names (or {{\"classes\": [...]}})")
        names = [c.strip() for c in data]
    else:
        names = [line.split("#", 1)[0].strip() for line in text.splitlines()]
        names = [n for n in names if n]
    if not names:
        raise DataError(f"{path}: no class names in it")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"{path}: class name '{dup[0]}' appears twice")
    if len(names) >= IGNORE_INDEX:
        raise DataError(f"{path}: {len(names)} classes; at most {IGNORE_INDEX - 1} are supported (255 is ignore)")
    return names


@register_dataset("seg", kind="segmentation", help="a Cityscapes, ADE20K or images/ + masks/ folder", splits=seg_splits, arg="DIR",
                  arg_required=True)
def make_folder_seg(arg: str | None, *, spec: str, split: str, seed: int, classes: str | None = None,
                    reduce_zero_label: bool | None = None, strict: bool = False) -> SegDataset:
    """`seg:DIR` (see the module docstring). An image without a mask is skipped with a GxWarning naming
    it; `strict=True` makes it a DataError."""
    root = Path(arg or "").expanduser()
    layout = detect_layout(root)
    image_dir, mask_dir = _split_dirs(root, layout, split)
    if not image_dir.is_dir():
        raise DataError(f"{root}: split '{split}' has no image folder {image_dir}")
    if not mask_dir.is_dir():
        raise DataError(f"{root}: split '{split}' has images in {image_dir} but no mask folder {mask_dir}")
    class_file = None
    if layout == "cityscapes":
        if classes or reduce_zero_label:
            raise UsageError("Cityscapes folders have fixed classes (labelIds -> 19 train ids); drop classes= / reduce_zero_label=")
        names, lut = list(CITYSCAPES_CLASSES), cityscapes_lut()
    elif layout == "ade20k" and classes is None:
        reduce = True if reduce_zero_label is None else bool(reduce_zero_label)
        names = list(ADE20K_CLASSES) if reduce else ["other", *ADE20K_CLASSES]
        lut = identity_lut(len(names), reduce_zero_label=reduce)
    else:
        if classes is not None:
            class_file = Path(classes).expanduser()
        else:
            found = [root / f for f in CLASS_FILES if (root / f).is_file()]
            if not found:
                raise DataError(
                    f"{root}: a {layout} segmentation folder needs its class names: add classes.txt (one name per line, "
                    "line i = mask value i) or pass the dataset option classes=FILE"
                )
            class_file = found[0]
        names = read_class_names(class_file)
        lut = identity_lut(len(names), reduce_zero_label=bool(reduce_zero_label))
    images, masks, skipped, named = _pairs(layout, image_dir, mask_dir)
    report_skipped(image_dir, skipped, named, what="image(s)", strict=bool(strict))
    if not images:
        raise DataError(f"{image_dir}: no image with a matching mask in {mask_dir}" + (f" (skipped: {skipped})" if skipped else ""))
    token = json.dumps({"layout": layout, "classes": names, "reduce": bool(reduce_zero_label), "n": len(images)}, sort_keys=True)
    return SegDataset(
        spec=spec, split=split, classes=names, lut=lut, image_paths=images, mask_paths=masks, layout="generic" if layout == "paired" else layout,
        skipped=skipped, source_files=[image_dir, mask_dir, *([class_file] if class_file else [])],
        cache_token=hashlib.sha256(token.encode()).hexdigest()[:16],
    )


# ---- the factory ----------------------------------------------------------------------------------


@register_dataset("synthetic-scenes", kind="segmentation", splits=("train", "val", "test"),
                  help="seeded street scenes (sky, building, road, sidewalk, grass, tree, person, car)")
def make_synthetic_scenes(arg: str | None, *, spec: str, split: str, seed: int, size: int = 96, train_images: int = 96,
                          val_images: int = 24, test_images: int = 24):
    """Build one split of `synthetic-scenes` in memory; data/synthetic_scenes.py draws the scenes."""
    if size < 16:
        raise UsageError(f"synthetic-scenes: size must be at least 16 pixels; got {size}")
    counts = {"train": train_images, "val": val_images, "test": test_images}
    for k, v in counts.items():
        if v < 0:
            raise UsageError(f"synthetic-scenes: {k}_images must not be negative; got {v}")
    n = counts[split]
    height, width = size, size * 4 // 3
    images = np.zeros((n, height, width, 3), np.uint8)
    masks = np.zeros((n, height, width), np.uint8)
    for i in range(n):
        rng = np.random.default_rng([seed % 2**32, SPLIT_IDS[split], i, GENERATOR_VERSION])
        images[i], masks[i] = render_scene(rng, height, width)
    token = json.dumps({"gen": GENERATOR_VERSION, "seed": seed, "split": split, "size": size, "n": n}, sort_keys=True)
    return SegDataset(
        spec=spec, split=split, classes=list(SCENE_CLASSES), lut=identity_lut(len(SCENE_CLASSES)), images=images, masks=masks,
        names=[f"scene-{split}-{i:05d}" for i in range(n)], layout="synthetic",
        cache_token=hashlib.sha256(token.encode()).hexdigest()[:16],
    )


def seg_dataset_splits(spec: str | DatasetSpec) -> list[str]:
    return parse_dataset(spec, kind="segmentation").splits()


def make_seg_dataset(spec: str | DatasetSpec, split: str = "train", seed: int = 0, **opts) -> SegDataset:
    """Build one split of a segmentation dataset from its spec (see the module docstring).

    `class_map=`: a class-map file (or ClassMap) folding the classes into groups; the other `opts`
    are the source's own options (seg: classes=, reduce_zero_label=; synthetic-scenes: size=, train_images=, ...).
    """
    spec = parse_dataset(spec, opts, kind="segmentation")
    options = dict(spec.options)
    class_map = options.pop("class_map", None)
    splits = spec.splits()
    if split not in splits:
        raise unknown_split(spec.text, split, splits)
    ds = spec.source.make(spec.arg, spec=spec.text, split=split, seed=int(seed), **options)
    ds.spec, ds.split = spec.text, split
    if class_map is not None:
        cmap = class_map if isinstance(class_map, ClassMap) else load_class_map(class_map)
        ds = ds.with_class_map(cmap)
        if cmap.path and Path(cmap.path).is_file():
            ds.source_files.append(Path(cmap.path))
    return ds


# ---- colours --------------------------------------------------------------------------------------

# Colours for common class names (Cityscapes' palette where it has the class), so masks look familiar.
NAMED_COLOURS = {
    "road": (128, 64, 128), "sidewalk": (244, 35, 232), "building": (70, 70, 70), "wall": (102, 102, 156), "fence": (190, 153, 153),
    "pole": (153, 153, 153), "traffic light": (250, 170, 30), "traffic sign": (220, 220, 0), "vegetation": (107, 142, 35),
    "terrain": (152, 251, 152), "sky": (70, 130, 180), "person": (220, 20, 60), "rider": (255, 0, 0), "car": (0, 0, 142),
    "truck": (0, 0, 70), "bus": (0, 60, 100), "train": (0, 80, 100), "motorcycle": (0, 0, 230), "bicycle": (119, 11, 32),
    "tree": (107, 142, 35), "grass": (152, 251, 152), "water": (30, 144, 255), "sign": (220, 220, 0),
}


def class_palette(classes: Sequence[str]) -> np.ndarray:
    """uint8 [K, 3] RGB colours: NAMED_COLOURS for known names, distinct hues for the rest."""
    import colorsys

    out = np.zeros((len(classes), 3), dtype=np.uint8)
    used = set()
    for i, name in enumerate(classes):
        colour = NAMED_COLOURS.get(str(name).strip().lower())
        if colour is None or colour in used:
            h = (i * 0.618033988749895) % 1.0  # golden-ratio hue steps keep neighbours apart
            s, v = (0.65, 0.95) if i % 2 == 0 else (0.9, 0.7)
            colour = tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h, s, v))
        used.add(colour)
        out[i] = colour
    return out


__all__ = [
    "ADE20K_CLASSES",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_LABEL_TO_TRAIN",
    "IGNORE_INDEX",
    "SegDataset",
    "class_palette",
    "make_seg_dataset",
    "read_mask",
    "seg_dataset_splits",
]
