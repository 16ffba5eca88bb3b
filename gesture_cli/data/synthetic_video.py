"""`synthetic-video`: seeded clips of moving coloured shapes over a textured background.

Default: 3 clips x 24 frames of 96x96 RGB by 2 "subjects" (clip c belongs to subject c % 2). A
subject is an appearance: its background texture's tint and its shapes' palette; a clip is a motion:
2-3 shapes (disc, box, triangle) that drift, bounce off the borders and turn. The background is
still, as behind a signer, so the first principal component of patch features separates moving
foreground from background as it does on real footage.

Clip c comes from its own generator seeded by (seed, c): adding clips keeps the first ones unchanged.
It is a `FrameSource` for `gx pca-compute` and an `ImageDataset` of frames (label = subject, split
`all`) for the other commands.
"""

from __future__ import annotations

import numpy as np

from gesture_cli.core.errors import UsageError
from gesture_cli.data.images import ImageDataset
from gesture_cli.data.registry import register_dataset
from gesture_cli.data.video import ArrayClip, ClipFrames

GENERATOR_VERSION = 1  # bump whenever the drawing changes: it is part of the cache token
N_CLIPS = 3
N_FRAMES = 24
SIZE = 96  # frame side in pixels
N_SUBJECTS = 2

# Per subject: background tint (RGB, 0..1) and shape colours (RGB, 0..255).
_TINTS = [(0.55, 0.6, 0.7), (0.7, 0.62, 0.5), (0.5, 0.7, 0.55), (0.65, 0.55, 0.7)]
_PALETTES = [
    [(230, 60, 50), (250, 200, 40), (40, 170, 230)],
    [(220, 80, 200), (60, 210, 120), (250, 140, 30)],
    [(240, 240, 240), (200, 40, 90), (30, 90, 220)],
    [(255, 120, 120), (120, 60, 20), (90, 230, 230)],
]


def _background(rng: np.random.Generator, size: int, subject: int) -> np.ndarray:
    """float32 [S, S, 3] in 0..1: three random gratings plus fine noise, tinted per subject."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    tex = np.zeros((size, size), np.float32)
    for _ in range(3):
        fx, fy = rng.uniform(1.5, 6.0, 2) * rng.choice([-1, 1], 2)
        tex += np.sin(2 * np.pi * (fx * xx + fy * yy) + rng.uniform(0, 2 * np.pi)).astype(np.float32)
    tex = 0.5 + 0.12 * tex / 3 + 0.04 * rng.standard_normal((size, size)).astype(np.float32)
    tint = np.asarray(_TINTS[subject % len(_TINTS)], np.float32)
    return np.clip(tex[:, :, None] * tint * 1.4, 0, 1)


def generate_clip(*, seed: int, clip: int, subject: int, n_frames: int = N_FRAMES, size: int = SIZE) -> np.ndarray:
    """uint8 [T, S, S, 3] RGB frames of one clip."""
    import cv2

    rng = np.random.default_rng([seed % 2**32, clip])
    bg = (_background(rng, size, subject) * 255).astype(np.uint8)
    palette = _PALETTES[subject % len(_PALETTES)]
    n_shapes = int(rng.integers(2, 4))
    kinds = rng.choice(["disc", "box", "triangle"], n_shapes)
    radius = rng.uniform(0.09, 0.16, n_shapes) * size
    pos = rng.uniform(0.25, 0.75, (n_shapes, 2)) * size
    vel = rng.uniform(-0.035, 0.035, (n_shapes, 2)) * size
    spin = rng.uniform(-0.25, 0.25, n_shapes)
    frames = np.empty((n_frames, size, size, 3), np.uint8)
    for t in range(n_frames):
        img = bg.copy()
        for s in range(n_shapes):
            p = pos[s] + vel[s] * t
            p = _bounce(p, radius[s], size - radius[s])  # reflect at the borders
            colour = tuple(int(c) for c in palette[s % len(palette)])
            angle = spin[s] * t
            pts = _polygon(kinds[s], p, radius[s], angle)
            if pts is None:
                cv2.circle(img, (int(round(p[0] * 4)), int(round(p[1] * 4))), int(round(radius[s] * 4)), colour, -1, cv2.LINE_AA, 2)
            else:
                cv2.fillPoly(img, [np.round(pts * 4).astype(np.int32)], colour, cv2.LINE_AA, 2)
        frames[t] = img
    return frames


def _bounce(p: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """A straight path folded into [lo, hi]: a triangle wave, so shapes bounce off the borders."""
    span = hi - lo
    q = np.mod(p - lo, 2 * span)
    return lo + np.where(q > span, 2 * span - q, q)


def _polygon(kind: str, centre: np.ndarray, r: float, angle: float) -> np.ndarray | None:
    if kind == "disc":
        return None
    n = 4 if kind == "box" else 3
    a = angle + np.arange(n) * 2 * np.pi / n
    return centre + r * np.stack([np.cos(a), np.sin(a)], axis=1) * (1.25 if kind == "box" else 1.4)


def _check(n_clips: int, n_frames: int, size: int, n_subjects: int) -> None:
    if min(n_clips, n_frames, n_subjects) < 1 or size < 16:
        raise UsageError(f"synthetic-video needs n_clips, n_frames, n_subjects >= 1 and size >= 16; got {n_clips}, {n_frames}, {n_subjects}, {size}")


def make_synthetic_clips(*, seed: int, n_clips: int = N_CLIPS, n_frames: int = N_FRAMES, size: int = SIZE, n_subjects: int = N_SUBJECTS) -> list[ArrayClip]:
    _check(n_clips, n_frames, size, n_subjects)
    clips = []
    for c in range(n_clips):
        subject = c % n_subjects
        frames = generate_clip(seed=seed, clip=c, subject=subject, n_frames=n_frames, size=size)
        clips.append(ArrayClip(frames, subject=f"subject{subject}", clip=f"subject{subject}/clip{c}"))
    return clips


def _token(seed: int, n_clips: int, n_frames: int, size: int, n_subjects: int) -> str:
    return f"synthetic-video:v{GENERATOR_VERSION}:seed={seed}:clips={n_clips}:frames={n_frames}:size={size}:subjects={n_subjects}"


@register_dataset(
    "synthetic-video",
    kind="frames",
    help="seeded clips of moving coloured shapes on a textured background (3 clips x 24 frames, 96x96 RGB, 2 subjects)",
    splits=("all",),
)
def make_synthetic_video_frames(arg: None, *, spec: str, seed: int) -> ClipFrames:
    clips = make_synthetic_clips(seed=seed)
    return ClipFrames(spec=spec, clips=clips, cache_token=_token(seed, N_CLIPS, N_FRAMES, SIZE, N_SUBJECTS))


@register_dataset(
    "synthetic-video",
    help="seeded clips of moving coloured shapes on a textured background (3 clips x 24 frames, 96x96 RGB, 2 subjects); label = subject",
    splits=("all",),
)
def make_synthetic_video(
    arg: None, *, spec: str, split: str, seed: int, n_clips: int = N_CLIPS, n_frames: int = N_FRAMES, size: int = SIZE, n_subjects: int = N_SUBJECTS
) -> ImageDataset:
    clips = make_synthetic_clips(seed=seed, n_clips=n_clips, n_frames=n_frames, size=size, n_subjects=n_subjects)
    images = np.concatenate([c.array for c in clips])
    labels = np.concatenate([np.full(len(c.array), int(c.subject.removeprefix("subject"))) for c in clips])
    return ImageDataset(
        spec=spec, split=split, classes=[f"subject{s}" for s in range(n_subjects)], labels=labels, images=images,
        cache_token=_token(seed, n_clips, n_frames, size, n_subjects),
    )
