"""Image-classification datasets: registry, Sign MNIST CSVs (real samples), folder:, synthetic-hands."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from gesture_cli.core.errors import DataError, UsageError
from gesture_cli.core.home import datasets_dir
from gesture_cli.data import SIGN_MNIST_LETTERS, dataset_splits, list_datasets, make_dataset, sign_mnist_label_to_letter
from gesture_cli.data.images import ImageDataset, stratified_split
from gesture_cli.data.synthetic_hands import LETTER_SHAPES

SIGN_MNIST = "sign_mnist"
HEADER_120 = "ahmed-mo505_sign_mnist_train_120rows_header.csv"  # labels already remapped to 0..23
NOHEADER_TRAIN = "ritikaroy72_sign_mnist_train_187rows_noheader.csv"  # canonical labels 0..24 without 9
NOHEADER_TEST = "ritikaroy72_sign_mnist_test_11rows_noheader.csv"
HEADER_LINE = "label," + ",".join(f"pixel{i}" for i in range(1, 785))


def read_raw(path: Path) -> tuple[list[int], np.ndarray, bool]:
    """Independent reference reader (csv module): raw labels, pixels [N, 784], whether a header was present."""
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    header = not rows[0][0].strip().isdigit()
    rows = rows[1:] if header else rows
    return [int(r[0]) for r in rows], np.array([[int(v) for v in r[1:]] for r in rows]), header


def canonical_letter(raw: int) -> str:
    return chr(ord("A") + raw)  # canonical Sign MNIST labels are alphabet positions: 0 = A, 10 = K, 24 = Y


def assert_one_line(err: pytest.ExceptionInfo, *parts: str) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    for part in parts:
        assert part in msg, f"{part!r} not in {msg!r}"
    return msg


def write_rows(path: Path, rows: list[list], *, header: bool = True) -> Path:
    lines = ([HEADER_LINE] if header else []) + [",".join(str(v) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def good_row(label: int = 0, value: int = 100) -> list:
    return [label] + [value] * 784


# ---- registry ------------------------------------------------------------------------------


def test_registry_lists_the_sources_with_one_line_help():
    names = dict(list_datasets())
    assert {"sign-mnist", "csv", "folder", "synthetic-hands"} <= set(names)
    for name, text in names.items():
        assert text.strip() and "\n" not in text, name


@pytest.mark.parametrize("name", sorted(dict(list_datasets())))
def test_every_registered_source_describes_its_spec(name):
    usage, _, help_text = dict(list_datasets())[name].partition(": ")
    assert usage.startswith(name) and help_text  # "csv:FILE", "sign-mnist[:DIR]", "synthetic-hands"
    if usage.startswith(f"{name}:"):  # the part after ':' is required: a bare name says how to use it
        with pytest.raises(UsageError) as err:
            make_dataset(name)
        assert_one_line(err, f"{name}:")


def test_import_is_cheap():
    code = "import sys, gesture_cli.data; print(sorted(m for m in ('numpy', 'cv2', 'torch', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_unknown_dataset_suggests_the_closest_name():
    with pytest.raises(UsageError) as err:
        make_dataset("sign-mnst")
    assert_one_line(err, "unknown dataset 'sign-mnst'", "did you mean 'sign-mnist'")


@pytest.mark.parametrize(("spec", "command"), [("synthetic-scenes", "gx segment-train"), ("mpii:a.json", "gx keypoint-train"),
                                               ("synthetic-signs", "gx pose-pretrain")])
def test_a_dataset_of_another_task_names_the_command_that_reads_it(spec, command):
    with pytest.raises(UsageError) as err:
        make_dataset(spec)
    assert_one_line(err, "not labelled images", command)


def test_bare_path_spec_suggests_the_format(tmp_path):
    with pytest.raises(UsageError) as err:
        make_dataset(str(tmp_path))
    assert_one_line(err, f"folder:{tmp_path}")


def test_unknown_split_and_option_are_usage_errors():
    with pytest.raises(UsageError) as err:
        make_dataset("synthetic-hands", split="validation")
    assert_one_line(err, "no split 'validation'", "train, test")
    with pytest.raises(UsageError) as err:
        make_dataset("synthetic-hands", train_per_clas=3)
    assert_one_line(err, "train_per_clas", "did you mean 'train_per_class'")
    with pytest.raises(UsageError) as err:
        make_dataset("csv:")
    assert_one_line(err, "csv:FILE")
    with pytest.raises(UsageError):
        make_dataset("synthetic-hands:foo")



def test_a_validation_split_the_dataset_lacks_is_said_so_not_guessed(real_data):
    """`--split val` on a CSV (train, test, all) once got "did you mean 'all'?": difflib's closest name."""
    from gesture_cli.core.errors import unknown_split

    spec = f"csv:{real_data / SIGN_MNIST / NOHEADER_TRAIN}"
    splits = dataset_splits(spec)
    assert splits == ["train", "test", "all"]
    for asked in ("val", "validation", "VAL"):
        msg = str(unknown_split(spec, asked, splits))
        assert "did you mean" not in msg and "\n" not in msg, msg
        for part in (f"has no split '{asked}' nor any other validation split", "valid splits: train, test, all",
                     "hold out part of the training split", "--val-fraction", "--split test"):
            assert part in msg, msg
    # no test split: nothing to point --split at
    assert "--split test" not in str(unknown_split("mpii:a.json", "val", ["all"], kind="keypoint dataset"))
    # a validation split under another name is offered by that name
    assert "(did you mean 'val'?)" in str(unknown_split("seg:x", "validation", ["train", "val"]))
    # other names keep the closest-name guess
    assert "(did you mean 'test'?)" in str(unknown_split(spec, "tset", splits))
    with pytest.raises(UsageError) as err:  # what extract-features, evaluate and gradcam reach
        make_dataset(spec, split="val")
    assert "did you mean" not in assert_one_line(err, "has no split 'val' nor any other validation split", "--split test")


def test_keypoint_and_segmentation_datasets_say_they_have_no_validation_split(real_data, tmp_path):
    from gesture_cli.data.keypoints import make_keypoint_dataset
    from gesture_cli.data.segmentation import make_seg_dataset

    with pytest.raises(UsageError) as err:  # MPII files have one split, 'all'
        make_keypoint_dataset(f"mpii:{real_data / 'mpii' / 'test_mpii.json'}", split="val")
    msg = assert_one_line(err, "keypoint dataset 'mpii:", "has no split 'val' nor any other validation split", "valid splits: all")
    assert "did you mean 'all'" not in msg
    for sub in ("images/train", "images/val", "masks/train", "masks/val"):  # the generic layout, empty
        (tmp_path / "seg" / sub).mkdir(parents=True)
    with pytest.raises(UsageError) as err:
        make_seg_dataset(f"seg:{tmp_path / 'seg'}", split="validation")
    assert_one_line(err, "has no split 'validation' (did you mean 'val'?)", "valid splits: train, val")


# ---- Sign MNIST on real samples ------------------------------------------------------------


def test_letters_and_label_mapping():
    assert len(SIGN_MNIST_LETTERS) == 24 and "J" not in SIGN_MNIST_LETTERS and "Z" not in SIGN_MNIST_LETTERS
    assert SIGN_MNIST_LETTERS[0] == "A" and SIGN_MNIST_LETTERS[-1] == "Y"
    for raw in [r for r in range(25) if r != 9]:
        assert sign_mnist_label_to_letter(raw) == canonical_letter(raw)
    for bad in (9, 25, -1, 26):
        with pytest.raises(DataError):
            sign_mnist_label_to_letter(bad)


@pytest.mark.parametrize("name", [NOHEADER_TRAIN, NOHEADER_TEST])
def test_real_csv_without_header(real_data, name):
    path = real_data / SIGN_MNIST / name
    raw, pixels, header = read_raw(path)
    assert not header
    ds = make_dataset(f"csv:{path}", split="all")
    assert len(ds) == len(raw) and ds.num_classes == 24 and ds.classes == SIGN_MNIST_LETTERS
    assert [ds.classes[i] for i in ds.labels] == [canonical_letter(r) for r in raw]
    assert ds.images.shape == (len(raw), 28, 28) and ds.images.dtype == np.uint8
    np.testing.assert_array_equal(ds.images.reshape(len(raw), -1), pixels)
    assert ds.source_files == [path]


def test_real_csv_split_is_stratified_and_deterministic(real_data):
    spec = f"csv:{real_data / SIGN_MNIST / NOHEADER_TRAIN}"
    assert dataset_splits(spec) == ["train", "test", "all"]
    full = make_dataset(spec, split="all")
    train, test = make_dataset(spec, split="train", seed=3), make_dataset(spec, split="test", seed=3)
    assert len(train) + len(test) == len(full) and 0.15 < len(test) / len(full) < 0.25
    assert set(np.unique(train.labels)) == set(np.unique(full.labels))  # every class keeps training samples
    rows = {r.tobytes() for r in train.images} | {r.tobytes() for r in test.images}
    assert len(rows) == len({r.tobytes() for r in full.images})  # together they are the whole file
    again = make_dataset(spec, split="test", seed=3)
    np.testing.assert_array_equal(again.images, test.images)
    assert train.cache_token and train.cache_token != make_dataset(spec, split="train", seed=4).cache_token


def test_real_csv_with_header_and_remapped_labels(real_data):
    path = real_data / SIGN_MNIST / HEADER_120
    raw, pixels, header = read_raw(path)
    assert header and sorted(set(raw)) == list(range(24))  # this copy's labels are already 0..23
    with pytest.raises(DataError) as err:  # as canonical labels, 9 would be J: refused, with the fix
        make_dataset(f"csv:{path}", split="all")
    line = raw.index(9) + 2  # header is line 1
    assert_one_line(err, path.name, f"line {line}", "label 9 (J)", "label_map=contiguous")
    ds = make_dataset(f"csv:{path}", split="all", label_map="contiguous")
    assert len(ds) == 120 and np.bincount(ds.labels).tolist() == [5] * 24
    assert [ds.classes[i] for i in ds.labels] == ["ABCDEFGHIKLMNOPQRSTUVWXY"[r] for r in raw]
    np.testing.assert_array_equal(ds.images.reshape(120, -1), pixels)
    assert "label_map=contiguous" in ds.cache_token


def test_sign_mnist_dir_cache_and_kaggle_layout(real_data, tmp_path):
    src = real_data / SIGN_MNIST
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(src / NOHEADER_TRAIN, flat / "sign_mnist_train.csv")
    shutil.copy(src / NOHEADER_TEST, flat / "sign_mnist_test.csv")
    kaggle = tmp_path / "kaggle"
    for split, name in (("train", NOHEADER_TRAIN), ("test", NOHEADER_TEST)):
        (kaggle / f"sign_mnist_{split}").mkdir(parents=True)
        shutil.copy(src / name, kaggle / f"sign_mnist_{split}" / f"sign_mnist_{split}.csv")
    n_train, n_test = len(read_raw(src / NOHEADER_TRAIN)[0]), len(read_raw(src / NOHEADER_TEST)[0])
    for root in (flat, kaggle):
        assert dataset_splits(f"sign-mnist:{root}") == ["train", "test"]
        assert len(make_dataset(f"sign-mnist:{root}")) == n_train
        assert len(make_dataset(f"sign-mnist:{root}", split="test")) == n_test

    with pytest.raises(DataError) as err:  # nothing downloaded yet (GX_HOME is a fresh tmp dir)
        make_dataset("sign-mnist")
    assert_one_line(err, "gx download sign-mnist")
    shutil.copytree(flat, datasets_dir() / "sign-mnist")
    assert len(make_dataset("sign-mnist", split="test")) == n_test


# ---- Sign MNIST validation -----------------------------------------------------------------


def _bad_files(tmp: Path) -> list[tuple[str, Path, list[str]]]:
    """(case, file, parts the one-line message must contain)."""
    cases = []
    cases.append(("missing", tmp / "nope.csv", ["nope.csv", "not found"]))
    (tmp / "empty.csv").write_text("")
    cases.append(("empty", tmp / "empty.csv", ["empty.csv", "empty"]))
    (tmp / "blank.csv").write_text("\n\n  \n")
    cases.append(("blank", tmp / "blank.csv", ["blank.csv", "empty"]))
    (tmp / "header_only.csv").write_text(HEADER_LINE + "\n")
    cases.append(("header only", tmp / "header_only.csv", ["header_only.csv", "no data rows"]))
    write_rows(tmp / "columns.csv", [good_row(), good_row()[:-1]])
    cases.append(("column count", tmp / "columns.csv", ["columns.csv", "line 3", "expected 785", "got 784"]))
    write_rows(tmp / "extra.csv", [good_row(), good_row(), good_row() + [1]], header=False)
    cases.append(("extra column", tmp / "extra.csv", ["extra.csv", "line 3", "got 786"]))
    row = good_row()
    row[17] = "abc"
    write_rows(tmp / "text.csv", [good_row(), row])
    cases.append(("non-numeric", tmp / "text.csv", ["text.csv", "line 3", "pixel17", "'abc' is not a number"]))
    row = good_row()
    row[5] = "7.5"
    write_rows(tmp / "float.csv", [row], header=False)
    cases.append(("fraction", tmp / "float.csv", ["float.csv", "line 1", "pixel5", "not a whole number"]))
    row = good_row()
    row[784] = 256
    write_rows(tmp / "range.csv", [good_row(), good_row(), row])
    cases.append(("pixel range", tmp / "range.csv", ["range.csv", "line 4", "pixel784", "256", "0..255"]))
    write_rows(tmp / "label.csv", [good_row(), good_row(30)], header=False)
    cases.append(("label range", tmp / "label.csv", ["label.csv", "line 2", "label 30", "out of range"]))
    write_rows(tmp / "j.csv", [good_row(3), good_row(9)])
    cases.append(("label 9", tmp / "j.csv", ["j.csv", "line 3", "label 9 (J)", "motion"]))
    write_rows(tmp / "z.csv", [good_row(25)])
    cases.append(("label 25", tmp / "z.csv", ["z.csv", "line 2", "label 25 (Z)"]))
    (tmp / "wrong_header.csv").write_text("label,a,b\n1,2,3\n")
    cases.append(("header", tmp / "wrong_header.csv", ["wrong_header.csv", "line 1", "header has 3 columns", "785"]))
    return cases


def test_each_bad_csv_gives_one_line_with_file_row_and_reason(tmp_path):
    for case, path, parts in _bad_files(tmp_path):
        with pytest.raises(DataError) as err:
            make_dataset(f"csv:{path}", split="all")
        assert_one_line(err, *parts)
        assert err.value.exit_code == 1, case


def test_csv_tolerates_crlf_bom_spaces_and_blank_lines(tmp_path):
    rows = [good_row(label, 7 * label) for label in (0, 24, 10)]
    text = "\ufeff" + HEADER_LINE + "\r\n" + "\r\n".join(",".join(map(str, r)) for r in rows) + "\r\n\r\n\r\n"
    (tmp_path / "win.csv").write_bytes(text.encode("utf-8"))
    ds = make_dataset(f"csv:{tmp_path / 'win.csv'}", split="all")
    assert [ds.classes[i] for i in ds.labels] == ["A", "Y", "K"]
    assert ds.images[1].min() == ds.images[1].max() == 7 * 24


def test_clean_csv_never_takes_the_slow_path(tmp_path, monkeypatch):
    """The fast path must carry a clean file: the row-by-row checker may only run on errors."""
    import gesture_cli.data.sign_mnist as sm

    rng = np.random.default_rng(0)
    table = np.concatenate([rng.choice([i for i in range(25) if i != 9], (2000, 1)), rng.integers(0, 256, (2000, 784))], axis=1)
    path = tmp_path / "big.csv"
    np.savetxt(path, table, fmt="%d", delimiter=",", header=HEADER_LINE, comments="")
    monkeypatch.setattr(sm, "_parse_checked", lambda *a, **k: pytest.fail("slow path used on a clean file"))
    images, labels = sm.read_sign_mnist_csv(path)
    np.testing.assert_array_equal(images.reshape(2000, -1), table[:, 1:])
    np.testing.assert_array_equal(labels, table[:, 0] - (table[:, 0] > 9))


def test_csv_reports_the_first_problem_by_file_line(tmp_path):
    rows = [",".join(map(str, good_row(3))) for _ in range(3000)]
    bad_value = good_row(3)
    bad_value[2] = 999
    rows[1500] = ",".join(map(str, bad_value))  # a range problem first (line 1502 with the header) ...
    rows[2900] = rows[2900] + ",1"  # ... and a parse problem later
    rows.insert(10, "")  # a blank line shifts every later line number by one
    (tmp_path / "big.csv").write_text(HEADER_LINE + "\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError) as err:
        make_dataset(f"csv:{tmp_path / 'big.csv'}", split="all")
    assert_one_line(err, "big.csv", "line 1503, column pixel2", "999")


def test_csv_quoted_numbers_are_still_read(tmp_path):
    (tmp_path / "quoted.csv").write_text(",".join(f'"{v}"' for v in good_row(24, 5)) + "\n")
    ds = make_dataset(f"csv:{tmp_path / 'quoted.csv'}", split="all")
    assert ds.classes[ds.labels[0]] == "Y" and (ds.images == 5).all()


# ---- folder: -------------------------------------------------------------------------------


def _png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


def test_folder_with_train_test_subfolders(tmp_path):
    root = tmp_path / "gestures"
    grey = np.full((20, 30), 90, np.uint8)
    red_bgr = np.zeros((16, 16, 3), np.uint8)
    red_bgr[..., 2] = 255  # cv2 writes BGR: this is pure red
    for split, n in (("train", 3), ("test", 2)):
        for i in range(n):
            _png(root / split / "palm" / f"{i}.png", grey)
            _png(root / split / "fist" / "nested" / f"{i}.png", red_bgr)
    _png(root / "test" / "ok" / "0.png", grey)  # a class only the test split has
    (root / "train" / "palm" / "broken.png").write_bytes(b"not really a png")
    (root / "train" / "palm" / "notes.txt").write_text("hi")
    (root / "train" / "stray.jpg").write_bytes(b"")

    spec = f"folder:{root}"
    assert dataset_splits(spec) == ["train", "test"]
    train, test = make_dataset(spec), make_dataset(spec, split="test")
    assert train.classes == test.classes == ["fist", "ok", "palm"]
    assert len(train) == 6 and len(test) == 5 and train.images is None and len(train.paths) == 6
    assert train.skipped == {"unreadable image": 1, "not an image file (suffix)": 1, "file outside a class folder": 1}
    assert test.skipped == {}
    assert np.bincount(test.labels, minlength=3).tolist() == [2, 1, 2]
    fist = int(np.flatnonzero(train.labels == 0)[0])
    assert train.image(fist)[0, 0].tolist() == [255, 0, 0]  # RGB order, never BGR
    palm = int(np.flatnonzero(train.labels == 2)[0])
    assert train.image(palm).shape == (20, 30, 3)  # grey comes back RGB: the dataset has colour
    batch = train.batch(range(len(train)), size=24)
    assert batch.shape == (6, 24, 24, 3) and batch.dtype == np.uint8
    with pytest.raises(UsageError):
        train.batch([fist, palm])  # different sizes and no size= given
    with pytest.raises(UsageError) as err:
        make_dataset(spec, split="val")
    assert_one_line(err, "train, test")


def test_folder_flat_layout_split_is_stratified_and_deterministic(tmp_path):
    root = tmp_path / "flat"
    for c, name in enumerate(("b", "a", "c")):
        for i in range(5):
            _png(root / name / f"{i}.png", np.full((8, 8), 40 * c + i, np.uint8))
    spec = f"folder:{root}"
    assert dataset_splits(spec) == ["train", "test", "all"]
    full = make_dataset(spec, split="all")
    assert full.classes == ["a", "b", "c"] and len(full) == 15 and not full.is_rgb
    train, test = make_dataset(spec, seed=1), make_dataset(spec, split="test", seed=1)
    assert np.bincount(train.labels).tolist() == [4, 4, 4] and np.bincount(test.labels).tolist() == [1, 1, 1]
    assert not set(train.paths) & set(test.paths) and set(train.paths) | set(test.paths) == set(full.paths)
    assert make_dataset(spec, split="test", seed=1).paths == test.paths
    assert train.batch([0, 1]).shape == (2, 8, 8)
    assert "seed=1" in train.cache_token


def test_folder_errors(tmp_path):
    with pytest.raises(DataError) as err:
        make_dataset(f"folder:{tmp_path / 'missing'}")
    assert_one_line(err, "missing", "no such directory")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    (tmp_path / "empty" / "cls" / "x.png").write_bytes(b"garbage")
    with pytest.raises(DataError) as err:
        make_dataset(f"folder:{tmp_path / 'empty'}", split="all")
    assert_one_line(err, "no readable images", "unreadable image: 1")


def test_truncated_image_fails_at_decode_with_the_file_name(tmp_path):
    _png(tmp_path / "d" / "a" / "ok.png", np.zeros((8, 8), np.uint8))
    _png(tmp_path / "d" / "a" / "cut.png", np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    data = (tmp_path / "d" / "a" / "cut.png").read_bytes()
    (tmp_path / "d" / "a" / "cut.png").write_bytes(data[: len(data) // 2])
    lazy = make_dataset(f"folder:{tmp_path / 'd'}", split="all")  # header check passes
    with pytest.raises(DataError) as err:
        lazy.batch(range(len(lazy)), size=8)
    assert_one_line(err, "cut.png")
    verified = make_dataset(f"folder:{tmp_path / 'd'}", split="all", verify=True)
    assert len(verified) == 1 and verified.skipped == {"unreadable image": 1}


# ---- ImageDataset.batch --------------------------------------------------------------------


def test_batch_resizes_with_area_down_and_linear_up():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    ds = ImageDataset(spec="t", split="train", classes=["a", "b"], labels=[0, 1, 0, 1], images=images)
    np.testing.assert_array_equal(ds.batch([2, 0]), images[[2, 0]])
    np.testing.assert_array_equal(ds.batch([1], size=28), images[[1]])
    down = ds.batch([1, 3], size=14)
    np.testing.assert_array_equal(down[0], cv2.resize(images[1], (14, 14), interpolation=cv2.INTER_AREA))
    up = ds.batch([1, 3], size=56)
    np.testing.assert_array_equal(up[1], cv2.resize(images[3], (56, 56), interpolation=cv2.INTER_LINEAR))
    assert ds.batch([], size=32).shape == (0, 32, 32)


def test_batch_never_mixes_grey_and_rgb(tmp_path):
    _png(tmp_path / "grey.png", np.full((10, 10), 77, np.uint8))
    _png(tmp_path / "rgb.png", np.full((10, 10, 3), (10, 20, 30), np.uint8))
    ds = ImageDataset(spec="t", split="all", classes=["x"], labels=[0, 0], paths=[tmp_path / "grey.png", tmp_path / "rgb.png"])
    b = ds.batch([0, 1])  # colour unknown (no header scan): decided by the batch
    assert b.shape == (2, 10, 10, 3)
    assert (b[0] == 77).all() and b[1, 0, 0].tolist() == [30, 20, 10]
    assert ds.batch([0]).shape == (1, 10, 10)


def test_stratified_split_keeps_singletons_in_train():
    labels = np.array([0] * 10 + [1] * 2 + [2])
    train, test = stratified_split(labels, test_fraction=0.2, seed=0)
    assert np.bincount(labels[test], minlength=3).tolist() == [2, 1, 0]
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(13))


# ---- synthetic-hands -----------------------------------------------------------------------


def test_synthetic_hands_is_deterministic_and_splits_differ():
    a = make_dataset("synthetic-hands", seed=5, train_per_class=3)
    b = make_dataset("synthetic-hands", seed=5, train_per_class=3)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.images.shape == (72, 28, 28) and a.images.dtype == np.uint8
    assert a.classes == SIGN_MNIST_LETTERS and a.num_classes == 24
    assert np.bincount(a.labels).tolist() == [3] * 24
    test = make_dataset("synthetic-hands", split="test", seed=5, test_per_class=3)
    assert not {x.tobytes() for x in a.images} & {x.tobytes() for x in test.images}
    other = make_dataset("synthetic-hands", seed=6, train_per_class=3)
    assert not np.array_equal(other.images, a.images)
    more = make_dataset("synthetic-hands", seed=5, train_per_class=4)
    np.testing.assert_array_equal(more.images[:72], a.images)  # image k does not depend on the count
    tokens = {d.cache_token for d in (a, test, other, more)}
    assert len(tokens) == 4 and all("v" in t for t in tokens)


def test_synthetic_hands_defaults_and_contact_sheet(tmp_path):
    train = make_dataset("synthetic-hands")
    test = make_dataset("synthetic-hands", split="test")
    assert len(train) == 960 and len(test) == 360 and set(LETTER_SHAPES) == set(train.classes)
    x = train.images.astype(np.float32)
    assert x.std() > 30  # uses a decent part of the 0..255 range
    assert (x.reshape(len(x), -1).std(axis=1) > 12).all()  # no blank image: every one shows a hand
    means = np.stack([x[train.labels == c].mean(axis=0) for c in range(24)])  # [24, 28, 28]
    dist = np.linalg.norm((means[:, None] - means[None]).reshape(24, 24, -1), axis=2)
    off_diagonal = dist[~np.eye(24, dtype=bool)]
    assert off_diagonal.min() > 50, f"two classes look alike on average (min L2 {off_diagonal.min():.1f})"
    # A contact sheet (8 per class, one row per letter) for a human to check the hands.
    rows = [np.concatenate(list(train.images[train.labels == c][:8]), axis=1) for c in range(24)]
    sheet = np.concatenate(rows, axis=0)
    assert sheet.shape == (24 * 28, 8 * 28)
    assert cv2.imwrite(str(tmp_path / "synthetic_hands.png"), sheet)


def test_synthetic_hands_letters_pick_the_same_images():
    from gesture_cli.data.synthetic_hands import generate_hands

    full, labels = generate_hands(n_per_class=2, seed=4, split="train")
    some, some_labels = generate_hands(n_per_class=2, seed=4, split="train", letters=["L", "A"])
    assert some_labels.tolist() == [10, 0, 10, 0]  # indices into the 24 letters, in the order asked, interleaved
    for img, lab in zip(some, some_labels, strict=True):
        k = [i for i, y in enumerate(labels) if y == lab]
        assert any(np.array_equal(img, full[i]) for i in k)
    np.testing.assert_array_equal(some[0], full[10])
    with pytest.raises(UsageError, match="J"):
        generate_hands(n_per_class=1, seed=0, split="train", letters=["J"])


@pytest.mark.parametrize(("name", "hint"), [("afile", ""), ("pixels.csv", "; for a CSV of pixel rows pass csv:"),
                                            ("img.jpg", "; pass the folder that holds the class folders, not one image"),
                                            ("clip.mp4", "; for the frames of a video pass video:")])
def test_folder_spec_naming_a_file_says_so_and_names_the_spec_for_it(tmp_path, name, hint):
    from gesture_cli.core.errors import UsageError
    from gesture_cli.data import make_dataset

    path = tmp_path / name
    path.write_bytes(b"x")
    with pytest.raises(UsageError) as err:
        make_dataset(f"folder:{path}", split="train")
    text = str(err.value)
    assert text.startswith(f"{path} is a file, not a folder; folder:DIR expected DIR/<class>/<images>") and "no such directory" not in text
    assert text.endswith(hint + (str(path) if hint.endswith(":") else "")) and "\n" not in text
