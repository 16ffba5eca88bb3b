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


def _train_config(run, command: str) -> dict:
    """The resolved config of the run's `command` step (run.json), as the run recorded it."""
    steps = json.loads((run / "run.json").read_text())["steps"]
    return next(s["config"] for s in steps if s["command"] == command)


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


def test_path_options_are_recorded_absolute_and_match_their_relative_text(tmp_path, monkeypatch):
    """texts=, classes= and class_map= name local files: an existing relative one becomes absolute; a list of
    names, a missing file (an hf-dataset snapshot's own table) and every other option stay as typed."""
    from gesture_cli.data.registry import absolute_opts_text, same_dataset_opts

    for name in ("labels.csv", "names.txt", "map.json"):
        (tmp_path / name).write_text("x")
    monkeypatch.chdir(tmp_path)
    typed = ("texts=labels.csv", " classes = names.txt", "class-map=map.json", "classes=road,sky", "texts=in/snapshot.csv",
             f"texts={tmp_path}/labels.csv", "train_size=8", "layout=names.txt", "novalue")
    assert absolute_opts_text(typed) == (f"texts={tmp_path / 'labels.csv'}", f" classes ={tmp_path / 'names.txt'}",
                                         f"class-map={tmp_path / 'map.json'}", *typed[3:])
    assert same_dataset_opts(["classes=names.txt"], [f"classes={tmp_path / 'names.txt'}"])  # a run recorded before, from its folder
    assert same_dataset_opts(["classes=names.txt"], ["classes=names.txt"]) and same_dataset_opts(None, None)
    assert not same_dataset_opts(["classes=names.txt"], [f"classes={tmp_path / 'map.json'}"])
    assert not same_dataset_opts(["classes=names.txt"], None) and not same_dataset_opts(["texts=a"], ["texts=a", "fps=25"])


def _seg_folder(root) -> None:
    """images/ + masks/ with train and val splits of 16x16 two-class masks, and no classes.txt: classes=FILE names them."""
    import cv2
    import numpy as np

    for split, n in (("train", 4), ("val", 2)):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for i in range(n):
            mask = np.zeros((16, 16), np.uint8)
            mask[: 4 + 2 * i] = 1
            cv2.imwrite(str(root / "images" / split / f"{i}.png"), np.dstack([mask * 200 + 20] * 3))
            cv2.imwrite(str(root / "masks" / split / f"{i}.png"), mask)


SEG_TRAIN = ["--backbone", "tiny-vit", "--image-size", "32", "--batch-size", "2", "--precision", "fp32", "--device", "cpu"]


def test_a_relative_classes_file_is_recorded_absolute(runner, tmp_path, monkeypatch):
    """seg:DIR with --dataset-opt classes=FILE typed relative in one folder: evaluate reads the recorded options
    (same data) from another folder and finds the file."""
    work = tmp_path / "work"
    _seg_folder(work / "data")
    (work / "names.txt").write_text("ground\nsky\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(work)
    res = invoke(runner, "segment-train", "--dataset", "seg:data", "--dataset-opt", "classes=names.txt", *SEG_TRAIN, "--max-steps", "1",
                 "-r", "run")
    assert res.exit_code == 0, res.output
    assert _train_config(work / "run", "segment-train")["dataset_opts"] == [f"classes={work / 'names.txt'}"]
    monkeypatch.chdir(tmp_path / "elsewhere")
    res = invoke(runner, "evaluate", "segment", "--backbone", "tiny-vit", "--split", "val", "--device", "cpu", "-r", work / "run")
    assert res.exit_code == 0, res.output


def test_a_run_that_recorded_relative_paths_resumes_from_its_folder(runner, tmp_path, monkeypatch):
    """A run made before gx recorded paths absolute (here: through the API, which records what it is given) holds
    seg:data and classes=names.txt; --resume from its folder, with the same relative flags, is the same data."""
    from gesture_cli.core.rundir import RunDir
    from gesture_cli.tasks.segment import SegmentTrainConfig, train_segment
    from gesture_cli.train.loop import TrainingInterrupted

    _seg_folder(tmp_path / "data")
    (tmp_path / "names.txt").write_text("ground\nsky\n")
    monkeypatch.chdir(tmp_path)
    cfg = SegmentTrainConfig(backbone="tiny-vit", dataset="seg:data", dataset_opts=("classes=names.txt",), image_size=32, batch_size=2,
                             max_steps=2, checkpoint_every=1, precision="fp32")
    stop = {"on_step_end": [lambda s: s.request_stop("test") if s.step == 1 else None]}
    with pytest.raises(TrainingInterrupted):
        train_segment(cfg, RunDir(tmp_path / "run"), device="cpu", callbacks=stop)
    res = invoke(runner, "segment-train", "--dataset", "seg:data", "--dataset-opt", "classes=names.txt", *SEG_TRAIN, "--max-steps", "2",
                 "--checkpoint-every", "1", "--resume", "-r", "run")
    assert res.exit_code == 0, res.output
    assert "resum" in res.output.lower()


def test_a_dataset_named_in_a_config_file_is_recorded_absolute(runner, tmp_path, monkeypatch):
    """`dataset:` and `dataset_opts:` of a --config file are read like the flags (relative to the current folder)
    and recorded absolute, so evaluate finds them from another folder."""
    work = tmp_path / "work"
    _seg_folder(work / "data")
    (work / "names.txt").write_text("ground\nsky\n")
    (work / "seg.yaml").write_text("dataset: seg:data\ndataset_opts: [classes=names.txt]\nmax_steps: 1\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(work)
    res = invoke(runner, "segment-train", "--config", "seg.yaml", *SEG_TRAIN, "-r", "run")
    assert res.exit_code == 0, res.output
    config = _train_config(work / "run", "segment-train")
    assert (config["dataset"], config["dataset_opts"]) == (f"seg:{work / 'data'}", [f"classes={work / 'names.txt'}"])
    monkeypatch.chdir(tmp_path / "elsewhere")
    res = invoke(runner, "evaluate", "segment", "--backbone", "tiny-vit", "--split", "val", "--device", "cpu", "-r", work / "run")
    assert res.exit_code == 0, res.output


def test_a_step_reads_the_given_dataset_or_the_recorded_one_with_its_options(tmp_path, monkeypatch):
    """One rule for evaluate, infer and gradcam: --dataset if given, else the recorded spec (one line when its data
    moved); the recorded options come along when the data is the same (a relative spec recorded before included)."""
    from gesture_cli.core.errors import DataError
    from gesture_cli.data.registry import given_or_recorded_dataset

    (tmp_path / "poses").mkdir()
    monkeypatch.chdir(tmp_path)
    recorded, opts = f"pose:{tmp_path / 'poses'}", ["fps=25", "layout=mediapipe"]
    read = given_or_recorded_dataset(None, recorded, recorded_opts=opts, kind="pose", recorded_in="the translator")
    assert (read.text, dict(read.options)) == (recorded, {"fps": 25, "layout": "mediapipe"})
    same = given_or_recorded_dataset("pose:poses", recorded, recorded_opts=opts, kind="pose", recorded_in="x")  # given relative
    assert (same.text, dict(same.options)) == ("pose:poses", {"fps": 25, "layout": "mediapipe"})
    old = given_or_recorded_dataset(recorded, "pose:poses", recorded_opts=opts, kind="pose", recorded_in="x")  # recorded relative
    assert dict(old.options) == {"fps": 25, "layout": "mediapipe"}
    other = given_or_recorded_dataset("synthetic-signs", recorded, recorded_opts=opts, kind="pose", recorded_in="x")
    assert (other.text, dict(other.options)) == ("synthetic-signs", {})
    (tmp_path / "poses").rename(tmp_path / "moved")
    with pytest.raises(DataError, match=rf"^{tmp_path / 'poses'}: not found; the translator was made from the dataset '{recorded}'; "
                                        "pass --dataset with where that data is now$"):
        given_or_recorded_dataset(None, recorded, recorded_opts=opts, kind="pose", recorded_in="the translator")


def _check_resume_against(tmp_path, trained_with: dict, given: dict) -> None:
    """train.common.check_resume of a checkpoint whose run recorded `trained_with`, for a run given `given`."""
    import torch

    from gesture_cli.train.checkpoint import write_checkpoint
    from gesture_cli.train.common import check_resume

    last = tmp_path / "ckpt" / "last"
    if not last.exists():
        write_checkpoint(last, model_state={"w": torch.zeros(1)}, rng=False,
                         state={"trainer": {"step": 1}, "config": {}, "meta": {"config": trained_with}})
    check_resume(last, given, list(given))


def test_resume_takes_the_same_data_spelled_another_way(tmp_path, monkeypatch):
    """--resume compares the dataset's paths absolute and normalised: a trailing '/' (tab completion), `..` from a
    subfolder, or the absolute path of what a run recorded as `t1/../data/x` (before paths were normalised) or
    relative (before they were absolute) is the same data; another folder is still refused."""
    from gesture_cli.core.errors import UsageError
    from gesture_cli.data.registry import same_dataset

    (tmp_path / "data" / "x").mkdir(parents=True)
    (tmp_path / "data" / "y").mkdir()
    (tmp_path / "t1" / "sub").mkdir(parents=True)
    data = tmp_path / "data" / "x"
    monkeypatch.chdir(tmp_path / "t1" / "sub")
    assert same_dataset(f"folder:{data}", f"folder:{data}/")
    for spelled in ("folder:../../data/x", f"folder:{data}", "folder:../../data/x/", "folder:./../../data/x"):
        assert same_dataset(f"folder:{tmp_path}/t1/../data/x", spelled), spelled
    assert same_dataset("mpii:a/../b.json:imgs/", f"mpii:{tmp_path}/t1/sub/b.json:{tmp_path}/t1/sub/imgs")  # relative, missing
    assert not same_dataset(f"folder:{tmp_path}/t1/../data/x", "folder:../../data/y")
    _check_resume_against(tmp_path, {"dataset": f"folder:{data}", "lr": 0.1}, {"dataset": f"folder:{data}/", "lr": 0.1})
    _check_resume_against(tmp_path, {"dataset": f"folder:{data}"}, {"dataset": "folder:../../data/x"})
    with pytest.raises(UsageError, match=r"it was trained with dataset="):
        _check_resume_against(tmp_path, {"dataset": f"folder:{data}"}, {"dataset": "folder:../../data/y"})


def test_dataset_options_are_compared_as_the_values_the_source_reads(tmp_path, monkeypatch):
    """--resume compares --dataset-opt as KEY -> value typed for the dataset's source, not as a list of texts: another
    order (a --config mapping merged), `false` / `False`, a float option's `25` / `25.0`, a later key winning,
    a path option's `../x` / `x/` spelling are the same; another value, a text option's other text, `1` for `true`,
    an int option's `32.0`, a key more or fewer are not."""
    from gesture_cli.core.errors import UsageError
    from gesture_cli.data.registry import same_dataset_opts

    (tmp_path / "sub").mkdir()
    (tmp_path / "texts.csv").write_text("x")
    monkeypatch.chdir(tmp_path / "sub")
    kp = "synthetic-keypoints"
    trained = ["side=32", "clutter=false", "train_samples=200"]
    for given in (["train_samples=200", "side=32", "clutter=false"], ["side=32", "clutter=False", "train-samples=200"],
                  ["side=32", "clutter=no", "train_samples=100", "train_samples=200"]):
        assert same_dataset_opts(trained, given, dataset=kp), given
    for given in (["side=32", "clutter=true", "train_samples=200"], ["side=32.0", "clutter=false", "train_samples=200"],
                  ["side=32", "clutter=0", "train_samples=200"], ["side=32", "clutter=false"], [*trained, "eval_samples=4"]):
        assert not same_dataset_opts(trained, given, dataset=kp), given
    pose = f"pose:{tmp_path}"
    assert same_dataset_opts(["fps=25", f"texts={tmp_path}/texts.csv"], ["texts=../texts.csv", "fps=25.0"], dataset=pose)
    assert same_dataset_opts([f"texts={tmp_path}/sub/../texts.csv/"], [" texts = ../texts.csv"], dataset=pose)  # recorded before normalising
    assert not same_dataset_opts(["layout=mediapipe"], ["layout=MediaPipe"], dataset=pose)  # text: the source reads it as typed
    assert not same_dataset_opts(["fps=25"], ["fps=25", "texts=../other.csv"], dataset=pose)
    assert same_dataset_opts(["channels=1"], ["channels=1"]) and not same_dataset_opts(["novalue"], ["novalue=1"])
    _check_resume_against(tmp_path, {"dataset": kp, "dataset_opts": trained}, {"dataset": kp, "dataset_opts": ("clutter=False", "side=32", "train_samples=200")})
    with pytest.raises(UsageError, match=r"it was trained with dataset_opts="):
        _check_resume_against(tmp_path, {"dataset": kp, "dataset_opts": trained}, {"dataset": kp, "dataset_opts": ("side=64", "clutter=false", "train_samples=200")})


def test_a_run_resumes_with_its_dataset_options_from_a_config_file(runner, tmp_path, monkeypatch):
    """Started with --dataset-opt flags in one order; resumed with a --config mapping that merges to another order and
    writes `false` as YAML's bool: the same options, so it resumes."""
    from gesture_cli.core.rundir import RunDir
    from gesture_cli.tasks.keypoint import train_keypoint
    from gesture_cli.train.keypoint import KeypointTrainConfig
    from gesture_cli.train.loop import TrainingInterrupted

    monkeypatch.chdir(tmp_path)
    opts = ("side=32", "clutter=false", "train_samples=8", "eval_samples=4")
    cfg = KeypointTrainConfig(backbone="tiny-vit", method="frozen", dataset="synthetic-keypoints", dataset_opts=opts, image_size=32,
                              batch_size=2, max_steps=2, checkpoint_every=1, precision="fp32")
    stop = {"on_step_end": [lambda s: s.request_stop("test") if s.step == 1 else None]}
    with pytest.raises(TrainingInterrupted):
        train_keypoint(cfg, RunDir(tmp_path / "run"), device="cpu", callbacks=stop)
    (tmp_path / "kp.yaml").write_text("dataset_opts: {eval_samples: 4, train_samples: 8, side: 32, clutter: False}\n")
    res = invoke(runner, "keypoint-train", "--config", "kp.yaml", "--method", "frozen", "--backbone", "tiny-vit", "--image-size", "32",
                 "--batch-size", "2", "--max-steps", "2", "--checkpoint-every", "1", "--precision", "fp32", "--device", "cpu",
                 "--resume", "-r", "run")
    assert res.exit_code == 0, res.output
    assert "resum" in res.output.lower()
