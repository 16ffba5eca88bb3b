"""Pickles of pose samples or labels (the original project's, Uni-Sign / GFSLT-VLP `labels.*`), read only
with `--allow-pickle` (allow_pickle=True): loading a pickle can run arbitrary code.

A sample pickle is a list/dict of samples (name, keypoint [T, K, C], text, gloss, ...); its layout
follows from K (543/553/576/586 MediaPipe Holistic, 137 OpenPose, 133 COCO-WholeBody).
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import Any

import numpy as np

from gesture_cli.core.errors import DataError, UsageError
from gesture_cli.data.label_tables import LabelTable, first_line
from gesture_cli.data.pose_points import COCO_WB, HOLISTIC, OPENPOSE, masked_keypoints
from gesture_cli.data.pose_sample import PoseSample, normalize_split
from gesture_cli.models.skeletons import LAYOUT_SIZES

PICKLE_SUFFIXES = (".pkl", ".pickle", ".pkl.gz", ".pickle.gz")
_KP_KEYS = ("keypoint", "keypoints", "kps", "pose", "poses", "skeleton", "skeletons", "joints", "landmarks")
_SCORE_KEYS = ("scores", "score", "confidence", "confidences", "conf", "keypoint_score", "keypoint_scores")
_ID_KEYS = ("name", "id", "video", "video_name", "file", "filename", "sample_id", "clip")
_TEXT_KEYS = ("text", "translation", "sentence", "caption", "words")
_GLOSS_KEYS = ("gloss", "glosses", "orth")
_SIGNER_KEYS = ("signer", "speaker", "signer_id", "participant_id")
CHANNELS = ("auto", "xy", "xyc", "xyz", "xyzc")


def pickle_refused(path: Path) -> DataError:
    return DataError(
        f"{path}: pickle files can run arbitrary code when loaded; gx reads one only with --allow-pickle "
        "(allow_pickle=True): pass it only for a file you trust"
    )


def _load_pickle(path: Path, allow_pickle: bool) -> Any:
    if not allow_pickle:
        raise pickle_refused(path)
    import pickle

    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        return pickle.load(io.BytesIO(raw))  # allowed explicitly by the caller (--allow-pickle)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except Exception as exc:  # UnpicklingError, EOFError, ModuleNotFoundError (a class gx does not have), ...
        raise DataError(f"{path}: cannot unpickle ({type(exc).__name__}: {first_line(exc)})") from None


def _entries(obj: Any) -> list[tuple[str, Any]]:
    """(fallback id, entry) pairs from a list of dicts, a dict of dicts, or a dict holding a list."""
    if isinstance(obj, dict):
        for key in ("samples", "data", "annotations", "items"):
            if isinstance(obj.get(key), (list, tuple)):
                return _entries(obj[key])
        if any(k in obj for k in _KP_KEYS):
            return [("0", obj)]
        return [(str(k), v) for k, v in obj.items()]
    if isinstance(obj, (list, tuple)):
        return [(str(i), v) for i, v in enumerate(obj)]
    return []


def _pick(d: dict, keys: tuple[str, ...]) -> Any:
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    return None


def _layout_from_points(k: int) -> tuple[str, np.ndarray] | None:
    """Layout and kept point indices for a bare [T, K, C] array, from K alone."""
    if k == 543:
        return HOLISTIC, np.arange(543)
    if k == 576:  # + 33 pose world landmarks
        return HOLISTIC, np.arange(543)
    if k in (553, 586):  # refined face (478 points: + 10 iris) [+ 33 world]
        return HOLISTIC, np.r_[np.arange(0, 33 + 468), np.arange(33 + 478, 33 + 478 + 42)]
    if k == 137:
        return OPENPOSE, np.arange(137)
    if k == 133:
        return COCO_WB, np.arange(133)
    return None


def _as_tkc(path: Path, sid: str, arr: Any) -> np.ndarray:
    try:
        a = np.asarray(arr, dtype=np.float32)
    except (TypeError, ValueError):
        raise DataError(f"{path}: sample '{sid}': keypoints are not a numeric array") from None
    if a.ndim == 4:  # [T, P, K, C]: first person
        a = a[:, 0]
    if a.ndim != 3 or a.shape[-1] not in (2, 3, 4):
        raise DataError(f"{path}: sample '{sid}': keypoints must be [T, K, C] with C = 2, 3 or 4 (or [T, P, K, C]), got shape {list(a.shape)}")
    return a


def read_pickle_samples(
    path: Path | str, *, allow_pickle: bool = False, layout: str | None = None, channels: str = "auto", fps: float | None = None,
) -> tuple[list[PoseSample], dict[str, int]]:
    """Samples from a pickle (a list of dicts, or a dict of them): keypoints under 'keypoint'/'keypoints'/...
    ([T, K, C] or [T, P, K, C]), optional scores [T, K], 'name', 'text', 'gloss', 'signer', 'fps', 'split'.

    Read only with allow_pickle=True. `channels` says what C holds: xy, xyc (c = confidence), xyz or
    xyzc; auto: xy for C = 2, xyzc for 4, and for C = 3 xyc on 2D-detector layouts (OpenPose,
    COCO-WholeBody) and xyz on MediaPipe. The layout follows from K (543/576/553/586 MediaPipe
    Holistic, 137 OpenPose, 133 COCO-WholeBody) unless `layout` names it. Returns (samples, skipped).
    """
    path = Path(path)
    if channels not in CHANNELS:
        raise UsageError(f"channels '{channels}' is not one of {', '.join(CHANNELS)}")
    obj = _load_pickle(path, allow_pickle)
    entries = _entries(obj)
    samples: list[PoseSample] = []
    skipped: dict[str, int] = {}
    keys_seen: set[str] = set()
    for fallback, entry in entries:
        if not isinstance(entry, dict):
            skipped["pickle entry that is not a dict"] = skipped.get("pickle entry that is not a dict", 0) + 1
            continue
        keys_seen.update(map(str, entry))
        raw = _pick(entry, _KP_KEYS)
        if raw is None:
            skipped["pickle entry without keypoints"] = skipped.get("pickle entry without keypoints", 0) + 1
            continue
        sid = str(_pick(entry, _ID_KEYS) or fallback)
        a = _as_tkc(path, sid, raw)
        guess = _layout_from_points(a.shape[1])
        if layout not in (None, "", "auto"):
            if layout not in LAYOUT_SIZES:
                raise UsageError(f"unknown layout '{layout}'; valid: auto, {', '.join(sorted(LAYOUT_SIZES))}")
            if guess is None or guess[0] != layout:
                if a.shape[1] != LAYOUT_SIZES[layout]:
                    raise DataError(f"{path}: sample '{sid}' has {a.shape[1]} points; layout {layout} has {LAYOUT_SIZES[layout]}")
                guess = (layout, np.arange(a.shape[1]))
        if guess is None:
            raise DataError(
                f"{path}: sample '{sid}' has {a.shape[1]} points per frame; gx knows 543/553/576/586 (MediaPipe Holistic), "
                "137 (OpenPose) and 133 (COCO-WholeBody)"
            )
        lay, keep = guess
        c = a.shape[-1]
        kind = channels
        if kind == "auto":
            kind = {2: "xy", 4: "xyzc"}.get(c) or ("xyz" if lay == HOLISTIC else "xyc")
        if len(kind) != c:
            raise DataError(f"{path}: sample '{sid}': channels '{kind}' needs C = {len(kind)}, the keypoints have C = {c}")
        coords = a[..., : 3 if kind.startswith("xyz") else 2]
        valid = np.ones(a.shape[:2], dtype=bool)
        if kind.endswith("c"):
            valid &= a[..., -1] > 0
        scores = _pick(entry, _SCORE_KEYS)
        if scores is not None:
            s = np.asarray(scores, dtype=np.float32)
            s = s[:, 0] if s.ndim == 3 else s
            if s.shape != a.shape[:2]:
                raise DataError(f"{path}: sample '{sid}': scores have shape {list(s.shape)}, expected {list(a.shape[:2])}")
            valid &= s > 0
        kp, ok = masked_keypoints(coords[:, keep], valid[:, keep])
        samples.append(PoseSample(
            id=sid, keypoints=kp, mask=ok, fps=float(entry.get("fps") or fps or 25.0), layout=lay,
            text=str(_pick(entry, _TEXT_KEYS) or ""), gloss=str(_pick(entry, _GLOSS_KEYS) or ""),
            split=normalize_split(str(entry.get("split") or "")), signer=str(_pick(entry, _SIGNER_KEYS) or ""),
            source=str(path), meta={"format": "pickle"},
        ))
    if not samples:
        if keys_seen & {*_TEXT_KEYS, *_GLOSS_KEYS}:
            raise DataError(
                f"{path}: the pickle holds labels ({', '.join(sorted(keys_seen)[:6])}) but no keypoint arrays; "
                "use it as a label table: texts=FILE (--texts FILE) next to a pose folder"
            )
        raise DataError(f"{path}: no samples with keypoints found (expected a list of dicts with a 'keypoint' array [T, K, C])")
    return samples, skipped


def read_label_pickle(path: Path | str, *, allow_pickle: bool = False) -> LabelTable:
    """Labels from a pickle (Uni-Sign / GFSLT-VLP `labels.*`: {name: {name, gloss, text, ...}}); needs allow_pickle."""
    path = Path(path)
    obj = _load_pickle(path, allow_pickle)
    table = LabelTable()  # entries have no row numbers: the first wins, no conflicts are recorded
    for fallback, entry in _entries(obj):
        if not isinstance(entry, dict):
            continue
        name = str(_pick(entry, _ID_KEYS) or fallback)
        labels = {
            "text": str(_pick(entry, _TEXT_KEYS) or "").strip(), "gloss": str(_pick(entry, _GLOSS_KEYS) or "").strip(),
            "split": normalize_split(str(entry.get("split") or "")), "signer": str(_pick(entry, _SIGNER_KEYS) or "").strip(),
        }
        table.add(name, {k: v for k, v in labels.items() if v})
    if not table:
        raise DataError(f"{path}: no labels found (expected entries with a name and a text or gloss)")
    return table
