"""What a command writes outside a run dir (-o) never destroys what the user had: pose-convert's OUTDIR,
pose-view's and report's page, pose-render's MP4/PNG."""

from __future__ import annotations

import os
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

    (out / "notes.txt").write_text("mine\n")  # a user's file in it: never deleted, and the error says what to do
    before = tree(tmp_path)
    one_line_error(invoke(runner, *args, "-o", out, "--force"), 2, str(out), "holds a gx pose folder and also notes.txt",
                   f"move it out of {out} (or choose another -o), then rerun with --force")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "meta.json").write_text('{"kind": "something-else"}')
    one_line_error(invoke(runner, *args, "-o", tmp_path / "other", "--force"), 2, "not a gx pose folder", "meta.json")
    (tmp_path / "f.txt").write_text("text\n")
    err = one_line_error(invoke(runner, *args, "-o", tmp_path / "f.txt", "--force"), 2, "is a file", "will not be replaced")
    assert "--force" not in err
    before["other/meta.json"], before["f.txt"] = b'{"kind": "something-else"}', b"text\n"
    assert tree(tmp_path) == before  # no hidden .f.txt.old-* or .out.tmp-* either


def test_pose_convert_force_replaces_os_metadata_but_names_other_extra_files(runner, tmp_path):
    """.DS_Store and the like are replaced with a gx pose folder; a README or gx's own pose-view page in it is the
    user's: the refusal names each such file and says to move it out, then rerun with --force."""
    args = ("pose-convert", "synthetic-signs", "--split", "val", "--dataset-opt", "val_size=2")
    out = tmp_path / "out"
    assert invoke(runner, *args, "-o", out).exit_code == 0
    for name in (".DS_Store", "._meta.json", ".~lock.index.jsonl#", "samples/.DS_Store"):
        (out / name).write_bytes(b"\0\1")
    res = invoke(runner, *args, "-o", out, "--force")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["index.jsonl", "meta.json", "samples"]
    (out / "samples" / ".DS_Store").write_bytes(b"x")
    assert invoke(runner, *args, "-o", out).exit_code == 2  # still a gx pose folder: --force needed

    (out / "README.md").write_text("mine\n")
    res = invoke(runner, "pose-view", out, "-o", out)  # gx's own page, still a file the user sees
    assert res.exit_code == 0 and (out / "out.html").is_file(), res.output
    before = tree(tmp_path)
    one_line_error(invoke(runner, *args, "-o", out, "--force"), 2, f"-o {out} holds a gx pose folder and also README.md, out.html",
                   f"move them out of {out} (or choose another -o), then rerun with --force")
    assert tree(tmp_path) == before

    empty = tmp_path / "empty"  # only metadata: as good as empty
    empty.mkdir()
    (empty / ".DS_Store").write_bytes(b"x")
    assert invoke(runner, *args, "-o", empty).exit_code == 0 and (empty / "meta.json").is_file()
    hidden = tmp_path / "hidden"  # a hidden folder is the user's
    (hidden / ".git").mkdir(parents=True)
    one_line_error(invoke(runner, *args, "-o", hidden, "--force"), 2, "not a gx pose folder", ".git")


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


# ---- pose-view, report, pose-render ------------------------------------------------------------------
@needs_real
def test_pose_view_writes_only_html_never_onto_its_input(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(KINDER, tmp_path / "keep.pose")
    (tmp_path / "notes.md").write_text("data\n")
    before = tree(tmp_path)
    one_line_error(invoke(runner, "pose-view", "keep.pose", "-o", "keep.pose"), 2, "-o keep.pose", "must end in .html")
    one_line_error(invoke(runner, "pose-view", "keep.pose", "-o", "notes.md"), 2, "-o notes.md", "must end in .html")
    assert tree(tmp_path) == before
    for _ in range(2):  # an existing page is replaced, as a rerun does
        res = invoke(runner, "pose-view", "keep.pose", "-o", "view.HTML")
        assert res.exit_code == 0 and "Wrote view.HTML" in res.output, res.output
    (tmp_path / "pages").mkdir()
    res = invoke(runner, "pose-view", "keep.pose", "-o", "pages")  # a folder: <name>.html in it
    assert res.exit_code == 0 and (tmp_path / "pages" / "keep.html").is_file(), res.output
    res = invoke(runner, "pose-view", "keep.pose", "-o", f"new{os.sep}pages{os.sep}")  # a trailing /: a folder, made
    assert res.exit_code == 0 and (tmp_path / "new" / "pages" / "keep.html").is_file(), res.output
    one_line_error(invoke(runner, "pose-view", "keep.pose", "-o", f"notes.md{os.sep}"), 2, "notes.md", "is not a folder")


def _run(tmp_path: Path) -> Path:
    from gesture_cli.core.rundir import RunDir

    rd = RunDir(tmp_path / "runs" / "L1")
    step = rd.begin("evaluate", config={}, outputs=["eval/x.json"], argv=["gx", "evaluate"])
    with step:
        step.stage("eval/x.json", is_dir=False).write_text("{}")
    return rd.root


def test_report_writes_only_html_never_onto_the_run(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = _run(tmp_path)
    (tmp_path / "notes.md").write_text("data\n")
    before = tree(tmp_path)
    one_line_error(invoke(runner, "report", "-r", run, "-o", "notes.md"), 2, "-o notes.md", "must end in .html")
    one_line_error(invoke(runner, "report", "-r", run, "-o", run / "run.json"), 2, "run.json", "must end in .html")
    assert tree(tmp_path) == before
    (tmp_path / "repdir").mkdir()
    res = invoke(runner, "report", "-r", run, "-o", "repdir")  # a folder: report.html in it
    assert res.exit_code == 0 and (tmp_path / "repdir" / "report.html").is_file(), res.output
    res = invoke(runner, "report", "-r", run, "-o", f"newrep{os.sep}")  # a trailing /: a folder, made
    assert res.exit_code == 0 and (tmp_path / "newrep" / "report.html").is_file(), res.output
    assert invoke(runner, "report", "-r", run).exit_code == 0 and (run / "report.html").is_file()
    assert invoke(runner, "report", "-r", run).exit_code == 0  # the page of an earlier run is replaced


def test_report_never_writes_onto_a_file_a_step_wrote(tmp_path):
    from gesture_cli.core.errors import UsageError
    from gesture_cli.core.rundir import RunDir
    from gesture_cli.tasks.report import write_report

    rd = RunDir(tmp_path / "run")
    step = rd.begin("pca-visualize", config={}, outputs=["pca/b"], argv=["gx", "pca-visualize"])
    with step:
        (step.stage("pca/b", is_dir=True) / "index.html").write_text("<p>a step's page</p>")
    with pytest.raises(UsageError, match="is the input"):
        write_report(rd.root, rd.root / "pca" / "b" / "index.html")
    assert (rd.root / "pca" / "b" / "index.html").read_text() == "<p>a step's page</p>"


@needs_real
def test_pose_render_never_writes_onto_its_video(runner, tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"my recording")
    shutil.copy(KINDER, tmp_path / "clip.pose")
    one_line_error(invoke(runner, "pose-render", tmp_path / "clip.pose", "--video", video, "-o", video, "--allow-mismatch"), 2,
                   str(video), "is the input")
    assert video.read_bytes() == b"my recording"


def test_pose_convert_force_keeps_a_folder_without_gx_meta(runner, tmp_path):
    """An index.jsonl of the user's own (no meta.json of kind pose-dataset) is not a gx pose folder."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.jsonl").write_text('{"mine": 1}\n')
    before = tree(tmp_path)
    one_line_error(invoke(runner, "pose-convert", "synthetic-signs", "--split", "val", "--dataset-opt", "val_size=2", "-o", out, "--force"),
                   2, "not a gx pose folder", "index.jsonl")
    assert tree(tmp_path) == before


def test_a_failed_swap_puts_the_old_gx_pose_folder_back(tmp_path, monkeypatch):
    from gesture_cli.data.pose import make_pose_dataset, write_pose_folder

    ds = make_pose_dataset("synthetic-signs", split="val", val_size=2)
    out = write_pose_folder(ds, tmp_path / "out")
    before = tree(tmp_path)
    real_rename = Path.rename

    def failing_rename(self, target):
        if self.name.startswith(".out.tmp-"):
            raise OSError(28, "No space left on device")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", failing_rename)
    with pytest.raises(OSError):
        write_pose_folder(ds, out, overwrite=True)
    assert tree(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_report_to_a_new_folder_without_a_slash_says_how(runner, tmp_path, monkeypatch):
    """`gx report -o out` (no such folder yet) was told "(or give a folder)": the user had given one."""
    monkeypatch.chdir(tmp_path)
    run = _run(tmp_path)
    err = one_line_error(invoke(runner, "report", "-r", run, "-o", "out"), 2, "-o out: the file name must end in .html",
                         f"or a folder: an existing one, or end it with {os.sep} to make it (-o out{os.sep})")
    assert "or give a folder" not in err
    assert not (tmp_path / "out").exists()


def test_an_empty_output_is_refused_not_the_current_folder(runner, tmp_path, monkeypatch):
    """`-o ""` is Path(""), ".": report and pose-view wrote their page into the current folder."""
    monkeypatch.chdir(tmp_path)
    run = _run(tmp_path)
    before = tree(tmp_path)
    one_line_error(invoke(runner, "report", "-r", run, "-o", ""), 2, "-o is empty")
    one_line_error(invoke(runner, "report", "-r", run, "--output="), 2, "-o is empty")
    one_line_error(invoke(runner, "pose-view", "synthetic-signs", "--split", "test", "-o", ""), 2, "-o is empty")
    one_line_error(invoke(runner, "pose-render", "synthetic-signs", "--split", "test", "-s", "test-00003", "-o", ""), 2,
                   "--output is empty")
    one_line_error(invoke(runner, "pose-render", "synthetic-signs", "--split", "test", "-s", "test-00003", "--png", ""), 2,
                   "--png is empty")
    assert tree(tmp_path) == before


def test_pose_render_to_a_new_folder_with_a_slash(runner, tmp_path, monkeypatch):
    """`-o clips/` was refused ("must end in .mp4"): a trailing / names a folder, made, as pose-view's -o does."""
    monkeypatch.chdir(tmp_path)
    args = ("pose-render", "synthetic-signs", "--split", "test", "-s", "test-00003", "--size", "64")
    res = invoke(runner, *args, "-o", f"clips{os.sep}", "--png", f"sheets{os.sep}new{os.sep}")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "clips" / "test-00003.mp4").is_file() and (tmp_path / "sheets" / "new" / "test-00003.png").is_file()
    (tmp_path / "notes.md").write_text("data\n")
    one_line_error(invoke(runner, *args, "-o", f"notes.md{os.sep}"), 2, "notes.md", "is not a folder")
    one_line_error(invoke(runner, *args, "-o", "clip"), 2, "--output clip: the file name must end in .mp4")


def test_check_not_input_looks_only_at_inputs_with_the_same_suffix(tmp_path, monkeypatch):
    """A report checked every file of every step on disk (exists + resolve), though only an .html one can be its page."""
    from gesture_cli.core.errors import UsageError
    from gesture_cli.core.output_paths import check_not_input

    page = tmp_path / "page.HTML"
    page.write_text("<p>a step's page</p>")
    others = [tmp_path / f"img{i}.png" for i in range(3)]
    looked_at = []
    real_exists = Path.exists
    monkeypatch.setattr(Path, "exists", lambda self, **kw: looked_at.append(self.name) or real_exists(self, **kw))
    check_not_input(tmp_path / "out.html", [*others, page])
    assert looked_at == ["page.HTML"]
    with pytest.raises(UsageError, match="is the input"):
        check_not_input(page, [*others, page])
