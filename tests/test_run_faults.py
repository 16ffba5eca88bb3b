"""Faults around the run directory (issue #18, items 1-5): racing writers, dead steps, a full disk,
unreadable neighbours and unusable run dirs. Each test reproduces the fault deterministically."""

from __future__ import annotations

import json

import pytest

from gesture_cli.core.rundir import RunDir
from tests.conftest import SHARED_REAL, invoke, one_line_error

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXTRACT = ["extract-features", "--backbone", "tiny-dinov2", "--dataset", "synthetic-hands", "--image-size", "8", "--precision", "fp32"]


# ---- 1. two writers to one output: the cache and the report follow the files on disk -------------------------
def _writer(run: RunDir, value: str):
    step = run.begin("demo-step", config={"v": value}, outputs=["out"], argv=["gx", value])
    step.__enter__()
    (step.stage("out") / "a.txt").write_text(value * 3)
    return step


def test_a_step_that_lost_a_race_on_its_output_is_no_cache_hit(tmp_path):
    run = RunDir(tmp_path / "r")
    slow = _writer(run, "slow")  # started first, commits last: its files are the ones left
    fast = _writer(run, "fast")
    fast.__exit__(None, None, None)
    slow.__exit__(None, None, None)
    assert (tmp_path / "r" / "out" / "a.txt").read_text() == "slowslowslow"
    assert [s["argv"][1] for s in run.steps()] == ["slow", "fast"]  # the manifest's order says "fast" wrote last
    assert not run.begin("demo-step", config={"v": "fast"}, outputs=["out"]).cached
    assert run.begin("demo-step", config={"v": "slow"}, outputs=["out"]).cached
    assert run.last_ok("demo-step", output="out")["argv"] == ["gx", "slow"]

    from gesture_cli.tasks.report import current_steps

    assert [s["argv"][1] for s in current_steps(run)] == ["slow"]


def test_racing_extracts_rerun_the_loser_and_report_the_winner(tmp_path, runner):
    """The issue's race, made deterministic: a pool-mean extract runs and finishes while a pool-cls extract
    into the same folder is between its start and its commit (the cls one commits last)."""
    from gesture_cli.core.config import resolve_config
    from gesture_cli.tasks.features import ExtractConfig, extract_features
    from gesture_cli.tasks.report import current_steps

    run = RunDir(tmp_path / "race")
    cls_cfg = resolve_config(ExtractConfig, None, {"backbone": "tiny-dinov2", "dataset": "synthetic-hands", "image_size": 8,
                                                   "pool": "cls", "precision": "fp32"})
    mean_args = [*EXTRACT, "--pool", "mean", "--max-samples", "24", "-r", run.root]
    raced = []

    def meanwhile(split, n):
        if not raced:
            raced.append(invoke(runner, *mean_args))

    extract_features(cls_cfg, run, device="cpu", argv=["gx", "cls"], on_split=meanwhile)
    assert raced[0].exit_code == 0, raced[0].output
    meta = json.loads((run.root / "features" / "tiny-dinov2" / "meta.json").read_text())
    assert meta["pool"] == "cls"  # the cls step committed last: its files are in place

    shown = [s for s in current_steps(run) if s["command"] == "extract-features"]
    assert [s["config"]["pool"] for s in shown] == ["cls"]  # the report credits the files to their writer

    res = invoke(runner, *mean_args)  # before the fix: "cached", over the cls features of every image
    assert res.exit_code == 0, res.output
    assert "cached" not in res.output
    meta = json.loads((run.root / "features" / "tiny-dinov2" / "meta.json").read_text())
    assert meta["pool"] == "mean" and meta["splits"]["train"]["images"] == 24
    assert "cached" in invoke(runner, *mean_args).output


def test_a_copied_run_keeps_its_cache_and_report(tmp_path, runner):
    """Outputs are recorded by content: a copy that does not keep mtimes (cp, an archive with whole-second
    times) is still the same result, a cache hit, and credited in the report."""
    import shutil

    from gesture_cli.tasks.report import current_steps

    res = invoke(runner, *EXTRACT, "--max-samples", "8", "-r", tmp_path / "a")
    assert res.exit_code == 0, res.output
    shutil.copytree(tmp_path / "a", tmp_path / "b", copy_function=shutil.copy)  # new mtimes
    a, b = (tmp_path / x / "features" / "tiny-dinov2" / "meta.json" for x in "ab")
    assert a.stat().st_mtime_ns != b.stat().st_mtime_ns
    assert [s["command"] for s in current_steps(RunDir(tmp_path / "b"))] == ["extract-features"]
    res = invoke(runner, *EXTRACT, "--max-samples", "8", "-r", tmp_path / "b")
    assert res.exit_code == 0 and "cached" in res.output, res.output


# ---- 3. a killed step: recognised as dead, its staging removed; SIGTERM exits 143 ------------------------------
# Runs `gx extract-features` in a child process that stops after the first split's file is saved into the
# staging folder (extraction writes every split's shards first, then the step's files), so the test can kill
# it at a known point (no sleeps racing the work).
PAUSED_EXTRACT = """
import pathlib, sys, time
import gesture_cli.tasks.features as features
ready, calls, save_features = pathlib.Path(sys.argv[1]), [], features._save_features
def paused(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:  # split 1 is in the staging folder now
        ready.write_text("ready")
        time.sleep(300)
    return save_features(*args, **kwargs)
features._save_features = paused
from gesture_cli.cli.app import app
app(sys.argv[2:], prog_name="gx")
"""


def _start_paused_extract(tmp_path, run):
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", PAUSED_EXTRACT, str(ready), *EXTRACT, "-r", str(run)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "the child never reached the pause"
        time.sleep(0.05)
    return proc


def _debris(run) -> list[str]:
    return sorted(p.name for p in (run / "features").iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def test_a_killed_step_is_closed_and_cleaned_by_the_next_look_at_the_run(tmp_path, runner):
    run = tmp_path / "run"
    proc = _start_paused_extract(tmp_path, run)
    proc.kill()  # SIGKILL: no handler runs, the step stays "running" with its staging folder
    proc.communicate()
    (debris,) = _debris(run)
    assert (run / "features" / debris / "train.safetensors").is_file()
    assert RunDir(run).steps()[-1]["status"] == "running"

    res = invoke(runner, "runs", "--root", run, "--json")  # listing the run closes the dead step
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)[0]["status"] == {"interrupted": 1}
    (entry,) = RunDir(run).steps()
    assert entry["status"] == "interrupted" and f"process {proc.pid}" in entry["error"]
    assert _debris(run) == [] and not (run / "features" / "tiny-dinov2").exists()

    res = invoke(runner, *EXTRACT, "-r", run)  # and the run dir is usable as if the kill never happened
    assert res.exit_code == 0 and "cached" not in res.output, res.output


def test_a_later_step_cleans_up_after_a_killed_one_but_never_after_a_live_one(tmp_path, runner):
    run = tmp_path / "run"
    proc = _start_paused_extract(tmp_path, run)
    proc.kill()
    proc.communicate()
    live = RunDir(run).begin("other-step", config={}, outputs=["other"])
    with live:  # a step of this (live) process, open while the next one starts
        (live.stage("other") / "f").write_text("x")
        res = invoke(runner, *EXTRACT, "--split", "train", "-r", run)
        assert res.exit_code == 0, res.output
        assert (run / f".other.tmp-{live.id}" / "f").is_file()  # untouched
        assert [s["status"] for s in RunDir(run).steps()] == ["interrupted", "running", "ok"]
    assert _debris(run) == [] and (run / "other" / "f").read_text() == "x"


def test_sigterm_rolls_the_step_back_and_exits_143(tmp_path):
    import signal

    run = tmp_path / "run"
    proc = _start_paused_extract(tmp_path, run)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 143, out  # before: -15, killed by the signal with the step left running
    assert "Terminated (SIGTERM)" in out and "Traceback" not in out
    assert RunDir(run).steps()[-1]["status"] == "interrupted"
    assert _debris(run) == []


@pytest.mark.parametrize(("sig", "code"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_trainer_stopped_by_a_signal_exits_with_that_signals_code(tmp_path, sig, code):
    import os
    import signal

    import torch

    from gesture_cli.train.loop import TrainConfig, TrainingInterrupted, fit

    class Toy:
        x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))

        def __len__(self):
            return 32

        def get_batch(self, idx):
            return self.x[idx], self.y[idx]

    def kill_at_2(state):
        if state.step == 2:
            os.kill(os.getpid(), getattr(signal, sig))

    model = torch.nn.Linear(4, 2)
    with pytest.raises(TrainingInterrupted, match=sig) as err:
        fit(model, train_data=Toy(), loss_fn=lambda m, b: torch.nn.functional.cross_entropy(m(b[0]), b[1]),
            cfg=TrainConfig(epochs=2, batch_size=8, precision="fp32"), checkpoint_dir=tmp_path / "ck",
            callbacks={"on_step_end": [kill_at_2]})
    assert err.value.exit_code == code


# ---- 4. a full disk during `--force`: the old run survives, the error names the file ------------------------
LORA = ["lora-train", "--backbone", "tiny-dinov3", "--dataset", "synthetic-hands", "--image-size", "32", "--max-samples", "48",
        "--batch-size", "8", "--epochs", "1", "--precision", "fp32", "--device", "cpu"]


def _tree(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_full_disk_during_force_keeps_the_old_run_and_names_the_file(tmp_path, runner):
    import resource
    import subprocess
    import sys

    from tests.conftest import REPO

    run = tmp_path / "run"
    res = invoke(runner, *LORA, "-r", run)
    assert res.exit_code == 0, res.output
    before = _tree(run / "lora")
    assert {"tiny-dinov3/checkpoints/last/optimizer.safetensors", "tiny-dinov3/checkpoints/best/model.safetensors",
            "tiny-dinov3/checkpoints/train_log.csv", "tiny-dinov3/head.safetensors"} <= set(before)

    def file_size_limit():  # as `ulimit -f 40`: the 57 kB optimizer state of checkpoints/last cannot be written
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, resource.RLIM_INFINITY))

    proc = subprocess.run([sys.executable, "-m", "gesture_cli", *LORA, "--force", "-r", str(run)], cwd=REPO, capture_output=True,
                          text=True, timeout=300, preexec_fn=file_size_limit)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    (err,) = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert err.startswith(f"Error: disk full or file-size limit while writing {run}/lora/tiny-dinov3/checkpoints/"), err
    assert "optimizer.safetensors (File too large)" in err
    assert _tree(run / "lora") == before  # before the fix: checkpoints/last was gone and best/ + the log were the new run's
    assert [s["status"] for s in RunDir(run).steps()] == ["ok", "failed"]
    assert not [p for p in run.rglob(".*") if p.name != ".run.json.lock"]  # nothing half-written left behind


def _aside_step(run: RunDir, outcome: str, *, write_new: bool = True):
    step = run.begin("t", config={"n": outcome}, outputs=["o"], force=True)
    with step:
        step.set_aside("o/ck")
        (run.path("o", "ck")).mkdir()
        if write_new:
            (run.path("o", "ck", "new")).write_text(outcome)
        if outcome == "fail":
            raise OSError(28, "No space left on device")
        if outcome == "interrupt":
            raise KeyboardInterrupt
        (step.stage("o") / "ck").mkdir()


@pytest.mark.parametrize(("outcome", "write_new", "left"), [
    ("fail", True, ["old"]),  # a failed run: the old folder comes back
    ("interrupt", True, ["new"]),  # an interrupted run keeps what it wrote (a checkpoint to --resume from)
    ("interrupt", False, ["old"]),  # ... unless it wrote nothing
])
def test_set_aside_folder_comes_back_unless_the_step_finished_or_left_something(tmp_path, outcome, write_new, left):
    run = RunDir(tmp_path / "r")
    first = run.begin("t", config={}, outputs=["o"])
    with first:
        staged = first.stage("o")
        (staged / "ck").mkdir()
        (staged / "ck" / "old").write_text("old")
    with pytest.raises((OSError, KeyboardInterrupt)):
        _aside_step(run, outcome, write_new=write_new)
    assert sorted(p.name for p in run.path("o", "ck").iterdir()) == left
    assert sorted(p.name for p in run.path("o").iterdir()) == ["ck"]  # no .ck.aside-* left


def test_a_killed_step_gets_its_set_aside_folder_back(tmp_path):
    run = RunDir(tmp_path / "r")
    first = run.begin("t", config={}, outputs=["o"])
    with first:
        (first.stage("o") / "ck").mkdir()
    (run.path("o", "ck", "old")).write_text("old")
    dead = run.begin("t", config={"n": 2}, outputs=["o"])
    dead.__enter__()
    dead.set_aside("o/ck")  # and then the process "dies": its entry names another, finished process
    run.update_manifest(lambda m: m["steps"][-1].update(pid=_finished_pid(), pid_start=None))
    (closed,) = run.recover_dead_steps()
    assert closed["id"] == dead.id and run.steps()[-1]["status"] == "interrupted"
    assert sorted(p.name for p in run.path("o").iterdir()) == ["ck"] and run.path("o", "ck", "old").read_text() == "old"


def _finished_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(proc.stdout)


# ---- 5. guidance instead of raw exception text -----------------------------------------------------------------
def test_a_run_dir_that_is_a_file_or_inside_one_is_a_usage_error(tmp_path, runner):
    f = tmp_path / "f"
    f.write_text("not a folder")
    res = invoke(runner, *EXTRACT, "-r", f)  # before: FileExistsError
    one_line_error(res, 2, f"run dir {f} is a file, not a folder; pass a folder to -r/--run-dir")
    res = invoke(runner, *EXTRACT, "-r", f / "run")  # before: NotADirectoryError
    one_line_error(res, 2, f"run dir {f / 'run'} is inside {f}, which is a file, not a folder")
    for args in (("evaluate", "translate"), ("report",), ("infer", "segment", "--input", str(tmp_path))):  # commands that only read
        one_line_error(invoke(runner, *args, "-r", f), 2, f"run dir {f} is a file, not a folder; pass a folder to -r/--run-dir")
    for args, name in ((("runs", "show", str(f)), "RUN_DIR"), (("runs", "export", str(f), "-o", str(tmp_path / "x.tar.gz")), "RUN")):
        one_line_error(invoke(runner, *args), 2, f"run dir {f} is a file, not a folder; pass a folder as {name}")  # an argument
    assert f.read_text() == "not a folder"


def test_a_read_only_run_dir_says_so(tmp_path, runner, monkeypatch):
    import errno
    import os

    from filelock import FileLock

    run = tmp_path / "run"
    run.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: make the lock file fail as it does for a user in a 0555 folder
        def refuse(self, *args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied", self.lock_file)

        monkeypatch.setattr(FileLock, "acquire", refuse)
    else:
        run.chmod(0o555)
    try:
        res = invoke(runner, *EXTRACT, "--max-samples", "4", "-r", run)  # before: PermissionError ... .run.json.lock
    finally:
        run.chmod(0o755)
    one_line_error(res, 1, f"run dir {run} is not writable (Permission denied); make it writable (chmod u+w) or pass another -r/--run-dir")


def test_a_local_backbone_with_a_pickled_checkpoint_names_the_file(tmp_path, runner):
    import pickle

    from gesture_cli.models.backbone_registry import _tiny_vit

    model_dir = tmp_path / "my-vit"
    _tiny_vit().config.save_pretrained(model_dir)

    class RunsCode:  # what torch's weights-only loader refuses: a pickle that would call a function
        def __reduce__(self):
            return (print, ("unpickled",))

    (model_dir / "pytorch_model.bin").write_bytes(pickle.dumps({"w": RunsCode()}))
    res = invoke(runner, "extract-features", "--backbone", model_dir, "--dataset", "synthetic-hands", "--image-size", "32",
                 "--max-samples", "4", "-r", tmp_path / "run")
    one_line_error(res, 1, f"{model_dir / 'pytorch_model.bin'}: pickled PyTorch weights that hold more than tensors; gx does not unpickle them")
    assert "unpickled" not in res.output and "In PyTorch 2.6" not in res.output  # no code ran, no torch text


# ---- 2. an unreadable table next to a .pose file, or one folder up, is skipped with a note ---------------------
def _pose_with_bad_neighbours(tmp_path):
    from pose_format.utils.generic import fake_openpose_pose

    clip = tmp_path / "data" / "signs" / "clip.pose"
    clip.parent.mkdir(parents=True)
    with clip.open("wb") as f:
        fake_openpose_pose(10).write(f)
    (clip.parent.parent / "other.tsv").write_bytes(b"id\ttext\n\xff\xfe binary junk\n")  # one folder up, not UTF-8
    (clip.parent / "big.csv").write_text("name,text\nx," + "y" * 200_000 + "\n")  # beside it, a field over csv's limit
    (clip.parent / "labels.csv").write_text("name,text\nclip,hello world\n")  # the table that names the file
    (clip.parent / "named.csv").write_bytes(b"name,text\nclip,\xff\n")  # names the file, cannot be read: the note
    return clip


def test_unrelated_unreadable_tables_beside_a_pose_file_are_skipped(tmp_path, runner):
    from gesture_cli.data.pose import make_pose_dataset

    clip = _pose_with_bad_neighbours(tmp_path)
    ds = make_pose_dataset(f"pose:{clip}")  # what pose-render, pose-convert and infer translate --input read
    (sample,) = ds.samples
    assert sample.text == "hello world"  # before: DataError on other.tsv (undecodable) or csv.Error on big.csv
    (note,) = ds.skipped
    assert note.startswith(f"label table not read: {clip.parent / 'named.csv'}: cannot read the label table")

    res = invoke(runner, "pose-render", clip, "--png", tmp_path / "sheet.png")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "sheet.png").is_file() and f"Skipped: label table not read: {clip.parent / 'named.csv'}" in res.output
    res = invoke(runner, "pose-convert", clip, "-o", tmp_path / "converted")
    assert res.exit_code == 0, res.output
    assert "hello world" in (tmp_path / "converted" / "index.jsonl").read_text()


def test_an_unreadable_table_in_a_pose_folder_is_a_note_not_the_end(tmp_path):
    from gesture_cli.data.pose import make_pose_dataset

    clip = _pose_with_bad_neighbours(tmp_path)
    ds = make_pose_dataset(f"pose:{clip.parent}")
    assert [s.text for s in ds.samples] == ["hello world"]
    assert sorted(k.split(": cannot")[0] for k in ds.skipped) == [  # each one that cannot be read is named
        f"label table not read: {clip.parent / 'big.csv'}", f"label table not read: {clip.parent / 'named.csv'}"]


def test_a_nested_output_of_another_step_keeps_the_outer_step_cached(tmp_path):
    """pca-visualize writes pca/<backbone>/renders/*.mp4 inside pca-compute's folder: that is no rewrite of
    pca-compute's own files, so its cache (and its credit in the report) stays."""
    run = RunDir(tmp_path / "r")
    outer = run.begin("compute", config={}, outputs=["pca/b"])
    with outer:
        (outer.stage("pca/b") / "pca.json").write_text("{}")
    inner = run.begin("visualize", config={}, outputs=["pca/b/renders/v.mp4"])
    with inner:
        inner.stage("pca/b/renders/v.mp4", is_dir=False).write_bytes(b"mp4")
    assert run.begin("compute", config={}, outputs=["pca/b"]).cached
    (tmp_path / "r" / "pca" / "b" / "pca.json").write_text('{"edited": 1}')  # a rewrite of its own file does count
    assert not run.begin("compute", config={}, outputs=["pca/b"]).cached


def test_a_refused_write_deep_in_a_library_is_still_one_line(tmp_path, runner, monkeypatch):
    """The CLI boundary maps what atomic writes do not see (a library's own writes): the path when the OSError
    carries one, the cause always."""
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "lib.bin"))

    monkeypatch.setattr("gesture_cli.core.artifacts.save_tensors", full)  # extract imports it when it runs
    res = invoke(runner, *EXTRACT, "--max-samples", "4", "-r", tmp_path / "run")
    one_line_error(res, 1, f"Error: disk full or file-size limit while writing {tmp_path / 'lib.bin'} (No space left on device); "
                           "free space (or raise `ulimit -f`) and rerun")
    assert not [p for p in (tmp_path / "run").rglob("*") if ".tmp-" in p.name]

    from gesture_cli.core.errors import write_error

    assert str(write_error(OSError(errno.EFBIG, "File too large"))).startswith("disk full or file-size limit while writing a file (File too large)")
    assert str(write_error(OSError(errno.EROFS, "Read-only file system", "/mnt/x"))).startswith("cannot write /mnt/x (Read-only file system)")
    assert write_error(OSError(errno.ENOENT, "No such file or directory")) is None


@pytest.mark.slow
def test_infer_translate_input_reads_past_an_unreadable_table(tmp_path, runner, real_data):
    """The third command of the issue, end to end: a translator trained from scratch in seconds (what it says does
    not matter) reads a real MediaPipe .pose file whose folder and parent hold tables that cannot be read."""
    import shutil

    enc = [a for o in ("d_model=32", "n_layers=1", "n_heads=2", "gcn_dims=16") for a in ("--encoder-opt", o)]
    data = [a for o in ("train_size=16", "val_size=4", "test_size=4") for a in ("--dataset-opt", o)]
    run = tmp_path / "run"
    res = invoke(runner, "pose-finetune", "--dataset", "synthetic-signs", *data, *enc, "--text-model", "tiny-umt5", "--epochs", "1",
                 "--batch-size", "8", "--max-frames", "16", "--precision", "fp32", "--device", "cpu", "-r", run)
    assert res.exit_code == 0, res.output
    clip = tmp_path / "data" / "signs" / "pizza.pose"
    clip.parent.mkdir(parents=True)
    shutil.copy(real_data / "sign_pose" / "sgg_lexicon" / "sgg" / "pizza.pose", clip)
    (clip.parent.parent / "other.tsv").write_bytes(b"id\ttext\n\xff\xfe junk\n")  # before: the whole command failed on it
    (clip.parent / "named.csv").write_bytes(b"name,text\npizza,\xff\n")
    res = invoke(runner, "infer", "translate", "--input", clip, "-r", run, "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert f"Skipped: label table not read: {clip.parent / 'named.csv'}: cannot read the label table" in res.output
    assert "other.tsv" not in res.output  # it does not name the file: never read
    assert json.loads((run / "infer" / "translate.json").read_text())["n"] == 1


def test_a_run_finds_its_relative_dataset_from_any_folder_and_says_when_it_is_gone(runner, tmp_path, monkeypatch):
    """--dataset folder:data typed in one folder is recorded absolute, so evaluate works from another; once the
    data has moved, one line names the path, the step that recorded it, and --dataset."""
    import cv2
    import numpy as np

    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / "work" / "data" / split / c).mkdir(parents=True)
            for i in range(4):
                cv2.imwrite(str(tmp_path / "work" / "data" / split / c / f"{i}.png"), np.full((16, 16, 3), 60 * i + (c == "b") * 20, np.uint8))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    res = invoke(runner, "lora-train", "--backbone", "tiny-vit", "--dataset", "folder:data", "--method", "head", "--image-size", "16",
                 "--max-steps", "2", "--batch-size", "4", "--precision", "fp32", "-r", "run")
    assert res.exit_code == 0, res.output
    config = json.loads((tmp_path / "work" / "run" / "run.json").read_text())["steps"][0]["config"]
    assert config["dataset"] == f"folder:{tmp_path / 'work' / 'data'}"
    monkeypatch.chdir(tmp_path / "elsewhere")
    run = str(tmp_path / "work" / "run")
    res = invoke(runner, "evaluate", "classify", "--from", "lora", "--backbone", "tiny-vit", "-r", run)
    assert res.exit_code == 0, res.output
    (tmp_path / "work" / "data").rename(tmp_path / "work" / "moved")
    res = invoke(runner, "evaluate", "classify", "--from", "lora", "--backbone", "tiny-vit", "--force", "-r", run)
    one_line_error(res, 1, f"{tmp_path / 'work' / 'data'}: not found", "the classifier in", "pass --dataset")
    res = invoke(runner, "evaluate", "classify", "--from", "lora", "--backbone", "tiny-vit", "--force", "-r", run,
                 "--dataset", "folder:../work/moved")
    assert res.exit_code == 0, res.output


def test_a_file_where_a_folder_is_needed_is_one_line_naming_it(runner, tmp_path):
    """A run dir whose features/ is a file, and an output path through a file: one line naming the file in the way."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "features").write_text("x")
    res = invoke(runner, "extract-features", "-b", "tiny-vit", "-d", "synthetic-hands", "--max-samples", "8", "--precision", "fp32",
                 "-r", tmp_path / "run")
    one_line_error(res, 1, f"{tmp_path / 'run' / 'features'} is a file where a folder is needed", "move it or choose another path")
    assert (tmp_path / "run" / "features").read_text() == "x"  # nothing the user had is lost
    (tmp_path / "afile").write_text("x")
    pose = SHARED_REAL / "sign_pose" / "pose_format_tests" / "mediapipe.pose"
    if pose.is_file():
        res = invoke(runner, "pose-view", pose, "-o", tmp_path / "afile" / "v.html")
        one_line_error(res, 1, f"{tmp_path / 'afile'} is a file where a folder is needed")


def test_a_refused_write_names_only_options_the_command_has(tmp_path, runner, monkeypatch):
    """The hint after 'make it writable' is where this command can write instead: extract-features has
    --run-dir but no --output; a write into the gx cache is moved with GX_HOME, which no option changes."""
    import errno

    target = {"path": tmp_path / "ro" / "x.safetensors"}

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(target["path"]))

    monkeypatch.setattr("gesture_cli.core.artifacts.save_tensors", refused)
    res = invoke(runner, *EXTRACT, "--max-samples", "4", "-r", tmp_path / "run")
    one_line_error(res, 1, f"Error: cannot write {target['path']} (Permission denied); make it writable or write somewhere else (--run-dir)")
    assert "--output" not in res.output
    monkeypatch.setenv("GX_HOME", str(tmp_path / "home"))
    target["path"] = tmp_path / "home" / "models" / "x.lock"
    res = invoke(runner, *EXTRACT, "--max-samples", "4", "-r", tmp_path / "run2")
    one_line_error(res, 1, f"Error: cannot write {target['path']} (Permission denied); make it writable or point GX_HOME at a writable folder")
    assert "--run-dir" not in res.output

    from gesture_cli.core.errors import write_error

    # outside a command (the library used from Python): no option to name
    assert str(write_error(OSError(errno.EROFS, "Read-only file system", "/mnt/x"))) == "cannot write /mnt/x (Read-only file system); make it writable"
