"""Scene features: `gx infer segment --detect`: tiny DETR-family detectors, class lookup, hub-snapshot
loading, and the 26 + 10 = 36 column feature table with its schema."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from gesture_cli.core.errors import ModelError, UsageError
from tests.conftest import REPO, invoke, one_line_error

ADE_MAP = REPO / "configs" / "ade20k_to_26.json"
DEFAULT_COLUMNS = ["det_count_person", "det_count_bicycle", "det_count_car", "det_count_motorcycle", "det_count_bus", "det_count_truck",
                   "det_count_traffic_light", "det_count_stop_sign", "det_count_bench", "det_count_dog"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")




def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), arr[:, :, ::-1] if arr.ndim == 3 else arr)


@pytest.fixture(scope="module")
def ade_run(tmp_path_factory):
    """Synthetic street scenes written as an ADE20K folder (mask value = ADE20K id + 1), a linear head on
    the 150 ADE20K classes trained briefly on tiny-dinov2, and three scenes to run inference on."""
    from typer.testing import CliRunner

    from gesture_cli.data.segmentation import ADE20K_CLASSES
    from gesture_cli.data.synthetic_scenes import SCENE_CLASSES, render_scene

    root = tmp_path_factory.mktemp("ade")
    lut = np.array([ADE20K_CLASSES.index(c) + 1 for c in SCENE_CLASSES], dtype=np.uint8)
    rng = np.random.default_rng(7)
    for folder, n in (("training", 16), ("validation", 4)):
        for i in range(n):
            image, mask = render_scene(rng, 64, 64)
            _png(root / "ade" / "images" / folder / f"s{i}.png", image)
            _png(root / "ade" / "annotations" / folder / f"s{i}.png", lut[mask])
    scenes = root / "scenes"
    for i in range(3):
        _png(scenes / f"street{i}.png", render_scene(rng, 48, 80)[0])
    run = root / "run"
    mp = pytest.MonkeyPatch()
    mp.setenv("GX_HOME", str(root / "home"))
    mp.setenv("HF_HUB_OFFLINE", "1")
    res = invoke(CliRunner(), "segment-train", "--backbone", "tiny-dinov2", "--dataset", f"seg:{root / 'ade'}", "--cache-features",
                 "--epochs", "2", "--batch-size", "8", "--lr", "1e-2", "--device", "cpu", "-r", run)
    mp.undo()
    assert res.exit_code == 0, res.output
    return run, scenes


def _dog_detector(path: Path) -> Path:
    """A tiny RT-DETR whose last class predictor says 'dog' for every query (score ~1, the rest ~0),
    saved with a processor file: what `gx download` leaves in a snapshot folder."""
    from gesture_cli.models.detect import build_tiny_detector_model

    model = build_tiny_detector_model("tiny-rtdetr")
    head = model.model.decoder.class_embed[-1]
    dog = model.config.label2id["dog"]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-9.0)
        head.bias[dog] = 9.0
    model.save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps(
        {"do_resize": True, "size": {"height": 64, "width": 64}, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": False}))
    return path


# ---- detector building blocks ---------------------------------------------------------------------


def test_coco_labels_class_lookup_and_input_sizes():
    from gesture_cli.eval.scene import DEFAULT_DETECT_CLASSES, parse_detect_classes
    from gesture_cli.models.detect import build_detector, coco_id2label, input_spec

    c80, c91 = coco_id2label(80), coco_id2label(91)
    assert len(c80) == 80 and c80[0] == "person" and c80[79] == "toothbrush"
    # DETR's ids are the COCO category ids: person 1, traffic light 10, stop sign 13, dog 18, toothbrush 90
    assert (c91[1], c91[10], c91[13], c91[18], c91[90], c91[12]) == ("person", "traffic light", "stop sign", "dog", "toothbrush", "N/A")
    assert sorted(v for v in c91.values() if v != "N/A") == sorted(c80.values())
    rtdetr, detr = build_detector("tiny-rtdetr"), build_detector("tiny-detr")
    assert rtdetr.class_ids(["person", "Traffic_Light", "dog"]) == [(0,), (9,), (16,)]
    assert detr.class_ids(["person", "traffic light", "dog"]) == [(1,), (10,), (18,)]
    assert len(detr.labels) == 80 and "N/A" not in detr.labels
    with pytest.raises(UsageError, match=r"'motorbike' is not a class of detector 'tiny-detr'.*close matches: 'motorcycle'"):
        detr.class_ids(["person", "motorbike"])
    with pytest.raises(UsageError, match="'N/A' is not a class"):
        detr.class_ids(["N/A"])
    with pytest.raises(UsageError, match="unknown detector 'tiny-rtdet'.*did you mean 'tiny-rtdetr'"):
        build_detector("tiny-rtdet")
    assert parse_detect_classes(None) == DEFAULT_DETECT_CLASSES and len(DEFAULT_DETECT_CLASSES) == 10
    assert parse_detect_classes(["person, car", "traffic light"]) == ("person", "car", "traffic light")
    with pytest.raises(UsageError, match="twice"):
        parse_detect_classes(["car,Car"])
    # processor files: a fixed size, or the short side to 800 with the long side capped at 1333
    fixed = input_spec({"size": {"height": 640, "width": 640}, "do_normalize": False}, "rt_detr")
    assert fixed.output_size(480, 1000) == (640, 640) and fixed.mean is None and fixed.rescale == pytest.approx(1 / 255)
    edge = input_spec({"size": {"shortest_edge": 800, "longest_edge": 1333}, "image_mean": [0.5] * 3, "image_std": [0.25] * 3}, "detr")
    assert edge.output_size(600, 800) == (800, 1067) and edge.output_size(400, 1600) == (333, 1333) and edge.mean == (0.5,) * 3
    assert input_spec({}, "rt_detr").output_size(10, 20) == (640, 640) and input_spec({}, "detr").mean is not None


def test_detections_are_boxes_inside_the_image_and_counts_follow_them():
    from gesture_cli.eval.scene import SceneDetector
    from gesture_cli.models.detect import build_detector

    image = np.random.default_rng(0).integers(0, 255, (40, 72, 3), dtype=np.uint8)
    det = build_detector("tiny-detr")
    every = det.detect(image, threshold=0.0)
    assert len(every) == 20  # threshold 0 keeps one detection per query
    assert (every.boxes[:, [0, 2]] <= 72).all() and (every.boxes[:, [1, 3]] <= 40).all() and (every.boxes >= 0).all()
    assert (every.boxes[:, 2] >= every.boxes[:, 0]).all()
    assert not {det.id2label[int(i)] for i in every.labels} & {"N/A"}  # DETR's placeholder ids are never a detection
    mid = float(np.median(every.scores))
    assert len(det.detect(image, threshold=mid)) == int((every.scores >= mid).sum()) < 20
    scene = SceneDetector(det, ["person", "car", "dog"], threshold=0.0)
    counts, record = scene.run(image)
    ids = [det.class_ids([c])[0] for c in ("person", "car", "dog")]
    assert counts.tolist() == [int(np.isin(every.labels, i).sum()) for i in ids]
    assert len(record["objects"]) == 20 and set(record["counts"]) == {"person", "car", "dog"}
    assert all(0.0 <= a <= 1.0 for a in record["box_area_fraction"].values())


@pytest.mark.parametrize("name", ["tiny-rtdetr", "tiny-detr"])
def test_pre_and_post_processing_match_the_transformers_image_processors(name):
    """Our resize/rescale/normalise and score/box decoding agree with transformers' own processors (PIL backend)."""
    import transformers

    from gesture_cli.models.detect import build_detector

    det = build_detector(name)
    # One clear class per query ('car' for RT-DETR's sigmoid, 'bus' for DETR's softmax), so that the
    # processors' top-k over query x class pairs and our best class per query pick the same detections.
    head = det.model.model.decoder.class_embed[-1] if name == "tiny-rtdetr" else det.model.class_labels_classifier
    with torch.no_grad():
        head.weight.mul_(0.1)
        head.bias.fill_(-4.0)
        head.bias[det.class_ids(["car" if name == "tiny-rtdetr" else "bus"])[0][0]] = 3.0
    image = np.random.default_rng(1).integers(0, 255, (90, 150, 3), dtype=np.uint8)
    if name == "tiny-rtdetr":
        proc = transformers.RTDetrImageProcessorPil(size={"height": 64, "width": 64}, do_normalize=False)
    else:
        proc = transformers.DetrImageProcessorPil(size={"height": 64, "width": 64}, do_pad=False)
    ref_pixels = proc(images=image, return_tensors="pt")["pixel_values"]
    pixels = det.pixel_values(image)
    assert pixels.shape == ref_pixels.shape and (pixels - ref_pixels).abs().max() < 0.05  # PIL vs torch bilinear resize
    with torch.inference_mode():
        out = det.model(pixel_values=pixels)
    ref = proc.post_process_object_detection(out, threshold=0.3, target_sizes=[(90, 150)])[0]
    ours = det.detect(image, threshold=0.3)
    assert len(ours) == len(ref["scores"]) == det.model.config.num_queries
    assert sorted(ours.labels.tolist()) == sorted(ref["labels"].tolist())
    order, ref_order = np.lexsort(ours.boxes.round(2).T[::-1]), np.lexsort(ref["boxes"].numpy().round(2).T[::-1])
    np.testing.assert_allclose(ours.boxes[order], ref["boxes"].numpy()[ref_order], atol=1e-2)
    np.testing.assert_allclose(ours.scores[order], ref["scores"].numpy()[ref_order], atol=1e-4)


# ---- gx infer segment --detect --------------------------------------------------------------------


def test_scene_table_has_26_group_fractions_and_10_counts(ade_run, runner):
    from gesture_cli.eval.scene import SceneDetector
    from gesture_cli.models.detect import build_detector

    run, scenes = ade_run
    # fp32: the counts are compared with an fp32 detector run independently below
    res = invoke(runner, "infer", "segment", "--input", scenes, "--class-map", ADE_MAP, "--detect", "tiny-rtdetr", "--detect-threshold", "0.01",
                 "--device", "cpu", "--precision", "fp32", "-r", run)
    assert res.exit_code == 0, res.output
    out = run / "infer" / "segment-tiny-dinov2"
    rows = list(csv.DictReader((out / "features.csv").open()))
    cols = list(rows[0])
    groups = list(json.loads(ADE_MAP.read_text())["groups"])
    assert len(cols) == 1 + 36 and cols[0] == "image"
    assert cols[1:27] == [f"seg_{g.replace(' ', '_').replace('-', '_')}" for g in groups] and cols[27:] == DEFAULT_COLUMNS
    assert [r["image"] for r in rows] == ["street0.png", "street1.png", "street2.png"]
    scene = SceneDetector(build_detector("tiny-rtdetr"), [c[len("det_count_"):].replace("_", " ") for c in DEFAULT_COLUMNS], threshold=0.01)
    for r in rows:
        assert sum(float(r[c]) for c in cols[1:27]) == pytest.approx(1.0, abs=1e-4)
        image = cv2.imread(str(scenes / r["image"]))[:, :, ::-1]
        assert [int(r[c]) for c in DEFAULT_COLUMNS] == scene.run(np.ascontiguousarray(image))[0].tolist()  # recomputed independently
    assert sum(int(r[c]) for r in rows for c in DEFAULT_COLUMNS) > 0  # the threshold let some through
    schema = json.loads((out / "features.schema.json").read_text())
    assert [c["name"] for c in schema["columns"]] == cols and schema["num_features"] == 36
    seg, det = schema["columns"][1:27], schema["columns"][27:]
    assert {c["source"] for c in seg} == {"segmentation group"} and {c["unit"] for c in seg} == {"fraction of pixels"}
    assert seg[groups.index("building")]["group"] == "building" and "skyscraper" in seg[groups.index("building")]["description"]
    assert {c["source"] for c in det} == {"detector class"} and {c["type"] for c in det} == {"int"}
    assert det[6]["class"] == "traffic light" and "score >= 0.01" in det[6]["description"]
    assert schema["segmentation"]["class_map"] == "ade20k_to_26" and schema["detector"]["name"] == "tiny-rtdetr"
    preds = json.loads((out / "predictions.json").read_text())["images"]
    assert set(preds[0]["detections"]) == {"counts", "box_area_fraction", "objects"}
    assert "objects" in res.output and "36 features per image" in res.output


def test_without_a_class_map_the_seg_columns_are_the_heads_classes(ade_run, runner):
    run, scenes = ade_run
    res = invoke(runner, "infer", "segment", "--input", scenes / "street1.png", "--detect", "tiny-detr", "--detect-classes", "person,stop sign",
                 "--detect-classes", "dog", "--detect-threshold", "0", "--json", "--device", "cpu", "-r", run)
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)
    assert len(row) == 1 + 150 + 3 and row["wall"] >= 0 and sum(row[k] for k in ("det_count_person", "det_count_stop_sign", "det_count_dog")) <= 20
    schema = json.loads((run / "infer" / "segment-tiny-dinov2" / "features.schema.json").read_text())
    assert schema["num_features"] == 153 and {c["source"] for c in schema["columns"][1:151]} == {"segmentation class"}
    assert "head's own 150 classes" in schema["segmentation"]["classes"] and schema["segmentation"]["class_map"] is None
    assert [c["name"] for c in schema["columns"][151:]] == ["det_count_person", "det_count_stop_sign", "det_count_dog"]


def test_unknown_detect_class_and_bad_options_are_clean_errors(ade_run, runner):
    run, scenes = ade_run
    base = ["infer", "segment", "--input", scenes, "--device", "cpu", "-r", run]
    res = invoke(runner, *base, "--detect", "tiny-rtdetr", "--detect-classes", "person,motorbike")
    one_line_error(res, 2, "'motorbike' is not a class of detector 'tiny-rtdetr'", "close matches: 'motorcycle'")
    one_line_error(invoke(runner, *base, "--detect", "tiny-rtdetr", "--detect-threshold", "1.5"), 2, "--detect-threshold must be between 0 and 1")
    one_line_error(invoke(runner, *base, "--detect-classes", "dog"), 2, "need --detect DETECTOR")
    one_line_error(invoke(runner, *base, "--detect", "acme/not-downloaded"), 1, "acme/not-downloaded", "gx download")


def test_detector_loads_from_a_hub_snapshot_and_a_local_folder(ade_run, runner, tmp_path, monkeypatch):
    from gesture_cli.models.backbones import build_backbone
    from gesture_cli.models.detect import build_detector

    home = tmp_path / "home"
    monkeypatch.setenv("GX_HOME", str(home))
    repo = "acme/street-rtdetr"
    commit = hashlib.sha1(repo.encode()).hexdigest()
    folder = home / "models" / f"models--{repo.replace('/', '--')}"
    _dog_detector(folder / "snapshots" / commit)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)

    det = build_detector(repo)
    assert det.source == repo and det.model_type == "rt_detr" and det.spec.mean is None and det.spec.height == 64
    image = np.full((30, 50, 3), 128, np.uint8)
    found = det.detect(image, threshold=0.5)
    assert len(found) == 30 and {det.id2label[int(i)] for i in found.labels} == {"dog"} and found.scores.min() > 0.99

    run, scenes = ade_run
    res = invoke(runner, "infer", "segment", "--input", scenes, "--class-map", ADE_MAP, "--detect", repo, "--device", "cpu", "-r", run)
    assert res.exit_code == 0, res.output
    out = run / "infer" / "segment-tiny-dinov2"
    rows = list(csv.DictReader((out / "features.csv").open()))
    assert all(int(r["det_count_dog"]) == 30 and int(r["det_count_person"]) == 0 for r in rows) and len(rows[0]) == 37
    overlay = cv2.imread(str(out / "overlays" / "street0.png"))
    assert overlay.shape == (48, 80, 3)
    # the same folder used in place
    local = build_detector(str(folder / "snapshots" / commit))
    assert local.detect(image, threshold=0.5).labels.tolist() == found.labels.tolist()
    # a backbone folder is not a detector
    backbone_dir = tmp_path / "dinov2"
    build_backbone("tiny-dinov2").model.save_pretrained(backbone_dir)
    with pytest.raises(ModelError, match="'dinov2' model, not an object detector"):
        build_detector(str(backbone_dir))
