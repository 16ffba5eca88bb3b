"""Every pose sample of a file or folder, in any format gx reads, labelled from the tables beside it.

| format | files | layout | reader |
| --- | --- | --- | --- |
| pose-format `.pose` (v0.0-0.2) | one sequence per file | MediaPipe Holistic -> `mediapipe-holistic` (543); OpenPose -> `openpose-137` | data/pose_format_files.py |
| OpenPose JSON | `<clip>_<12 digits>_keypoints.json`, one per frame (How2Sign) | `openpose-137` | data/pose_openpose.py |
| Kaggle ASL-signs parquet | one sequence per file: frame, row_id, type, landmark_index, x, y[, z] | `mediapipe-holistic` | data/pose_kaggle.py |
| ASL-App landmark JSON | `{"sign", "fps", "frames": [{pose, left_hand, right_hand, face}]}` | `mediapipe-holistic` | data/pose_asl_app.py |
| pickle (`--allow-pickle` only) | list/dict of samples: name, keypoint [T, K, C], text, gloss | by K (543, 137, 133, ...) | data/pose_pickle.py |
| label tables | CSV/TSV with a name/path/clip column and text/gloss/split/signer columns | - | data/label_tables.py |

This module walks a file or folder (`read_pose_path`), hands each file to its format's reader, joins
the label tables (and an explicit `texts=` file, `read_labels`) to the samples, and checks the whole:
one layout, at least one sample. Coordinates are kept in the source's units (pixels for `.pose` and
OpenPose, [0, 1] image fractions for Kaggle/ASL-App); the normalisation functions of data/pose.py
remove the difference. Missing points are masked (data/pose_points.py). Every reader raises a
one-line DataError naming the file (and key, column or row) on bad input.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from gesture_cli.core.errors import DataError, GxWarning, UsageError
from gesture_cli.data.label_tables import (
    LABEL_KEY_COLUMNS,
    LABELS_FILE,
    Labels,
    LabelTable,
    conflicting_rows_message,
    first_line,
    gloss_from_name,
    label_keys,
    read_label_table,
)
from gesture_cli.data.pose_asl_app import is_asl_app_json, read_asl_app_face_indices, read_asl_app_json
from gesture_cli.data.pose_format_files import read_pose_file
from gesture_cli.data.pose_kaggle import read_kaggle_parquet
from gesture_cli.data.pose_openpose import OPENPOSE_FRAME_RE, find_openpose_clips, read_openpose_clip
from gesture_cli.data.pose_pickle import PICKLE_SUFFIXES, read_label_pickle, read_pickle_samples
from gesture_cli.data.pose_sample import PoseSample, normalize_split
from gesture_cli.models.skeletons import LAYOUT_SIZES


def read_labels(path: Path | str, *, allow_pickle: bool = False) -> LabelTable:
    """An explicit label file (`texts=`): a CSV/TSV table or, with allow_pickle, a pickle of labels."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"texts file {path} not found")
    if path.name.lower().endswith(PICKLE_SUFFIXES):
        return read_label_pickle(path, allow_pickle=allow_pickle)
    table = read_label_table(path, class_lists=[p for p in path.parent.glob("*.csv") if p != path])
    if table is None:
        raise DataError(
            f"{path}: not a label table: it needs a header with a name column ({', '.join(LABEL_KEY_COLUMNS[:5])}, ...) "
            "and a text, gloss or split column"
        )
    return table


# ---- a file or a folder of any of the above ------------------------------------------------------
_SIGNER_IN_NAME_RE = re.compile(r"^(?P<signer>signer\d+)_sample\d+$")  # AUTSL: signer0_sample1000
_LABEL_SUFFIXES = (".csv", ".tsv")


def _is_pickle(p: Path) -> bool:
    return p.name.lower().endswith(PICKLE_SUFFIXES)


def _bump(skipped: dict[str, int], reason: str, n: int = 1) -> None:
    skipped[reason] = skipped.get(reason, 0) + n


def _split_from_path(rel: Path) -> str:
    for part in rel.parts[:-1]:
        s = normalize_split(part)
        if s in ("train", "val", "test"):
            return s
    return ""


def read_pose_path(
    path: Path | str, *, allow_pickle: bool = False, layout: str | None = None, texts: Path | str | None = None,
    fps: float | None = None, channels: str = "auto",
) -> tuple[list[PoseSample], dict[str, int], list[Path]]:
    """Every sample of a pose file or folder, labelled from the label tables next to them.

    A folder is scanned recursively: `.pose` files, OpenPose `*_keypoints.json` frames (grouped into
    clips), Kaggle `.parquet` files, ASL-App sign JSON (face map from a `metadata.json`) and CSV/TSV
    label tables. Pickles are read only when passed as the file itself (with allow_pickle) or as
    `texts=`; in a folder they are counted as skipped. Labels come from `texts` first, then from the
    tables (matched by path relative to the table, then by file or clip name); a split comes from the
    labels, else from a folder named train/val/dev/test on the path, else stays ''. `fps` is used
    where the format records none (JSON, parquet, pickle). With `layout`, samples of other layouts
    are skipped (counted); without it, a folder that mixes layouts is a DataError.

    Returns (samples, skipped reason -> count, source files).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    wanted = None if layout in (None, "", "auto") else layout
    if wanted is not None and wanted not in LAYOUT_SIZES:
        raise UsageError(f"unknown layout '{wanted}'; valid: auto, {', '.join(sorted(LAYOUT_SIZES))}")
    skipped: dict[str, int] = {}
    found: list[tuple[PoseSample, Path, Path]] = []  # (sample, file or clip path for label lookup, root it is relative to)

    if path.is_file():
        root = path.parent
        if _is_pickle(path):
            pick, skipped = read_pickle_samples(path, allow_pickle=allow_pickle, layout=wanted, channels=channels, fps=fps)
            return _finish(path, [(s, root / s.id, root) for s in pick], skipped, [path], wanted, texts, [], allow_pickle)
        files = [path]
        m = OPENPOSE_FRAME_RE.match(path.name)
        if m:  # one frame of a clip: read the whole clip
            files = sorted(p for p in path.parent.glob(f"{glob_escape(m['clip'])}_*_keypoints.json") if OPENPOSE_FRAME_RE.match(p.name))
        # label tables beside the file and one folder up (a lexicon's index.csv lists `ase/x.pose`)
        label_files = sorted(p for d in (root, root.parent) for p in d.iterdir() if p.is_file() and p.suffix.lower() in _LABEL_SUFFIXES)
        if path.suffix.lower() == ".parquet":  # Kaggle keeps train.csv at <root>/train_landmark_files/<pid>/<seq>.parquet
            label_files += [a / "train.csv" for a in path.parents[2:4] if (a / "train.csv").is_file()]
        # Only a table that names this file (or its clip) can label it: the others are not parsed at all
        names = {label_keys(path.name)[-1]} | ({m["clip"]} if m else set())
        label_files = [lf for lf in label_files if _table_names(lf, names, skipped)]
        metas = [root / "metadata.json", root.parent / "metadata.json"]
    else:
        root = path
        files = sorted(p for p in root.rglob("*") if p.is_file() and not any(x.startswith(".") for x in p.relative_to(root).parts))
        label_files = [p for p in files if p.suffix.lower() in _LABEL_SUFFIXES]
        metas = [p for p in files if p.name == "metadata.json"]

    face_maps = {m.parent: idx for m in metas if m.is_file() and (idx := read_asl_app_face_indices(m)) is not None}
    openpose_files: list[Path] = []
    for f in files:
        suffix = f.suffix.lower()
        name = f.name.lower()
        rel = f.relative_to(root)
        sid = rel.with_suffix("").as_posix()
        if _is_pickle(f):
            _bump(skipped, "pickle not read in a folder scan (pass it as the input with --allow-pickle, or as --texts)")
        elif suffix == ".pose":
            found.append((read_pose_file(f, sample_id=sid), f, root))
        elif OPENPOSE_FRAME_RE.match(f.name):
            openpose_files.append(f)
        elif suffix == ".parquet":
            found.append((read_kaggle_parquet(f, sample_id=sid, fps=fps), f, root))
        elif suffix == ".json":
            if name == "metadata.json" and f.parent in face_maps:
                continue
            try:
                doc = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
                if path.is_file():
                    raise DataError(f"{f}: not valid JSON ({first_line(exc)})") from None
                _bump(skipped, "unreadable JSON")
                continue
            if is_asl_app_json(doc):
                fmap = face_maps.get(f.parent) or face_maps.get(f.parent.parent)
                found.append((read_asl_app_json(f, doc=doc, face_indices=fmap, sample_id=sid), f, root))
            elif isinstance(doc, dict) and "people" in doc:
                openpose_files.append(f)
            elif path.is_file():
                raise DataError(f"{f}: JSON that is neither OpenPose keypoints ('people') nor ASL-App landmarks ('frames')")
            else:
                _bump(skipped, "JSON that is not a pose file")
        elif suffix in _LABEL_SUFFIXES:
            continue
        else:
            if path.is_file():
                raise DataError(
                    f"{f}: not a pose file gx reads (.pose, OpenPose *_keypoints.json, Kaggle .parquet, ASL-App .json, "
                    "or a pickle with --allow-pickle)"
                )
            _bump(skipped, "not a pose or label file")
    clips = find_openpose_clips(root, [f for f in openpose_files if OPENPOSE_FRAME_RE.match(f.name)])
    for f in openpose_files:  # a lone OpenPose JSON without the _<frame>_keypoints suffix: a one-frame clip
        if not OPENPOSE_FRAME_RE.match(f.name):
            clips[f.relative_to(root).with_suffix("").as_posix()] = [(0, f)]
    for cid, frames in sorted(clips.items()):
        found.append((read_openpose_clip(frames, sample_id=cid, fps=fps), root / cid, root))
    return _finish(path, found, skipped, files, wanted, texts, label_files, allow_pickle)


def _table_names(table: Path, names: set[str], skipped: dict[str, int]) -> bool:
    """Whether the bytes of a label table hold any of `names` (a table lists samples by path or name, so
    one that can label a file holds its base name). One that cannot be opened is noted in `skipped`."""
    try:
        data = table.read_bytes()
    except OSError as exc:
        _bump(skipped, f"label table not read: {table}: {first_line(exc)}")
        return False
    return any(n and n.encode("utf-8") in data for n in names)


def _warn(message: str) -> None:
    import warnings

    warnings.warn(GxWarning(message), stacklevel=3)


def _no_row_names(texts: Path | str, samples: list[PoseSample]) -> DataError:
    return DataError(f"{texts}: none of its rows names one of the {len(samples)} samples (e.g. '{samples[0].id}'); "
                     "check its path or name column")


def relabel_from_texts(samples: list[PoseSample], texts: Path | str, *, allow_pickle: bool = False) -> None:
    """`--texts TABLE` on a gx pose folder: each sample's text and gloss from the row that names its id, in place.
    A table that names none of them is an error; samples it lists in rows with other labels get one warning."""
    table = read_labels(texts, allow_pickle=allow_pickle)
    matched = 0
    ambiguous: list[tuple[str, list[int]]] = []
    for s in samples:
        key = next((k for k in label_keys(s.id) if k in table), None)
        if key is None or not table[key]:
            continue
        matched += 1
        s.text, s.gloss = table[key].get("text", s.text), table[key].get("gloss", s.gloss)
        if key in table.conflicts:
            ambiguous.append((s.id, table.conflicts[key]))
    if samples and not matched:
        raise _no_row_names(texts, samples)
    if ambiguous:
        _warn(conflicting_rows_message(texts, ambiguous))


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _finish(
    path: Path, found: list[tuple[PoseSample, Path, Path]], skipped: dict[str, int], files: list[Path], wanted: str | None,
    texts: Path | str | None, label_files: list[Path], allow_pickle: bool,
) -> tuple[list[PoseSample], dict[str, int], list[Path]]:
    tables: list[tuple[Path, LabelTable]] = []  # (table file, its rows)
    for lf in label_files:
        try:
            table = read_label_table(lf, class_lists=[p for p in lf.parent.glob("*.csv") if p != lf])
        except DataError as exc:  # one bad table among many is a note, not the end of the whole read
            _bump(skipped, f"label table not read: {exc}")
            _warn(f"{exc}; its samples get no texts from it")
            continue
        if table:
            tables.append((lf, table))
        elif lf.name.lower() == LABELS_FILE:  # other CSVs may be class lists or notes; this name says it is a label table
            _bump(skipped, f"label table not read: {lf}")
            _warn(f"{lf}: not a label table (it needs a header with a path or name column and a text, gloss or split column); "
                  "its samples get no texts from it")
    explicit = read_labels(texts, allow_pickle=allow_pickle) if texts else None
    from_tables = from_explicit = 0  # samples a table / --texts labelled
    ambiguous: dict[Path | str, list[tuple[str, list[int]]]] = {}  # table -> (sample, rows) it labelled from conflicting rows

    samples: list[PoseSample] = []
    layouts: dict[str, str] = {}
    for sample, where, root in found:
        if wanted is not None and sample.layout != wanted:
            _bump(skipped, f"layout {sample.layout}, not {wanted}")
            continue
        if sample.num_frames == 0:
            _bump(skipped, "empty (0 frames)")
            continue
        labels: Labels = {}
        for table_file, table in tables:
            rel = where.relative_to(table_file.parent).as_posix() if table_file.parent in where.parents else where.name
            key = next((k for k in (*label_keys(rel), *label_keys(where.name)) if k in table), None)
            if key is not None:
                labels = dict(table[key])
                from_tables += 1
                if key in table.conflicts:
                    ambiguous.setdefault(table_file, []).append((sample.id, table.conflicts[key]))
                break
        if explicit is not None:
            key = next((k for k in (*label_keys(sample.id), *label_keys(where.name)) if k in explicit), None)
            labels.update(explicit[key] if key is not None else {})
            from_explicit += key is not None
            if key in explicit.conflicts:
                ambiguous.setdefault(texts, []).append((sample.id, explicit.conflicts[key]))
        sample.text = labels.get("text", sample.text)
        sample.gloss = labels.get("gloss", sample.gloss) or gloss_from_name(where.stem)
        sample.split = labels.get("split") or sample.split or _split_from_path(where.relative_to(root) if root in where.parents else Path(where.name))
        m = _SIGNER_IN_NAME_RE.match(where.stem)
        sample.signer = labels.get("signer", sample.signer) or (m["signer"] if m else "")
        layouts.setdefault(sample.layout, sample.source)
        samples.append(sample)
    if explicit is not None and samples and not from_explicit:
        raise _no_row_names(texts, samples)
    if tables and samples and not from_tables:
        _warn(f"{', '.join(str(lf) for lf, _ in tables)}: names none of the {len(samples)} samples of {path} (e.g. '{samples[0].id}'); "
              "they get no texts from it")
    for table_file, hits in ambiguous.items():
        _warn(conflicting_rows_message(table_file, hits))
    if len(layouts) > 1:
        desc = " and ".join(f"{lay} ({Path(src).name})" for lay, src in layouts.items())
        raise DataError(f"{path}: mixes keypoint layouts: {desc}; keep one with `gx pose-convert --layout NAME` (a dataset: --dataset-opt layout=NAME), or put each layout in its own folder")
    if not samples:
        what = f" of layout {wanted}" if wanted else ""
        raise DataError(
            f"{path}: no pose samples{what} found (gx reads .pose, OpenPose *_keypoints.json, Kaggle .parquet, "
            "ASL-App sign .json, a gx pose folder with index.jsonl, or a pickle with --allow-pickle)"
        )
    seen: dict[str, int] = {}
    for s in samples:  # the same stem in two formats (a.pose, a.parquet): keep both, tell them apart
        if s.id in seen:
            seen[s.id] += 1
            s.id = f"{s.id}#{seen[s.id]}"
        else:
            seen[s.id] = 1
    return samples, skipped, [*files, *label_files]
