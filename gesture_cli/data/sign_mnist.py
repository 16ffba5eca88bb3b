"""Sign Language MNIST: `sign-mnist` (gx cache), `sign-mnist:DIR` and `csv:FILE`.

Format (Kaggle "Sign Language MNIST"): one row per image, `label,pixel1..pixel784` (785 columns;
the header line is optional), pixels 0..255 of a 28x28 grey image in row-major order. Labels are
0..24 = A..Y with 9 (J) absent; 25 (Z) never occurs: J and Z need motion. The 24 labels are remapped
to 0..23 in letter order (`SIGN_MNIST_LETTERS`), so label id i is the letter `SIGN_MNIST_LETTERS[i]`.

Reading is fast (numpy's C `loadtxt`: about 1 s for the 27,455-row train file on 2 cores); only when
that fails or the values are out of range is the file walked row by row to name the first bad line.
"""

from __future__ import annotations

import csv
import io
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from gesture_cli.core.errors import DataError, UsageError
from gesture_cli.core.home import datasets_dir
from gesture_cli.data.images import ImageDataset, stratified_split
from gesture_cli.data.registry import register_dataset

SIGN_MNIST_LETTERS: list[str] = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXY" if c != "J"]  # 24 letters; index = label id
SIDE = 28  # image side in pixels
N_COLUMNS = 1 + SIDE * SIDE  # label + 784 pixels
# label_map option: how the file's label column maps to letters.
#   "sign-mnist": the canonical 0..24 without 9 (J) -- the Kaggle files
#   "contiguous": already remapped to 0..23 (some copies on GitHub are)
LABEL_MAPS = ("sign-mnist", "contiguous")
_FIX_ROW = "fix or remove that row"
_CONTIGUOUS_HINT = "if this file's labels are already remapped to 0..23, pass --dataset-opt label_map=contiguous"


def sign_mnist_label_to_letter(raw_label: int) -> str:
    """A canonical Sign MNIST label (0..24, not 9) -> its letter: 0 -> 'A', 10 -> 'K', 24 -> 'Y'."""
    raw = int(raw_label)
    if raw in (9, 25):
        raise DataError(f"Sign MNIST label {raw} ({'J' if raw == 9 else 'Z'}) does not exist: J and Z need motion")
    if not 0 <= raw <= 24:
        raise DataError(f"Sign MNIST label {raw} is out of range 0..24")
    return SIGN_MNIST_LETTERS[raw - (raw > 9)]


def _label_problem(value: int, label_map: str) -> str | None:
    """Why a raw label is invalid under `label_map`, or None when it is fine."""
    if label_map == "contiguous":
        return None if 0 <= value <= 23 else f"label {value} is out of range for label_map=contiguous (0..23 = A..Y without J)"
    if value in (9, 25):
        letter = "J" if value == 9 else "Z"
        return f"label {value} ({letter}) is not in Sign MNIST: J and Z need motion (labels are 0..24 without 9); {_CONTIGUOUS_HINT}"
    if not 0 <= value <= 24:
        return f"label {value} is out of range: Sign MNIST labels are 0..24 (A..Y) without 9 (J)"
    return None


def _column_name(j: int) -> str:
    return "label" if j == 0 else f"pixel{j}"


def _first_row(path: Path) -> tuple[int, list[str]] | None:
    """(1-based line number, fields) of the first non-blank line, or None for an empty file."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            text = raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="replace").strip()
            if text:
                return line_no, text.split(",")
    return None


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def read_sign_mnist_csv(path: Path, *, label_map: str = "sign-mnist") -> tuple[np.ndarray, np.ndarray]:
    """Read and validate one Sign MNIST CSV.

    Returns (images uint8 [N, 28, 28], labels int64 [N] in 0..23 = `SIGN_MNIST_LETTERS` index).
    Raises a one-line DataError naming the file, the 1-based line and the column of the first problem.
    """
    path = Path(path)
    _check_label_map(label_map)
    if not path.exists():
        raise DataError(f"{path}: file not found; check the path (a Sign MNIST CSV: label,pixel1..pixel784)")
    if not path.is_file():
        raise DataError(f"{path}: is a directory, not a CSV file; use sign-mnist:DIR or folder:DIR for directories")
    try:
        return _read_checked(path, label_map=label_map)
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e.strerror or e}); check its permissions") from None


def _read_checked(path: Path, *, label_map: str) -> tuple[np.ndarray, np.ndarray]:
    first = _first_row(path)
    if first is None:
        raise DataError(f"{path}: the file is empty; expected Sign MNIST rows (label,pixel1..pixel784): re-export or re-download it")
    first_line, fields = first
    has_header = not _is_int(fields[0].strip().strip("\"'"))
    if has_header:
        if len(fields) != N_COLUMNS:
            raise DataError(f"{path}: line {first_line}: header has {len(fields)} columns, expected {N_COLUMNS} (label,pixel1..pixel784); is this a Sign MNIST CSV?")
        if fields[0].strip().strip('"').lower() != "label":
            raise DataError(f"{path}: line {first_line}: first column is {fields[0].strip()[:20]!r}, expected 'label' (label,pixel1..pixel784)")
    skip = first_line if has_header else first_line - 1  # lines before the first data row
    table = _loadtxt(path, skiprows=skip)
    if table is None or not _fast_checks_pass(table, label_map):
        table = _parse_checked(path, skip_lines=skip, label_map=label_map)  # raises at the first bad row
    if len(table) == 0:
        raise DataError(f"{path}: has a header but no data rows; expected Sign MNIST rows (label,pixel1..pixel784)")
    raw = table[:, 0].astype(np.int64)
    labels = raw if label_map == "contiguous" else raw - (raw > 9)
    images = table[:, 1:].astype(np.uint8).reshape(-1, SIDE, SIDE)
    return images, labels


def _loadtxt(source, *, skiprows: int = 0) -> np.ndarray | None:
    """numpy's C parser: int16 [rows, columns], or None when some row is malformed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": reported by the caller
            # int16 holds any plausible bad value (e.g. 300) so the range checks can name it.
            return np.loadtxt(source, delimiter=",", dtype=np.int16, skiprows=skiprows, comments=None, encoding="utf-8-sig", ndmin=2)
    except (ValueError, OverflowError, UnicodeDecodeError):
        return None


def _fast_checks_pass(table: np.ndarray, label_map: str) -> bool:
    if table.shape[1] != N_COLUMNS:
        return False
    if len(table) == 0:
        return True
    pixels, labels = table[:, 1:], table[:, 0]
    if pixels.min() < 0 or pixels.max() > 255:
        return False
    if label_map == "contiguous":
        return bool(labels.min() >= 0 and labels.max() <= 23)
    return bool(labels.min() >= 0 and labels.max() <= 24 and not (labels == 9).any())


_CHUNK = 1024  # rows re-parsed together while looking for the bad one


def _parse_checked(path: Path, *, skip_lines: int, label_map: str) -> np.ndarray:
    """The exact path, taken only when the fast one failed: parse in chunks with the C parser and
    check the one chunk that fails row by row, so the first bad line is found in about a second
    even at the end of a 27k-row file. Raises a DataError for it; returns the table if none is bad
    (e.g. numbers in quotes, which the C parser refuses but CSV allows)."""
    data = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    lines = [(n, s) for n, raw in enumerate(data.split(b"\n"), start=1) if n > skip_lines and (s := raw.strip())]
    parts = []
    for start in range(0, len(lines), _CHUNK):
        chunk = lines[start : start + _CHUNK]
        table = _loadtxt(io.BytesIO(b"\n".join(s for _, s in chunk)))
        if table is None or not _fast_checks_pass(table, label_map):
            table = _check_rows(path, chunk, label_map=label_map)
        parts.append(table)
    return np.concatenate(parts) if parts else np.zeros((0, N_COLUMNS), dtype=np.int16)


def _check_rows(path: Path, rows: list[tuple[int, bytes]], *, label_map: str) -> np.ndarray:
    """Check (line number, text) rows one by one; raise a DataError for the first bad one."""
    table = []
    for line, text in rows:
        row = next(csv.reader([text.decode("utf-8", errors="replace")]))
        if len(row) != N_COLUMNS:
            raise DataError(f"{path}: line {line}: expected {N_COLUMNS} columns (label,pixel1..pixel784), got {len(row)}; {_FIX_ROW}")
        values = []
        for j, cell in enumerate(row):
            try:
                v = int(cell)
            except ValueError:
                what = "a whole number" if _is_float(cell) else "a number"
                raise DataError(f"{path}: line {line}, column {_column_name(j)}: {cell.strip()[:20]!r} is not {what}; values must be integers; {_FIX_ROW}") from None
            if j > 0 and not 0 <= v <= 255:
                raise DataError(f"{path}: line {line}, column {_column_name(j)}: pixel value {v} is outside 0..255; {_FIX_ROW}")
            values.append(v)
        problem = _label_problem(values[0], label_map)
        if problem:
            raise DataError(f"{path}: line {line}, column label: {problem}")
        table.append(values)
    return np.asarray(table, dtype=np.int16).reshape(-1, N_COLUMNS)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_label_map(label_map: str) -> None:
    if label_map not in LABEL_MAPS:
        raise UsageError(f"label_map must be one of {', '.join(LABEL_MAPS)}; got '{label_map}'")


def _dataset(path: Path, *, spec: str, split: str, label_map: str, cache_token: str = "") -> ImageDataset:
    images, labels = read_sign_mnist_csv(path, label_map=label_map)
    if label_map != "sign-mnist":
        cache_token = ";".join(t for t in (cache_token, f"label_map={label_map}") if t)
    return ImageDataset(spec=spec, split=split, classes=list(SIGN_MNIST_LETTERS), labels=labels, images=images,
                        source_files=[path], cache_token=cache_token)


def find_sign_mnist_file(root: Path, split: str) -> Path | None:
    """`root/sign_mnist_<split>.csv`, or the Kaggle zip layout `root/sign_mnist_<split>/sign_mnist_<split>.csv`."""
    name = f"sign_mnist_{split}.csv"
    for candidate in (root / name, root / f"sign_mnist_{split}" / name):
        if candidate.is_file():
            return candidate
    return None


@register_dataset(
    "sign-mnist",
    help="Sign Language MNIST, 24 letters (A-Y without J), 28x28 grey: the gx cache (gx download sign-mnist) or a DIR with sign_mnist_{train,test}.csv",
    splits=("train", "test"),
    arg="DIR",
)
def make_sign_mnist(arg: str | None, *, spec: str, split: str, seed: int, label_map: str = "sign-mnist") -> ImageDataset:
    _check_label_map(label_map)
    if arg is None:
        root = datasets_dir() / "sign-mnist"
        if find_sign_mnist_file(root, split) is None:
            raise DataError(f"Sign MNIST {split} split not found in the gx cache ({root}); run `gx download sign-mnist`, or use sign-mnist:DIR / csv:FILE for your own copy")
    else:
        root = Path(arg).expanduser()
        if not root.is_dir():
            raise DataError(f"{root}: no such directory; sign-mnist:DIR needs a folder holding sign_mnist_train.csv and sign_mnist_test.csv")
    path = find_sign_mnist_file(root, split)
    if path is None:
        raise DataError(f"{root}: no sign_mnist_{split}.csv (looked in {root} and {root / f'sign_mnist_{split}'}); run `gx download sign-mnist` or point to the folder that holds it")
    return _dataset(path, spec=spec, split=split, label_map=label_map)


@register_dataset(
    "csv",
    help="one Sign-MNIST-format CSV (label,pixel1..pixel784); train/test = stratified 80/20 split by seed, all = every row",
    splits=("train", "test", "all"),
    arg="FILE",
    arg_required=True,
)
def make_csv(arg: str, *, spec: str, split: str, seed: int, label_map: str = "sign-mnist", test_fraction: float = 0.2) -> ImageDataset:
    _check_label_map(label_map)
    if not 0.0 < float(test_fraction) < 1.0:
        raise UsageError(f"test_fraction must be between 0 and 1 (exclusive); got {test_fraction}")
    ds = _dataset(Path(arg).expanduser(), spec=spec, split=split, label_map=label_map,
                  cache_token="" if split == "all" else f"split=stratified,test_fraction={test_fraction},seed={seed}")
    if split == "all":
        return ds
    train_idx, test_idx = stratified_split(ds.labels, test_fraction=float(test_fraction), seed=seed)
    rows = train_idx if split == "train" else test_idx
    return replace(ds.subset(rows), all_rows=rows)
