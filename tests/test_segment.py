"""`gx segment-train`, `gx evaluate segment`, `gx infer segment`: datasets (Cityscapes on the real pair,
ADE20K and generic layouts), class maps, linear and Mask2Former heads on tiny frozen backbones."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from gesture_cli.core.errors import DataError, UsageError
from tests.conftest import REPO, invoke, one_line_error

SCENES = ["--dataset", "synthetic-scenes", "--dataset-opt", "size=64", "--dataset-opt", "train_images=48", "--dataset-opt", "val_images=12",
          "--dataset-opt", "test_images=12"]
SCENE_OPTS = {"size": 64, "train_images": 48, "val_images": 12, "test_images": 12}


pytestmark = pytest.mark.usefixtures("one_torch_thread")




def _write_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), arr[:, :, ::-1] if arr.ndim == 3 else arr)


# ---- datasets -------------------------------------------------------------------------------------


def test_cityscapes_label_ids_map_to_the_19_train_ids(real_data):
    from gesture_cli.data.segmentation import CITYSCAPES_CLASSES, CITYSCAPES_LABEL_TO_TRAIN, make_seg_dataset

    root = real_data / "segmentation" / "cityscapes"
    ds = make_seg_dataset(f"seg:{root}", split="val")
    assert ds.layout == "cityscapes" and ds.classes == list(CITYSCAPES_CLASSES) and len(ds) == 1
    image, mask = ds.sample(0)
    raw = ds.raw_mask(0)
    assert image.shape == (128, 256, 3) and mask.shape == (128, 256)
    # The dataset ships its own labelTrainIds file: for every labelId in the image, the train id that file
    # gives most of its pixels must be ours (the pair was downscaled, so a few boundary pixels disagree).
    ref = cv2.imread(str(root / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelTrainIds.png"), cv2.IMREAD_UNCHANGED)
    for label_id in np.unique(raw):
        ours = np.unique(mask[raw == label_id])
        assert len(ours) == 1 and ours[0] == CITYSCAPES_LABEL_TO_TRAIN.get(int(label_id), 255)
        values, counts = np.unique(ref[raw == label_id], return_counts=True)
        assert values[counts.argmax()] == ours[0], f"labelId {label_id}"
    assert (mask == ref).mean() > 0.99
    assert {0, 2, 10, 13, 255} <= set(np.unique(mask).tolist())  # road, building, sky, car, ignore (ids 1..4)


def test_generic_paired_layout_on_real_lip_pairs(real_data, tmp_path):
    from gesture_cli.data.segmentation import make_seg_dataset, seg_dataset_splits

    root = real_data / "segmentation" / "lip_human_parsing"
    names = tmp_path / "lip.txt"
    names.write_text("\n".join(["background", "hat", "hair", "glove", "sunglasses", "upper clothes", "dress", "coat", "socks", "pants",
                                "jumpsuits", "scarf", "skirt", "face", "left arm", "right arm", "left leg", "right leg", "left shoe",
                                "right shoe"]) + "\n")
    assert seg_dataset_splits(f"seg:{root}") == ["train", "val"]
    with pytest.raises(DataError, match="classes.txt"):
        make_seg_dataset(f"seg:{root}", split="val")
    ds = make_seg_dataset(f"seg:{root}", split="val", classes=str(names))
    image, mask = ds.sample(0)
    assert image.shape == (377, 130, 3)  # a grey JPEG comes back as RGB
    assert set(np.unique(mask).tolist()) == {0, 1, 5, 9, 13, 15}
    images, masks = ds.batch([0], size=32)
    assert images.shape == (1, 32, 32, 3) and masks.shape == (1, 32, 32) and set(np.unique(masks)) <= {0, 1, 5, 9, 13, 15}


def test_ade20k_layout_reduces_zero_and_rejects_unknown_labels(tmp_path):
    from gesture_cli.data.segmentation import make_seg_dataset, seg_dataset_splits

    root = tmp_path / "ADEChallengeData2016"
    rng = np.random.default_rng(0)
    _write_png(root / "images/training/a.png", rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    _write_png(root / "annotations/training/a.png", np.array([[0, 1, 150] * 10] * 20, dtype=np.uint8))
    _write_png(root / "images/validation/b.png", rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    _write_png(root / "annotations/validation/b.png", np.full((20, 30), 151, dtype=np.uint8))
    assert seg_dataset_splits(f"seg:{root}") == ["train", "val"]
    ds = make_seg_dataset(f"seg:{root}", split="train")
    assert ds.layout == "ade20k" and len(ds.classes) == 150 and ds.classes[:3] == ["wall", "building", "sky"]
    assert np.unique(ds.mask(0)).tolist() == [0, 149, 255]  # 1 -> wall (0), 150 -> flag (149), 0 -> ignore
    with pytest.raises(DataError, match=r"b\.png: label 151 is not a class"):
        make_seg_dataset(f"seg:{root}", split="val").mask(0)


def test_a_missing_seg_folder_says_what_it_should_be(tmp_path, runner):
    res = invoke(runner, "segment-train", "-b", "tiny-dinov2", "-d", f"seg:{tmp_path / 'nope'}", "--max-steps", "1", "-r", tmp_path / "run")
    one_line_error(res, 1, f"{tmp_path / 'nope'}: segmentation folder not found; check the path", "images/ + masks/")
    assert not (tmp_path / "run" / "segment").exists()


def test_mask_whose_size_differs_from_its_image_is_a_clean_error(tmp_path, runner):
    from gesture_cli.data.segmentation import make_seg_dataset

    root = tmp_path / "data"
    (root).mkdir()
    (root / "classes.txt").write_text("ground\nsky\n")
    for i in range(4):
        _write_png(root / f"images/train/img{i}.png", np.full((16, 24, 3), 80, np.uint8))
        _write_png(root / f"masks/train/img{i}.png", np.zeros((16, 24) if i != 2 else (16, 20), np.uint8))
    ds = make_seg_dataset(f"seg:{root}", split="train")
    assert ds.classes == ["ground", "sky"] and ds.mask(0).shape == (16, 24)
    with pytest.raises(DataError, match=r"img2\.png: mask is 20x16 but img2\.png is 24x16"):
        ds.mask(2)
    res = invoke(runner, "segment-train", "--dataset", f"seg:{root}", "--backbone", "tiny-vit", "--image-size", "32", "--epochs", "1",
                 "--device", "cpu", "-r", tmp_path / "run")
    one_line_error(res, 1, "img2.png", "mask is 20x16")


# ---- class maps -----------------------------------------------------------------------------------


def test_shipped_ade20k_map_has_26_groups_over_all_150_classes():
    from gesture_cli.data.class_map import load_class_map
    from gesture_cli.data.segmentation import ADE20K_CLASSES

    cmap = load_class_map(REPO / "configs" / "ade20k_to_26.json")
    assert len(cmap.groups) == 26
    assert {"building", "tree", "road", "sky", "person", "car", "sidewalk", "traffic light"} <= set(cmap.groups)
    lut = cmap.lookup(list(ADE20K_CLASSES), what="ADE20K")
    assert lut.min() >= 0 and lut.max() == 25  # every class lands in a group
    mat = cmap.aggregation_matrix(list(ADE20K_CLASSES), what="ADE20K")
    assert mat.shape == (150, 26) and (mat.sum(1) == 1).all()
    assert cmap.groups[lut[ADE20K_CLASSES.index("skyscraper")]] == "building"
    assert cmap.groups[lut[ADE20K_CLASSES.index("palm")]] == "tree"


def test_class_map_naming_unknown_classes_or_a_class_twice_is_an_error(tmp_path, runner):
    from gesture_cli.data.class_map import parse_class_map
    from gesture_cli.data.segmentation import make_seg_dataset

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"groups": {"ground": ["road", "sidewalk", "gras"], "other": ["sky"]}, "unmapped": "ignore"}))
    with pytest.raises(UsageError, match=r"group 'ground' names 'gras'.*did you mean 'grass'"):
        make_seg_dataset("synthetic-scenes", split="val", class_map=bad, size=32, val_images=1)
    with pytest.raises(UsageError, match="in two groups"):
        parse_class_map({"groups": {"a": ["road"], "b": ["road"]}}, source="x.json")
    res = invoke(runner, "segment-train", "--class-map", bad, "--backbone", "tiny-vit", "--device", "cpu", "-r", tmp_path / "run", *SCENES)
    one_line_error(res, 2, "bad.json", "'gras'")


def test_label_outside_the_class_map_is_an_error_naming_the_class(tmp_path):
    from gesture_cli.data.segmentation import make_seg_dataset

    partial = tmp_path / "no_car.json"
    partial.write_text(json.dumps({"groups": {"ground": ["road", "sidewalk", "grass"], "up": ["sky", "building", "tree"], "person": ["person"]}}))
    ds = make_seg_dataset("synthetic-scenes", split="train", class_map=partial, size=48, train_images=12)
    assert ds.classes == ["ground", "up", "person"]
    with_car = next(i for i in range(len(ds)) if (ds.raw_mask(i) == 7).any())
    with pytest.raises(DataError, match=r"label 7 \('car'\) is outside class map"):
        ds.mask(with_car)
    # "unmapped": "ignore" turns the same pixels into ignore instead
    partial.write_text(json.dumps({"groups": {"ground": ["road", "sidewalk", "grass"]}, "unmapped": "ignore"}))
    ds = make_seg_dataset("synthetic-scenes", split="train", class_map=partial, size=48, train_images=12)
    m, raw = ds.mask(with_car), ds.raw_mask(with_car)
    assert (m[raw == 7] == 255).all() and (m[raw == 2] == 0).all()


def test_features_csv_takes_extra_columns_for_a_detector(tmp_path):
    from gesture_cli.tasks.segment import write_features_csv

    fr = np.array([[0.5, 0.25, 0.25], [0.0, 1.0, 0.0]])
    extra = {f"det_{k}": [1, 2] for k in range(10)}
    cols = write_features_csv(tmp_path / "f.csv", images=["a.jpg", "b.jpg"], groups=["road", "traffic light", "sky"], fractions=fr,
                              extra=extra, extra_descriptions={"det_0": "persons"}, schema_path=tmp_path / "f.schema.json")
    assert cols[:4] == ["image", "seg_road", "seg_traffic_light", "seg_sky"] and len(cols) == 1 + 3 + 10
    rows = list(csv.DictReader((tmp_path / "f.csv").open()))
    assert rows[1]["seg_traffic_light"] == "1.000000" and rows[0]["det_9"] == "1"
    schema = json.loads((tmp_path / "f.schema.json").read_text())
    assert schema["num_features"] == 13 and [c["name"] for c in schema["columns"]] == cols
    with pytest.raises(ValueError, match="duplicate"):
        write_features_csv(tmp_path / "g.csv", images=["a"], groups=["x"], fractions=[[1.0]], extra={"seg_x": [0]})


# ---- training, evaluation, inference --------------------------------------------------------------


@pytest.fixture(scope="module")
def linear_run(tmp_path_factory):
    """One linear-head run on cached tokens of a tiny DINOv2, shared by the tests below."""
    from typer.testing import CliRunner

    run = tmp_path_factory.mktemp("seg") / "run"
    mp = pytest.MonkeyPatch()
    mp.setenv("GX_HOME", str(run.parent / "home"))
    mp.setenv("HF_HUB_OFFLINE", "1")
    # fp32: evaluating without --precision follows the head's (fp32) and must reproduce the training's mIoU exactly
    res = invoke(CliRunner(), "segment-train", "--backbone", "tiny-dinov2", *SCENES, "--cache-features", "--epochs", "8", "--batch-size", "8",
                 "--lr", "1e-2", "--precision", "fp32", "--device", "cpu", "-r", run)
    mp.undo()
    assert res.exit_code == 0, res.output
    return run, res.output


def test_linear_head_beats_the_most_frequent_class_and_only_the_head_trains(linear_run):
    from gesture_cli.models.backbones import build_backbone

    run, output = linear_run
    out = run / "segment" / "tiny-dinov2"
    assert {"head.safetensors", "class_map.json", "metrics.json", "train_log.csv", "checkpoints"} <= {p.name for p in out.iterdir()}
    m = json.loads((out / "metrics.json").read_text())
    test = m["test"]
    assert test["mIoU"] > 0.25 and test["mIoU"] > 4 * test["majority_mIoU"], test
    assert test["pixel_acc"] > 0.6
    # BatchNorm (2 x 64) + 1x1 conv (64 x 8 + 8): the head alone; the 64-wide tiny backbone has ~117k
    backbone_params = sum(p.numel() for p in build_backbone("tiny-dinov2", image_size=64).parameters())
    assert m["trainable_params"] == 2 * 64 + 64 * 8 + 8
    assert m["total_params"] == m["trainable_params"] + backbone_params
    assert f"trainable parameters: {m['trainable_params']:,} of {m['total_params']:,}" in output
    assert m["cached_features"] and m["weights"] == "best" and m["best_val_mIoU"] == max(
        float(r["val_mIoU"]) for r in csv.DictReader((out / "train_log.csv").open()) if r["val_mIoU"])
    assert list((run / "cache" / "segment" / "tiny-dinov2").glob("train-*/meta.json"))
    ckpt = set(json.loads((out / "checkpoints" / "best" / "state.json").read_text())["meta"]["classes"])
    assert ckpt == {"sky", "building", "road", "sidewalk", "grass", "tree", "person", "car"}


def test_evaluate_whole_and_slide_and_with_a_class_map(linear_run, runner, tmp_path):
    run, _ = linear_run
    res = invoke(runner, "evaluate", "segment", "--device", "cpu", "-r", run)
    assert res.exit_code == 0, res.output
    whole = json.loads((run / "eval" / "segment-tiny-dinov2.json").read_text())
    trained = json.loads((run / "segment" / "tiny-dinov2" / "metrics.json").read_text())["test"]
    assert whole["mode"] == "whole" and whole["images"] == 12 and whole["mIoU"] == pytest.approx(trained["mIoU"], abs=1e-6)
    assert "mIoU" in res.output and "sidewalk" in res.output
    res = invoke(runner, "evaluate", "segment", "--inference", "slide", "--device", "cpu", "-r", run)
    assert res.exit_code == 0, res.output
    slide = json.loads((run / "eval" / "segment-tiny-dinov2.json").read_text())
    assert slide["mode"] == "slide" and slide["mIoU"] > 3 * slide["majority_mIoU"]
    # A head trained on the 8 source classes, scored on 3 groups: labels and predictions folded alike.
    groups = tmp_path / "three.json"
    groups.write_text(json.dumps({"name": "three", "groups": {"ground": ["road", "sidewalk", "grass"], "above": ["sky", "building", "tree"],
                                                              "object": ["person", "car"]}}))
    res = invoke(runner, "evaluate", "segment", "--class-map", groups, "--device", "cpu", "-r", run)
    assert res.exit_code == 0, res.output
    folded = json.loads((run / "eval" / "segment-tiny-dinov2.json").read_text())
    assert [r["class"] for r in folded["per_class"]] == ["ground", "above", "object"] and folded["class_map"] == "three"
    assert folded["pixel_acc"] >= whole["pixel_acc"]  # merging classes can only remove errors


def test_infer_writes_masks_overlays_and_the_feature_table(linear_run, runner, tmp_path, real_data):
    run, _ = linear_run
    inputs = tmp_path / "in"
    inputs.mkdir()
    city = real_data / "segmentation/cityscapes/leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png"
    (inputs / "street.png").write_bytes(city.read_bytes())
    (inputs / "sub").mkdir()
    (inputs / "sub" / "person.jpg").write_bytes((real_data / "segmentation/lip_human_parsing/val_images/86_185913.jpg").read_bytes())
    res = invoke(runner, "infer", "segment", "--input", inputs, "--device", "cpu", "-r", run)
    assert res.exit_code == 0, res.output
    out = run / "infer" / "segment-tiny-dinov2"
    rows = list(csv.DictReader((out / "features.csv").open()))
    assert [r["image"] for r in rows] == ["street.png", "sub/person.jpg"]
    assert list(rows[0]) == ["image", *(f"seg_{c}" for c in ("sky", "building", "road", "sidewalk", "grass", "tree", "person", "car"))]
    for r in rows:
        assert sum(float(v) for k, v in r.items() if k != "image") == pytest.approx(1.0, abs=1e-4)
    mask = cv2.imread(str(out / "masks" / "street.png"))
    assert mask.shape == (128, 256, 3) and cv2.imread(str(out / "overlays" / "sub__person.png")).shape == (377, 130, 3)
    schema = json.loads((out / "features.schema.json").read_text())
    assert schema["num_features"] == 8
    # --class-map folds the per-class scores into groups for the table
    groups = tmp_path / "two.json"
    groups.write_text(json.dumps({"groups": {"ground": ["road", "sidewalk", "grass"], "rest": ["sky", "building", "tree", "person", "car"]}}))
    res = invoke(runner, "infer", "segment", "--input", inputs / "street.png", "--class-map", groups, "--json", "--device", "cpu", "-r", run)
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)
    assert set(row) == {"image", "ground", "rest"} and row["ground"] + row["rest"] == pytest.approx(1.0, abs=1e-4)


def test_resume_after_a_stop_gives_the_uninterrupted_head(tmp_path):
    """BatchNorm statistics ride in the checkpoints: a stopped and resumed run ends with the same head."""
    from gesture_cli.core.config import resolve_config
    from gesture_cli.core.rundir import RunDir
    from gesture_cli.tasks.segment import SegmentTrainConfig, train_segment
    from gesture_cli.train.loop import TrainingInterrupted

    opts = tuple(f"{k}={v}" for k, v in {"size": 32, "train_images": 24, "val_images": 6, "test_images": 0}.items())
    cfg = resolve_config(SegmentTrainConfig, None, {"backbone": "tiny-vit", "dataset_opts": opts, "image_size": 32, "epochs": 3,
                                                    "batch_size": 6, "lr": 1e-2, "cache_features": True, "checkpoint_every": 0})
    a = train_segment(cfg, RunDir(tmp_path / "a"), device="cpu")

    def stop(state):
        if state.step == 5:
            state.request_stop("test")

    with pytest.raises(TrainingInterrupted):
        train_segment(cfg, RunDir(tmp_path / "b"), device="cpu", callbacks={"on_step_end": [stop]})
    b = train_segment(cfg, RunDir(tmp_path / "b"), device="cpu", resume=True)
    assert b["summary"]["resumed_from"] == 5 and a["summary"]["steps"] == b["summary"]["steps"] == 12
    from safetensors.torch import load_file

    ha = load_file(str(tmp_path / "a/segment/tiny-vit/head.safetensors"))
    hb = load_file(str(tmp_path / "b/segment/tiny-vit/head.safetensors"))
    assert set(ha) == set(hb) and "bn.running_mean" in ha
    for k in ha:
        torch.testing.assert_close(ha[k], hb[k], msg=k)
    assert ha["bn.running_var"].abs().sum() > 0 and not torch.allclose(ha["bn.running_mean"], torch.zeros_like(ha["bn.running_mean"]))


def test_mask2former_class_embed_only_trains_the_class_predictor(tmp_path):
    from safetensors.torch import load_file

    from gesture_cli.core.config import resolve_config
    from gesture_cli.core.rundir import RunDir
    from gesture_cli.models.seg_heads import build_seg_head
    from gesture_cli.tasks.segment import SegmentTrainConfig, train_segment

    opts = tuple(f"{k}={v}" for k, v in {"size": 32, "train_images": 4, "val_images": 2, "test_images": 0}.items())
    cfg = resolve_config(SegmentTrainConfig, None, {
        "backbone": "tiny-dinov3", "dataset_opts": opts, "image_size": 32, "head": "mask2former", "train_only": "class_embed",
        "m2f_dim": 32, "m2f_queries": 8, "m2f_encoder_layers": 1, "m2f_decoder_layers": 2, "max_steps": 2, "batch_size": 2, "lr": 1e-2,
    })
    lines = []
    out = train_segment(cfg, RunDir(tmp_path / "r"), device="cpu", notify=lines.append)
    assert out["summary"]["trainable_params"] == (32 + 1) * (8 + 1)  # hidden_dim + bias, K + "no object"
    assert any(line.startswith("trainable parameters: 297 of ") for line in lines)
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the seed train_segment builds the head with
        fresh = build_seg_head("mask2former", embed_dim=64, num_classes=8, **cfg.head_args(32)).state_dict()
    trained = load_file(str(tmp_path / "r/segment/tiny-dinov3/head.safetensors"))
    changed = {k for k in fresh if not torch.equal(fresh[k], trained[k])}
    assert changed == {"model.class_predictor.weight", "model.class_predictor.bias"}
    assert out["metrics"]["val"]["images"] == 2


@pytest.mark.slow
def test_mask2former_head_learns(tmp_path, runner):
    """A small Mask2Former head (width 32, 8 queries) on cached tiny-dinov2 tokens, 100 steps: test mIoU
    0.41-0.49 over seeds 0-2 against 0.03 for always answering the most frequent class."""
    res = invoke(runner, "segment-train", "--backbone", "tiny-dinov2", "--dataset", "synthetic-scenes", "--cache-features",
                 "--head", "mask2former", "--m2f-dim", "32", "--m2f-queries", "8", "--m2f-encoder-layers", "1", "--m2f-decoder-layers", "2",
                 "--max-steps", "100", "--lr", "2e-3", "--device", "cpu", "-r", tmp_path / "run")
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "run" / "segment" / "tiny-dinov2" / "metrics.json").read_text())
    test = metrics["test"]
    assert metrics["head"] == "mask2former" and metrics["train_only"] == "all"
    assert test["mIoU"] > 0.3 and test["mIoU"] > 8 * test["majority_mIoU"], test
    log = list(csv.DictReader((tmp_path / "run" / "segment" / "tiny-dinov2" / "train_log.csv").open()))
    val = [float(r["val_mIoU"]) for r in log if r["val_mIoU"]]
    assert val[-1] > 3 * val[0], val  # it learned during training, not by luck at the start
