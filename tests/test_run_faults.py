"""Faults around the run directory (issue #18, items 1-5): racing writers, dead steps, a full disk,
unreadable neighbours and unusable run dirs. Each test reproduces the fault deterministically."""

from __future__ import annotations

import json

import pytest

from gesture_cli.core.rundir import RunDir
from tests.conftest import invoke

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

    from gesture_cli.viz.report import current_steps

    assert [s["argv"][1] for s in current_steps(run)] == ["slow"]


def test_racing_extracts_rerun_the_loser_and_report_the_winner(tmp_path, runner):
    """The issue's race, made deterministic: a pool-mean extract runs and finishes while a pool-cls extract
    into the same folder is between its start and its commit (the cls one commits last)."""
    from gesture_cli.core.config import resolve_config
    from gesture_cli.models.features import ExtractConfig, extract_features
    from gesture_cli.viz.report import current_steps

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
