"""`gx keypoint-train`, `gx evaluate keypoint`, `gx infer keypoint`: MPII-style keypoint regression.

Real MPII annotations and images load with their 16 joints; the flip swaps left and right joints;
a short full fine-tune of a tiny backbone on synthetic stick figures beats the mean-pose baseline;
bad MPII input gives one-line errors naming the file and record; resume ends where an uninterrupted
run ends."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from tests.conftest import SHARED_REAL, invoke

MPII_DIR = SHARED_REAL / "mpii"
MPII_JSON = MPII_DIR / "test_mpii.json"
# A short run that learns: 800 plain-background figures at 32 px (4 x 4 patches), 300 steps, no
# rotation/zoom (flips stay on), full fine-tuning (tiny backbones are random-init).
QUICK = ["--backbone", "tiny-dinov2", "--method", "full", "--image-size", "32", "--device", "cpu",
         "--dataset-opt", "train_samples=800", "--dataset-opt", "eval_samples=64", "--dataset-opt", "side=32",
         "--dataset-opt", "clutter=false", "--rotate", "0", "--scale-jitter", "0", "--batch-size", "32"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _error_line(res) -> str:
    assert "Traceback" not in res.output, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output
    return lines[0]


# ---- data -----------------------------------------------------------------------------------------


def test_real_mpii_sample_loads_with_16_joints_per_person(real_data):
    from gesture_cli.data.keypoints import NUM_JOINTS, make_keypoint_dataset

    ds = make_keypoint_dataset(f"mpii:{MPII_JSON}:{MPII_DIR}", split="all")
    records = json.loads(MPII_JSON.read_text())
    assert len(ds) == len(records) == 5 and ds.head_source == "joints"
    for i, rec in enumerate(records):
        assert ds.joints[i].shape == (NUM_JOINTS, 2)
        assert ds.visible[i].tolist() == [bool(v) for v in rec["joints_vis"]]
        # 0-based pixels and a crop of 1.25 x 200 x scale around the (lowered) centre
        np.testing.assert_allclose(ds.joints[i][ds.visible[i]], np.asarray(rec["joints"])[ds.visible[i]] - 1)
        assert ds.boxes[i, 2] == pytest.approx(1.25 * 200 * rec["scale"])
    assert ds.visible.sum(1).tolist() == [16, 16, 14, 14, 16]  # two people have unannotated ankles
    b = ds.batch(range(len(ds)), size=48)
    assert b.images.shape == (5, 48, 48, 3) and b.images.dtype == np.uint8
    shown = b.keypoints[b.visible > 0]
    assert (shown > 0).all() and (shown < 1).all()  # every annotated joint lies inside its person crop
    assert np.isfinite(b.head_size).all() and (b.head_size > 0.05).all() and np.isfinite(b.torso_size).all()
    # images beside the JSON are the default image folder
    assert make_keypoint_dataset(f"mpii:{MPII_JSON}", split="all").paths == ds.paths


def test_synthetic_keypoints_are_seeded_and_sane():
    from gesture_cli.data.keypoints import make_keypoint_dataset

    a = make_keypoint_dataset("synthetic-keypoints", split="train", seed=3, train_samples=12, side=32)
    b = make_keypoint_dataset("synthetic-keypoints", split="train", seed=3, train_samples=6, side=32)
    c = make_keypoint_dataset("synthetic-keypoints", split="test", seed=3, eval_samples=6, side=32)
    assert np.array_equal(a.images[:6], b.images) and np.array_equal(a.joints[:6], b.joints)  # more samples keep the first
    assert not np.array_equal(a.images[:6], c.images)  # splits never share a stream
    batch = a.batch(range(12), size=32)
    assert batch.keypoints.shape == (12, 16, 2) and ((batch.keypoints > 0) & (batch.keypoints < 1)).all()
    # front-facing figures: the right shoulder and hip sit left of the left ones in the image
    assert (batch.keypoints[:, 12, 0] < batch.keypoints[:, 13, 0]).all() and (batch.keypoints[:, 2, 0] < batch.keypoints[:, 3, 0]).all()


def test_flip_swaps_right_and_left_joints():
    from gesture_cli.data.keypoints import FLIP_INDEX, MPII_JOINTS, flip_keypoints
    from gesture_cli.train.keypoint import KeypointAugment, augment_keypoints

    for j, name in enumerate(MPII_JOINTS):  # every r_ joint pairs with its l_ joint, centre joints stay
        partner = MPII_JOINTS[FLIP_INDEX[j]]
        assert partner == name.replace("r_", "l_") if name.startswith("r_") else partner == name.replace("l_", "r_")
    kps = np.random.default_rng(0).uniform(0.1, 0.9, size=(16, 2)).astype(np.float32)
    vis = np.ones(16, dtype=np.float32)
    vis[0] = 0  # r_ankle unannotated
    fk, fv = flip_keypoints(kps, vis)
    assert fk[5, 0] == pytest.approx(1 - kps[0, 0]) and fk[5, 1] == kps[0, 1]  # l_ankle of the mirror = r_ankle mirrored
    assert fk[10, 0] == pytest.approx(1 - kps[15, 0])  # r_wrist <- l_wrist
    assert fk[7, 0] == pytest.approx(1 - kps[7, 0])  # thorax stays thorax
    assert fv[5] == 0 and fv[0] == 1
    np.testing.assert_allclose(flip_keypoints(fk), kps, atol=1e-6)

    # The batched augmentation with flips only: mirrored images carry swapped, mirrored joints. A bright
    # pixel marks the right wrist; wherever it ends up, the joint labelled there must be the one we expect.
    side, n = 32, 16
    images = torch.zeros(n, 3, side, side)
    keypoints = torch.from_numpy(np.tile(kps, (n, 1, 1)))
    c, r = int(kps[10, 0] * side), int(kps[10, 1] * side)
    keypoints[:, 10] = torch.tensor([(c + 0.5) / side, (r + 0.5) / side])  # r_wrist at a pixel centre
    images[:, :, r, c] = 1.0
    visible = torch.from_numpy(np.tile(vis, (n, 1)))
    only_flip = KeypointAugment(flip=True, rotate=0, scale_jitter=0, shift=0, brightness=0, contrast=0)
    out, k2, v2 = augment_keypoints(images, keypoints, visible, only_flip, generator=torch.Generator().manual_seed(0))
    flipped = [bool(out[i, 0, r, side - 1 - c] > 0.9) for i in range(n)]
    assert any(flipped) and not all(flipped)
    for i in range(n):
        if flipped[i]:
            assert torch.allclose(k2[i], torch.from_numpy(flip_keypoints(keypoints[i].numpy())), atol=1e-5)
            assert v2[i, 5] == 0 and v2[i, 0] == 1  # the unannotated right ankle is now the left ankle
            hit = k2[i, 15]  # the marked right wrist is the mirrored person's left wrist
        else:
            assert torch.allclose(k2[i], keypoints[i], atol=1e-5) and torch.equal(v2[i], visible[i])
            hit = k2[i, 10]
        col, row = int(hit[0] * side), int(hit[1] * side)
        assert out[i, 0, row, col] > 0.9


def test_rotation_moves_joints_with_the_image():
    from gesture_cli.train.keypoint import KeypointAugment, augment_keypoints

    side = 64
    images = torch.zeros(8, 1, side, side)
    images[:, :, 14:18, 44:48] = 1.0  # a bright block
    keypoints = torch.zeros(8, 16, 2) + 0.5
    keypoints[:, 3] = torch.tensor([46 / side, 16 / side])  # l_hip at the block's centre
    cfg = KeypointAugment(flip=False, rotate=40, scale_jitter=0.2, shift=0.05, brightness=0, contrast=0)
    out, k2, _ = augment_keypoints(images, keypoints, torch.ones(8, 16), cfg, generator=torch.Generator().manual_seed(1))
    for i in range(8):
        ys, xs = torch.nonzero(out[i, 0] > 0.3, as_tuple=True)
        centre = torch.stack([xs.float().mean() + 0.5, ys.float().mean() + 0.5]) / side
        assert torch.allclose(k2[i, 3], centre, atol=1.0 / side), (i, k2[i, 3], centre)


def test_pck_counts_annotated_joints_against_the_norm_size():
    from gesture_cli.eval.keypoint import keypoint_metrics, pck_table

    gt = np.zeros((3, 16, 2))
    pred = gt.copy()
    pred[:, :, 0] = 0.04  # every joint 0.04 off
    pred[0, 10, 0] = 0.2  # person 0: right wrist far off
    visible = np.ones((3, 16))
    visible[1, 0] = 0  # person 1: r_ankle unannotated
    head = np.array([0.1, 0.1, np.nan])  # threshold 0.05; person 2 has no head size
    t = pck_table(pred, gt, visible, head, threshold=0.5)
    assert t["people"] == 2 and t["skipped_people"] == 1 and t["joints_counted"] == 31
    assert t["per_joint"]["r_wrist"] == 0.5 and t["per_joint"]["r_ankle"] == 1.0 and t["groups"]["wrist"] == 0.75
    assert t["mean"] == pytest.approx(26 / 27, abs=1e-6)  # pelvis and thorax left out of the mean: 27 joints, one wrong
    assert t["mean_all_joints"] == pytest.approx(30 / 31, abs=1e-6)
    assert pck_table(pred, gt, visible, np.full(3, 0.01), threshold=0.5)["mean"] == 0.0
    m = keypoint_metrics(pred, gt, visible, head_size=np.full(3, np.nan), torso_size=np.full(3, 0.3))
    assert m["pckh@0.5"] is None and m["pck_kind"] == "pck@0.2" and m["pck"] == pytest.approx(40 / 41, abs=1e-6)


# ---- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("break_record", "expected"),
    [
        (lambda r: r.update(joints=r["joints"][:15]), "record 1 (052475643.jpg): 'joints' has 15 joints; MPII needs 16"),
        (lambda r: r.update(image="missing.jpg"), "record 1 (missing.jpg): image"),
        (lambda r: r.update(scale=0), "record 1 (052475643.jpg): 'scale' is 0; it must be a positive number"),
        (lambda r: r.update(joints_vis=[1] * 17), "record 1 (052475643.jpg): 'joints_vis' has 17 entries"),
    ],
    ids=["15-joints", "missing-image", "zero-scale", "17-flags"],
)
def test_bad_mpii_input_is_one_clean_line(runner, tmp_path, real_data, break_record, expected):
    records = json.loads(MPII_JSON.read_text())
    break_record(records[1])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(records))
    res = invoke(runner, "keypoint-train", "--dataset", f"mpii:{bad}:{MPII_DIR}", "--method", "frozen", "-r", tmp_path / "run")
    assert res.exit_code == 1
    line = _error_line(res)
    assert str(bad) in line and expected in line, line
    if "missing" in expected:
        assert str(MPII_DIR / "missing.jpg") in line and "not found" in line


def test_bad_dataset_specs(runner, tmp_path):
    res = invoke(runner, "keypoint-train", "--dataset", "synthetic-hands", "-r", tmp_path / "run")
    assert res.exit_code == 2 and "valid: mpii, synthetic-keypoints" in _error_line(res)
    res = invoke(runner, "keypoint-train", "--dataset", f"mpii:{tmp_path / 'nope.json'}", "-r", tmp_path / "run")
    assert res.exit_code == 1 and "nope.json: annotation file not found" in _error_line(res)
    res = invoke(runner, "keypoint-train", "--method", "head", "-r", tmp_path / "run")
    assert res.exit_code == 2 and "valid: frozen, full, lora" in _error_line(res)


# ---- training, evaluation, inference --------------------------------------------------------------


def _mean_pose_scores(cfg):
    """PCK of predicting the training split's mean pose for every test person (the baseline)."""
    from gesture_cli.eval.keypoint import keypoint_metrics
    from gesture_cli.train.keypoint import make_splits

    splits = make_splits(cfg)
    tr = splits.train.batch(range(len(splits.train)), size=32)
    te = splits.test.batch(range(len(splits.test)), size=32)
    mean = (tr.keypoints * tr.visible[..., None]).sum(0) / tr.visible.sum(0)[:, None]
    pred = np.broadcast_to(mean, te.keypoints.shape)
    return keypoint_metrics(pred, te.keypoints, te.visible, head_size=te.head_size, torso_size=te.torso_size), splits


def test_keypoint_train_beats_the_mean_pose_then_evaluate_and_infer(runner, tmp_path):
    import cv2

    from gesture_cli.eval.keypoint import predict_keypoints
    from gesture_cli.models.keypoint_head import load_keypoint_model
    from gesture_cli.train.keypoint import KeypointTrainConfig

    run_dir = tmp_path / "run"
    # fp32: evaluate re-scores the training's test split and infer is compared with an fp32 reload of the model
    res = invoke(runner, "keypoint-train", *QUICK, "--max-steps", "300", "--lr", "3e-3", "--patience", "0", "--precision", "fp32", "-r", run_dir)
    assert res.exit_code == 0, res.output
    out = run_dir / "keypoint" / "tiny-dinov2"
    for rel in ("head.safetensors", "backbone/config.json", "joints.json", "metrics.json", "train_log.csv",
                "checkpoints/best/model.safetensors", "checkpoints/last/state.json"):
        assert (out / rel).is_file(), rel
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 300 and metrics["weights"] == "best" and metrics["pck_kind"] == "pckh@0.5"
    cfg = KeypointTrainConfig(method="full", image_size=32, dataset_opts=("train_samples=800", "eval_samples=64", "side=32", "clutter=false"))
    baseline, splits = _mean_pose_scores(cfg)
    test = metrics["test"]
    assert test["n"] == 64 and baseline["n"] == 64
    # well above predicting the average pose, on the headline PCKh@0.5 and on PCK@0.2 of the torso
    assert test["pck"] > 2 * baseline["pck"] and test["pck"] > baseline["pck"] + 0.08, (test["pck"], baseline["pck"])
    assert test["pck@0.2"]["mean"] > 2 * baseline["pck@0.2"]["mean"], (test["pck@0.2"]["mean"], baseline["pck@0.2"]["mean"])
    assert "PCKh@0.5" in res.output and "Wrote" in res.output

    # gx evaluate keypoint: reloads the model from its files and scores the test split again
    res = invoke(runner, "evaluate", "keypoint", "--device", "cpu", "-r", run_dir)
    assert res.exit_code == 0, res.output
    ev = json.loads((run_dir / "eval" / "keypoint.json").read_text())
    assert ev["split"] == "test" and ev["n"] == 64 and len(ev["pckh@0.5"]["per_joint"]) == 16
    assert set(ev["pckh@0.5"]["groups"]) == {"head", "shoulder", "elbow", "wrist", "hip", "knee", "ankle"}
    assert ev["pck"] == pytest.approx(test["pck"], abs=0.02)
    rows = (run_dir / "eval" / "keypoint-predictions.csv").read_text().splitlines()
    assert len(rows) == 1 + 64 * 16

    # gx infer keypoint: pixel coordinates of the drawn skeleton match the model's crop predictions
    model, _ = load_keypoint_model(out)
    pred, _ = predict_keypoints(model, splits.test.subset([0, 1, 2]), size=32)
    inputs = tmp_path / "people"
    inputs.mkdir()
    for i in range(3):
        cv2.imwrite(str(inputs / f"p{i}.png"), cv2.cvtColor(splits.test.images[i], cv2.COLOR_RGB2BGR))
    res = invoke(runner, "infer", "keypoint", "--input", inputs, "--json", "--device", "cpu", "-r", run_dir)
    assert res.exit_code == 0, res.output
    preds = json.loads(res.stdout)
    assert [p["input"] for p in preds] == ["p0.png", "p1.png", "p2.png"]
    for i, p in enumerate(preds):
        xy = np.array([p["joints"][name] for name in ev["joints"]])
        np.testing.assert_allclose(xy, pred[i] * 32 - 0.5, atol=0.05)
        drawn = cv2.imread(p["image"])
        assert drawn.shape == (32, 32, 3) and not np.array_equal(drawn, cv2.imread(str(inputs / f"p{i}.png")))


def test_mpii_train_and_evaluate_on_the_held_out_person(runner, tmp_path, real_data):
    run_dir = tmp_path / "run"
    spec = f"mpii:{MPII_JSON}:{MPII_DIR}"
    res = invoke(runner, "keypoint-train", "--dataset", spec, "--method", "lora", "--backbone", "tiny-vit", "--image-size", "32",
                 "--epochs", "2", "--batch-size", "2", "--val-fraction", "0.2", "--device", "cpu", "-r", run_dir)
    assert res.exit_code == 0, res.output
    assert (run_dir / "keypoint" / "tiny-vit" / "adapter" / "adapter_config.json").is_file()
    metrics = json.loads((run_dir / "keypoint" / "tiny-vit" / "metrics.json").read_text())
    assert metrics["val"]["n"] == 1 and "test" not in metrics and metrics["val"]["pck_kind"] == "pckh@0.5"
    res = invoke(runner, "evaluate", "keypoint", "--device", "cpu", "-r", run_dir)
    assert res.exit_code == 0, res.output
    assert "held out for validation" in res.output
    ev = json.loads((run_dir / "eval" / "keypoint.json").read_text())
    assert ev["split"] == "all[val]" and ev["n"] == 1 and ev["head_size_from"] == "joints"
    assert ev["pckh@0.5"]["joints_counted"] == metrics["val"]["pckh@0.5"]["joints_counted"]
    # evaluating on all five people (a copy of the JSON is another dataset)
    other = tmp_path / "copy.json"
    shutil.copy(MPII_JSON, other)
    res = invoke(runner, "evaluate", "keypoint", "--dataset", f"mpii:{other}:{MPII_DIR}", "--device", "cpu", "-r", run_dir)
    assert res.exit_code == 0, res.output
    assert json.loads((run_dir / "eval" / "keypoint.json").read_text())["n"] == 5


def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path):
    from gesture_cli.core.artifacts import load_tensors
    from gesture_cli.core.rundir import RunDir
    from gesture_cli.tasks.keypoint import KeypointTrainConfig, train_keypoint
    from gesture_cli.train.loop import TrainingInterrupted

    cfg = KeypointTrainConfig(backbone="tiny-dinov2", method="lora", image_size=32, max_steps=6, batch_size=8, patience=0,
                              checkpoint_every=2, dataset_opts=("train_samples=40", "eval_samples=8", "side=32"))
    whole = train_keypoint(cfg, RunDir(tmp_path / "a"), device="cpu")
    stop_at_3 = {"on_step_end": [lambda s: s.request_stop("test") if s.step == 3 else None]}
    with pytest.raises(TrainingInterrupted):
        train_keypoint(cfg, RunDir(tmp_path / "b"), device="cpu", callbacks=stop_at_3)
    with pytest.raises(Exception, match="unfinished run"):
        train_keypoint(cfg, RunDir(tmp_path / "b"), device="cpu")  # a fresh start would throw the checkpoint away
    resumed = train_keypoint(cfg, RunDir(tmp_path / "b"), device="cpu", resume=True)
    assert resumed["summary"]["resumed_from"] == 3 and resumed["summary"]["steps"] == whole["summary"]["steps"] == 6
    a, _ = load_tensors(tmp_path / "a/keypoint/tiny-dinov2/checkpoints/last/model.safetensors", kind="checkpoint-model")
    b, _ = load_tensors(tmp_path / "b/keypoint/tiny-dinov2/checkpoints/last/model.safetensors", kind="checkpoint-model")
    assert sorted(a) == sorted(b) and any("lora_" in k for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)
    with pytest.raises(Exception, match="cannot resume"):
        train_keypoint(KeypointTrainConfig(**{**cfg.__dict__, "rank": 4}), RunDir(tmp_path / "b"), device="cpu", resume=True)
