"""The CLI shell: help everywhere with an example, fast help without torch, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, invoke, one_line_error


def _all_commands():
    from typer.main import get_command

    from gesture_cli.cli.app import app

    root = get_command(app)
    out = []

    def walk(cmd, path):
        if hasattr(cmd, "commands"):  # a group (typer vendors its own click)
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])
        if path:
            out.append(path)

    walk(root, [])
    return out


def test_registered_commands_cover_the_foundation():
    names = {p[0] for p in _all_commands()}
    assert {"download", "extract-features", "runs"} <= names


def test_readme_command_table_and_gx_help_agree():
    """Every registered command is in the README's command table, and the table names no command gx lacks."""
    import re

    readme = (REPO / "README.md").read_text()
    table = readme.split("## Commands", 1)[1].split("\n\n", 2)[1]
    in_table = set(re.findall(r"^\| `gx ([a-z-]+)", table, flags=re.M)) | set(re.findall(r"/ `gx ([a-z-]+)", table))
    registered = {p[0] for p in _all_commands()}
    assert in_table == registered
    for task in ("classify", "segment", "keypoint", "translate"):
        assert f"gx evaluate {task}" in table and f"gx infer {task}" in table


@pytest.mark.parametrize("path", _all_commands(), ids=lambda p: " ".join(p))
def test_every_command_has_help_with_an_example(runner, path):
    res = invoke(runner, *path, "--help")
    assert res.exit_code == 0, res.output
    assert "Example" in res.output and "gx " in res.output.split("Example", 1)[1]


def test_root_help_and_version(runner):
    res = invoke(runner, "--help")
    assert res.exit_code == 0 and "extract-features" in res.output
    res = invoke(runner, "--version")
    assert res.exit_code == 0 and res.output.startswith("gx ")


def test_help_does_not_import_torch_or_transformers():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from gesture_cli.cli.app import app\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0\n"
        "for c in ['extract-features', 'download', 'runs']:\n"
        "    assert CliRunner().invoke(app, [c, '--help']).exit_code == 0\n"
        "bad = [m for m in ('torch', 'transformers', 'sklearn', 'cv2', 'pandas') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"help imported heavy modules: {out.stdout}"


def test_real_subprocess_entry_points(tmp_path):
    env = {**os.environ, "GX_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "gesture_cli", "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0 and "extract-features" in out.stdout
    gx = os.path.join(os.path.dirname(sys.executable), "gx")
    if os.path.exists(gx):
        out = subprocess.run([gx, "extract-features", "--dataset", "nope-set", "-r", str(tmp_path / "r")], capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 2
        assert "unknown dataset 'nope-set'" in out.stderr and "Traceback" not in out.stderr + out.stdout
        assert len(out.stderr.strip().splitlines()) == 1


def test_unknown_config_key_is_usage_error(runner, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("backbone: tiny-vit\nimage_sise: 64\n")
    res = invoke(runner, "extract-features", "--config", cfg, "-r", tmp_path / "r")
    assert res.exit_code == 2
    assert "unknown key 'image_sise' (did you mean 'image_size'?)" in res.output
    assert not (tmp_path / "r").exists()


def test_runs_lists_and_shows(runner, tmp_path):
    from gesture_cli.core.rundir import RunDir

    run = RunDir(tmp_path / "runs" / "a")
    step = run.begin("probe", config={}, outputs=["probe"])
    with step:
        step.stage("probe")
        step.metrics["accuracy"] = 0.875
    res = invoke(runner, "runs", "--root", tmp_path / "runs", "--json")
    assert res.exit_code == 0
    rows = json.loads(res.output)
    assert rows[0]["name"] == "a" and rows[0]["metrics"]["probe.accuracy"] == 0.875
    res = invoke(runner, "runs", "--root", tmp_path / "runs")
    assert res.exit_code == 0 and "probe.accuracy=0.875" in res.output
    res = invoke(runner, "runs", "show", tmp_path / "runs" / "a")
    assert res.exit_code == 0 and "probe" in res.output and "ok" in res.output
    res = invoke(runner, "runs", "show", tmp_path / "nope")
    assert res.exit_code == 2 and "not a run directory" in res.output


def test_long_paths_are_never_broken_across_lines(runner, tmp_path):
    deep = tmp_path / ("a-rather-long-folder-name-" * 4) / "run"
    res = invoke(runner, "extract-features", "-b", "tiny-vit", "-d", "synthetic-hands", "-r", deep, "--max-samples", "8", "--split", "test")
    assert res.exit_code == 0, res.output
    assert f"Wrote {deep / 'features' / 'tiny-vit'}" in res.output


def test_an_option_of_another_task_is_refused_not_ignored(runner, tmp_path):
    for args, flag in ((("infer", "classify", "--detect", "tiny-rtdetr"), "--detect"),
                       (("infer", "keypoint", "--sample-id", "x"), "--sample-id"),
                       (("evaluate", "classify", "--inference", "slide"), "--inference"),
                       (("evaluate", "segment", "--from", "lora"), "--from"),
                       (("evaluate", "translate", "--backbone", "tiny-vit"), "--backbone"),
                       (("infer", "translate", "--backbone", "tiny-vit"), "--backbone")):
        res = invoke(runner, *args, "-r", tmp_path)
        assert res.exit_code == 2, res.output
        assert f"{flag} applies to `gx {args[0]} " in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("content", ["{not json", "[]", '{"steps": "x"}'])
def test_runs_lists_every_readable_run_and_marks_a_corrupt_one(runner, tmp_path, content):
    """One bad run.json made `gx runs` list nothing (or fail with AttributeError); now it is one marked row."""
    from gesture_cli.core.rundir import RunDir

    run = RunDir(tmp_path / "runs" / "good")
    with run.begin("probe", config={}, outputs=["probe"]) as step:
        step.stage("probe")
        step.metrics["accuracy"] = 0.875
    (tmp_path / "runs" / "bad").mkdir()
    (tmp_path / "runs" / "bad" / "run.json").write_text(content)
    res = invoke(runner, "runs", "--root", tmp_path / "runs", "--json")
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["good"]["manifest_error"] is None and rows["good"]["metrics"]["probe.accuracy"] == 0.875
    assert rows["bad"]["status"] == {"corrupt manifest": 1}
    assert "corrupt manifest" in rows["bad"]["manifest_error"] and str(tmp_path / "runs" / "bad" / "run.json") in rows["bad"]["manifest_error"]
    res = invoke(runner, "runs", "--root", tmp_path / "runs")
    assert res.exit_code == 0 and "probe.accuracy=0.875" in res.output
    assert "│ corrupt manifest │" in res.output and "warning:" in res.output
    res = invoke(runner, "runs", "show", tmp_path / "runs" / "bad")
    assert res.exit_code == 1 and "corrupt manifest" in res.output and len(res.output.strip().splitlines()) == 1


def _record(run, command: str, metrics: dict, config: dict | None = None) -> None:
    with run.begin(command, config=config or {"n": len(run.steps())}, outputs=[command]) as step:
        step.stage(command)
        step.metrics.update(metrics)


def test_runs_key_metrics_are_the_headline_metrics_the_steps_record(runner, tmp_path):
    """KEY_METRICS matched 'accuracy'/'miou' exactly: every trained model showed nothing (test_accuracy, test_mIoU,
    val_pck) and a segmentation run showed evaluate.images; probe's knn_top1 did not say its k."""
    from gesture_cli.core.rundir import RunDir

    seg = RunDir(tmp_path / "runs" / "seg")
    _record(seg, "segment-train", {"head": "linear", "val_mIoU": 0.41, "test_mIoU": 0.4, "test_pixel_acc": 0.9, "steps": 20})
    _record(seg, "evaluate", {"mIoU": 0.39, "pixel_acc": 0.88, "images": 24, "precision": "fp32"})
    kp = RunDir(tmp_path / "runs" / "kp")
    _record(kp, "keypoint-train", {"val_pck": 0.3, "test_pck": None, "pck_kind": "PCKh@0.5", "steps": 5})
    cls = RunDir(tmp_path / "runs" / "cls")
    _record(cls, "probe", {"accuracy": 0.8, "knn_top1": 0.7, "c": 1.0}, config={"knn_k": [10, 20]})
    _record(cls, "lora-train", {"val_accuracy": 0.85, "test_accuracy": 0.83, "trainable_params": 100})
    res = invoke(runner, "runs", "--root", tmp_path / "runs", "--json")
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["seg"]["key_metrics"] == {"segment-train.test_mIoU": 0.4, "evaluate.mIoU": 0.39, "segment-train.val_mIoU": 0.41}
    assert rows["kp"]["key_metrics"] == {"keypoint-train.val_pck": 0.3}
    assert rows["cls"]["key_metrics"] == {"lora-train.test_accuracy": 0.83, "probe.accuracy": 0.8,
                                          "probe.knn20_accuracy": 0.7, "lora-train.val_accuracy": 0.85}
    assert rows["cls"]["metrics"]["probe.knn_top1"] == 0.7  # the recorded names stay as they are
    res = invoke(runner, "runs", "--root", tmp_path / "runs")
    out = res.output
    assert "segment-train.test_mIoU=0.4" in out and "evaluate.images" not in out and "keypoint-train.val_pck=0.3" in out
    assert "probe.knn20_accuracy=0.7" in out


def test_runs_key_metrics_take_one_of_each_task_first(tmp_path):
    from gesture_cli.core.runs import key_metrics

    metrics = {"probe.accuracy": 0.8, "lora-train.test_accuracy": 0.9, "evaluate.accuracy": 0.88, "segment-train.test_mIoU": 0.5,
               "keypoint-train.test_pck": 0.6, "pose-finetune.test_bleu4": 12.0, "extract-features.images_per_s": 50.0}
    assert [k for k, _ in key_metrics(metrics)] == ["lora-train.test_accuracy", "segment-train.test_mIoU",
                                                    "keypoint-train.test_pck", "pose-finetune.test_bleu4"]


def test_an_empty_run_dir_is_a_usage_error_not_the_current_folder(runner, tmp_path, monkeypatch):
    """`-r ""` made the current folder a run dir (./run.json); an empty GX_RUN_DIR still means runs/default."""
    monkeypatch.chdir(tmp_path)
    res = invoke(runner, "extract-features", "-b", "tiny-vit", "-d", "synthetic-hands", "--max-samples", "4", "--split", "test", "-r", "")
    assert res.exit_code == 2 and "Error: -r/--run-dir is empty" in res.output and len(res.output.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("GX_RUN_DIR", "")
    from gesture_cli.core.rundir import RunDir

    assert RunDir().root == Path("runs/default")


def test_a_dangling_link_as_run_dir_names_the_link_and_its_target(runner, tmp_path):
    """mkdir on a link to nothing failed with a bare FileExistsError: [Errno 17] File exists."""
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere" / "x")
    for rd in (tmp_path / "dangling", tmp_path / "dangling" / "sub"):
        res = invoke(runner, "extract-features", "-b", "tiny-vit", "-d", "synthetic-hands", "--max-samples", "4", "--split", "test", "-r", rd)
        out = " ".join(res.output.split())
        assert res.exit_code == 2, res.output
        assert f"{tmp_path / 'dangling'}" in out and f"symbolic link to {tmp_path / 'nowhere' / 'x'}, which does not exist" in out
        assert "FileExistsError" not in out
    assert not (tmp_path / "nowhere").exists()


def test_tilde_is_expanded_in_run_dirs(runner, tmp_path, monkeypatch):
    """`--run-dir=~/x` (no shell expansion) and GX_RUN_DIR=~/y made a literal ./~ folder."""
    from gesture_cli.core.rundir import RunDir

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    args = ("extract-features", "-b", "tiny-vit", "-d", "synthetic-hands", "--max-samples", "4", "--split", "test")
    assert invoke(runner, *args, "--run-dir=~/x").exit_code == 0
    assert (tmp_path / "home" / "x" / "run.json").is_file() and not (tmp_path / "~").exists()
    monkeypatch.setenv("GX_RUN_DIR", "~/y")
    assert RunDir().root == tmp_path / "home" / "y"
    res = invoke(runner, "runs", "show", "~/x")
    assert res.exit_code == 0 and "extract-features" in res.output


def test_runs_root_that_is_missing_or_a_file_is_a_usage_error(runner, tmp_path, monkeypatch):
    """`gx runs --root nowhere` and `--root afile` said 'No runs under ...' with exit 0."""
    (tmp_path / "afile").write_text("x")
    for root, what in ((tmp_path / "nowhere", "does not exist"), (tmp_path / "afile", "is a file")):
        res = invoke(runner, "runs", "--root", root)
        assert res.exit_code == 2 and f"Error: --root {root} {what}" in " ".join(res.output.split()), res.output
    monkeypatch.chdir(tmp_path)  # the default runs/ missing: nothing has run here yet, not a mistake
    res = invoke(runner, "runs")
    assert res.exit_code == 0 and "No runs under runs" in res.output


def test_runs_root_empty_is_a_usage_error(runner, tmp_path, monkeypatch):
    """`gx runs --root ""` listed the current folder (a Path makes "" into "."), unlike `-r ""`."""
    from gesture_cli.core.rundir import RunDir

    monkeypatch.chdir(tmp_path)
    with RunDir(tmp_path).begin("evaluate", config={}, outputs=["eval/x.json"], argv=["gx", "evaluate"]) as step:
        step.stage("eval/x.json", is_dir=False).write_text("{}")
    assert json.loads(invoke(runner, "runs", "--root", ".", "--json").output)  # "." is a run dir here
    one_line_error(invoke(runner, "runs", "--root", ""), 2, "--root is empty", "pass the folder that holds the run directories")
    one_line_error(invoke(runner, "runs", "--root=", "--json"), 2, "--root is empty")


def test_runs_import_into_empty_is_a_usage_error(runner, tmp_path, monkeypatch):
    """`gx runs import X --into ""` unpacked into the current folder (a Path makes "" into ".")."""
    monkeypatch.chdir(tmp_path)
    archive = tmp_path / "x.tar"
    archive.write_bytes(b"")
    one_line_error(invoke(runner, "runs", "import", archive, "--into", ""), 2, "--into is empty", "nothing was imported")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.tar"]


def test_lora_hint_quotes_the_backbone(tmp_path):
    """`--backbone {backbone}` was pasted unquoted into the suggested command, unlike every other word of it."""
    from gesture_cli.core.errors import ArtifactError
    from gesture_cli.core.rundir import RunDir
    from gesture_cli.tasks.classify import check_source

    run = RunDir(tmp_path / "run")
    with pytest.raises(ArtifactError, match=r"--backbone 'my vit;x' -r"):
        check_source(run, "lora", "my vit;x")
    with pytest.raises(ArtifactError, match=r"--backbone NAME -r"):
        check_source(run, "lora", None)
