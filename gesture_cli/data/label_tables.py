"""Label tables of pose datasets: which text, gloss, split and signer belong to which sample file.

Sign-language corpora ship their labels beside the keypoints in many shapes; these heuristics read
them all into one `{sample key: Labels}` table: a CSV/TSV/pipe-separated table with a name column
and text/gloss/split/signer columns (PHOENIX-2014T, How2Sign, Kaggle train.csv, lexicon index.csv), a
header-less `name,class_id` table with a class list beside it (AUTSL), or a gloss in the file name
(ASL Citizen). A sample is looked up by `label_keys(name)`: its path without media suffixes, then its
base name. Pickled label files are read by data/pose_pickle.py (`read_label_pickle`, through
pose_readers.read_labels).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from pathlib import Path

from gesture_cli.core.errors import DataError
from gesture_cli.data.pose_sample import normalize_split


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__



LABEL_KEY_COLUMNS = ("path", "name", "clip", "id", "sample", "sample_id", "video", "sentence_name", "file", "filename", "video_name", "sequence_id")
LABEL_TEXT_COLUMNS = ("text", "translation", "sentence", "words", "english", "en", "sign")
LABEL_GLOSS_COLUMNS = ("gloss", "glosses", "orth", "sign", "label")
LABEL_SPLIT_COLUMNS = ("split", "split_dir", "subset")
LABEL_SIGNER_COLUMNS = ("signer", "speaker", "signer_id", "participant_id")
_STRIP_SUFFIXES = (".gz", ".pkl", ".pickle", ".pose", ".parquet", ".json", ".mp4", ".avi", ".mov", ".webm", ".mkv", ".safetensors", ".npy")

Labels = dict[str, str]  # text, gloss, split, signer (any subset)
LABELS_FILE = "labels.csv"  # the label table gx pose-extract writes beside its .pose files


def label_keys(name: str) -> list[str]:
    """Lookup keys of a sample name or path: the path without media suffixes, then its base name."""
    s = name.strip().replace("\\", "/")
    while s.startswith("./"):
        s = s[2:]
    changed = True
    while changed:
        changed = False
        for suf in _STRIP_SUFFIXES:
            if s.lower().endswith(suf):
                s, changed = s[: -len(suf)], True
    base = s.rsplit("/", 1)[-1]
    return [s, base] if base != s else [s]


class LabelTable(dict[str, Labels]):
    """{sample key: labels} of one label file, filled by `add`: the first row that names a key wins
    (a lexicon lists a file once per spoken language, with the same text each time).

    `conflicts` records the ambiguous keys, those that a later row gave other labels:
    {key: [the row used, the later rows whose labels differ]}, row numbers counted as in the file
    (the header is row 1; blank rows are not counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.conflicts: dict[str, list[int]] = {}
        self._first_rows: dict[str, int] = {}  # key -> the row its labels came from

    def add(self, name: str, labels: Labels, *, row: int | None = None) -> None:
        """Labels of the sample `name` (looked up by each of its `label_keys`), from table row `row` (None: no rows)."""
        for k in label_keys(name):
            if k not in self:
                self[k] = labels
                if row is not None:
                    self._first_rows[k] = row
            elif row is not None and k in self._first_rows and self[k] != labels:
                self.conflicts.setdefault(k, [self._first_rows[k]]).append(row)


def conflicting_rows_message(table: Path | str, samples: list[tuple[str, list[int]]]) -> str:
    """The warning for the samples [(id, rows)] that a label table lists in several rows with different labels."""
    sid, rows = samples[0]
    where = (f"rows {', '.join(map(str, rows[:-1]))} and {rows[-1]}" if len(rows) <= 5
             else f"rows {', '.join(map(str, rows[:5]))}, ... ({len(rows)} rows)")
    n = len(samples)
    return (f"{table}: {n} sample{'s' if n > 1 else ''} listed in several rows with different labels (e.g. '{sid}' in {where}); "
            "the first row is used (keep one row per sample, or give its rows the same labels)")


def sniff_rows(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
        first = text.split("\n", 1)[0]
        delim = max(("\t", "|", ",", ";"), key=first.count)
        return [r for r in csv.reader(io.StringIO(text), delimiter=delim) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:  # csv.Error: a field over the csv module's size limit
        raise DataError(f"{path}: cannot read the label table ({first_line(exc)})") from None


def column(header: list[str], names: tuple[str, ...]) -> int | None:
    low = [h.strip().lower() for h in header]
    for n in names:
        if n in low:
            return low.index(n)
    return None


def read_label_table(path: Path | str, *, class_lists: Iterable[Path] = ()) -> LabelTable | None:
    """A CSV/TSV/pipe-separated label table -> {sample key: labels}; None when the file is not one.

    Recognised: a header with a name column (path, name, clip, id, sentence_name, ...) and any of text
    (text, translation, sentence, words, sign), gloss (gloss, glosses, orth, sign), split and signer
    columns (PHOENIX-2014T corpus, How2Sign, Kaggle train.csv, lexicon index.csv); or a header-less
    `name,class_id` table (AUTSL labels.csv) whose classes come from a `ClassId,...` list in `class_lists`
    (gloss = the list's first name column, text = its EN/English column). The first row naming a
    sample wins; the table's `conflicts` says which samples later rows gave other labels.
    """
    path = Path(path)
    rows = sniff_rows(path)
    if not rows:
        return None
    header = rows[0]
    key = column(header, LABEL_KEY_COLUMNS)
    table = LabelTable()
    if key is not None:
        text, gloss = column(header, LABEL_TEXT_COLUMNS), column(header, LABEL_GLOSS_COLUMNS)
        split, signer = column(header, LABEL_SPLIT_COLUMNS), column(header, LABEL_SIGNER_COLUMNS)
        if text is None and gloss is None and split is None:
            return None
        for n, row in enumerate(rows[1:], start=2):
            cell = lambda i, r=row: r[i].strip() if i is not None and i < len(r) else ""  # noqa: E731
            if not cell(key):
                continue
            labels = {"text": cell(text), "gloss": cell(gloss), "split": normalize_split(cell(split)), "signer": cell(signer)}
            table.add(cell(key), {k: v for k, v in labels.items() if v}, row=n)
        return table
    if all(len(r) == 2 and r[1].strip().isdigit() for r in rows):  # AUTSL-style name,class_id
        classes = {}
        for cl in class_lists:
            try:
                classes.update(read_class_list(cl) or {})
            except DataError:
                continue  # a sibling that cannot be read is no class list (its name is only a guess)
        if not classes:
            return None
        for n, (name, cid) in enumerate(rows, start=1):
            lab = classes.get(int(cid))
            if lab is not None:
                table.add(name, dict(lab), row=n)
        return table
    return None


def read_class_list(path: Path) -> dict[int, Labels] | None:
    rows = sniff_rows(path)
    if not rows:
        return None
    header = [h.strip().lower() for h in rows[0]]
    if "classid" not in header and "class_id" not in header:
        return None
    cid = header.index("classid") if "classid" in header else header.index("class_id")
    en = column(rows[0], ("en", "english", "text"))
    others = [i for i in range(len(header)) if i not in (cid, en)]
    out: dict[int, Labels] = {}
    for r in rows[1:]:
        try:
            c = int(r[cid])
        except (ValueError, IndexError):
            continue
        gloss = r[others[0]].strip() if others and others[0] < len(r) else ""
        text = r[en].strip() if en is not None and en < len(r) else gloss
        out[c] = {k: v for k, v in {"text": text, "gloss": gloss or text}.items() if v}
    return out


GLOSS_IN_NAME_RE = re.compile(r"-(?P<gloss>[A-Z][A-Z0-9_]*)$")  # ASL Citizen / pose-evaluation: <take>-<GLOSS>.pose


def gloss_from_name(stem: str) -> str:
    """'colin-1-HOUSE' -> 'HOUSE' (a file named `<anything>-<GLOSS in capitals>`); '' otherwise."""
    m = GLOSS_IN_NAME_RE.search(stem)
    return m["gloss"] if m else ""
