"""Files a dataset skips are named, not only counted; `strict=true` makes them an error (issue #18, item 6)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import invoke, one_line_error

from gesture_cli.core.errors import DataError, GxWarning


def _folder(root: Path) -> Path:
    """Two classes of five PNGs, plus a 0-byte PNG, a text file and a file outside the class folders."""
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(5):
            assert cv2.imwrite(str(root / c / f"{i}.png"), np.full((16, 16, 3), 40 * i, np.uint8))
    (root / "a" / "empty.png").write_bytes(b"")
    (root / "b" / "notes.txt").write_text("x")
    (root / "README").write_text("x")
    return root


def test_folder_names_the_files_it_skips(tmp_path):
    from gesture_cli.data import make_dataset

    root = _folder(tmp_path / "f")
    with pytest.warns(GxWarning) as caught:
        ds = make_dataset(f"folder:{root}", split="all")
    assert len(ds) == 10
    assert ds.skipped == {"file outside a class folder": 1, "empty file (0 bytes)": 1, "not an image file (suffix)": 1}
    (msg,) = {str(w.message) for w in caught}
    assert msg.startswith(f"{root}: skipped 3 file(s) (")
    for name in ("README (file outside a class folder)", "a/empty.png (empty file (0 bytes))", "b/notes.txt (not an image file (suffix))"):
        assert name in msg
    assert "strict=true" in msg


def test_folder_names_only_the_first_few_and_counts_the_rest(tmp_path):
    from gesture_cli.data import make_dataset
    from gesture_cli.data.images import NAMED_SKIPS

    root = _folder(tmp_path / "f")
    for i in range(4):
        (root / "a" / f"extra{i}.txt").write_text("x")
    with pytest.warns(GxWarning) as caught:
        make_dataset(f"folder:{root}", split="all")
    msg = str(caught[0].message)
    assert "skipped 7 file(s)" in msg and f"and {7 - NAMED_SKIPS} more" in msg and "not an image file (suffix): 5" in msg


def test_folder_strict_fails_on_a_skipped_file(tmp_path):
    from gesture_cli.data import make_dataset

    root = _folder(tmp_path / "f")
    with pytest.raises(DataError) as err:
        make_dataset(f"folder:{root}", split="all", strict=True)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{root}: 3 file(s) not read") and "a/empty.png" in text and "b/notes.txt" in text
    clean = tmp_path / "clean"
    for c in ("a", "b"):
        (clean / c).mkdir(parents=True)
        assert cv2.imwrite(str(clean / c / "0.png"), np.zeros((8, 8), np.uint8))
    assert len(make_dataset(f"folder:{clean}", split="all", strict=True)) == 2  # nothing skipped: strict passes


def _seg(root: Path, *, unmasked: int) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("bg\nhand\n")
    for i in range(3 + unmasked):
        assert cv2.imwrite(str(root / "images" / f"{i}.png"), np.zeros((8, 8, 3), np.uint8))
        if i < 3:
            assert cv2.imwrite(str(root / "masks" / f"{i}.png"), np.zeros((8, 8), np.uint8))
    return root


def test_seg_warns_about_an_image_without_a_mask(tmp_path):
    from gesture_cli.data.segmentation import make_seg_dataset

    root = _seg(tmp_path / "s", unmasked=2)
    with pytest.warns(GxWarning) as caught:
        ds = make_seg_dataset(f"seg:{root}", split="all")
    assert len(ds) == 3 and ds.skipped == {"image without a mask": 2}
    msg = str(caught[0].message)
    assert msg.startswith(f"{root / 'images'}: skipped 2 image(s) (image without a mask: 2)")
    assert "3.png (expected masks/3.png)" in msg and "4.png (expected masks/4.png)" in msg
    with pytest.raises(DataError, match=r"2 image\(s\) not read .*3\.png \(expected masks/3\.png\)"):
        make_seg_dataset(f"seg:{root}", split="all", strict=True)


# ---- through the CLI ------------------------------------------------------------------------------


def test_cli_prints_the_warning_once_and_strict_is_a_dataset_option(runner, tmp_path):
    root = _folder(tmp_path / "f")
    common = ["extract-features", "--backbone", "tiny-vit", "--dataset", f"folder:{root}", "--image-size", "32", "--device", "cpu",
              "--precision", "fp32"]
    res = invoke(runner, *common, "-r", tmp_path / "run")
    assert res.exit_code == 0, res.output
    warned = [line for line in res.output.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1, res.output  # the flat layout scans the folder for each split: one line, not three
    assert "a/empty.png" in warned[0] and "b/notes.txt" in warned[0] and "README" in warned[0]
    res = invoke(runner, *common, "--dataset-opt", "strict=true", "-r", tmp_path / "run2")
    one_line_error(res, 1, "3 file(s) not read", "a/empty.png", "strict=true")
    assert not (tmp_path / "run2" / "features").exists()


def test_segment_train_strict_fails_before_training(runner, tmp_path):
    root = _seg(tmp_path / "s", unmasked=1)
    res = invoke(runner, "segment-train", "--backbone", "tiny-dinov2", "--dataset", f"seg:{root}", "--dataset-opt", "strict=true",
                 "--device", "cpu", "-r", tmp_path / "run")
    one_line_error(res, 1, "1 image(s) not read", "3.png (expected masks/3.png)")


# ---- links to nothing (a deleted file, an unmounted drive) ------------------------------------------


def test_folder_counts_and_names_a_broken_link(tmp_path):
    from gesture_cli.data import make_dataset
    from gesture_cli.data.images import BROKEN_LINK

    root = tmp_path / "f"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            assert cv2.imwrite(str(root / c / f"{i}.png"), np.full((8, 8, 3), 40 * i, np.uint8))
    (root / "a" / "broken.jpg").symlink_to(tmp_path / "gone.jpg")
    (root / "c").symlink_to(tmp_path / "unmounted")  # a class folder on a drive that is not there
    with pytest.warns(GxWarning) as caught:
        ds = make_dataset(f"folder:{root}", split="all")
    assert len(ds) == 6 and ds.classes == ["a", "b"] and ds.skipped == {BROKEN_LINK: 2}
    msg = str(caught[0].message)
    assert msg.startswith(f"{root}: skipped 2 file(s) ({BROKEN_LINK}: 2)")
    assert f"a/broken.jpg (broken link: its target {tmp_path / 'gone.jpg'} does not exist)" in msg
    assert f"c (broken link: its target {tmp_path / 'unmounted'} does not exist)" in msg
    with pytest.raises(DataError) as err:
        make_dataset(f"folder:{root}", split="all", strict=True)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{root}: 2 file(s) not read") and "a/broken.jpg" in text and str(tmp_path / "gone.jpg") in text


def test_seg_counts_and_names_broken_links_to_an_image_or_a_mask(tmp_path):
    from gesture_cli.data.images import BROKEN_LINK
    from gesture_cli.data.segmentation import make_seg_dataset

    root = _seg(tmp_path / "s", unmasked=0)
    (root / "images" / "7.png").symlink_to(tmp_path / "gone.png")
    assert cv2.imwrite(str(root / "images" / "8.png"), np.zeros((8, 8, 3), np.uint8))
    (root / "masks" / "8.png").symlink_to(tmp_path / "gone-mask.png")
    with pytest.warns(GxWarning) as caught:
        ds = make_seg_dataset(f"seg:{root}", split="all")
    assert len(ds) == 3 and ds.skipped == {BROKEN_LINK: 2}
    msg = str(caught[0].message)
    assert f"7.png (broken link: its target {tmp_path / 'gone.png'} does not exist)" in msg
    assert f"8.png (its mask masks/8.png is a broken link: its target {tmp_path / 'gone-mask.png'} does not exist)" in msg
    with pytest.raises(DataError, match=r"2 image\(s\) not read .*7\.png .*gone\.png"):
        make_seg_dataset(f"seg:{root}", split="all", strict=True)


def test_cli_strict_fails_on_a_broken_link(runner, tmp_path):
    root = tmp_path / "f"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            assert cv2.imwrite(str(root / c / f"{i}.png"), np.full((16, 16, 3), 40 * i, np.uint8))
    (root / "a" / "broken.jpg").symlink_to("/nonexistent.jpg")
    common = ["extract-features", "--backbone", "tiny-vit", "--dataset", f"folder:{root}", "--image-size", "32", "--device", "cpu",
              "--precision", "fp32"]
    res = invoke(runner, *common, "-r", tmp_path / "run")
    assert res.exit_code == 0, res.output
    warned = [line for line in res.output.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "a/broken.jpg" in warned[0] and "/nonexistent.jpg" in warned[0], res.output
    res = invoke(runner, *common, "--dataset-opt", "strict=true", "-r", tmp_path / "run2")
    one_line_error(res, 1, "1 file(s) not read", "a/broken.jpg", "/nonexistent.jpg", "strict=true")


def test_hagrid_crops_count_a_broken_link(tmp_path, real_data):
    """HaGRID's crop folders kept files only, so a link to an image that is gone was dropped without a count."""
    import shutil

    from gesture_cli.data import make_dataset
    from gesture_cli.data.images import BROKEN_LINK

    real = real_data / "hagrid" / "images_crops" / "dataset_val"
    split = tmp_path / "h" / "images_crops" / "dataset_val"
    for gesture in ("call", "fist"):
        shutil.copytree(real / gesture, split / gesture)
    (split / "call" / "gone.jpg").symlink_to(tmp_path / "gone.jpg")
    ds = make_dataset(f"hagrid:{tmp_path / 'h'}", split="val")
    assert ds.skipped.get(BROKEN_LINK) == 1
    assert all(p.name != "gone.jpg" for p in ds.paths)
