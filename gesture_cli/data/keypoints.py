"""Keypoint datasets for `gx keypoint-train`: person crops with the 16 MPII body joints.

    ds = make_keypoint_dataset("mpii:annot/valid.json:images", split="all")
    b = ds.batch(range(8), size=224)   # images uint8 [8, 224, 224, 3], keypoints float32 [8, 16, 2] in [0, 1]

Sources register in the one dataset registry (`gesture_cli.data.registry`) as kind "keypoints": a
keypoint sample has joints, not a label.

`mpii:JSON[:IMGDIR]` reads MPII annotations in the JSON layout HRNet and mmpose use: a list of
person records `{"image", "joints": [16 x [x, y]], "joints_vis": [16], "center": [x, y], "scale"}`,
images in IMGDIR (default: the JSON's folder). The numbers are MPII's own: 1-based MATLAB pixel
coordinates (converted to 0-based here, as HRNet does), `scale` = person height / 200 px, `center`
near the middle of the body. A sample is the square crop of side `margin * 200 * scale` around the
centre moved down by 15 * scale px (HRNet's convention, so that the feet stay inside), zero-padded
where it leaves the image. Joints with `joints_vis` 0 (MPII writes them as -1, -1) are masked out of
the loss and of every metric.

Head size for PCKh. The official MPII evaluation normalises by 0.6 x the diagonal of an annotated
head box, which only the .mat release has. A record may carry `"headbox": [x1, y1, x2, y2]` (then
0.6 x its diagonal is used) or `"head_size"` in pixels; otherwise the head size is the distance
from upper neck to head top, the usual substitute when only joints are available (usually longer
than the official value, so PCKh computed this way is somewhat more lenient).

Coordinates. Keypoints come out normalised to the crop: u = (x + 0.5 - x0) / side, with x0 the
crop's left edge in pixels, so pixel centres map into (0, 1) and a horizontal flip of the crop is
exactly u -> 1 - u (plus swapping left and right joints: `flip_keypoints`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from gesture_cli.core.errors import DataError, UsageError, unknown_split
from gesture_cli.data.registry import DatasetSpec, dataset_sources, parse_dataset, path_arg_parts, register_dataset
from gesture_cli.data.splits import Splits, make_splits, random_holdout

# MPII joint order (HRNet / mmpose layout).
MPII_JOINTS = (
    "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
    "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist",
)
NUM_JOINTS = len(MPII_JOINTS)
FLIP_PAIRS = ((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13))  # right <-> left
FLIP_INDEX = tuple(
    next((b if a == j else a for a, b in FLIP_PAIRS if j in (a, b)), j) for j in range(NUM_JOINTS)
)  # joint j of a mirrored image is joint FLIP_INDEX[j] of the original
# Bones drawn by `gx infer keypoint`: legs, spine, head, arms.
SKELETON = ((0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9),
            (7, 12), (12, 11), (11, 10), (7, 13), (13, 14), (14, 15))
UPPER_NECK, HEAD_TOP = 8, 9
TORSO_PAIRS = ((13, 2), (12, 3))  # torso diameter: l_shoulder-r_hip, else r_shoulder-l_hip
MPII_PIXEL_STD = 200.0  # MPII `scale` is the person's height in units of 200 px
MPII_CENTER_SHIFT = 15.0  # px per unit of scale that the crop centre moves down (HRNet)
HEADBOX_FACTOR = 0.6  # official PCKh head size = 0.6 x head-box diagonal


def side_of(joint: int) -> str:
    """'right', 'left' or 'centre' for a joint index (for colouring skeletons)."""
    name = MPII_JOINTS[joint]
    return "right" if name.startswith("r_") else "left" if name.startswith("l_") else "centre"


def flip_keypoints(keypoints, visible=None):
    """Mirror normalised keypoints [..., 16, 2] (u -> 1 - u) and swap right/left joints; same for `visible` [..., 16].

    Works on numpy arrays and torch tensors. Returns (keypoints, visible) or just keypoints.
    """
    index = list(FLIP_INDEX)
    flipped = keypoints[..., index, :] * 1  # a copy in either library
    flipped[..., 0] = 1 - flipped[..., 0]
    if visible is None:
        return flipped
    return flipped, visible[..., index]


@dataclass
class KeypointBatch:
    """One batch of crops; norm sizes are in crop units (fractions of the crop side), NaN = unknown."""

    images: np.ndarray  # uint8 [B, S, S, 3]
    keypoints: np.ndarray  # float32 [B, 16, 2], normalised to the crop
    visible: np.ndarray  # float32 [B, 16], 1 = annotated
    head_size: np.ndarray  # float32 [B]
    torso_size: np.ndarray  # float32 [B]


@dataclass
class KeypointDataset:
    """Person samples: where to crop each image and its 16 joints (source pixels, 0-based)."""

    spec: str
    split: str
    joints: np.ndarray  # float64 [N, 16, 2] x, y in source-image pixels
    visible: np.ndarray  # bool [N, 16]
    boxes: np.ndarray  # float64 [N, 3] crop square (x0, y0, side) in source pixels
    head_sizes: np.ndarray  # float64 [N] source pixels; NaN = unknown
    names: list[str]  # one per sample, e.g. "valid.json record 12 (015601864.jpg)"
    images: np.ndarray | None = None  # uint8 [N, H, W, 3] when held in memory (synthetic)
    paths: list[Path] | None = None  # image files, read lazily (mpii)
    head_source: str = "joints"  # headbox | head_size | joints | mixed: where head sizes came from
    skipped: dict[str, int] = field(default_factory=dict)
    source_files: list[Path] = field(default_factory=list)  # fingerprinted for the RunDir cache key
    cache_token: str = ""

    def __post_init__(self) -> None:
        self.joints = np.asarray(self.joints, dtype=np.float64).reshape(-1, NUM_JOINTS, 2)
        n = len(self.joints)
        self.visible = np.asarray(self.visible, dtype=bool).reshape(n, NUM_JOINTS)
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(n, 3)
        self.head_sizes = np.asarray(self.head_sizes, dtype=np.float64).reshape(n)
        if (self.images is None) == (self.paths is None):
            raise ValueError("KeypointDataset needs exactly one of images= or paths=")
        held = len(self.images) if self.images is not None else len(self.paths)
        if held != n or len(self.names) != n:
            raise ValueError(f"KeypointDataset: {n} samples but {held} images and {len(self.names)} names")

    def __len__(self) -> int:
        return len(self.joints)

    def __repr__(self) -> str:
        return f"KeypointDataset(spec={self.spec!r}, split={self.split!r}, {len(self)} people)"

    def source_image(self, i: int) -> np.ndarray:
        """The full image of sample i, uint8 HxWx3 RGB."""
        from gesture_cli.data.images import decode_image, to_rgb

        if self.images is not None:
            return self.images[i]
        return to_rgb(decode_image(self.paths[i]))

    def crop_box(self, i: int) -> tuple[int, int, int]:
        """(x0, y0, side) of sample i's crop in whole pixels."""
        x0, y0, side = self.boxes[i]
        return int(round(x0)), int(round(y0)), max(2, int(round(side)))

    def crop(self, i: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 [size, size, 3] crop, float32 [16, 2] keypoints normalised to it)."""
        from gesture_cli.data.images import resize_image

        img = self.source_image(i)
        x0, y0, side = self.crop_box(i)
        h, w = img.shape[:2]
        if (x0, y0, side) == (0, 0, h) and h == w:
            out = img
        else:
            out = np.zeros((side, side, 3), dtype=np.uint8)  # outside the image: black padding
            c0, r0, c1, r1 = max(0, x0), max(0, y0), min(w, x0 + side), min(h, y0 + side)
            if c1 > c0 and r1 > r0:
                out[r0 - y0 : r1 - y0, c0 - x0 : c1 - x0] = img[r0:r1, c0:c1]
        return resize_image(out, size), self.normalised(i)

    def normalised(self, i: int) -> np.ndarray:
        """float32 [16, 2]: sample i's joints in crop units (see the module docstring)."""
        x0, y0, side = self.crop_box(i)
        return ((self.joints[i] + 0.5 - (x0, y0)) / side).astype(np.float32)

    def batch(self, idx: Sequence[int], size: int) -> KeypointBatch:
        idx = [int(i) for i in np.asarray(idx, dtype=np.int64).reshape(-1)]
        crops = [self.crop(i, size) for i in idx]
        kps = np.stack([k for _, k in crops]) if crops else np.zeros((0, NUM_JOINTS, 2), np.float32)
        vis = self.visible[idx].astype(np.float32)
        sides = np.array([self.crop_box(i)[2] for i in idx], dtype=np.float64)
        return KeypointBatch(
            images=np.stack([c for c, _ in crops]) if crops else np.zeros((0, size, size, 3), np.uint8),
            keypoints=kps,
            visible=vis,
            head_size=(self.head_sizes[idx] / np.maximum(sides, 1)).astype(np.float32),
            torso_size=torso_sizes(kps, vis),
        )

    def subset(self, idx: Sequence[int], *, split: str | None = None) -> KeypointDataset:
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        return replace(
            self,
            split=split if split is not None else self.split,
            joints=self.joints[idx],
            visible=self.visible[idx],
            boxes=self.boxes[idx],
            head_sizes=self.head_sizes[idx],
            names=[self.names[i] for i in idx],
            images=self.images[idx] if self.images is not None else None,
            paths=[self.paths[i] for i in idx] if self.paths is not None else None,
            skipped=dict(self.skipped),
            source_files=list(self.source_files),
        )


def torso_sizes(keypoints: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """float32 [B]: torso diameter (l_shoulder to r_hip, else r_shoulder to l_hip); NaN when neither pair is annotated."""
    out = np.full(len(keypoints), np.nan, dtype=np.float32)
    for a, b in reversed(TORSO_PAIRS):  # the first pair wins where both are annotated
        ok = (visible[:, a] > 0) & (visible[:, b] > 0)
        d = np.linalg.norm(keypoints[:, a] - keypoints[:, b], axis=-1)
        out = np.where(ok & (d > 0), d, out).astype(np.float32)
    return out


# ---- registry -----------------------------------------------------------------------------------


def keypoint_dataset_splits(spec: str | DatasetSpec) -> list[str]:
    return parse_dataset(spec, kind="keypoints").splits()


def list_keypoint_datasets() -> list[tuple[str, str]]:
    return [(s.name, s.help) for s in sorted(dataset_sources("keypoints").values(), key=lambda s: s.name)]


def make_keypoint_dataset(spec: str | DatasetSpec, split: str = "train", seed: int = 0, **opts) -> KeypointDataset:
    """Build one split of a keypoint dataset from its spec (`mpii:JSON[:IMGDIR]`, `synthetic-keypoints`)."""
    spec = parse_dataset(spec, opts, kind="keypoints")
    splits = spec.splits()
    if split not in splits:
        raise unknown_split(spec.text, split, splits, kind="keypoint dataset")
    ds = spec.source.make(spec.arg, spec=spec.text, split=split, seed=int(seed), **spec.options)
    ds.spec, ds.split = spec.text, split
    return ds


KEYPOINT_HOLDOUT_STREAM = 11  # random stream of the validation share carved out of the training split


def make_keypoint_splits(spec: str | DatasetSpec, dataset_opts: Sequence[str] = (), *, val_fraction: float, max_samples: int | None,
                         seed: int) -> Splits:
    """Train / validation / test of a keypoint dataset, as `gx keypoint-train` trains on them.

    Here, below training and evaluation, because `gx evaluate keypoint` rebuilds the same validation
    share from a model's recorded config to score only what training held out."""
    spec = parse_dataset(spec, dataset_opts, kind="keypoints")
    return make_splits(spec.text, spec.splits(), lambda split: make_keypoint_dataset(spec, split=split, seed=seed),
                       val_fraction=val_fraction, holdout=random_holdout(seed, stream=KEYPOINT_HOLDOUT_STREAM), max_samples=max_samples,
                       seed=seed)


# ---- mpii:JSON[:IMGDIR] -------------------------------------------------------------------------

MPII_ARG = "JSON[:IMGDIR]"  # the form of its argument; data.registry.path_arg_parts splits it into its two paths


def split_mpii_arg(arg: str) -> tuple[Path, Path]:
    """'annot/valid.json:images' -> (json path, image dir); without ':IMGDIR' the images sit beside the JSON."""
    json_part, img_part = (*path_arg_parts(MPII_ARG, arg), "")[:2]
    json_path = Path(json_part).expanduser()
    return json_path, (Path(img_part).expanduser() if img_part.strip() else json_path.parent)


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _pairs(value, where: str, key: str) -> np.ndarray:
    if not isinstance(value, list):
        raise DataError(f"{where}: '{key}' must be a list of 16 [x, y] pairs, got {type(value).__name__}")
    if len(value) != NUM_JOINTS:
        raise DataError(f"{where}: '{key}' has {len(value)} joints; MPII needs {NUM_JOINTS} [x, y] pairs (r_ankle .. l_wrist)")
    out = np.zeros((NUM_JOINTS, 2))
    for j, pair in enumerate(value):
        xy = [_number(v) for v in pair] if isinstance(pair, list) else []
        if len(xy) < 2 or xy[0] is None or xy[1] is None:
            raise DataError(f"{where}: joint {j} ({MPII_JOINTS[j]}) is {pair!r}; expected [x, y] numbers")
        out[j] = xy[:2]
    return out


def read_mpii_records(json_path: Path, img_dir: Path, *, margin: float = 1.25) -> dict:
    """Parse and check an MPII JSON; the first problem raises a DataError naming the file and record."""
    if not json_path.is_file():
        raise DataError(f"{json_path}: annotation file not found; use mpii:JSON[:IMGDIR] with an MPII JSON (HRNet / mmpose layout)")
    if not img_dir.is_dir():
        raise DataError(f"{img_dir}: image folder not found; use mpii:JSON:IMGDIR with the folder holding the MPII images")
    try:
        records = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{json_path}: not valid JSON ({exc})") from None
    if isinstance(records, dict) and isinstance(records.get("annotations"), list) and "images" in records:
        raise DataError(f"{json_path}: this is a COCO-style file (images + annotations); mpii: reads the per-person list "
                        "[{image, joints, joints_vis, center, scale}, ...]")
    if not isinstance(records, list):
        raise DataError(f"{json_path}: the top level must be a list of person records, got {type(records).__name__}")
    if not records:
        raise DataError(f"{json_path}: no person records")
    joints, visible, boxes, heads, names, paths, kinds = [], [], [], [], [], [], set()
    for k, rec in enumerate(records):
        where = f"{json_path}: record {k}"
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected an object with image, joints, joints_vis, center, scale; got {type(rec).__name__}")
        missing = [key for key in ("image", "joints", "center", "scale") if key not in rec]
        if missing:
            raise DataError(f"{where}: missing key '{missing[0]}' (each record needs image, joints, joints_vis, center, scale)")
        image = rec["image"]
        if not isinstance(image, str) or not image.strip():
            raise DataError(f"{where}: 'image' must be a file name, got {image!r}")
        where = f"{json_path}: record {k} ({image})"
        pts = _pairs(rec["joints"], where, "joints")
        vis_raw = rec.get("joints_vis")
        if vis_raw is None:  # no flags: a joint is annotated unless MPII's (-1, -1) placeholder
            vis = ~np.all(pts == -1, axis=1)
        else:
            if not isinstance(vis_raw, list) or len(vis_raw) != NUM_JOINTS:
                n = len(vis_raw) if isinstance(vis_raw, list) else type(vis_raw).__name__
                raise DataError(f"{where}: 'joints_vis' has {n} entries; it must have one 0/1 flag per joint ({NUM_JOINTS})")
            flags = [_number(v[0] if isinstance(v, list) and v else v) for v in vis_raw]
            if any(f is None for f in flags):
                raise DataError(f"{where}: 'joints_vis' must hold numbers (0 or 1), got {vis_raw!r}")
            vis = np.array(flags) > 0
        scale = _number(rec["scale"])
        if scale is None or scale <= 0:
            raise DataError(f"{where}: 'scale' is {rec['scale']!r}; it must be a positive number (person height / 200 px)")
        center = rec["center"]
        cxy = [_number(v) for v in center] if isinstance(center, list) else []
        if len(cxy) != 2 or None in cxy:
            raise DataError(f"{where}: 'center' is {center!r}; expected [x, y]")
        path = img_dir / image
        if not path.is_file():
            raise DataError(f"{where}: image {path} not found; check IMGDIR in mpii:JSON:IMGDIR")
        pts = pts - 1.0  # MATLAB 1-based -> 0-based pixels (HRNet does the same)
        cx, cy = cxy[0] - 1.0, cxy[1] - 1.0 + MPII_CENTER_SHIFT * scale
        side = margin * MPII_PIXEL_STD * scale
        head, kind = _head_size(rec, pts, vis, where)
        kinds.add(kind)
        joints.append(pts)
        visible.append(vis)
        boxes.append((cx - side / 2, cy - side / 2, side))
        heads.append(head)
        names.append(f"{json_path.name} record {k} ({image})")
        paths.append(path)
    return {"joints": np.stack(joints), "visible": np.stack(visible), "boxes": np.array(boxes), "head_sizes": np.array(heads),
            "names": names, "paths": paths, "head_source": kinds.pop() if len(kinds) == 1 else "mixed"}


def _head_size(rec: dict, pts: np.ndarray, vis: np.ndarray, where: str) -> tuple[float, str]:
    """(head size in pixels or NaN, where it came from); see the module docstring."""
    if "headbox" in rec:
        box = rec["headbox"]
        xy = [_number(v) for v in box] if isinstance(box, list) else []
        if len(xy) != 4 or None in xy:
            raise DataError(f"{where}: 'headbox' is {box!r}; expected [x1, y1, x2, y2]")
        return HEADBOX_FACTOR * math.hypot(xy[2] - xy[0], xy[3] - xy[1]), "headbox"
    if "head_size" in rec:
        size = _number(rec["head_size"])
        if size is None or size <= 0:
            raise DataError(f"{where}: 'head_size' is {rec['head_size']!r}; expected a positive number of pixels")
        return size, "head_size"
    if vis[UPPER_NECK] and vis[HEAD_TOP]:
        d = float(np.linalg.norm(pts[HEAD_TOP] - pts[UPPER_NECK]))
        return (d if d > 0 else math.nan), "joints"
    return math.nan, "joints"


@register_dataset(
    "mpii",
    kind="keypoints",
    help="mpii:JSON[:IMGDIR]: MPII person records (HRNet/mmpose JSON: image, joints 16x2, joints_vis, center, scale); "
         "images beside the JSON unless IMGDIR is given. One split: all.",
    splits=("all",),
    arg=MPII_ARG,
    arg_required=True,
)
def make_mpii(arg: str, *, spec: str, split: str, seed: int, margin: float = 1.25) -> KeypointDataset:
    """Person crops of side margin * 200 * scale px (see the module docstring)."""
    if not margin > 0:
        raise UsageError(f"mpii option margin must be positive; got {margin}")
    json_path, img_dir = split_mpii_arg(arg)
    rec = read_mpii_records(json_path, img_dir, margin=margin)
    token = hashlib.sha256(json.dumps({"margin": margin, "img_dir": str(img_dir.resolve())}).encode()).hexdigest()[:16]
    return KeypointDataset(
        spec=spec, split=split, joints=rec["joints"], visible=rec["visible"], boxes=rec["boxes"], head_sizes=rec["head_sizes"],
        names=rec["names"], paths=rec["paths"], head_source=rec["head_source"], source_files=[json_path, img_dir],
        cache_token=f"mpii-{token}",
    )


__all__ = [
    "FLIP_INDEX", "FLIP_PAIRS", "MPII_JOINTS", "NUM_JOINTS", "SKELETON", "KeypointBatch", "KeypointDataset",
    "flip_keypoints", "keypoint_dataset_splits", "list_keypoint_datasets", "make_keypoint_dataset", "make_keypoint_splits", "torso_sizes",
]
