"""ImageDataset, the one interface every image-classification source returns, and image helpers.

Images are uint8, HxW (grey) or HxWx3 in RGB order (never BGR). A dataset holds them in memory
(`images`, e.g. Sign MNIST's [N, 28, 28]) or reads files on demand (`paths`, e.g. `folder:`).
cv2 is imported inside the functions that need it so that importing this module stays cheap.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from gesture_cli.core.errors import DataError, GxWarning, UsageError

# File suffixes read as images by `folder:` (lower case); anything else is counted as skipped.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".jp2"})

NAMED_SKIPS = 3  # skipped files named in a warning or error (`report_skipped`); the counts cover all of them

# PIL modes that decode to one channel; every other mode (RGB, RGBA, P, CMYK, ...) decodes to colour.
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


@dataclass
class ImageDataset:
    spec: str  # the spec string as given, e.g. "csv:data/sign_mnist_train.csv"
    split: str  # "train" | "test" | "val" | "all" ...
    classes: list[str]  # label names; index = label id
    labels: np.ndarray  # int64 [N], values 0..len(classes)-1
    images: np.ndarray | None = None  # uint8 [N, H, W] grey or [N, H, W, 3] RGB, when held in memory
    paths: list[Path] | None = None  # image files, when read lazily
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count; nothing is dropped silently
    source_files: list[Path] = field(default_factory=list)  # files/dirs read (fingerprinted for the cache key)
    cache_token: str = ""  # changes when a generator, its params or a split seed change
    # Lazily read files only: True when any file of the dataset is colour (from a header scan), so
    # grey files come back as RGB too; None = unknown, decided per batch.
    color: bool | None = None
    # For a split cut from the source's 'all' split (a CSV or flat folder without split files): its
    # rows in 'all', int64 [N]. Feature extraction uses it to store 'all' as train + test rows
    # instead of a second copy of their features.
    all_rows: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.classes = [str(c) for c in self.classes]
        if (self.images is None) == (self.paths is None):
            raise ValueError("ImageDataset needs exactly one of images= (in memory) or paths= (files)")
        n = len(self.images) if self.images is not None else len(self.paths)
        if n != len(self.labels):
            raise ValueError(f"ImageDataset: {n} images but {len(self.labels)} labels")
        if self.images is not None:
            if self.images.dtype != np.uint8 or not (self.images.ndim == 3 or (self.images.ndim == 4 and self.images.shape[-1] == 3)):
                raise ValueError(f"ImageDataset.images must be uint8 [N,H,W] or [N,H,W,3], got {self.images.dtype} {self.images.shape}")
        else:
            self.paths = [Path(p) for p in self.paths]
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise ValueError(f"ImageDataset: labels must lie in 0..{len(self.classes) - 1}")

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:  # the default would print every path / the pixel array
        held = f"images {self.images.dtype}{list(self.images.shape)}" if self.images is not None else f"{len(self.paths)} files"
        skipped = f", skipped={self.skipped}" if self.skipped else ""
        return f"ImageDataset(spec={self.spec!r}, split={self.split!r}, {len(self)} samples, {self.num_classes} classes, {held}{skipped})"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def is_rgb(self) -> bool:
        """True when images come back as HxWx3 (in memory: the array's shape; files: `color`)."""
        return self.images.ndim == 4 if self.images is not None else bool(self.color)

    def image(self, i: int) -> np.ndarray:
        """Image i: uint8 HxW (grey) or HxWx3 (RGB). In-memory images are returned as views: do not write."""
        if self.images is not None:
            return self.images[i]
        img = decode_image(self.paths[i])
        return to_rgb(img) if self.color and img.ndim == 2 else img

    def batch(self, idx: Sequence[int], size: int | None = None) -> np.ndarray:
        """uint8 [B, H, W] or [B, H, W, 3] for the given indices.

        Images are resized to size x size (cv2: INTER_AREA down, INTER_LINEAR up) when `size` is given
        and differs; without `size`, images of different sizes are a UsageError. Grey and RGB are never
        mixed: if the dataset (or, for files of unknown colour, the batch) has any RGB, grey becomes RGB.
        """
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if self.images is not None and (size is None or self.images.shape[1:3] == (size, size)):
            return self.images[idx]  # fancy indexing copies: the caller may write to it
        imgs = [self.image(int(i)) for i in idx]
        if not imgs:
            side = (size, size) if size else (self.images.shape[1:3] if self.images is not None else (0, 0))
            return np.zeros((0, *side, *((3,) if self.is_rgb else ())), dtype=np.uint8)
        if self.is_rgb or any(im.ndim == 3 for im in imgs):
            imgs = [to_rgb(im) for im in imgs]
        if size is not None:
            imgs = [resize_image(im, size) for im in imgs]
        elif len({im.shape for im in imgs}) > 1:
            shapes = sorted({f"{im.shape[1]}x{im.shape[0]}" for im in imgs})
            raise UsageError(f"images of {self.spec} differ in size ({', '.join(shapes[:3])}...); pass size= to resize them to one square size")
        return np.stack(imgs)

    def subset(self, idx: Sequence[int], *, split: str | None = None) -> ImageDataset:
        """A dataset of the selected rows (same classes, skip counts, source files and cache token)."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        return replace(
            self,
            split=split if split is not None else self.split,
            labels=self.labels[idx],
            images=self.images[idx] if self.images is not None else None,
            paths=[self.paths[i] for i in idx] if self.paths is not None else None,
            skipped=dict(self.skipped),
            source_files=list(self.source_files),
            all_rows=self.all_rows[idx] if self.all_rows is not None else None,
        )

    def class_counts(self) -> np.ndarray:
        """int64 [num_classes]: how many samples each class has in this split."""
        return np.bincount(self.labels, minlength=self.num_classes)


def to_rgb(img: np.ndarray) -> np.ndarray:
    """HxW grey -> HxWx3 (the grey value in every channel); HxWx3 passes through."""
    return np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img


def resize_image(img: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size: INTER_AREA when shrinking both sides, INTER_LINEAR otherwise."""
    import cv2

    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    interp = cv2.INTER_AREA if h >= size and w >= size else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


def decode_image(path: Path) -> np.ndarray:
    """Read an image file as uint8 HxW (grey) or HxWx3 RGB; alpha dropped, 16-bit scaled to 8-bit."""
    import cv2

    path = Path(path)
    try:
        buf = np.fromfile(path, dtype=np.uint8)  # np.fromfile + imdecode: non-ASCII paths work on every OS
    except OSError as e:
        raise DataError(f"{path}: cannot read the image file ({e.strerror or e}); check it exists and is readable") from None
    # ANYCOLOR keeps grey files one-channel; ANYDEPTH keeps 16-bit data so it can be scaled, not clipped.
    img = cv2.imdecode(buf, cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH) if buf.size else None
    if img is None:
        raise DataError(f"{path}: not a readable image (empty, truncated, corrupt or unsupported format); remove or re-export it")
    if img.dtype == np.uint16:
        img = ((img.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif img.dtype != np.uint8:
        f = img.astype(np.float32)
        img = np.clip(f * 255.0 if f.max() <= 1.0 else f, 0, 255).round().astype(np.uint8)
    if img.ndim == 3:
        c = img.shape[2]
        if c == 1 or c == 2:  # grey (+ alpha)
            img = np.ascontiguousarray(img[:, :, 0])
        elif c == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        else:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return img


def probe_image(path: Path) -> bool | None:
    """Header-only check: True for a colour image, False for grey, None if it is not a readable image.

    Pillow reads only the header here (microseconds), so a folder of thousands of images is checked
    quickly; a file whose header is fine but whose data is truncated fails later, in `decode_image`.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.mode not in _GREY_MODES
    except Exception:  # Pillow raises many types (UnidentifiedImageError, OSError, SyntaxError, DecompressionBomb...)
        return None


BROKEN_LINK = "broken link (target missing)"  # the `skipped` reason for a link found by `broken_link_target`


def stratified_split(labels: np.ndarray, *, test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split: (train_idx, test_idx), each sorted ascending.

    Per class, `round(n * test_fraction)` samples go to test (at least 1 and at most n-1 when the class
    has 2 or more samples; a single sample stays in train). Each class draws from its own generator
    seeded by (seed, class id), so adding samples to one class leaves the others' split unchanged.
    """
    labels = np.asarray(labels, dtype=np.int64)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n = len(idx)
        n_test = 0 if n < 2 else min(n - 1, max(1, int(round(n * test_fraction))))
        perm = np.random.default_rng([seed % 2**32, int(c)]).permutation(idx)
        test.append(perm[:n_test])
        train.append(perm[n_test:])
    if not train:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def report_skipped(where: Path, skipped: dict[str, int], named: list[str], *, what: str, strict: bool) -> None:
    """Name the first skipped files: a GxWarning, or with `strict` a DataError (nothing is dropped silently)."""
    total = sum(skipped.values())
    if not total:
        return
    counts = ", ".join(f"{reason}: {n}" for reason, n in skipped.items())
    shown = ", ".join(named) + (f" and {total - len(named)} more" if total > len(named) else "")
    if strict:
        raise DataError(f"{where}: {total} {what} not read ({counts}): {shown}; fix or remove them, or leave out strict=true to skip them with a warning")
    warnings.warn(GxWarning(f"{where}: skipped {total} {what} ({counts}): {shown}; the dataset option strict=true makes this an error"),
                  stacklevel=3)


def check_two_classes(dataset: str, classes: Sequence[str], labels: np.ndarray, *, folder: bool, what: str = "a classifier") -> None:
    """DataError unless `labels` (the training split's, indices into `classes`) hold at least two classes: with one
    (a folder with a single class subfolder, or DIR/images/*.jpg read as class 'images') a classifier learns
    nothing and scores a meaningless accuracy of 1.0."""
    present = [str(classes[i]) for i in np.unique(labels)]
    if len(present) >= 2:
        return
    named = ", ".join(f"'{c}'" for c in present) or "none"
    if len(classes) < 2:
        held = f"has {len(classes)} class ({named})"
    else:
        held = f"has {len(classes)} classes, but its training split holds only {named}"
    hint = (": folder:DIR expects one subfolder of images per class, DIR/<class>/*.jpg (or DIR/train/<class>/*.jpg and DIR/test/<class>/*.jpg)"
            if folder else "")
    raise DataError(f"dataset '{dataset}' {held}; {what} needs at least 2{hint}")
