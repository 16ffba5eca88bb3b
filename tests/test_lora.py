"""`gx lora-train` and its core: LoRA / full / head fine-tuning on synthetic-hands with tiny backbones,
artifacts that reload exactly, resume (in process and after SIGKILL), several processes, HaGRID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gesture_cli.core.rundir import RunDir
from gesture_cli.models.backbone_registry import REGISTRY
from gesture_cli.models.backbones import build_backbone
from tests.conftest import REPO, SHARED_REAL, invoke, one_line_error

TINY = sorted(name for name, entry in REGISTRY.items() if entry.source == "tiny")
# A short run that learns: 96 training images (4 per class), 32 px (4x4 patches), 20 epochs of 6 steps.
QUICK = ["--dataset", "synthetic-hands", "--image-size", "32", "--max-samples", "96", "--batch-size", "16", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GX_RUN_DIR", "PYTEST"))}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    return env


def _no_traceback(res) -> None:
    assert "Traceback" not in res.output, res.output


# ---- model glue -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TINY)
def test_only_adapter_and_head_parameters_get_gradients(name):
    from gesture_cli.models.augment import AugmentConfig
    from gesture_cli.models.lora import build_classifier, count_parameters
    from gesture_cli.train.lora import make_loss_fn

    model = build_classifier(build_backbone(name, image_size=32), num_classes=5, method="lora", pool="cls+mean")
    trainable, total = count_parameters(model)
    assert 0 < trainable < total / 10
    model.train()
    images = torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8)
    out = make_loss_fn(augment=AugmentConfig())(model, (images, torch.tensor([0, 1, 2, 3])))
    out["loss"].backward()
    with_grad = [n for n, p in model.named_parameters() if p.grad is not None]
    assert with_grad and all("lora_" in n or n.startswith("head.") for n in with_grad), with_grad
    assert {"head.weight", "head.bias"} <= set(with_grad)
    assert sum(p.numel() for n, p in model.named_parameters() if p.grad is not None) == trainable


def test_target_modules_resolve_per_family():
    from gesture_cli.core.errors import UsageError
    from gesture_cli.models.lora import linear_module_names, resolve_target_modules

    for name in TINY:
        assert resolve_target_modules(build_backbone(name)) == ["q_proj", "v_proj"]  # transformers 5 naming

    class Attn(torch.nn.Module):  # the older DINOv2 / ViT naming
        def __init__(self):
            super().__init__()
            self.query, self.key, self.value, self.dense = (torch.nn.Linear(4, 4) for _ in range(4))

    fake = build_backbone("tiny-vit")
    fake.model = Attn()
    assert resolve_target_modules(fake) == ["query", "value"]
    assert linear_module_names(fake.model) == ["dense", "key", "query", "value"]
    with pytest.raises(UsageError, match="no Linear module named 'qkv'; valid: dense, key, query, value"):
        resolve_target_modules(fake, ["qkv"])


def test_augmentation_is_batched_and_flips_only_when_asked():
    from gesture_cli.models.augment import AugmentConfig, augment_batch

    x = torch.rand(8, 1, 32, 32)
    neutral = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), rotate_deg=0.0, brightness=0.0, contrast=0.0)
    torch.testing.assert_close(augment_batch(x, neutral), x, atol=1e-5, rtol=0)
    flipped = augment_batch(x, AugmentConfig(**{**neutral.__dict__, "hflip": True}), generator=torch.Generator().manual_seed(0))
    mirrored = [torch.allclose(flipped[i], x[i].flip(-1), atol=1e-5) for i in range(8)]
    assert any(mirrored) and not all(mirrored)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    a, b = augment_batch(x, generator=g()), augment_batch(x, generator=g())
    assert torch.equal(a, b) and a.shape == x.shape and 0 <= a.min() and a.max() <= 1
    assert not torch.allclose(a, x)
    # default config: never a mirror image (handedness carries meaning)
    asym = torch.zeros(8, 1, 32, 32)
    asym[..., :, :8] = 1.0  # bright band on the left edge
    out = augment_batch(asym, generator=g())
    assert (out[..., :, :16].mean(dim=(1, 2, 3)) > out[..., :, 16:].mean(dim=(1, 2, 3))).all()


# ---- the command ----------------------------------------------------------------------------------


def test_lora_train_end_to_end(runner, tmp_path):
    from transformers import AutoModel

    from gesture_cli.models.lora import build_classifier, load_classifier
    from gesture_cli.tasks.classify import evaluate_lora, load_lora_classifier
    from gesture_cli.train.checkpoint import load_checkpoint, load_model_state
    from gesture_cli.train.lora import ImageBatches, LoraTrainConfig, make_splits, predict

    run_dir = tmp_path / "run"
    # fp32: the reloaded, merged and re-evaluated models below are compared with fp32 references
    args = ["lora-train", "--backbone", "tiny-dinov2", *QUICK, "--epochs", "20", "--lr", "2e-2", "--pool", "mean",
            "--patience", "0", "--checkpoint-every", "10", "--merge", "--precision", "fp32", "-r", run_dir]
    res = invoke(runner, *args)
    assert res.exit_code == 0, res.output
    _no_traceback(res)
    assert "trainable parameters: 5,656 of 119,576 (4.73%)" in res.output and "q_proj, v_proj" in res.output
    out = run_dir / "lora" / "tiny-dinov2"
    for rel in ("adapter/adapter_config.json", "adapter/adapter_model.safetensors", "head.safetensors", "labels.json", "metrics.json",
                "train_log.csv", "checkpoints/last/state.json", "checkpoints/best/model.safetensors", "merged/config.json",
                "merged/model.safetensors", "merged/preprocessor_config.json"):
        assert (out / rel).is_file(), rel
    assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name]
    labels = json.loads((out / "labels.json").read_text())
    assert labels["classes"][:3] == ["A", "B", "C"] and "J" not in labels["classes"] and labels["num_classes"] == 24
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trainable_params"] == 5656 and metrics["steps"] == 120 and metrics["weights"] == "best"
    assert metrics["test"]["n"] == 96 and metrics["test"]["per_class"][0]["class"] == "A"
    rows = (out / "train_log.csv").read_text().splitlines()
    losses = [float(r.split(",")[3]) for r in rows[1:]]
    assert losses[-1] < losses[0] - 0.3  # the loss falls
    (step,) = RunDir(run_dir).steps("lora-train")
    assert step["status"] == "ok" and step["outputs"] == ["lora/tiny-dinov2"] and step["metrics"]["trainable_params"] == 5656

    # the head and adapter reload with the trained weights (not a fresh random head)
    cfg = LoraTrainConfig(image_size=32, max_samples=96, pool="mean")
    train = ImageBatches(make_splits(cfg).train, size=32)
    reloaded, classes, info, preprocess = load_lora_classifier(RunDir(run_dir), "tiny-dinov2")
    assert classes == labels["classes"] and info["image_size"] == 32
    fresh = build_classifier(build_backbone("tiny-dinov2", image_size=32), num_classes=24, method="lora", pool="mean")
    tensors, *_ = load_checkpoint(out / "checkpoints" / "best")
    load_model_state(fresh, tensors, source=out)
    unmerged, _ = load_classifier(out, merge=False)
    images, y = train.get_batch(list(range(32)))
    with torch.no_grad():
        ref = fresh.eval()(preprocess(images))
        torch.testing.assert_close(reloaded(preprocess(images)), ref, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(unmerged(preprocess(images)), ref, atol=1e-5, rtol=1e-5)
    logits, y = predict(reloaded, train)
    assert (logits.argmax(1) == y).float().mean() > 3 / 24  # well above chance (1/24) on what it trained on
    ev = evaluate_lora(RunDir(run_dir), "tiny-dinov2", "synthetic-hands", "test", max_samples=96)
    assert ev["n"] == 96 and ev["accuracy"] == metrics["test"]["accuracy"]

    # merged/: plain transformers, same features as the adapter model
    merged = AutoModel.from_pretrained(out / "merged").eval()
    assert "auto_map" not in json.loads((out / "merged" / "config.json").read_text())
    pixels = preprocess(images)
    with torch.no_grad():
        plain = merged(pixel_values=pixels).last_hidden_state[:, 1:].mean(1)
        torch.testing.assert_close(plain, unmerged.features(pixels), atol=1e-4, rtol=1e-4)

    again = invoke(runner, *args)
    assert again.exit_code == 0 and "cached result" in again.output


@pytest.mark.parametrize("method", ["head", "full"])
def test_head_and_full_methods(runner, tmp_path, method):
    from gesture_cli.models.lora import load_classifier

    res = invoke(runner, "lora-train", "--backbone", "tiny-vit", "--method", method, *QUICK, "--epochs", "1", "-r", tmp_path)
    assert res.exit_code == 0, res.output
    out = tmp_path / "lora" / "tiny-vit"
    assert not (out / "adapter").exists()
    assert (out / "backbone" / "config.json").is_file() == (method == "full")
    meta = json.loads((out / "metrics.json").read_text())
    assert meta["method"] == method and (meta["trainable_fraction"] > 0.99 if method == "full" else meta["trainable_params"] == 64 * 24 + 24)
    model, head_meta = load_classifier(out)
    assert head_meta["method"] == method and model(torch.zeros(2, 3, 32, 32)).shape == (2, 24)


def test_bad_options_are_one_line_errors(runner, tmp_path):
    res = invoke(runner, "lora-train", "--backbone", "tiny-dinov3", *QUICK, "--target-modules", "query,value", "-r", tmp_path)
    assert res.exit_code == 2 and "no Linear module named 'query', 'value'" in res.output
    assert "valid: down_proj, k_proj, o_proj, q_proj, up_proj, v_proj" in res.output
    _no_traceback(res)
    res = invoke(runner, "lora-train", "--backbone", "tiny-vit", *QUICK, "--resume", "-r", tmp_path)
    assert res.exit_code == 1 and "nothing to resume" in res.output and len(res.output.strip().splitlines()) == 1
    res = invoke(runner, "lora-train", *QUICK, "--method", "head", "--merge", "-r", tmp_path)
    assert res.exit_code == 2 and "--merge applies to --method lora" in res.output
    res = invoke(runner, "lora-train", *QUICK, "--no-gesture", "-r", tmp_path)
    assert res.exit_code == 2 and "--no-gesture applies to hagrid" in res.output
    assert not (tmp_path / "lora").exists()


def test_interrupted_run_resumes_to_the_same_weights(runner, tmp_path):
    from gesture_cli.tasks.classify import LoraTrainConfig, train_lora
    from gesture_cli.train.checkpoint import load_checkpoint
    from gesture_cli.train.loop import TrainingInterrupted

    cfg = LoraTrainConfig(backbone="tiny-dinov3", image_size=32, max_samples=48, batch_size=8, epochs=2, checkpoint_every=4, lr=1e-2)
    straight = train_lora(cfg, RunDir(tmp_path / "a"), device="cpu")
    assert straight["summary"]["steps"] == 12

    def stop_at_5(state):
        if state.step == 5:
            state.request_stop("simulated pre-emption")

    with pytest.raises(TrainingInterrupted, match="step 5/12"):
        train_lora(cfg, RunDir(tmp_path / "b"), device="cpu", callbacks={"on_step_end": [stop_at_5]})
    assert RunDir(tmp_path / "b").steps()[-1]["status"] == "interrupted"
    assert sorted(p.name for p in (tmp_path / "b" / "lora" / "tiny-dinov3").iterdir()) == ["checkpoints"]

    common = ["lora-train", "--backbone", "tiny-dinov3", "--dataset", "synthetic-hands", "--image-size", "32", "--max-samples", "48",
              "--batch-size", "8", "--epochs", "2", "--checkpoint-every", "4", "--lr", "1e-2", "--device", "cpu", "-r", tmp_path / "b"]
    res = invoke(runner, *common)  # without --resume: refuses to overwrite the unfinished run
    assert res.exit_code == 2 and "unfinished run (step 5/12)" in res.output and "--resume" in res.output
    res = invoke(runner, *[a if a != "tiny-dinov3" else "tiny-vit" for a in common], "--resume")
    assert res.exit_code == 1 and "'tiny-vit'" in res.output and "'tiny-dinov3'" in res.output
    _no_traceback(res)
    res = invoke(runner, *common, "--rank", "4", "--resume")
    assert res.exit_code == 2 and "rank=8" in res.output and "rank=4" in res.output
    steps_before = len(RunDir(tmp_path / "b").steps())
    # the saved optimizer and schedule fix the lr and the schedule's length: refused, and nothing recorded
    one_line_error(invoke(runner, *[a if a != "1e-2" else "3e-3" for a in common], "--resume"), 2,
                   "trained with --lr 0.01, this command has --lr 0.003", "resume with --lr 0.01")
    one_line_error(invoke(runner, *common, "--max-steps", "20", "--resume"), 2, "no --max-steps, this command has --max-steps 20")
    assert len(RunDir(tmp_path / "b").steps()) == steps_before
    res = invoke(runner, *common, "--resume")
    assert res.exit_code == 0, res.output
    assert "resuming from step 5/12" in res.output
    # finished: nothing to resume, even to train longer (that is a new run)
    one_line_error(invoke(runner, *[a if a != "2" else "4" for a in common], "--resume"), 2, "that run finished at step 12/12",
                   "start a new run")
    a, *_ = load_checkpoint(tmp_path / "a" / "lora" / "tiny-dinov3" / "checkpoints" / "last")
    b, *_ = load_checkpoint(tmp_path / "b" / "lora" / "tiny-dinov3" / "checkpoints" / "last")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_killed_run_resumes_from_its_last_checkpoint(runner, tmp_path):
    run_dir = tmp_path / "run"
    args = ["lora-train", "--backbone", "tiny-vit", *QUICK, "--epochs", "8", "--checkpoint-every", "2", "--method", "head", "-r", run_dir]
    proc = subprocess.Popen([sys.executable, "-m", "gesture_cli", *map(str, args)], env=_env(tmp_path), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    state = run_dir / "lora" / "tiny-vit" / "checkpoints" / "last" / "state.json"
    deadline = time.time() + 120
    while not state.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read().decode()
    killed_at = json.loads(state.read_text())["trainer"]["step"]
    assert 2 <= killed_at < 48
    assert not (run_dir / "lora" / "tiny-vit" / "head.safetensors").exists()  # no half artifact
    res = invoke(runner, *args, "--resume")
    assert res.exit_code == 0, res.output
    assert f"resuming from step {killed_at}/48" in res.output
    assert (run_dir / "lora" / "tiny-vit" / "head.safetensors").is_file()
    assert json.loads((run_dir / "lora" / "tiny-vit" / "metrics.json").read_text())["resumed_from"] == killed_at


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_two_processes_with_torchrun(tmp_path, precision):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "gesture_cli", "lora-train", "--backbone", "tiny-vit",
           *QUICK, "--batch-size", "8", "--epochs", "2", "--checkpoint-every", "3", "--precision", precision, "-r", str(run_dir)]
    res = subprocess.run(cmd, env=_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("trainable parameters") == 1 and res.stdout.count("Wrote ") == 1  # rank 0 prints
    (step,) = RunDir(run_dir).steps()  # and writes the manifest once
    assert step["status"] == "ok"
    metrics = json.loads((run_dir / "lora" / "tiny-vit" / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["steps"] == 12  # 96 samples / (8 x 2) = 6 steps per epoch
    assert metrics["precision"] == precision
    assert (run_dir / "lora" / "tiny-vit" / "adapter" / "adapter_model.safetensors").is_file()


# ---- HaGRID ---------------------------------------------------------------------------------------


def test_hagrid_real_sample_crops():
    if not (SHARED_REAL / "hagrid").is_dir():
        pytest.skip("shared HaGRID sample not found")
    from gesture_cli.data import dataset_splits, make_dataset

    spec = f"hagrid:{SHARED_REAL / 'hagrid'}"
    assert dataset_splits(spec) == ["val"]  # annotations without full images: the crops are used
    ds = make_dataset(spec, split="val")
    assert ds.classes == ["call", "dislike", "fist", "four", "like", "mute", "ok", "one", "palm", "peace", "rock", "stop",
                          "three", "three2", "two_up"]
    assert len(ds) == 45 and ds.class_counts().tolist() == [3] * 15 and ds.boxes is None
    img = ds.image(0)
    assert img.ndim == 3 and img.shape[2] == 3 and 30 <= min(img.shape[:2]) <= 200
    assert ds.paths[0].parent.name == "call"
    assert ds.batch([0, 20, 44], size=32).shape == (3, 32, 32, 3)


def _write_hagrid(root: Path) -> None:
    """Two gestures, full images with coloured boxes at the annotated places, and one no_gesture box."""
    import cv2

    boxes = {  # image id -> (gesture file, [(x, y, w, h), label, BGR colour])
        "a1": ("like", [((0.1, 0.2, 0.3, 0.4), "like", (0, 0, 255)), ((0.6, 0.6, 0.2, 0.2), "no_gesture", (0, 255, 0))]),
        "a2": ("like", [((0.5, 0.1, 0.25, 0.25), "like", (0, 0, 255))]),
        "b1": ("palm", [((0.3, 0.3, 0.4, 0.3), "palm", (255, 0, 0))]),
        "b2": ("palm", [((0.2, 0.2, 0.2, 0.2), "palm", (255, 0, 0))]),  # its image is missing
    }
    anns: dict[str, dict] = {"like": {}, "palm": {}}
    for image_id, (gesture, items) in boxes.items():
        anns[gesture][image_id] = {"bboxes": [list(b) for b, _, _ in items], "labels": [lab for _, lab, _ in items], "user_id": "u"}
        if image_id == "b2":
            continue
        img = np.full((100, 200, 3), 128, np.uint8)
        for (x, y, w, h), _, colour in items:
            cv2.rectangle(img, (int(x * 200), int(y * 100)), (int((x + w) * 200) - 1, int((y + h) * 100) - 1), colour, -1)
        (root / "train" / gesture).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "train" / gesture / f"{image_id}.jpg"), img)
    (root / "annotations" / "train").mkdir(parents=True)
    for gesture, ann in anns.items():
        (root / "annotations" / "train" / f"{gesture}.json").write_text(json.dumps(ann))


def test_hagrid_full_images_are_cropped_to_the_boxes(tmp_path):
    from gesture_cli.core.errors import DataError
    from gesture_cli.data import dataset_splits, make_dataset

    _write_hagrid(tmp_path)
    spec = f"hagrid:{tmp_path}"
    assert dataset_splits(spec) == ["train"]
    ds = make_dataset(spec, split="train", margin=0.0)
    assert ds.classes == ["like", "palm"] and ds.labels.tolist() == [0, 0, 1]
    assert ds.skipped == {"no_gesture box (use no_gesture=True to keep)": 1, "image file missing": 1}
    crop = ds.image(0)  # like box of a1: 0.3 x 0.4 of 200 x 100 = 60 x 40 px, squared to 60 x 60
    assert crop.shape == (60, 60, 3)
    centre = crop[25:35, 25:35].reshape(-1, 3).mean(0)
    assert centre[0] > 200 and centre[1] < 60 and centre[2] < 60  # red (RGB) inside the like box
    palm = ds.image(2)
    assert palm[palm.shape[0] // 2, palm.shape[1] // 2, 2] > 200  # blue box
    with_bg = make_dataset(spec, split="train", no_gesture=True, margin=0.1)
    assert with_bg.classes == ["like", "palm", "no_gesture"] and len(with_bg) == 4
    assert with_bg.image(0).shape[0] > 60  # the margin grows the crop
    (tmp_path / "annotations" / "train" / "palm.json").write_text("{not json")
    with pytest.raises(DataError, match="palm.json: not a readable HaGRID annotation file"):
        make_dataset(spec, split="train")


@pytest.mark.parametrize("layout", ["onecls/a", "flat/images"])
def test_a_folder_with_one_class_is_a_data_error(runner, tmp_path, layout):
    """One class subfolder (or DIR/images/*.jpg, read as the class 'images') would train to an accuracy of 1.0 that
    means nothing: refused before training, naming the dataset, its class and the layout folder:DIR expects."""
    from PIL import Image

    folder = tmp_path / layout
    folder.mkdir(parents=True)
    for i in range(8):
        Image.new("RGB", (16, 16), (i * 30, 0, 0)).save(folder / f"{i}.jpg")
    root = folder.parent
    res = invoke(runner, "lora-train", "--backbone", "tiny-vit", "--dataset", f"folder:{root}", "--max-steps", "2", "--image-size", "16",
                 "--device", "cpu", "-r", tmp_path / "run")
    one_line_error(res, 1, f"dataset 'folder:{root}' has 1 class ('{folder.name}'); a classifier needs at least 2", "DIR/<class>/*.jpg")
    assert not (tmp_path / "run" / "lora").exists()
