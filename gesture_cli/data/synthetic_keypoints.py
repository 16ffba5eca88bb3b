"""`synthetic-keypoints`: seeded stick figures with the 16 MPII joints, the embedded keypoint default.

Each image is one front-facing figure (the person's right side on the image's left, as in most MPII
photos, so a mirrored figure with swapped joint labels is again a valid sample): a filled torso,
a round head between upper neck and head top, and two-segment limbs at random angles (arms from
hanging to raised overhead, elbows and knees bent either way, torso lean and head tilt), at a random
scale and position, over a random background (colour gradient, clutter shapes, pixel noise). Some
figures get a block of another colour over an elbow, wrist, knee or ankle; the
joints under it are marked not visible, as MPII marks joints nobody could annotate. Drawn at 4x
and area-downsampled for anti-aliased strokes. The distractor shapes include straight strokes in
random colours that look like limbs; `clutter=false` turns shapes and occluders off.

The crop is the whole image (box (0, 0, side)); the head size for PCKh is the upper neck to head top
distance, as for `mpii:` records without head boxes. Sample k of a split comes from its own
generator seeded by (seed, split, k): splits never share a stream, and more samples keep the first
ones unchanged.
"""

from __future__ import annotations

import zlib

import numpy as np

from gesture_cli.core.errors import UsageError
from gesture_cli.data.keypoints import HEAD_TOP, NUM_JOINTS, UPPER_NECK, KeypointDataset
from gesture_cli.data.registry import register_dataset

GENERATOR_VERSION = 1  # bump whenever the drawing changes: it is part of the cache token
SUPERSAMPLE = 4
_SHIFT = 2  # cv2 fixed-point fractional bits
# Segment lengths as fractions of body height (pelvis to head top + hip to ankle is about 1).
_TORSO, _NECK, _HEAD = 0.30, 0.05, 0.13
_UPPER_ARM, _FOREARM = 0.17, 0.15
_THIGH, _SHIN = 0.25, 0.24
_SHOULDER_HALF, _HIP_HALF = 0.11, 0.07
_OCCLUDABLE = (10, 11, 14, 15, 0, 1, 4, 5)  # wrists, elbows, ankles, knees
DEFAULT_COUNTS = {"train": 1000, "val": 200, "test": 200}


def _unit(deg: float) -> np.ndarray:
    """Screen direction at `deg` degrees from straight down, turning towards +x (image right)."""
    t = np.deg2rad(deg)
    return np.array([np.sin(t), np.cos(t)])


def sample_pose(rng: np.random.Generator) -> np.ndarray:
    """float64 [16, 2]: one figure's joints in body-height units (y down), pelvis at the origin."""
    p = np.zeros((NUM_JOINTS, 2))
    lean = rng.uniform(-20, 20)  # degrees from upright
    up = -_unit(lean)  # towards the head
    across = np.array([-up[1], up[0]])  # towards the person's left (image right)
    width = rng.uniform(0.7, 1.1)  # narrower when the body turns a little
    p[7] = p[6] + _TORSO * up  # thorax
    p[8] = p[7] + _NECK * up  # upper neck
    p[9] = p[8] + _HEAD * -_unit(lean + rng.uniform(-20, 20))  # head top, tilted
    p[12], p[13] = p[7] - _SHOULDER_HALF * width * across, p[7] + _SHOULDER_HALF * width * across
    p[2], p[3] = p[6] - _HIP_HALF * width * across, p[6] + _HIP_HALF * width * across
    for side, (shoulder, elbow, wrist, hip, knee, ankle) in ((-1, (12, 11, 10, 2, 1, 0)), (1, (13, 14, 15, 3, 4, 5))):
        # angles from straight down, positive = away from the body; side flips them to screen angles
        upper = rng.uniform(-15, 170)
        fore = upper + rng.uniform(-130, 100)
        p[elbow] = p[shoulder] + _UPPER_ARM * _unit(lean + side * upper)
        p[wrist] = p[elbow] + _FOREARM * _unit(lean + side * fore)
        thigh = rng.uniform(-12, 45)
        shin = thigh + rng.uniform(-50, 35)
        p[knee] = p[hip] + _THIGH * _unit(side * thigh)
        p[ankle] = p[knee] + _SHIN * _unit(side * shin)
    return p


def _colour(rng: np.random.Generator, far_from: np.ndarray | None = None) -> np.ndarray:
    """A random RGB colour; with `far_from`, one whose mean brightness differs from it by at least 70."""
    if far_from is None:
        return rng.uniform(0, 255, size=3)
    ref = float(np.mean(far_from))
    lo, hi = (0.0, ref - 70) if ref - 70 >= 255 - (ref + 70) else (ref + 70, 255.0)  # the roomier side
    tint = rng.uniform(-40, 40, size=3)
    return np.clip(tint - tint.mean() + rng.uniform(lo, hi), 0, 255)


def render_figure(rng: np.random.Generator, side: int, *, clutter: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uint8 [side, side, 3] image, float64 [16, 2] joints in pixels (0-based), bool [16] visible)."""
    import cv2

    pose = sample_pose(rng)
    big = side * SUPERSAMPLE
    # Fit the figure (joints + head radius) into the image at a random size and place.
    r_head = 0.5 * np.linalg.norm(pose[HEAD_TOP] - pose[UPPER_NECK])
    lo, hi = pose.min(0) - r_head, pose.max(0) + r_head
    extent = (hi - lo).max()
    scale = rng.uniform(0.55, 0.92) * (side - 4) / extent  # pixels per body height
    room = (side - 4) - (hi - lo) * scale
    offset = 2 + rng.uniform(0, 1, size=2) * np.maximum(room, 0) - lo * scale
    joints = pose * scale + offset  # continuous pixel coordinates, (0, 0) = top-left corner of the image

    # Background: gradient between two colours, clutter shapes, later noise.
    bg0, bg1 = _colour(rng), _colour(rng)
    t = np.linspace(0, 1, side, dtype=np.float32)  # the gradient is smooth: compute it small, resize up
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.clip(0.5 + (t[:, None] - 0.5) * np.sin(angle) + (t[None, :] - 0.5) * np.cos(angle), 0, 1)[:, :, None]
    small = (bg0 * (1 - ramp) + bg1 * ramp).astype(np.uint8)
    bg_mean = small.reshape(-1, 3).mean(0)
    canvas = np.ascontiguousarray(cv2.resize(small, (big, big), interpolation=cv2.INTER_LINEAR))
    for _ in range(rng.integers(2, 7) if clutter else 0):
        c = tuple(float(v) for v in _colour(rng))
        a, b = (rng.uniform(0, big, size=2).astype(int) for _ in range(2))
        if rng.random() < 0.5:
            cv2.rectangle(canvas, tuple(int(v) for v in a), tuple(int(v) for v in b), c, -1)
        else:
            cv2.line(canvas, tuple(int(v) for v in a), tuple(int(v) for v in b), c, int(rng.integers(1, 3)) * SUPERSAMPLE, cv2.LINE_AA)

    fig = tuple(float(v) for v in _colour(rng, far_from=bg_mean))
    k = SUPERSAMPLE * (1 << _SHIFT)

    def fx(pt) -> tuple[int, int]:
        return tuple(int(v) for v in np.rint(np.asarray(pt) * k))

    limb = max(1, int(round(0.045 * scale * SUPERSAMPLE)))
    torso = np.array([joints[12], joints[13], joints[3], joints[2]])
    cv2.fillPoly(canvas, [np.rint(torso * k).astype(np.int32)], fig, cv2.LINE_AA, _SHIFT)
    for a, b in ((12, 11), (11, 10), (13, 14), (14, 15), (2, 1), (1, 0), (3, 4), (4, 5), (8, 7)):
        cv2.line(canvas, fx(joints[a]), fx(joints[b]), fig, limb, cv2.LINE_AA, _SHIFT)
    centre = (joints[HEAD_TOP] + joints[UPPER_NECK]) / 2
    cv2.circle(canvas, fx(centre), int(round(r_head * scale * k)), fig, -1, cv2.LINE_AA, _SHIFT)

    visible = np.ones(NUM_JOINTS, dtype=bool)
    if clutter and rng.random() < 0.25:  # an occluder over one limb end, in a colour unlike the figure
        j = int(rng.choice(_OCCLUDABLE))
        half = rng.uniform(0.05, 0.1) * scale
        c0 = joints[j] - half * rng.uniform(0.5, 1.5, size=2)
        c1 = joints[j] + half * rng.uniform(0.5, 1.5, size=2)
        occ = tuple(float(v) for v in _colour(rng, far_from=np.array(fig)))
        cv2.rectangle(canvas, fx(c0), fx(c1), occ, -1, cv2.LINE_AA, _SHIFT)
        inside = np.all((joints >= c0) & (joints <= c1), axis=1)
        visible &= ~inside

    img = cv2.resize(canvas, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(2, 8))
    return np.clip(img, 0, 255).astype(np.uint8), joints - 0.5, visible


@register_dataset(
    "synthetic-keypoints",
    kind="keypoints",
    help="synthetic-keypoints: seeded stick figures with the 16 MPII joints (train 1000, val 200, test 200 at 64 px); "
         "options train_samples, eval_samples, side, clutter.",
    splits=("train", "val", "test"),
)
def make_synthetic_keypoints(arg, *, spec: str, split: str, seed: int, train_samples: int | None = None,
                             eval_samples: int | None = None, side: int = 64, clutter: bool = True) -> KeypointDataset:
    """One split of stick figures; `train_samples` / `eval_samples` (val and test) override the default counts.

    `clutter=False` draws plain gradient backgrounds without distractor shapes or occluders: an easier
    task that a small random-init backbone learns in a few hundred steps (tests, quick sanity runs).
    """
    n = (train_samples if split == "train" else eval_samples) or DEFAULT_COUNTS[split]
    if n < 1:
        raise UsageError(f"synthetic-keypoints: the sample count must be at least 1; got {n}")
    if side < 16:
        raise UsageError(f"synthetic-keypoints: side must be at least 16 pixels; got {side}")
    code = zlib.crc32(split.encode())
    images, joints, visible = [], [], []
    for i in range(n):
        img, pts, vis = render_figure(np.random.default_rng([seed % 2**32, code, i]), side, clutter=clutter)
        images.append(img)
        joints.append(pts)
        visible.append(vis)
    joints = np.stack(joints)
    heads = np.linalg.norm(joints[:, HEAD_TOP] - joints[:, UPPER_NECK], axis=-1)
    return KeypointDataset(
        spec=spec, split=split, joints=joints, visible=np.stack(visible), boxes=np.tile([0.0, 0.0, float(side)], (n, 1)),
        head_sizes=heads, names=[f"synthetic-keypoints {split} #{i}" for i in range(n)], images=np.stack(images),
        head_source="joints", cache_token=f"synthetic-keypoints-v{GENERATOR_VERSION}-{seed}-{split}-{n}-{side}-{int(clutter)}",
    )
