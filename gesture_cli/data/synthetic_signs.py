"""`synthetic-signs`: seeded signed sentences on the MediaPipe Holistic layout, with English text.

A vocabulary of 21 glosses (pronouns, nouns, verbs, time signs, NOT, two adjectives), each a motion
primitive: wrist keyframes of the dominant hand relative to the body (in shoulder widths from the
shoulder midpoint), a handshape per keyframe from a small table of finger curls, a non-dominant
hand that rests, mirrors the dominant one or holds a base, a mouth opening (EAT, DRINK) and a head
shake (NOT). A sentence is 2-4 glosses in sign order `[TIME] SUBJECT [OBJECT] VERB [NOT]` (or
`[TIME] SUBJECT ADJECTIVE [NOT]`); its text comes from a small grammar: English SVO order, articles,
do-support, tense from the time sign ("Yesterday my friend did not go to school.").

Motion: rest pose -> glosses joined by eased transitions -> rest pose; speed varies per sentence.
Signers (a pool of 12 drawn per seed) vary in body proportions, scale and position in the frame,
and one in eight is left-handed (the whole signing mirrored). Coordinates are image fractions like
MediaPipe's ([0, 1] for x and y; z in the same scale, negative towards the camera), with Gaussian
noise; legs are masked (out of frame), and some sentences lose a hand for a few frames or while it
rests low (as MediaPipe does), masked.

Sentence k of a split comes from its own generator seeded by (seed, split, k): the splits never share
a stream, and a bigger split keeps its first sentences. The default sizes (400/60/60, T ~ 30-80 frames
at 25 fps) generate in well under 2 s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gesture_cli.core.errors import UsageError
from gesture_cli.data.pose import POSE_SPLITS, PoseDataset, PoseSample
from gesture_cli.data.registry import register_dataset
from gesture_cli.models import skeletons as sk

GENERATOR_VERSION = 1  # bump whenever the generated data changes: it is part of the cache token
LAYOUT = "mediapipe-holistic"
FPS = 25.0
_FACE0, _LH0, _RH0 = 33, 501, 522

# ---- handshapes: finger curls (index, middle, ring, pinky; 0 straight .. 1 fist), thumb curl, thumb abduction, spread
HANDSHAPES: dict[str, tuple[tuple[float, float, float, float], float, float, float]] = {
    "rest": ((0.3, 0.35, 0.35, 0.4), 0.3, 0.3, 0.1),
    "flat": ((0.0, 0.0, 0.0, 0.0), 0.6, 0.1, 0.0),
    "five": ((0.0, 0.0, 0.0, 0.0), 0.0, 1.0, 1.0),
    "a": ((1.0, 1.0, 1.0, 1.0), 0.0, 0.2, 0.0),
    "point": ((0.0, 1.0, 1.0, 1.0), 0.8, 0.3, 0.0),
    "v": ((0.0, 0.0, 1.0, 1.0), 0.8, 0.3, 0.8),
    "w": ((0.0, 0.0, 0.0, 1.0), 0.8, 0.3, 0.6),
    "y": ((1.0, 1.0, 1.0, 0.0), 0.0, 1.0, 0.5),
    "c": ((0.45, 0.45, 0.45, 0.45), 0.3, 0.7, 0.0),
    "o": ((0.75, 0.75, 0.75, 0.75), 0.6, 0.6, 0.0),
    "flat-o": ((0.55, 0.55, 0.55, 0.55), 0.5, 0.4, 0.0),
    "claw": ((0.6, 0.6, 0.6, 0.6), 0.4, 0.8, 1.0),
    "x": ((0.55, 1.0, 1.0, 1.0), 0.8, 0.3, 0.0),
}


@dataclass(frozen=True)
class Key:
    """A keyframe of one hand: time in the gloss (0..1), wrist (x, y, z), handshape, orientation in degrees.

    x, y, z in shoulder widths from the shoulder midpoint, for the dominant (right) hand: x < 0 is the
    signer's right side, y points down, z < 0 towards the camera. roll turns the fingers in the image
    plane (0 = up), pitch tilts them towards the camera, yaw turns the palm (0 = palm to the camera).
    """

    t: float
    pos: tuple[float, float, float]
    shape: str = "flat"
    roll: float = 0.0
    pitch: float = 0.0
    yaw: float = 0.0


@dataclass(frozen=True)
class Gloss:
    name: str
    dom: tuple[Key, ...]
    other: str | tuple[Key, ...] = "rest"  # "rest" | "mirror" | its own keys
    frames: int = 12  # duration at speed 1
    mouth: float = 0.0  # mouth opening while signing, 0..1
    head_shake: bool = False


def _k(t, x, y, z, shape="flat", roll=0.0, pitch=0.0, yaw=0.0) -> Key:
    return Key(t, (x, y, z), shape, roll, pitch, yaw)


def _circle(cx, cy, z, r, shape, turns=2, **rot) -> tuple[Key, ...]:
    n = 4 * turns
    return tuple(_k(i / n, cx + r * np.sin(2 * np.pi * i / 4), cy - r * np.cos(2 * np.pi * i / 4), z, shape, **rot) for i in range(n + 1))


def _taps(a, b, shape, n=2, **rot) -> tuple[Key, ...]:
    pts = [a, b] * n
    return tuple(_k(i / (len(pts) - 1), *p, shape, **rot) for i, p in enumerate(pts))


VOCABULARY: dict[str, Gloss] = {g.name: g for g in (
    Gloss("ME", (_k(0, -0.25, 0.55, -0.45, "point", pitch=60), _k(1, -0.08, 0.35, -0.2, "point", pitch=-60)), frames=9),
    Gloss("YOU", (_k(0, -0.2, 0.45, -0.3, "point", pitch=40), _k(1, -0.15, 0.4, -0.85, "point", pitch=85)), frames=9),
    Gloss("FRIEND", (_k(0, -0.12, 0.5, -0.4, "x", roll=-80), _k(0.5, -0.05, 0.48, -0.4, "x", roll=-80), _k(1, -0.05, 0.5, -0.4, "x", roll=100)), "mirror", 14),
    Gloss("TEACHER", (_k(0, -0.35, -0.95, -0.25, "flat-o", yaw=90), _k(0.4, -0.35, -0.8, -0.6, "flat-o", yaw=90),
                      _k(0.6, -0.4, 0.2, -0.35, "flat", yaw=90), _k(1, -0.4, 0.75, -0.35, "flat", yaw=90)), "mirror", 16),
    Gloss("MOTHER", _taps((-0.1, -0.4, -0.35), (-0.05, -0.45, -0.25), "five", yaw=90), frames=12),
    Gloss("BOOK", (_k(0, -0.05, 0.5, -0.5, "flat", yaw=90), _k(1, -0.2, 0.5, -0.5, "flat", yaw=20)), "mirror", 12),
    Gloss("WATER", _taps((-0.15, -0.35, -0.35), (-0.04, -0.45, -0.3), "w", yaw=90), frames=12),
    Gloss("FOOD", _taps((-0.1, -0.45, -0.4), (-0.03, -0.58, -0.3), "flat-o", roll=60, pitch=40), frames=12, mouth=0.5),
    Gloss("EAT", (_k(0, -0.15, 0.1, -0.45, "flat-o", roll=60), _k(1, -0.03, -0.58, -0.3, "flat-o", roll=60)), frames=11, mouth=0.8),
    Gloss("SCHOOL", _taps((-0.05, 0.3, -0.4), (0.0, 0.5, -0.4), "flat", pitch=90, yaw=180), (_k(0, -0.05, 0.55, -0.4, "flat", pitch=90),), 13),
    Gloss("HOME", (_k(0, -0.05, -0.6, -0.3, "flat-o", roll=40), _k(1, -0.28, -0.72, -0.2, "flat-o", roll=40)), frames=11),
    Gloss("WANT", (_k(0, -0.3, 0.55, -0.7, "five", pitch=90, yaw=180), _k(1, -0.3, 0.6, -0.3, "claw", pitch=90, yaw=180)), "mirror", 12),
    Gloss("SEE", (_k(0, -0.12, -0.8, -0.3, "v", yaw=180), _k(1, -0.15, -0.55, -0.8, "v", pitch=80)), frames=10),
    Gloss("LIKE", (_k(0, -0.05, 0.3, -0.2, "five", roll=-60), _k(1, -0.2, 0.35, -0.6, "o", roll=-60)), frames=11),
    Gloss("GO", (_k(0, -0.25, 0.35, -0.25, "point"), _k(1, -0.25, 0.45, -0.8, "point", pitch=80)), "mirror", 10),
    Gloss("DRINK", (_k(0, -0.2, 0.1, -0.4, "c", yaw=90), _k(0.6, -0.05, -0.52, -0.35, "c", yaw=90, roll=-10),
                    _k(1, -0.05, -0.55, -0.35, "c", yaw=90, roll=-50)), frames=13, mouth=0.4),
    Gloss("YESTERDAY", (_k(0, -0.2, -0.55, -0.3, "y", yaw=90), _k(1, -0.32, -0.65, 0.05, "y", yaw=90)), frames=10),
    Gloss("TOMORROW", (_k(0, -0.3, -0.65, -0.15, "a", yaw=90), _k(1, -0.3, -0.55, -0.6, "a", yaw=90, pitch=30)), frames=10),
    Gloss("NOT", (_k(0, -0.05, -0.42, -0.25, "a", roll=180), _k(1, -0.15, -0.25, -0.6, "a", roll=150)), frames=10, head_shake=True),
    Gloss("HAPPY", _circle(-0.05, 0.3, -0.15, 0.12, "flat", yaw=180), frames=16),
    Gloss("TIRED", (_k(0, -0.25, 0.2, -0.15, "flat", roll=-60, yaw=180), _k(1, -0.3, 0.35, -0.15, "flat", roll=-120, yaw=180)), "mirror", 12),
)}
REST = _k(0, -0.45, 1.3, -0.15, "rest", roll=180)

# ---- grammar: sign order [TIME] SUBJECT [OBJECT] VERB [NOT] -> English SVO with tense and do-support
SUBJECTS = {"ME": "I", "YOU": "you", "FRIEND": "my friend", "TEACHER": "the teacher", "MOTHER": "my mother"}
OBJECT_WORDS = {"BOOK": "the book", "WATER": "water", "FOOD": "food", "SCHOOL": "school", "HOME": "home", "TEACHER": "the teacher",
                "MOTHER": "my mother", "FRIEND": "my friend", "YOU": "you", "ME": "me"}
VERBS = {  # base, 3rd person singular, past; objects it takes
    "WANT": (("want", "wants", "wanted"), ("BOOK", "WATER", "FOOD")),
    "SEE": (("see", "sees", "saw"), ("BOOK", "SCHOOL", "TEACHER", "MOTHER", "FRIEND", "YOU", "ME")),
    "LIKE": (("like", "likes", "liked"), ("BOOK", "WATER", "FOOD", "SCHOOL", "TEACHER", "MOTHER", "FRIEND", "YOU", "ME")),
    "GO": (("go", "goes", "went"), ("SCHOOL", "HOME")),
    "DRINK": (("drink", "drinks", "drank"), ("WATER",)),
    "EAT": (("eat", "eats", "ate"), ("FOOD",)),
}
ADJECTIVES = {"HAPPY": "happy", "TIRED": "tired"}
TIMES = {"YESTERDAY": "past", "TOMORROW": "future"}


def _be(subject: str, tense: str, negated: bool) -> str:
    if tense == "future":
        return "will not be" if negated else "will be"
    if tense == "past":
        word = "were" if subject == "YOU" else "was"
    else:
        word = {"ME": "am", "YOU": "are"}.get(subject, "is")
    return f"{word} not" if negated else word


def translate(glosses: list[str]) -> str:
    """English text of a gloss sentence made by `sample_sentence` (the grammar in the module docstring)."""
    g = list(glosses)
    tense = TIMES.get(g[0], "present")
    if g[0] in TIMES:
        g = g[1:]
    negated = g[-1] == "NOT"
    if negated:
        g = g[:-1]
    subject, rest = g[0], g[1:]
    third = subject not in ("ME", "YOU")
    words = [{"past": "yesterday", "future": "tomorrow"}.get(tense, ""), SUBJECTS[subject]]
    if len(rest) == 1 and rest[0] in ADJECTIVES:
        words += [_be(subject, tense, negated), ADJECTIVES[rest[0]]]
    else:
        obj, verb = (rest[0], rest[1]) if len(rest) == 2 else (None, rest[0])
        base, s_form, past = VERBS[verb][0]
        if tense == "future":
            words += ["will not" if negated else "will", base]
        elif negated:
            words += ["did not" if tense == "past" else ("does not" if third else "do not"), base]
        else:
            words.append(past if tense == "past" else (s_form if third else base))
        if obj is not None:
            words.append(("to " if verb == "GO" and obj == "SCHOOL" else "") + OBJECT_WORDS[obj])
    text = " ".join(w for w in words if w)
    return text[0].upper() + text[1:] + "."


def sample_sentence(rng: np.random.Generator, *, min_glosses: int = 2, max_glosses: int = 4) -> list[str]:
    """A random gloss sentence of min..max glosses in sign order."""
    for _ in range(100):
        subject = str(rng.choice(list(SUBJECTS)))
        time = [str(rng.choice(list(TIMES)))] if rng.random() < 0.4 else []
        neg = ["NOT"] if rng.random() < 0.25 else []
        if rng.random() < 0.2:
            core = [str(rng.choice(list(ADJECTIVES)))]
        else:
            verb = str(rng.choice(list(VERBS)))
            objects = [o for o in VERBS[verb][1] if o != subject]
            core = [str(rng.choice(objects)), verb]
        glosses = [*time, subject, *core, *neg]
        if min_glosses <= len(glosses) <= max_glosses:
            return glosses
    raise UsageError(f"no sentence of {min_glosses}..{max_glosses} glosses in the grammar; use 2..5")


# ---- geometry ------------------------------------------------------------------------------------
_MCP_V = np.array([-0.30, -0.10, 0.10, 0.30])  # finger bases across the palm (thumb side negative), palm lengths
_MCP_U = np.array([1.00, 1.05, 1.00, 0.90])  # finger bases along the palm
_SEGMENTS = np.array([[0.42, 0.25, 0.20], [0.46, 0.28, 0.21], [0.43, 0.26, 0.20], [0.33, 0.20, 0.18]])
_JOINT_BEND = np.radians([80.0, 95.0, 60.0])  # MCP, PIP, DIP bend at curl 1
_THUMB_SEG = np.array([0.35, 0.30, 0.25])


def _rotations(roll: np.ndarray, pitch: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """[T, 3, 3] = Rz(roll) Rx(-pitch) Ry(yaw) in image axes (degrees): yaw turns the palm about the vertical,
    pitch tilts the fingers towards the camera, roll turns them in the image plane."""
    cr, sr = np.cos(np.radians(roll)), np.sin(np.radians(roll))
    cp, sp = np.cos(np.radians(-pitch)), np.sin(np.radians(-pitch))
    cy, sy = np.cos(np.radians(yaw)), np.sin(np.radians(yaw))
    r = np.empty((len(roll), 3, 3))
    r[:, 0, 0], r[:, 0, 1], r[:, 0, 2] = cr * cy - sr * sp * sy, -sr * cp, cr * sy + sr * sp * cy
    r[:, 1, 0], r[:, 1, 1], r[:, 1, 2] = sr * cy + cr * sp * sy, cr * cp, sr * sy - cr * sp * cy
    r[:, 2, 0], r[:, 2, 1], r[:, 2, 2] = -cp * sy, sp, cp * cy
    return r


_SPLAY = np.radians((np.arange(4) - 1.5) * 10.0)  # finger directions at spread 1, in the u-v plane
_CUM_BEND = np.cumsum(_JOINT_BEND)
_MCP = np.stack([_MCP_U, _MCP_V, np.zeros(4)], axis=-1)  # [4, 3] finger bases (u, v, w)
_UVW_TO_IMAGE = np.array([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])  # rows: u, v, w in image axes


def hand_points(curls, thumb_curl, thumb_abd, spread, roll, pitch, yaw, size: float) -> np.ndarray:
    """[T, 21, 3] MediaPipe hand points of a right hand relative to its wrist, in shoulder widths.

    Hand-local axes: u along the palm to the fingers, v across it towards the pinky, w out of the palm.
    A right hand held up with its palm to the camera has u = image up, v = image left (-x), w = -z.
    Inputs are per frame: curls [T, 4] (index..pinky), the rest [T] (angles in degrees).
    """
    t = len(curls)
    local = np.zeros((t, 21, 3))  # (u, v, w)
    ang = _SPLAY[None, :] * spread[:, None]  # [T, 4]
    bend = curls[:, :, None] * _CUM_BEND  # [T, 4, 3] cumulative joint angles (MCP, PIP, DIP)
    cos_b = np.cos(bend)
    d = np.stack([cos_b * np.cos(ang)[..., None], cos_b * np.sin(ang)[..., None], -np.sin(bend)], axis=-1)  # [T, 4, 3, 3]
    chain = _MCP[None, :, None] + np.cumsum(_SEGMENTS[None, :, :, None] * d, axis=2)  # [T, 4, 3 joints, 3]
    local[:, 5:21].reshape(t, 4, 4, 3)[:, :, 0] = _MCP
    local[:, 5:21].reshape(t, 4, 4, 3)[:, :, 1:] = chain
    # thumb: from the CMC it points out (-v) and up (u) by its abduction, and folds across the palm (+v, -w) as it curls
    j = np.arange(3)[None, :]
    out = 0.3 + 0.7 * thumb_abd[:, None] - thumb_curl[:, None] * (0.6 + 0.4 * j)  # [T, 3]
    d = np.stack([0.8 - 0.3 * thumb_curl[:, None] * j, -out, np.broadcast_to(-0.4 * thumb_curl[:, None] - 0.2, out.shape)], axis=-1)
    d /= np.sqrt((d * d).sum(-1, keepdims=True))
    local[:, 1] = (0.25, -0.30, 0.0)
    local[:, 2:5] = local[:, 1:2] + np.cumsum(_THUMB_SEG[None, :, None] * d, axis=1)
    r = _rotations(roll, pitch, yaw) @ _UVW_TO_IMAGE.T  # [T, 3, 3]: hand-local (u, v, w) -> rotated image axes
    return local @ (r.transpose(0, 2, 1) * (0.24 * size))  # batched matmul: ~6x faster than the einsum


def _ease(s: np.ndarray) -> np.ndarray:
    return s * s * (3 - 2 * s)


def _interp(times: np.ndarray, values: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Eased piecewise interpolation of values [N, D] at keyframe times [N] (increasing) for frames [T]."""
    j = np.minimum(np.maximum(np.searchsorted(times, frames, side="right") - 1, 0), len(times) - 2)
    span = np.maximum(times[j + 1] - times[j], 1e-6)
    s = _ease(np.minimum(np.maximum((frames - times[j]) / span, 0.0), 1.0))[:, None]
    return values[j] + s * (values[j + 1] - values[j])


def _key_table(keys: list[tuple[float, Key]]) -> tuple[np.ndarray, np.ndarray]:
    """Keyframe times [N] (made strictly increasing) and values [N, 13]: wrist xyz, 4 curls, thumb curl/abduction, spread, roll/pitch/yaw."""
    times = np.array([t for t, _ in keys]) + np.arange(len(keys)) * 1e-4
    rows = [(*k.pos, *HANDSHAPES[k.shape][0], *HANDSHAPES[k.shape][1:], k.roll, k.pitch, k.yaw) for _, k in keys]
    return times, np.array(rows, dtype=np.float64)


def _mirror(k: Key) -> Key:
    return Key(k.t, (-k.pos[0], k.pos[1], k.pos[2]), k.shape, k.roll, k.pitch, k.yaw)


def _face_template() -> np.ndarray:
    """[468, 3] Face Mesh points relative to the head centre, in shoulder widths: contours on their shapes, the rest inside the oval."""
    rng = np.random.default_rng(468)
    rx, ry = 0.26, 0.36
    r = np.sqrt(rng.random(468)) * 0.9
    a = rng.random(468) * 2 * np.pi
    face = np.stack([rx * r * np.cos(a), ry * r * np.sin(a), np.zeros(468)], axis=-1)
    for i, idx in enumerate(sk._MP_FACE_OVAL):
        th = -np.pi / 2 + 2 * np.pi * i / len(sk._MP_FACE_OVAL)
        face[idx] = (rx * np.cos(th), ry * np.sin(th), 0.0)

    def line(idx, x0, x1, y, bulge):
        for i, p in enumerate(idx):
            s = i / (len(idx) - 1)
            face[p] = (x0 + (x1 - x0) * s, y + bulge * np.sin(np.pi * s), 0.0)

    line(sk._MP_LIPS_OUTER_LOWER, -0.09, 0.09, 0.2, 0.03)
    line(sk._MP_LIPS_OUTER_UPPER, -0.09, 0.09, 0.2, -0.025)
    line(sk._MP_LIPS_INNER_LOWER, -0.07, 0.07, 0.2, 0.008)
    line(sk._MP_LIPS_INNER_UPPER, -0.07, 0.07, 0.2, -0.008)
    for (lower, upper), (x0, x1) in ((sk._MP_RIGHT_EYE, (-0.15, -0.05)), (sk._MP_LEFT_EYE, (0.15, 0.05))):
        line(lower, x0, x1, -0.05, 0.015)
        line(upper, x0, x1, -0.05, -0.02)
    for (lower, upper), (x0, x1) in ((sk._MP_RIGHT_BROW, (-0.17, -0.04)), (sk._MP_LEFT_BROW, (0.17, 0.04))):
        line(lower[::-1] if x0 > 0 else lower, x0, x1, -0.13, -0.01)
        line(upper, x0, x1, -0.145, -0.012)
    face[1] = (0.0, 0.07, -0.1)  # nose tip
    face[:, 2] += -0.06 * (1 - (face[:, 0] / rx) ** 2 - (face[:, 1] / ry) ** 2).clip(0, 1)
    return face


_FACE = _face_template()
_FACE32 = _FACE.astype(np.float32)
_LOWER_LIP = np.array(sorted({*sk._MP_LIPS_OUTER_LOWER[1:-1], *sk._MP_LIPS_INNER_LOWER[1:-1]}))


@dataclass(frozen=True)
class Signer:
    scale: float  # shoulder width as a fraction of the image width
    center: tuple[float, float]  # shoulder midpoint in the image (x, y fractions)
    upper_arm: float  # shoulder to elbow, shoulder widths
    forearm: float  # elbow to wrist, shoulder widths
    hand: float  # hand size factor
    head: float  # head size factor
    space: float  # how large the signing movements are
    left_handed: bool


def make_signer(rng: np.random.Generator) -> Signer:
    return Signer(
        scale=float(rng.uniform(0.17, 0.26)), center=(float(rng.uniform(0.43, 0.57)), float(rng.uniform(0.5, 0.62))),
        upper_arm=float(rng.uniform(0.7, 0.8)), forearm=float(rng.uniform(0.6, 0.7)), hand=float(rng.uniform(0.9, 1.1)),
        head=float(rng.uniform(0.9, 1.1)), space=float(rng.uniform(0.88, 1.12)), left_handed=bool(rng.random() < 0.125),
    )


def _elbows(shoulder: np.ndarray, wrist: np.ndarray, a: float, b: float, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-bone IK: (elbow [T, 3], reachable wrist [T, 3]) for upper arm a and forearm b; the elbow bends
    down and outwards (`out` [T, 1]: +1 towards image right, -1 left)."""
    d = wrist - shoulder
    dist = np.linalg.norm(d, axis=-1, keepdims=True)
    reach = np.clip(dist, abs(a - b) + 1e-3, a + b - 1e-3)
    u = d / np.maximum(dist, 1e-6)
    wrist = shoulder + u * reach
    pole = np.concatenate([0.5 * out, np.ones_like(out), np.full_like(out, 0.3)], axis=1)  # [T, 3]
    v = pole - (u * pole).sum(-1, keepdims=True) * u
    v /= np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-6)
    cos_a = np.clip((a * a + reach**2 - b * b) / (2 * a * reach), -1, 1)
    elbow = shoulder + a * (cos_a * u + np.sqrt(1 - cos_a**2) * v)
    return elbow, wrist


def render_sentence(
    glosses: list[str], signer: Signer, rng: np.random.Generator, *, noise_bank: np.ndarray, noise: float = 1.0, drop_rate: float = 0.3,
) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints float32 [T, 543, 3] (image fractions, NaN where masked) and mask [T, 543] of a signed sentence.

    `noise_bank`: float32 standard normals (`make_noise_bank`), at least 543 * 3 * T long.
    """
    speed = rng.uniform(0.8, 1.25)
    dom_keys: list[tuple[float, Key]] = []
    oth_keys: list[tuple[float, Key]] = []
    mouth_keys: list[tuple[float, float]] = [(0.0, 0.0)]
    shake: list[tuple[float, float]] = []
    t = float(rng.integers(2, 5))
    dom_keys.append((0.0, REST))
    oth_keys.append((0.0, REST))
    dom_keys.append((t, REST))
    oth_keys.append((t, REST))
    for g in (VOCABULARY[n] for n in glosses):
        t += rng.uniform(2.0, 4.0) / speed  # transition into the gloss
        dur = 0.85 * g.frames / speed * rng.uniform(0.9, 1.1)
        dom_keys += [(t + k.t * dur, k) for k in g.dom]
        if g.other == "mirror":
            oth = [(t + k.t * dur, k) for k in g.dom]
        elif g.other == "rest":
            oth = [(t, REST), (t + dur, REST)]
        else:
            ks = list(g.other)
            oth = [(t + k.t * dur, k) for k in ks] if len(ks) > 1 else [(t, ks[0]), (t + dur, ks[0])]
        oth_keys += oth
        mouth_keys += [(t, g.mouth), (t + dur, g.mouth)]
        if g.head_shake:
            shake.append((t, t + dur))
        t += dur
    t += rng.uniform(2.0, 4.0) / speed
    dom_keys.append((t, REST))
    oth_keys.append((t, REST))
    mouth_keys.append((t, 0.0))
    t_end = t + float(rng.integers(1, 4))
    frames = np.arange(int(np.ceil(t_end)) + 1, dtype=np.float64)
    n = len(frames)

    # both hands in one pass: rows 0..n-1 the dominant hand, n..2n-1 the other (its keys mirrored:
    # they are written like the dominant hand's, x < 0 = its own side)
    values = []
    for keys, mirrored in ((dom_keys, False), (oth_keys, True)):
        times, table = _key_table(sorted(((tt, _mirror(k) if mirrored else k) for tt, k in keys), key=lambda tk: tk[0]))
        values.append(_interp(times, table, frames))
    v = np.concatenate(values)  # [2T, 13]
    pos = v[:, :3] * (signer.space, signer.space, 1.0) + np.repeat(rng.normal(0, 0.01, size=(2, 3)), n, axis=0)  # + this sentence's placement
    hand = hand_points(np.minimum(np.maximum(v[:, 3:7], 0.0), 1.0), v[:, 7], v[:, 8], v[:, 9], v[:, 10], v[:, 11], v[:, 12], signer.hand)
    hand[n:, :, 0] = -hand[n:, :, 0]  # the other hand is a left hand: its shape mirrored about its wrist
    hands = [(pos[:n], hand[:n]), (pos[n:], hand[n:])]

    body = np.zeros((n, 33, 3))
    body[:, 11] = (0.5, 0.0, 0.0)  # left shoulder (image right)
    body[:, 12] = (-0.5, 0.0, 0.0)
    body[:, 23] = (0.35, 1.55, 0.05)
    body[:, 24] = (-0.35, 1.55, 0.05)
    for i, (x, y) in zip(range(25, 33), [(0.35, 2.5), (-0.35, 2.5), (0.35, 3.4), (-0.35, 3.4), (0.38, 3.5), (-0.38, 3.5), (0.3, 3.6), (-0.3, 3.6)], strict=True):
        body[:, i] = (x, y, 0.05)
    sway = np.cumsum(rng.normal(0, 0.004, size=(n, 3)), axis=0)  # slow drift of the whole upper body
    sway[:, 2] = 0
    body += sway[:, None]
    head_c = np.array([0.0, -0.85 * signer.head, -0.05]) + sway
    if shake:
        for t0, t1 in shake:
            inside = (frames >= t0) & (frames <= t1)
            head_c[inside, 0] += 0.05 * np.sin(2 * np.pi * (frames[inside] - t0) / 6.0)
    mt = np.array([m[0] for m in mouth_keys]) + np.arange(len(mouth_keys)) * 1e-4
    mouth = _interp(mt, np.array([[m[1]] for m in mouth_keys]), frames)[:, 0] * (0.5 + 0.5 * np.abs(np.sin(frames / 2.0)))
    face = np.repeat((_FACE32 * np.float32(signer.head))[None], n, axis=0)  # [T, 468, 3]
    for c in range(3):  # per coordinate: numpy is slow on broadcasts along a 3-long last axis
        face[..., c] += head_c[:, c:c + 1].astype(np.float32)
    face[:, _LOWER_LIP, 1] += (0.04 * mouth[:, None]).astype(np.float32)
    # pose model's face points from the mesh
    body[:, 0] = face[:, 1]
    body[:, 1], body[:, 2], body[:, 3] = face[:, 362], (face[:, 386] + face[:, 374]) / 2, face[:, 263]
    body[:, 4], body[:, 5], body[:, 6] = face[:, 133], (face[:, 159] + face[:, 145]) / 2, face[:, 33]
    body[:, 7] = head_c + (0.28 * signer.head, 0.0, 0.05)
    body[:, 8] = head_c + (-0.28 * signer.head, 0.0, 0.05)
    body[:, 9], body[:, 10] = face[:, 291], face[:, 61]

    # dominant hand = the signer's right (image left) unless left-handed: then everything is mirrored
    (dpos, dhand), (opos, ohand) = hands
    right_pos, right_hand, left_pos, left_hand = dpos + sway, dhand, opos + sway, ohand
    if signer.left_handed:
        flip = np.array([-1.0, 1.0, 1.0])
        right_pos, right_hand, left_pos, left_hand = left_pos * flip, left_hand * flip, right_pos * flip, right_hand * flip
    # both arms at once: rows 0..n-1 the left arm (pose 11, 13, 15, ...), n..2n-1 the right arm (12, 14, 16, ...)
    out = np.repeat([1.0, -1.0], n)[:, None]
    elbow, wrist = _elbows(np.concatenate([body[:, 11], body[:, 12]]), np.concatenate([left_pos, right_pos]), signer.upper_arm, signer.forearm, out)
    pts = np.concatenate([left_hand, right_hand]) + wrist[:, None]  # [2T, 21, 3]
    for side, rows in ((0, slice(0, n)), (1, slice(n, 2 * n))):
        body[:, 13 + side], body[:, 15 + side] = elbow[rows], wrist[rows]
        body[:, 17 + side], body[:, 19 + side], body[:, 21 + side] = pts[rows, 17], pts[rows, 5], pts[rows, 2]
    left_pts, right_pts = pts[:n], pts[n:]
    kp = np.empty((n, 543, 3), dtype=np.float32)  # shoulder widths from the shoulder midpoint
    kp[:, :_FACE0], kp[:, _FACE0:_LH0], kp[:, _LH0:_RH0], kp[:, _RH0:] = body, face, left_pts, right_pts
    kp *= np.float32(signer.scale)
    kp[..., 0] += np.float32(signer.center[0])
    kp[..., 1] += np.float32(signer.center[1])
    # noise: a random window of a shared bank of normals (drawing 100k normals per sentence costs more than the rest);
    # face landmarks are steadier (half the noise)
    start = int(rng.integers(0, len(noise_bank) - kp.size))
    jitter = noise_bank[start: start + kp.size].reshape(kp.shape) * np.float32(0.0015 * noise)
    jitter[:, _FACE0:_LH0] *= np.float32(0.5)
    kp += jitter

    mask = np.ones((n, 543), dtype=bool)
    mask[:, 25:33] = False  # legs: out of the frame
    for h0, pos in ((_LH0, left_pos), (_RH0, right_pos)):
        if rng.random() < 0.5:  # a hand resting low (near the hips) is often not detected
            mask[pos[:, 1] > 1.1, h0: h0 + 21] = False
        if rng.random() < drop_rate:  # a short detection drop-out while signing
            start, length = int(rng.integers(0, n)), int(rng.integers(1, 6))
            mask[start: start + length, h0: h0 + 21] = False
    kp.reshape(-1, 3)[np.flatnonzero(~mask.ravel())] = np.nan
    return kp, mask


NOISE_BANK_SIZE = 1 << 20  # > 543 * 3 * the longest sentence (~100 frames)


def make_noise_bank(seed: int) -> np.ndarray:
    return np.random.default_rng([seed, 7919]).standard_normal(NOISE_BANK_SIZE, dtype=np.float32)


def generate_split(split: str, size: int, *, seed: int = 0, signers: int = 12, noise: float = 1.0, drop_rate: float = 0.3,
                   min_glosses: int = 2, max_glosses: int = 4) -> list[PoseSample]:
    """`size` sentences of one split; sentence k from its own generator (seed, split, k)."""
    split_id = POSE_SPLITS.index(split)
    pool = [make_signer(np.random.default_rng([seed, 99, s])) for s in range(signers)]
    bank = make_noise_bank(seed)
    out = []
    for k in range(size):
        rng = np.random.default_rng([seed, split_id, k])
        glosses = sample_sentence(rng, min_glosses=min_glosses, max_glosses=max_glosses)
        who = int(rng.integers(0, signers))
        kp, mask = render_sentence(glosses, pool[who], rng, noise_bank=bank, noise=noise, drop_rate=drop_rate)
        out.append(PoseSample(
            id=f"{split}-{k:05d}", keypoints=kp, mask=mask, fps=FPS, layout=LAYOUT, text=translate(glosses), gloss=" ".join(glosses),
            split=split, signer=f"s{who:02d}", source="synthetic-signs", meta={"format": "synthetic"},
        ))
    return out


@register_dataset("synthetic-signs", kind="pose", splits=POSE_SPLITS, help="seeded signed sentences (21 glosses, English text) on the MediaPipe Holistic layout (offline default)")
def make_synthetic_signs(
    arg: None, *, spec: str, split: str | None, seed: int, train_size: int = 400, val_size: int = 60, test_size: int = 60,
    signers: int = 12, noise: float = 1.0, drop_rate: float = 0.3, min_glosses: int = 2, max_glosses: int = 4,
) -> PoseDataset:
    sizes = {"train": train_size, "val": val_size, "test": test_size}
    if any(v < 0 for v in sizes.values()) or signers < 1:
        raise UsageError("synthetic-signs sizes must be >= 0 and signers >= 1")
    samples = []
    for name in [split] if split is not None else list(POSE_SPLITS):
        samples += generate_split(name, sizes[name], seed=seed, signers=signers, noise=noise, drop_rate=drop_rate,
                                  min_glosses=min_glosses, max_glosses=max_glosses)
    token = f"synthetic-signs-v{GENERATOR_VERSION}-{sizes}-s{signers}-n{noise}-d{drop_rate}-g{min_glosses}..{max_glosses}-seed{seed}"
    return PoseDataset(spec=spec, split=split, layout=LAYOUT, samples=samples, cache_token=token)
