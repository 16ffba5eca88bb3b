"""`synthetic-hands`: procedural hand shapes for the 24 static ASL letters, in the Sign MNIST format.

28x28 grey uint8, classes A..Y without J (as `SIGN_MNIST_LETTERS`). Each letter is a `Hand` in
`LETTER_SHAPES`: which fingers are extended, hooked, folded into the palm or curled to touch the
thumb, how far they spread, where the thumb is, and where the fingers point. Hands are drawn with cv2
at 4x (112x112: anti-aliased strokes with round caps, outlined so folded fingers and the thumb show
over the palm) and area-downsampled, with per-image random rotation (+-20 degrees), mirror (left
hand), scale, shift, finger jitter, brightness, a textured and cluttered background, a lighting
gradient and pixel noise. Like the real alphabet, some letters differ only in the thumb (A, S, T, N,
M) or the orientation (K/P, G/Q, U/H), so a linear probe on weak features does not reach 100%.

Image k of class c in a split comes from its own generator seeded by (seed, split, c, k): train and test
never share a stream, and raising `train_per_class` keeps the first images unchanged.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gesture_cli.core.errors import UsageError
from gesture_cli.data.images import ImageDataset
from gesture_cli.data.registry import register_dataset
from gesture_cli.data.sign_mnist import SIGN_MNIST_LETTERS

GENERATOR_VERSION = 1  # bump whenever the drawing changes: it is part of the cache token
SIDE = 28  # output side in pixels (Sign MNIST)
SUPERSAMPLE = 4  # drawn at SIDE * SUPERSAMPLE, then INTER_AREA-downsampled (anti-aliasing)
_SHIFT = 2  # cv2 fixed-point fractional bits for sub-pixel coordinates


# Hand-local geometry: finger base x (index..pinky), length and width, in palm widths.
_FINGER_X = np.array([-0.36, -0.12, 0.12, 0.36])
_FINGER_LEN = np.array([0.86, 0.96, 0.88, 0.68])
_FINGER_W = np.array([0.21, 0.22, 0.21, 0.18])
_KNUCKLE_Y = 0.46  # where extended fingers leave the palm
_THUMB_W = 0.25
# Thumb polylines (base, knuckle, tip) per position; "under" is built from thumb_gap.
_THUMB_PATHS = {
    "side": [(-0.42, -0.38), (-0.56, -0.02), (-0.54, 0.36)],
    "across": [(-0.44, -0.36), (-0.36, 0.08), (0.22, 0.16)],
    "tucked": [(-0.44, -0.38), (-0.30, -0.16), (0.20, -0.06)],
    "out": [(-0.42, -0.36), (-0.70, -0.14), (-1.06, 0.04)],
    "parallel": [(-0.42, -0.36), (-0.64, 0.06), (-0.64, 0.66)],
    "v": [(-0.44, -0.36), (-0.40, 0.12), (-0.22, 0.62)],
}
_POINT_ANGLE = {"up": 0.0, "side": -85.0, "down": 170.0}  # degrees, clockwise on screen


@dataclass(frozen=True)
class Hand:
    """One letter's hand shape, in hand-local units (palm width = 1, y towards the fingertips, x towards the pinky)."""

    # index, middle, ring, pinky: 1 extended, 0.5 hooked (bent at the middle knuckle),
    # 0 folded into the palm (the fist), -1 curled round to touch the thumb tip (a loop, as in F and D)
    fingers: tuple[float, float, float, float] = (0, 0, 0, 0)
    spread: float = 0.0  # degrees between neighbouring extended fingers; a lone extended finger is tilted by it
    crossed: bool = False  # index and middle cross (R)
    # side: along the side of the fist, pointing up (A)       across: over the folded fingers (S, I, W, X, H)
    # tucked: folded across the lower palm (B, E)            out: sticking out sideways (L, Y)
    # parallel: extended beside the index (G, Q)             v: tip between index and middle (K, P)
    # under: behind the folded fingers, tip showing between two of them (T, N, M; see thumb_gap)
    # touch: tip meets the curled fingers (F, D)
    thumb: str = "side"
    thumb_gap: int = 1  # thumb="under": 1 = between index|middle, 2 = middle|ring, 3 = ring|pinky
    point: str = "up"  # up | side | down: where the fingers point (before the random +-20 degrees)
    shape: str = "hand"  # hand | c | o: the whole hand curls into a C, or closes into an O

    def __post_init__(self) -> None:
        if self.thumb not in {*_THUMB_PATHS, "under", "touch"} or self.point not in _POINT_ANGLE or self.shape not in ("hand", "c", "o"):
            raise ValueError(f"bad Hand definition: {self}")
        if self.thumb == "touch" and -1 not in self.fingers:
            raise ValueError("thumb='touch' needs at least one finger curled to it (-1)")


LETTER_SHAPES: dict[str, Hand] = {
    "A": Hand(fingers=(0, 0, 0, 0), thumb="side"),
    "B": Hand(fingers=(1, 1, 1, 1), spread=0, thumb="tucked"),
    "C": Hand(shape="c"),
    "D": Hand(fingers=(1, -1, -1, -1), thumb="touch"),
    "E": Hand(fingers=(0.5, 0.5, 0.5, 0.5), thumb="tucked"),
    "F": Hand(fingers=(-1, 1, 1, 1), spread=12, thumb="touch"),
    "G": Hand(fingers=(1, 0, 0, 0), thumb="parallel", point="side"),
    "H": Hand(fingers=(1, 1, 0, 0), spread=0, thumb="across", point="side"),
    "I": Hand(fingers=(0, 0, 0, 1), thumb="across"),
    "K": Hand(fingers=(1, 1, 0, 0), spread=22, thumb="v"),
    "L": Hand(fingers=(1, 0, 0, 0), thumb="out"),
    "M": Hand(fingers=(0, 0, 0, 0), thumb="under", thumb_gap=3),
    "N": Hand(fingers=(0, 0, 0, 0), thumb="under", thumb_gap=2),
    "O": Hand(shape="o"),
    "P": Hand(fingers=(1, 1, 0, 0), spread=22, thumb="v", point="down"),
    "Q": Hand(fingers=(1, 0, 0, 0), thumb="parallel", point="down"),
    "R": Hand(fingers=(1, 1, 0, 0), crossed=True, thumb="across"),
    "S": Hand(fingers=(0, 0, 0, 0), thumb="across"),
    "T": Hand(fingers=(0, 0, 0, 0), thumb="under", thumb_gap=1),
    "U": Hand(fingers=(1, 1, 0, 0), spread=0, thumb="across"),
    "V": Hand(fingers=(1, 1, 0, 0), spread=26, thumb="across"),
    "W": Hand(fingers=(1, 1, 1, 0), spread=18, thumb="across"),
    "X": Hand(fingers=(0.5, 0, 0, 0), thumb="across"),
    "Y": Hand(fingers=(0, 0, 0, 1), spread=28, thumb="out"),
}
assert list(LETTER_SHAPES) == SIGN_MNIST_LETTERS


class _Pose:
    """Where the hand lands on the canvas: local (x, y) -> cv2 fixed-point pixels at SUPERSAMPLE resolution."""

    def __init__(self, *, cx: float, cy: float, scale: float, angle: float, mirror: float):
        t = np.deg2rad(angle)  # clockwise on screen; 0 = fingers up
        u = (np.sin(t), -np.cos(t))  # screen direction of local +y (towards the fingertips)
        v = (np.cos(t), np.sin(t))  # screen direction of local +x (towards the pinky; flipped for a left hand)
        k = scale * (1 << _SHIFT)
        self.matrix = np.array([[mirror * v[0], mirror * v[1]], [u[0], u[1]]]) * k  # [2, 2]: (x, y) rows
        self.offset = np.array([cx, cy]) * (1 << _SHIFT)
        self.scale = scale  # pixels per palm width

    def __call__(self, pts) -> np.ndarray:
        return np.rint(np.asarray(pts, dtype=np.float64).reshape(-1, 2) @ self.matrix + self.offset).astype(np.int32)


class _Painter:
    """Outlined strokes and shapes in hand-local coordinates (cv2 at SUPERSAMPLE resolution).

    `z` holds the image's pre-drawn standard normal jitter, consumed in order by `jitter()` (one
    generator call per image instead of dozens: generation speed is dominated by Python overhead).
    """

    def __init__(self, canvas: np.ndarray, pose: _Pose, *, fill: float, edge: float, z: np.ndarray):
        import cv2

        self.cv2, self.canvas, self.pose = cv2, canvas, pose
        self.fill, self.edge = fill, edge
        self.edge_px = max(2, int(round(0.06 * pose.scale)))  # outline width in canvas pixels
        self._z = iter(z.tolist())

    def jitter(self, sd: float) -> float:
        return sd * next(self._z)

    def shade(self, factor: float = 1.0) -> float:
        """The skin tone of one part: the hand's, +- a little, times `factor` (< 1 for shadowed parts)."""
        return min(255.0, max(0.0, (self.fill + self.jitter(7.0)) * factor))

    def stroke(self, pts, width: float, *, closed: bool = False, fill: float | None = None) -> None:
        """A thick polyline with round caps and joins, outlined: fingers, thumb, curled loops."""
        p = self.pose(pts)
        t = max(1, int(round(width * self.pose.scale)))
        cv2 = self.cv2
        cv2.polylines(self.canvas, [p], closed, self.edge, t + 2 * self.edge_px, cv2.LINE_AA, _SHIFT)
        cv2.polylines(self.canvas, [p], closed, self.shade() if fill is None else fill, t, cv2.LINE_AA, _SHIFT)

    def polygon(self, pts, *, fill: float | None = None) -> None:
        p = self.pose(pts)
        cv2 = self.cv2
        cv2.fillPoly(self.canvas, [p], self.shade() if fill is None else fill, cv2.LINE_AA, _SHIFT)
        cv2.polylines(self.canvas, [p], True, self.edge, self.edge_px, cv2.LINE_AA, _SHIFT)


_SQUIRCLE = (lambda t: np.stack([np.sign(np.cos(t)) * np.sqrt(np.abs(np.cos(t))), np.sign(np.sin(t)) * np.sqrt(np.abs(np.sin(t)))], 1))(
    np.linspace(0, 2 * np.pi, 28, endpoint=False)
)  # [28, 2] unit rounded square, |x|^4 + |y|^4 = 1


def _palm(a: float, b: float, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    """A rounded rectangle of half-width a and half-height b: the palm."""
    return _SQUIRCLE * (a, b) + (cx, cy)


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, stop: float, n: int = 20) -> np.ndarray:
    """Points on an ellipse from angle `start` to `stop` (degrees, counter-clockwise from local +x)."""
    t = np.deg2rad(np.linspace(start, stop, n))
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _draw_hand(p: _Painter, hand: Hand) -> None:
    """Paint one hand: forearm, palm, fingers, thumb, in an order that gets the occlusions right."""
    j = p.jitter
    p.polygon([(-0.40, -0.3), (0.40, -0.3), (0.52, -3.2), (-0.52, -3.2)], fill=p.shade(0.9))  # forearm
    if hand.shape == "o":  # all fingertips meet the thumb tip: a closed ring above the palm
        p.polygon(_palm(0.42, 0.46))
        p.stroke(_arc(0.02 + j(0.02), 0.72 + j(0.03), 0.36 + j(0.03), 0.32 + j(0.03), 0, 360, 28), 0.24, closed=True)
        return
    if hand.shape == "c":  # side view: fingers arch over the top, thumb curves under, open to the pinky side
        p.polygon(_palm(0.34, 0.46, cx=-0.12))
        gap = 42 + j(6)  # half-opening of the C, degrees
        cx, cy, r = 0.18 + j(0.02), 0.58 + j(0.02), 0.52 + j(0.03)
        p.stroke(_arc(cx, cy, r, r * 1.05, gap, 195, 14), 0.30)  # fingers, over the top
        p.stroke(_arc(cx, cy, r * 0.92, r * 0.95, 195, 360 - gap, 12), 0.22)  # thumb, underneath
        return
    thumb_path = _THUMB_PATHS.get(hand.thumb)
    if hand.thumb == "under":  # behind the folded fingers, the tip pokes out between two of them
        gx = 0.5 * (_FINGER_X[hand.thumb_gap - 1] + _FINGER_X[hand.thumb_gap])
        p.stroke([(-0.44 + j(0.02), -0.36), (-0.40 + j(0.02), 0.16), (gx + j(0.02), 0.80 + j(0.02))], _THUMB_W)
    p.polygon(_palm(0.5 * (1 + j(0.04)), 0.55 * (1 + j(0.04))))

    ext = [i for i in range(4) if hand.fingers[i] == 1]
    order = (3, 2, 0, 1) if hand.crossed else (3, 2, 1, 0)  # later = in front; crossed: index over middle
    for i in order:
        state, x0 = hand.fingers[i], _FINGER_X[i] + j(0.015)
        length, width = _FINGER_LEN[i] * (1 + j(0.05)), _FINGER_W[i] * (1 + j(0.05))
        if state == 1:
            if hand.crossed and i in (0, 1):
                tip = (_FINGER_X[1 - i] + (0.06 if i == 0 else -0.06) + j(0.02), _KNUCKLE_Y + length)
            else:
                k = ext.index(i)
                angle = hand.spread if len(ext) == 1 else (k - (len(ext) - 1) / 2) * hand.spread
                angle = np.deg2rad(angle + j(3.0))
                tip = (x0 + length * np.sin(angle), _KNUCKLE_Y + length * np.cos(angle))
            p.stroke([(x0, _KNUCKLE_Y - 0.08), tip], width)
        elif state == 0.5:  # hooked: a short upright segment, the tip bent back towards the palm (shaded)
            knuckle = (x0, _KNUCKLE_Y + 0.38 * length)
            p.stroke([(x0, _KNUCKLE_Y - 0.08), knuckle], width)
            p.stroke([knuckle, (x0 + j(0.01), _KNUCKLE_Y + 0.12 * length)], width * 1.05, fill=p.shade(0.82))
        elif state == 0:  # folded: the back of the finger lies over the palm, a band from the knuckle down
            p.stroke([(x0, _KNUCKLE_Y + 0.10), (x0, 0.06 + j(0.03))], width * 1.08)
    if hand.thumb == "touch":  # the curled fingers and the thumb close into a loop
        curled = [i for i in range(4) if hand.fingers[i] == -1]
        x_lo, x_hi = _FINGER_X[min(curled)], _FINGER_X[max(curled)]
        cx, rx = 0.5 * (x_lo + x_hi) - 0.08, 0.5 * (x_hi - x_lo) + 0.22
        p.stroke(_arc(cx + j(0.02), 0.52 + j(0.02), rx, 0.26 + j(0.02), 0, 360, 24), 0.17, closed=True)
        p.stroke([(-0.44, -0.36), (-0.46, 0.10), (cx - rx * 0.6, 0.36)], _THUMB_W)
    elif hand.thumb != "under":
        p.stroke([(x + j(0.02), y + j(0.02)) for x, y in thumb_path], _THUMB_W)


def render_hand(letter: str, rng: np.random.Generator, *, with_mask: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """One random 28x28 grey uint8 image of `letter`'s hand shape (see the module docstring).

    with_mask=True also returns the hand's mask, bool [28, 28]: the pixels that the drawn hand and
    forearm cover at least half of (drawn a second time, with the same pose and jitter, on an empty
    canvas). The image is the same with or without the mask: the random stream is consumed alike.
    """
    import cv2

    hand = LETTER_SHAPES[letter]
    big = SIDE * SUPERSAMPLE
    r = iter(rng.random(40).tolist())  # uniforms for this image's global choices, consumed in order
    uniform = lambda lo, hi: lo + (hi - lo) * next(r)  # noqa: E731
    skin = uniform(135, 235)  # hand brightness
    if next(r) < 0.82:  # mostly a darker background, as in Sign MNIST; sometimes a lighter one
        bg = uniform(10, max(20, skin - 55))
    else:
        bg = uniform(min(250, skin + 25), 255)
    # Background: a smooth random texture plus a few clutter shapes, all behind the hand.
    grid = rng.standard_normal((5, 5), dtype=np.float32) * uniform(6, 22) + bg
    canvas = cv2.resize(grid, (big, big), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(next(r) * 4)):
        tone = min(255.0, max(0.0, bg + uniform(-70, 70)))
        a = (int(next(r) * big), int(next(r) * big))
        kind = next(r)
        if kind < 0.4:
            cv2.line(canvas, a, (int(next(r) * big), int(next(r) * big)), tone, int(uniform(2, 10)), cv2.LINE_AA)
        elif kind < 0.7:
            cv2.circle(canvas, a, int(uniform(6, 30)), tone, -1, cv2.LINE_AA)
        else:
            cv2.rectangle(canvas, a, (int(next(r) * big), int(next(r) * big)), tone, -1)
    angle = _POINT_ANGLE[hand.point] + uniform(-20, 20)
    scale = big * uniform(0.30, 0.37)  # pixels per palm width
    # Centre the hand's mass (palm + fingers, about 0.5 palm widths above the palm centre) in the frame.
    t = np.deg2rad(angle)
    cx = big / 2 - 0.5 * scale * np.sin(t) + uniform(-0.08, 0.08) * big
    cy = big / 2 + 0.5 * scale * np.cos(t) + uniform(-0.08, 0.08) * big
    pose = _Pose(cx=cx, cy=cy, scale=scale, angle=angle, mirror=-1.0 if next(r) < 0.25 else 1.0)
    z = rng.standard_normal(64)
    painter = _Painter(canvas, pose, fill=skin, edge=skin * uniform(0.45, 0.68), z=z)
    _draw_hand(painter, hand)
    small = cv2.resize(canvas, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    mask = None
    if with_mask:  # every shade the painter picks is > 0 on a 255 fill, so coverage is "drawn at all"
        silhouette = np.zeros((big, big), dtype=np.float32)
        _draw_hand(_Painter(silhouette, pose, fill=255.0, edge=255.0, z=z), hand)
        mask = cv2.resize((silhouette > 0).astype(np.float32), (SIDE, SIDE), interpolation=cv2.INTER_AREA) >= 0.5
    # Lighting: a linear gradient in a random direction, then sensor noise.
    phi = uniform(0, 2 * np.pi)
    gain = uniform(0.0, 0.35)
    small *= 1.0 + gain * (np.cos(phi) * _GRID_X + np.sin(phi) * _GRID_Y)
    small += rng.standard_normal((SIDE, SIDE), dtype=np.float32) * uniform(2, 9)
    image = np.clip(small, 0, 255).round().astype(np.uint8)
    return (image, mask) if with_mask else image


_GRID_Y, _GRID_X = (g.astype(np.float32) for g in np.mgrid[-1:1:SIDE * 1j, -1:1:SIDE * 1j])  # [28, 28] in -1..1


def _split_code(split: str) -> int:
    return zlib.crc32(split.encode())  # stable across runs and Python versions (unlike hash())


def generate_hands(*, n_per_class: int, seed: int, split: str, with_masks: bool = False, letters: Sequence[str] | None = None):
    """(images uint8 [K * n_per_class, 28, 28], labels int64), classes interleaved (A, B, ..., Y, A, ...).

    K = 24, or len(letters) when `letters` picks some (labels stay indices into SIGN_MNIST_LETTERS, and
    each image is the one the full generation draws for it). with_masks=True returns (images, labels,
    masks bool [N, 28, 28]): where each image's hand is (`render_hand`), for checks of where a model
    looks; the images are the same as without.
    """
    if letters is None:
        classes = list(range(len(SIGN_MNIST_LETTERS)))
    else:
        unknown = [c for c in letters if c not in SIGN_MNIST_LETTERS]
        if unknown:
            raise UsageError(f"letters {unknown}: synthetic-hands has {', '.join(SIGN_MNIST_LETTERS)} (no J or Z: they move)")
        classes = [SIGN_MNIST_LETTERS.index(c) for c in letters]
    images = np.empty((len(classes) * n_per_class, SIDE, SIDE), dtype=np.uint8)
    masks = np.zeros((len(images), SIDE, SIDE), dtype=bool) if with_masks else None
    labels = np.tile(np.asarray(classes, dtype=np.int64), n_per_class)
    code = _split_code(split)
    for k in range(len(images)):
        c, i = int(labels[k]), k // len(classes)
        rng = np.random.default_rng([seed % 2**32, code, c, i, GENERATOR_VERSION])
        if with_masks:
            images[k], masks[k] = render_hand(SIGN_MNIST_LETTERS[c], rng, with_mask=True)
        else:
            images[k] = render_hand(SIGN_MNIST_LETTERS[c], rng)
    return (images, labels, masks) if with_masks else (images, labels)


@register_dataset(
    "synthetic-hands",
    help="procedural 24-letter hand shapes in the Sign MNIST format (28x28 grey), seeded; no download (train 40, test 15 per class)",
    splits=("train", "test"),
)
def make_synthetic_hands(arg: None, *, spec: str, split: str, seed: int, train_per_class: int = 40, test_per_class: int = 15) -> ImageDataset:
    n = int(train_per_class if split == "train" else test_per_class)
    if n < 1:
        raise UsageError(f"{split}_per_class must be at least 1; got {n}")
    images, labels = generate_hands(n_per_class=n, seed=seed, split=split)
    token = f"synthetic-hands:v{GENERATOR_VERSION}:seed={seed}:split={split}:per_class={n}"
    return ImageDataset(spec=spec, split=split, classes=list(SIGN_MNIST_LETTERS), labels=labels, images=images, cache_token=token)
