"""Runs record the dataset they read (config.json, metrics, artifacts), and evaluate, infer and --resume read it
back, maybe from another folder: every local path in it is recorded absolute, whether it came in --dataset
(both paths of `mpii:JSON:IMGDIR`), in a --dataset-opt value (texts=, classes=, class_map=) or in a --config
file; runs recorded earlier, with relative paths, still match from their own folder."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import invoke

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _train_config(run, head: str) -> dict:
    """The resolved config of the run's first step (run.json), as the run recorded it."""
    steps = json.loads((run / "run.json").read_text())["steps"]
    return next(s["config"] for s in steps if s["config"].get("dataset") is not None and head in s["command"])


def test_mpii_json_and_image_folder_are_recorded_absolute(runner, tmp_path, monkeypatch, real_data):
    """mpii:JSON:IMGDIR typed with two relative paths in one folder; evaluate finds both from another."""
    work = tmp_path / "work"
    (work / "ann").mkdir(parents=True)
    shutil.copy(real_data / "mpii" / "test_mpii.json", work / "ann" / "test_mpii.json")
    shutil.copytree(real_data / "mpii", work / "imgs", ignore=shutil.ignore_patterns("*.json"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(work)
    res = invoke(runner, "keypoint-train", "--dataset", "mpii:ann/test_mpii.json:imgs", "--method", "frozen", "--backbone", "tiny-vit",
                 "--image-size", "32", "--max-steps", "1", "--batch-size", "2", "--val-fraction", "0.2", "--precision", "fp32",
                 "--device", "cpu", "-r", "run")
    assert res.exit_code == 0, res.output
    assert _train_config(work / "run", "keypoint-train")["dataset"] == f"mpii:{work / 'ann' / 'test_mpii.json'}:{work / 'imgs'}"
    monkeypatch.chdir(tmp_path / "elsewhere")
    res = invoke(runner, "evaluate", "keypoint", "--device", "cpu", "-r", work / "run")
    assert res.exit_code == 0, res.output
