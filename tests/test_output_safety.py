"""What a command writes outside a run dir (-o) never destroys what the user had: pose-convert's OUTDIR,
pose-view's and report's page, pose-render's MP4/PNG."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import SHARED_REAL, invoke, one_line_error

KINDER = SHARED_REAL / "sign_pose" / "sgg_lexicon" / "sgg" / "kinder.pose"
needs_real = pytest.mark.skipif(not KINDER.is_file(), reason=f"shared real data not found at {KINDER}")


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root (hidden ones too) with its bytes: what must survive a refused command unchanged."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _mine(tmp_path: Path) -> Path:
    mine = tmp_path / "pc" / "mine"
    mine.mkdir(parents=True)
    shutil.copy(KINDER, mine / "kinder.pose")
    (mine / "notes.txt").write_text("notes\n")
    return mine


# ---- pose-convert --------------------------------------------------------------------------------
@needs_real
@pytest.mark.parametrize("force", [[], ["--force"]])
def test_pose_convert_never_writes_onto_its_input_folder(runner, tmp_path, force):
    mine = _mine(tmp_path)
    before = tree(tmp_path)
    err = one_line_error(invoke(runner, "pose-convert", mine, "-o", mine, *force), 2, str(mine), "is the input")
    assert "--force" not in err
    assert tree(tmp_path) == before


@needs_real
def test_pose_convert_never_replaces_a_folder_holding_its_input(runner, tmp_path):
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    shutil.copy(KINDER, raw / "kinder.pose")
    (tmp_path / "data" / "thesis.txt").write_text("x\n")
    before = tree(tmp_path)
    err = one_line_error(invoke(runner, "pose-convert", raw, "-o", tmp_path / "data", "--force"), 2, "holds the input")
    assert "--force" not in err
    one_line_error(invoke(runner, "pose-convert", raw, "-o", raw / "gx", "--force"), 2, "is inside the input")
    one_line_error(invoke(runner, "pose-convert", raw / "kinder.pose", "-o", raw / "kinder.pose", "--force"), 2, "is the input")
    assert tree(tmp_path) == before


def test_pose_convert_force_replaces_only_a_gx_pose_folder(runner, tmp_path):
    args = ("pose-convert", "synthetic-signs", "--split", "val", "--dataset-opt", "val_size=2")
    out = tmp_path / "out"
    assert invoke(runner, *args, "-o", out).exit_code == 0
    one_line_error(invoke(runner, *args, "-o", out), 2, str(out), "already holds a gx pose folder", "pass --force")
    res = invoke(runner, *args, "-o", out, "--force")  # a gx pose folder is replaced
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing hidden left beside it

    (out / "notes.txt").write_text("mine\n")  # a user's file in it: never deleted
    before = tree(tmp_path)
    err = one_line_error(invoke(runner, *args, "-o", out, "--force"), 2, str(out), "not a gx pose folder", "notes.txt",
                         "will not be replaced")
    assert "--force" not in err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "meta.json").write_text('{"kind": "something-else"}')
    one_line_error(invoke(runner, *args, "-o", tmp_path / "other", "--force"), 2, "not a gx pose folder", "meta.json")
    (tmp_path / "f.txt").write_text("text\n")
    err = one_line_error(invoke(runner, *args, "-o", tmp_path / "f.txt", "--force"), 2, "is a file", "will not be replaced")
    assert "--force" not in err
    before["other/meta.json"], before["f.txt"] = b'{"kind": "something-else"}', b"text\n"
    assert tree(tmp_path) == before  # no hidden .f.txt.old-* or .out.tmp-* either


def test_pose_convert_into_the_current_folder_is_one_line(runner, tmp_path, monkeypatch):
    args = ("pose-convert", "synthetic-signs", "--split", "val", "--dataset-opt", "val_size=2")
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert invoke(runner, *args, "-o", tmp_path / "here" / "gx").exit_code == 0
    monkeypatch.chdir(here / "gx")  # a gx pose folder, but the current one: it cannot be swapped out
    before = tree(tmp_path)
    one_line_error(invoke(runner, *args, "-o", ".", "--force"), 2, "-o . is the current folder")
    assert tree(tmp_path) == before
