"""Keypoint layouts, their skeleton graphs, selectable body parts and the GCN adjacency.

Three layouts, each the concatenation of its detector's point sets in the detector's own order:

- `mediapipe-holistic` (543 = 33 pose + 468 face + 21 left hand + 21 right hand), the order of
  pose-format's Holistic files and of `mediapipe.solutions.holistic`. Pose points 0-32 follow
  MediaPipe Pose (0 nose, 1-3 left eye inner/eye/outer, 4-6 right eye, 7/8 ears, 9/10 mouth,
  11/12 shoulders, 13/14 elbows, 15/16 wrists, 17-22 pinky/index/thumb knuckles, 23/24 hips,
  25-32 knees, ankles, heels, foot tips; odd = the person's left). Hand points 0-20 follow MediaPipe
  Hands: 0 wrist, then thumb 1-4 (CMC, MCP, IP, tip), index 5-8, middle 9-12, ring 13-16, pinky
  17-20, each from the knuckle to the fingertip. Face points 0-467 are the Face Mesh indices; the
  edges are Face Mesh's contours (lips, eyes, brows, oval; `FACEMESH_CONTOURS`, 124 edges), not its
  2,556-edge tesselation, so most face points are isolated nodes.
- `openpose-137` (25 body + 70 face + 21 left hand + 21 right hand), OpenPose's JSON order. Body is
  BODY_25 (0 nose, 1 neck, 2-4 right shoulder/elbow/wrist, 5-7 left, 8 mid hip, 9-11 right
  hip/knee/ankle, 12-14 left, 15/16 right/left eye, 17/18 ears, 19-24 feet); face is the 68-point
  iBUG layout plus 2 pupils (68 right, 69 left); hands are 0 wrist then 4 points per finger,
  thumb to pinky.
- `coco-wholebody-133` (17 body + 6 feet + 68 face + 21 left hand + 21 right hand), the order of
  COCO-WholeBody and of RTMPose/mmpose whole-body models. Body is COCO-17 (0 nose, 1/2 eyes, 3/4
  ears, 5/6 shoulders, 7/8 elbows, 9/10 wrists, 11/12 hips, 13/14 knees, 15/16 ankles; odd = left).

Edges of all three were checked against the limbs that pose-format writes into `.pose` headers
(tests/test_pose_data.py). Parts (`body`, `hands`, `face-lite`, ...) select index subsets; a part may
carry its own edges (face-lite links its sparse points directly, as the full contours pass through
points it leaves out). Everything here is numpy: the encoder turns it into tensors.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from gesture_cli.core.errors import UsageError, did_you_mean

Edge = tuple[int, int]


def _chain(*idx: int) -> list[Edge]:
    return list(zip(idx[:-1], idx[1:], strict=True))


def _loop(*idx: int) -> list[Edge]:
    return _chain(*idx, idx[0])


def _offset(edges: Iterable[Edge], k: int) -> list[Edge]:
    return [(a + k, b + k) for a, b in edges]


# ---- MediaPipe -----------------------------------------------------------------------------------
MP_POSE_NAMES = (
    "NOSE", "LEFT_EYE_INNER", "LEFT_EYE", "LEFT_EYE_OUTER", "RIGHT_EYE_INNER", "RIGHT_EYE", "RIGHT_EYE_OUTER",
    "LEFT_EAR", "RIGHT_EAR", "MOUTH_LEFT", "MOUTH_RIGHT", "LEFT_SHOULDER", "RIGHT_SHOULDER", "LEFT_ELBOW",
    "RIGHT_ELBOW", "LEFT_WRIST", "RIGHT_WRIST", "LEFT_PINKY", "RIGHT_PINKY", "LEFT_INDEX", "RIGHT_INDEX",
    "LEFT_THUMB", "RIGHT_THUMB", "LEFT_HIP", "RIGHT_HIP", "LEFT_KNEE", "RIGHT_KNEE", "LEFT_ANKLE", "RIGHT_ANKLE",
    "LEFT_HEEL", "RIGHT_HEEL", "LEFT_FOOT_INDEX", "RIGHT_FOOT_INDEX",
)
MP_HAND_NAMES = (
    "WRIST", "THUMB_CMC", "THUMB_MCP", "THUMB_IP", "THUMB_TIP", "INDEX_FINGER_MCP", "INDEX_FINGER_PIP",
    "INDEX_FINGER_DIP", "INDEX_FINGER_TIP", "MIDDLE_FINGER_MCP", "MIDDLE_FINGER_PIP", "MIDDLE_FINGER_DIP",
    "MIDDLE_FINGER_TIP", "RING_FINGER_MCP", "RING_FINGER_PIP", "RING_FINGER_DIP", "RING_FINGER_TIP", "PINKY_MCP",
    "PINKY_PIP", "PINKY_DIP", "PINKY_TIP",
)
# mediapipe.solutions.pose.POSE_CONNECTIONS (35 edges)
MP_POSE_EDGES: list[Edge] = [
    *_chain(0, 1, 2, 3, 7), *_chain(0, 4, 5, 6, 8), (9, 10), (11, 12), *_chain(11, 13, 15, 17, 19, 15, 21),
    *_chain(12, 14, 16, 18, 20, 16, 22), (11, 23), (12, 24), (23, 24), *_chain(23, 25, 27, 29, 31, 27),
    *_chain(24, 26, 28, 30, 32, 28),
]
# mediapipe.solutions.hands.HAND_CONNECTIONS (21 edges: finger chains plus the palm outline)
MP_HAND_EDGES: list[Edge] = [
    *_chain(0, 1, 2, 3, 4), *_chain(0, 5, 6, 7, 8), *_chain(9, 10, 11, 12), *_chain(13, 14, 15, 16),
    *_chain(0, 17, 18, 19, 20), (5, 9), (9, 13), (13, 17),
]
# mediapipe face_mesh_connections: FACEMESH_LIPS, *_EYE, *_EYEBROW, FACE_OVAL (= FACEMESH_CONTOURS, 124 edges)
_MP_LIPS_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
_MP_LIPS_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
_MP_LIPS_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
_MP_LIPS_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
_MP_RIGHT_EYE = ((33, 7, 163, 144, 145, 153, 154, 155, 133), (33, 246, 161, 160, 159, 158, 157, 173, 133))
_MP_LEFT_EYE = ((263, 249, 390, 373, 374, 380, 381, 382, 362), (263, 466, 388, 387, 386, 385, 384, 398, 362))
_MP_RIGHT_BROW = ((46, 53, 52, 65, 55), (70, 63, 105, 66, 107))
_MP_LEFT_BROW = ((276, 283, 282, 295, 285), (300, 293, 334, 296, 336))
_MP_FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176, 149, 150,
    136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)
MP_FACE_EDGES: list[Edge] = [
    *(e for line in (_MP_LIPS_OUTER_LOWER, _MP_LIPS_OUTER_UPPER, _MP_LIPS_INNER_LOWER, _MP_LIPS_INNER_UPPER) for e in _chain(*line)),
    *(e for line in (*_MP_RIGHT_EYE, *_MP_LEFT_EYE, *_MP_RIGHT_BROW, *_MP_LEFT_BROW) for e in _chain(*line)),
    *_loop(*_MP_FACE_OVAL),
]
# face-lite: brows (5 + 5), eye corners and lids (4 + 4), mouth corners and lip middles (4 outer + 4 inner),
# nose tip: 27 Face Mesh points, linked directly (brow chains, eye and lip loops, nose to upper lip).
MP_FACE_LITE = (70, 63, 105, 66, 107, 336, 296, 334, 293, 300, 33, 159, 133, 145, 362, 386, 263, 374,
                61, 0, 291, 17, 78, 13, 308, 14, 1)
MP_FACE_LITE_EDGES: list[Edge] = [
    *_chain(70, 63, 105, 66, 107), *_chain(336, 296, 334, 293, 300), *_loop(33, 159, 133, 145), *_loop(362, 386, 263, 374),
    *_loop(61, 0, 291, 17), *_loop(78, 13, 308, 14), (1, 0),
]

# ---- OpenPose ------------------------------------------------------------------------------------
OP_BODY25_NAMES = (
    "Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "MidHip", "RHip", "RKnee",
    "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar", "LBigToe", "LSmallToe", "LHeel", "RBigToe",
    "RSmallToe", "RHeel",
)
# OpenPose BODY_25 pose pairs (24 edges)
OP_BODY25_EDGES: list[Edge] = [
    (1, 8), *_chain(1, 2, 3, 4), *_chain(1, 5, 6, 7), *_chain(8, 9, 10, 11), *_chain(8, 12, 13, 14), (1, 0),
    *_chain(0, 15, 17), *_chain(0, 16, 18), *_chain(14, 19, 20), (14, 21), *_chain(11, 22, 23), (11, 24),
]
# OpenPose hand: 0 wrist, 4 points per finger from thumb to pinky; a tree (20 edges)
OP_HAND_EDGES: list[Edge] = [e for f in range(5) for e in _chain(0, 1 + 4 * f, 2 + 4 * f, 3 + 4 * f, 4 + 4 * f)]
# iBUG 68 face contours (jaw, brows, nose bridge and base, eye loops, outer and inner lips; 63 edges)
IBUG_FACE_EDGES: list[Edge] = [
    *_chain(*range(0, 17)), *_chain(*range(17, 22)), *_chain(*range(22, 27)), *_chain(27, 28, 29, 30),
    *_chain(*range(31, 36)), (30, 31), (30, 33), *_loop(*range(36, 42)), *_loop(*range(42, 48)),
    *_loop(*range(48, 60)), *_loop(*range(60, 68)),
]
# iBUG face-lite: brows (10), eye corners and lids (8), mouth corners and lip middles (8), nose tip: 27 points
IBUG_FACE_LITE = (*range(17, 27), 36, 37, 39, 40, 42, 43, 45, 46, 48, 51, 54, 57, 60, 62, 64, 66, 30)
IBUG_FACE_LITE_EDGES: list[Edge] = [
    *_chain(*range(17, 22)), *_chain(*range(22, 27)), *_loop(36, 37, 39, 40), *_loop(42, 43, 45, 46),
    *_loop(48, 51, 54, 57), *_loop(60, 62, 64, 66), (30, 51),
]

# ---- COCO-WholeBody ------------------------------------------------------------------------------
COCO_BODY_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle",
)
COCO_FEET_NAMES = ("left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel")
# COCO person skeleton (19 edges, 0-based), then feet: ankle -> big toe, small toe, heel
COCO_BODY_EDGES: list[Edge] = [
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8), (7, 9), (8, 10),
    (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
]
COCO_FEET_EDGES: list[Edge] = [(15, 17), (15, 18), (15, 19), (16, 20), (16, 21), (16, 22)]


@dataclass(frozen=True)
class Skeleton:
    """One layout: its points, parts (index subsets), edges and the points that normalisation uses."""

    layout: str
    point_names: tuple[str, ...]
    parts: dict[str, tuple[int, ...]]  # part name -> layout indices, in the order they are stacked
    part_edges: dict[str, tuple[Edge, ...]]  # edges that belong to a part (layout indices)
    links: tuple[Edge, ...]  # edges between parts (wrist to hand root, nose to face); kept when both ends are selected
    shoulders: tuple[int, int]  # (left, right) shoulder indices, for shoulder-width normalisation
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # aliases: "hands" -> left-hand, right-hand

    @property
    def num_points(self) -> int:
        return len(self.point_names)

    @property
    def edges(self) -> tuple[Edge, ...]:
        """Every edge of the full layout (parts' edges and links), deduplicated, each as (low, high)."""
        return _dedupe([*(e for es in self.part_edges.values() for e in es), *self.links])


def _dedupe(edges: Iterable[Edge]) -> tuple[Edge, ...]:
    seen: dict[Edge, None] = {}
    for a, b in edges:
        if a != b:
            seen.setdefault((min(a, b), max(a, b)), None)
    return tuple(seen)


def _mediapipe_holistic() -> Skeleton:
    face0, lh0, rh0 = 33, 33 + 468, 33 + 468 + 21
    names = (
        *MP_POSE_NAMES, *(f"FACE_{i}" for i in range(468)), *(f"LEFT_{n}" for n in MP_HAND_NAMES),
        *(f"RIGHT_{n}" for n in MP_HAND_NAMES),
    )
    upper = tuple(range(0, 25))  # face points of the pose model, shoulders, arms, pose hand points, hips
    parts = {
        "body": upper,
        "legs": tuple(range(25, 33)),
        "left-hand": tuple(range(lh0, lh0 + 21)),
        "right-hand": tuple(range(rh0, rh0 + 21)),
        "face": tuple(range(face0, face0 + 468)),
        "face-lite": tuple(face0 + i for i in MP_FACE_LITE),
    }
    pose_edges = MP_POSE_EDGES
    part_edges = {
        "body": tuple(e for e in pose_edges if e[0] < 25 and e[1] < 25),
        "legs": tuple(e for e in pose_edges if e[0] >= 25 or e[1] >= 25),
        "left-hand": tuple(_offset(MP_HAND_EDGES, lh0)),
        "right-hand": tuple(_offset(MP_HAND_EDGES, rh0)),
        "face": tuple(_offset(MP_FACE_EDGES, face0)),
        "face-lite": tuple(_offset(MP_FACE_LITE_EDGES, face0)),
    }
    links = ((15, lh0), (16, rh0), (0, face0 + 1))  # pose wrists -> hand wrists, pose nose -> face nose tip
    return Skeleton("mediapipe-holistic", names, parts, part_edges, links, shoulders=(11, 12), groups=_GROUPS)


def _openpose_137() -> Skeleton:
    face0, lh0, rh0 = 25, 25 + 70, 25 + 70 + 21
    names = (
        *OP_BODY25_NAMES, *(f"face_{i}" for i in range(70)), *(f"left_hand_{i}" for i in range(21)),
        *(f"right_hand_{i}" for i in range(21)),
    )
    legs = (10, 11, 13, 14, *range(19, 25))
    parts = {
        "body": tuple(i for i in range(25) if i not in legs),
        "legs": legs,
        "left-hand": tuple(range(lh0, lh0 + 21)),
        "right-hand": tuple(range(rh0, rh0 + 21)),
        "face": tuple(range(face0, face0 + 70)),
        "face-lite": tuple(face0 + i for i in (*IBUG_FACE_LITE, 68, 69)),
    }
    part_edges = {
        "body": tuple(e for e in OP_BODY25_EDGES if e[0] not in legs and e[1] not in legs),
        "legs": tuple(e for e in OP_BODY25_EDGES if e[0] in legs or e[1] in legs),
        "left-hand": tuple(_offset(OP_HAND_EDGES, lh0)),
        "right-hand": tuple(_offset(OP_HAND_EDGES, rh0)),
        "face": tuple(_offset([*IBUG_FACE_EDGES, (36, 68), (42, 69)], face0)),
        "face-lite": tuple(_offset([*IBUG_FACE_LITE_EDGES, (36, 68), (42, 69)], face0)),
    }
    links = ((7, lh0), (4, rh0), (0, face0 + 30))  # LWrist/RWrist -> hand roots, nose -> face nose tip
    return Skeleton("openpose-137", names, parts, part_edges, links, shoulders=(5, 2), groups=_GROUPS)


def _coco_wholebody_133() -> Skeleton:
    face0, lh0, rh0 = 23, 23 + 68, 23 + 68 + 21
    names = (
        *COCO_BODY_NAMES, *COCO_FEET_NAMES, *(f"face_{i}" for i in range(68)), *(f"left_hand_{i}" for i in range(21)),
        *(f"right_hand_{i}" for i in range(21)),
    )
    legs = (13, 14, 15, 16, *range(17, 23))
    parts = {
        "body": tuple(range(0, 13)),
        "legs": legs,
        "left-hand": tuple(range(lh0, lh0 + 21)),
        "right-hand": tuple(range(rh0, rh0 + 21)),
        "face": tuple(range(face0, face0 + 68)),
        "face-lite": tuple(face0 + i for i in IBUG_FACE_LITE),
    }
    body_edges = [*COCO_BODY_EDGES, *COCO_FEET_EDGES]
    part_edges = {
        "body": tuple(e for e in body_edges if e[0] not in legs and e[1] not in legs),
        "legs": tuple(e for e in body_edges if e[0] in legs or e[1] in legs),
        "left-hand": tuple(_offset(OP_HAND_EDGES, lh0)),
        "right-hand": tuple(_offset(OP_HAND_EDGES, rh0)),
        "face": tuple(_offset(IBUG_FACE_EDGES, face0)),
        "face-lite": tuple(_offset(IBUG_FACE_LITE_EDGES, face0)),
    }
    links = ((9, lh0), (10, rh0), (0, face0 + 30))
    return Skeleton("coco-wholebody-133", names, parts, part_edges, links, shoulders=(5, 6), groups=_GROUPS)


_GROUPS = {"hands": ("left-hand", "right-hand"), "all": ("body", "legs", "left-hand", "right-hand", "face")}
_BUILDERS = {"mediapipe-holistic": _mediapipe_holistic, "openpose-137": _openpose_137, "coco-wholebody-133": _coco_wholebody_133}
LAYOUT_SIZES = {"mediapipe-holistic": 543, "openpose-137": 137, "coco-wholebody-133": 133}
DEFAULT_PARTS = ("body", "hands", "face-lite")


def list_layouts() -> list[str]:
    return sorted(_BUILDERS)


def get_skeleton(layout: str) -> Skeleton:
    """The Skeleton of a layout name (`mediapipe-holistic`, `openpose-137`, `coco-wholebody-133`)."""
    if layout not in _BUILDERS:
        raise UsageError(f"unknown keypoint layout '{layout}'{did_you_mean(layout, _BUILDERS)}; valid: {', '.join(list_layouts())}")
    return _BUILDERS[layout]()


def parse_parts(parts: str | Sequence[str] | None) -> tuple[str, ...]:
    """'body,hands,face-lite' -> ('body', 'hands', 'face-lite'); None or '' -> DEFAULT_PARTS."""
    if parts is None or (isinstance(parts, str) and not parts.strip()):
        return DEFAULT_PARTS
    items = parts.split(",") if isinstance(parts, str) else list(parts)
    out = tuple(dict.fromkeys(p.strip().lower() for p in items if p and p.strip()))
    return out or DEFAULT_PARTS


@dataclass(frozen=True)
class PartSelection:
    """A subset of a layout's points: what the encoder sees."""

    layout: str
    parts: tuple[str, ...]  # the expanded part names, in stacking order (aliases resolved)
    indices: np.ndarray  # int64 [K'] layout indices of the selected points, in stacking order
    edges: np.ndarray  # int64 [E, 2] edges between selected points, remapped to 0..K'-1
    part_of: np.ndarray  # int64 [K'] which entry of `parts` each selected point belongs to (first part that claims it)

    @property
    def num_points(self) -> int:
        return len(self.indices)


def select_parts(layout: str, parts: str | Sequence[str] | None = None) -> PartSelection:
    """Points and remapped edges of the named parts of a layout (`body,hands,face-lite`; `all`).

    A point claimed by two parts (face-lite inside face) is kept once, under the first part. Edges are
    the parts' own edges plus the links between parts whose both ends are selected.
    """
    sk = get_skeleton(layout)
    names: list[str] = []
    for p in parse_parts(parts):
        expanded = sk.groups.get(p, (p,))
        for q in expanded:
            if q not in sk.parts:
                valid = sorted({*sk.parts, *sk.groups})
                raise UsageError(f"unknown keypoint part '{p}'{did_you_mean(p, valid)} for layout {layout}; valid: {', '.join(valid)}")
            if q not in names:
                names.append(q)
    order: dict[int, int] = {}
    for pi, q in enumerate(names):
        for idx in sk.parts[q]:
            order.setdefault(idx, pi)
    indices = np.array(list(order), dtype=np.int64)
    remap = {int(i): n for n, i in enumerate(indices)}
    edges = [e for q in names for e in sk.part_edges[q]] + list(sk.links)
    kept = [(remap[a], remap[b]) for a, b in _dedupe(edges) if a in remap and b in remap]
    return PartSelection(
        layout=layout,
        parts=tuple(names),
        indices=indices,
        edges=np.array(kept, dtype=np.int64).reshape(-1, 2),
        part_of=np.array(list(order.values()), dtype=np.int64),
    )


def adjacency_matrix(num_points: int, edges: np.ndarray | Sequence[Edge]) -> np.ndarray:
    """float32 [K, K] symmetric 0/1 adjacency of an undirected edge list (no self-loops)."""
    a = np.zeros((num_points, num_points), dtype=np.float32)
    e = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    if len(e) and (e.min() < 0 or e.max() >= num_points):
        raise ValueError(f"edge index out of range 0..{num_points - 1}")
    a[e[:, 0], e[:, 1]] = 1.0
    a[e[:, 1], e[:, 0]] = 1.0
    np.fill_diagonal(a, 0.0)
    return a


def normalized_adjacency(num_points: int, edges: np.ndarray | Sequence[Edge]) -> np.ndarray:
    """float32 [K, K] GCN propagation matrix D^-1/2 (A + I) D^-1/2 (Kipf & Welling), D the degree of A + I."""
    a = adjacency_matrix(num_points, edges) + np.eye(num_points, dtype=np.float32)
    d = 1.0 / np.sqrt(a.sum(axis=1))  # >= 1 thanks to the self-loop: never a division by zero
    return (a * d[:, None] * d[None, :]).astype(np.float32)
