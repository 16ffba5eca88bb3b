"""`gx extract-features` end to end: artifacts, cache, --force, and bad input with no artifact."""

from __future__ import annotations

import json

import pytest

from tests.conftest import invoke


def _features(path):
    from gesture_cli.core.artifacts import load_tensors

    return load_tensors(path, kind="features")


def test_extract_synthetic_hands_writes_features_and_manifest(runner, tmp_path):
    run = tmp_path / "run"
    res = invoke(runner, "extract-features", "-b", "tiny-dinov2", "-d", "synthetic-hands", "-r", run, "--max-samples", "96", "--pool", "cls+mean", "--precision", "fp32")
    assert res.exit_code == 0, res.output
    out = run / "features" / "tiny-dinov2"
    t, meta = _features(out / "train.safetensors")
    assert t["features"].shape == (96, 128)  # cls+mean of a 64-d model
    assert t["labels"].min() >= 0 and t["labels"].max() < 24
    assert meta["backbone"]["family"] == "dinov2" and len(meta["classes"]) == 24 and meta["classes"][0] == "A"
    te, _ = _features(out / "test.safetensors")
    assert te["features"].shape == (96, 128)
    m = json.loads((out / "meta.json").read_text())
    assert m["feature_dim"] == 128 and set(m["splits"]) == {"train", "test"} and m["dtype"] == "float32"
    steps = json.loads((run / "run.json").read_text())["steps"]
    assert steps[-1]["command"] == "extract-features" and steps[-1]["status"] == "ok"
    assert steps[-1]["config"]["backbone"] == "tiny-dinov2" and steps[-1]["metrics"]["images"] == 192


def test_cache_hit_then_force(runner, tmp_path):
    args = ["extract-features", "-b", "tiny-vit", "-d", "synthetic-hands", "-r", tmp_path / "r", "--max-samples", "32", "--split", "test"]
    assert invoke(runner, *args).exit_code == 0
    res = invoke(runner, *args)
    assert res.exit_code == 0 and "cached result" in res.output
    res = invoke(runner, *args, "--force")
    assert res.exit_code == 0 and "cached" not in res.output
    statuses = [s["status"] for s in json.loads((tmp_path / "r" / "run.json").read_text())["steps"]]
    assert statuses == ["ok", "ok"]


def test_cache_and_resume_are_keyed_on_the_precision_auto_resolves_to(runner, tmp_path, monkeypatch):
    """Keyed on `auto` as typed, features made in fp32 were reused (and a stopped extraction resumed, mixing fp32
    and bf16 shards under one meta.json) where auto now means bf16. The resolved precision is the key now."""
    run = tmp_path / "r"
    args = ["extract-features", "-b", "tiny-vit", "-d", "synthetic-hands", "-r", run, "--max-samples", "32", "--split", "test",
            "--device", "cpu"]
    meta = run / "features" / "tiny-vit" / "meta.json"
    monkeypatch.setenv("GX_NATIVE_BF16", "0")
    assert invoke(runner, *args).exit_code == 0
    assert json.loads(meta.read_text())["precision"] == "fp32"
    monkeypatch.setenv("GX_NATIVE_BF16", "1")
    res = invoke(runner, *args)
    assert res.exit_code == 0 and "cached" not in res.output, res.output
    assert json.loads(meta.read_text())["precision"] == "bf16"
    monkeypatch.setenv("GX_NATIVE_BF16", "0")
    res = invoke(runner, *args, "--precision", "bf16")  # the same precision, named: the bf16 features are reused
    assert res.exit_code == 0 and "cached result" in res.output, res.output


def test_features_are_deterministic_across_runs(runner, tmp_path):
    for name in ("a", "b"):
        assert invoke(runner, "extract-features", "-b", "tiny-dinov3", "-d", "synthetic-hands", "-r", tmp_path / name, "--max-samples", "16", "--split", "train").exit_code == 0
    a, _ = _features(tmp_path / "a/features/tiny-dinov3/train.safetensors")
    b, _ = _features(tmp_path / "b/features/tiny-dinov3/train.safetensors")
    assert (a["features"] == b["features"]).all()


def test_real_sign_mnist_csv(runner, tmp_path, real_data):
    csv = real_data / "sign_mnist" / "ahmed-mo505_sign_mnist_train_120rows_header.csv"
    res = invoke(runner, "extract-features", "-b", "tiny-vit", "-d", f"csv:{csv}", "-r", tmp_path / "r", "--split", "all")
    # this copy's labels are already 0..23 (it contains 9): refused, with the flag that fixes it
    assert res.exit_code == 1 and "--dataset-opt label_map=contiguous" in res.output
    args = ["extract-features", "-b", "tiny-vit", "-d", f"csv:{csv}", "-r", tmp_path / "r", "--split", "all", "--dataset-opt", "label_map=contiguous"]
    res = invoke(runner, *args)
    assert res.exit_code == 0, res.output
    t, meta = _features(tmp_path / "r/features/tiny-vit/all.safetensors")
    assert t["features"].shape[0] == 120
    assert len(meta["classes"]) == 24


@pytest.mark.parametrize(
    "content, needle",
    [
        ("", "empty"),
        ("label," + ",".join(f"pixel{i}" for i in range(1, 785)) + "\n3," + ",".join(["0"] * 700) + "\n", "785"),
        ("3," + ",".join(["0"] * 100 + ["x"] + ["0"] * 683) + "\n", "pixel101"),
        ("30," + ",".join(["0"] * 784) + "\n", "label"),
    ],
    ids=["empty", "columns", "non-numeric", "label-range"],
)
def test_bad_csv_is_one_line_error_and_no_artifact(runner, tmp_path, content, needle):
    csv = tmp_path / "bad.csv"
    csv.write_text(content)
    res = invoke(runner, "extract-features", "-b", "tiny-vit", "-d", f"csv:{csv}", "-r", tmp_path / "r")
    assert res.exit_code == 1, res.output
    assert "bad.csv" in res.output and needle in res.output
    assert "Traceback" not in res.output
    assert len([ln for ln in res.output.strip().splitlines() if ln.strip()]) == 1
    assert not (tmp_path / "r" / "features").exists()


def test_canonical_real_csv_without_header(runner, tmp_path, real_data):
    csv = real_data / "sign_mnist" / "ritikaroy72_sign_mnist_test_11rows_noheader.csv"
    res = invoke(runner, "extract-features", "-b", "tiny-dinov2", "-d", f"csv:{csv}", "-r", tmp_path / "r", "--split", "all")
    assert res.exit_code == 0, res.output
    t, meta = _features(tmp_path / "r/features/tiny-dinov2/all.safetensors")
    assert t["features"].shape[0] == 11


def test_bad_dataset_opt(runner, tmp_path):
    res = invoke(runner, "extract-features", "-b", "tiny-vit", "-d", "synthetic-hands", "--dataset-opt", "train_per_clas=3", "-r", tmp_path / "r")
    assert res.exit_code == 2 and "did you mean 'train_per_class'" in res.output
    res = invoke(runner, "extract-features", "-b", "tiny-vit", "-d", "synthetic-hands", "--dataset-opt", "oops", "-r", tmp_path / "r")
    assert res.exit_code == 2 and "KEY=VALUE" in res.output


def test_missing_file_and_unknown_names(runner, tmp_path):
    res = invoke(runner, "extract-features", "-b", "tiny-vit", "-d", f"csv:{tmp_path / 'nope.csv'}", "-r", tmp_path / "r")
    assert res.exit_code in (1, 2) and "nope.csv" in res.output and "Traceback" not in res.output
    res = invoke(runner, "extract-features", "-b", "dinov2-smal", "-d", "synthetic-hands", "-r", tmp_path / "r")
    assert res.exit_code == 2 and "did you mean 'dinov2-small'" in res.output
    res = invoke(runner, "extract-features", "-b", "tiny-vit", "-d", "synthetic-hand", "-r", tmp_path / "r")
    assert res.exit_code == 2 and "did you mean 'synthetic-hands'" in res.output
    res = invoke(runner, "extract-features", "-b", "tiny-vit", "-d", "synthetic-hands", "--pool", "max", "-r", tmp_path / "r")
    assert res.exit_code == 2 and "--pool 'max'" in res.output
    assert not (tmp_path / "r" / "features").exists()


def test_missing_hub_model_names_gx_download(runner, tmp_path):
    res = invoke(runner, "extract-features", "-b", "dinov2-small", "-d", "synthetic-hands", "-r", tmp_path / "r", "--max-samples", "4")
    assert res.exit_code == 1
    assert "gx download dinov2-small" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "r" / "features").exists()


def test_images_counts_each_image_once_when_all_is_assembled_from_its_parts(runner, tmp_path):
    """csv: has train, test and 'all' (their rows, not a copy): the step's image count is the file's rows."""
    from conftest import SHARED_REAL

    path = SHARED_REAL / "sign_mnist" / "ritikaroy72_sign_mnist_train_187rows_noheader.csv"
    if not path.is_file():
        pytest.skip("shared Sign MNIST sample not found")
    rows = sum(1 for line in path.read_text().splitlines() if line.strip())
    res = invoke(runner, "extract-features", "-b", "tiny-vit", "-d", f"csv:{path}", "--image-size", "16", "--precision", "fp32",
                 "-r", tmp_path / "run")
    assert res.exit_code == 0, res.output
    step = json.loads((tmp_path / "run" / "run.json").read_text())["steps"][-1]
    splits = json.loads((tmp_path / "run" / "features" / "tiny-vit" / "meta.json").read_text())["splits"]
    assert "all" in splits and splits["train"]["images"] + splits["test"]["images"] == rows
    assert step["metrics"]["images"] == rows


def test_feature_generators_never_leave_inference_mode_on_in_the_caller():
    """A generator that yields inside `torch.inference_mode()` keeps it on in the caller's thread between batches,
    and for good when it is abandoned (an error mid-extraction): a training run later in the same process then
    made inference tensors and failed ("Inference tensors cannot be saved for backward")."""
    import gc

    import numpy as np
    import torch

    from gesture_cli.data import make_dataset
    from gesture_cli.models.backbones import build_backbone
    from gesture_cli.models.features import iter_batch_features
    from gesture_cli.models.pca import iter_patch_batches

    bb = build_backbone("tiny-vit", image_size=16)
    ds = make_dataset("synthetic-hands", split="test", seed=0, train_per_class=1, test_per_class=1)
    feats = iter_batch_features(bb, ds, [np.arange(4), np.arange(4, 8)], pool="cls", batch_size=4)
    first = next(feats)
    assert first.shape[0] == 4 and not torch.is_inference_mode_enabled()  # between batches
    frames = ((np.zeros((20, 20, 3), np.uint8), i) for i in range(6))
    patches = iter_patch_batches(bb, frames, batch_size=2)
    next(patches)
    assert not torch.is_inference_mode_enabled()
    del feats, patches  # abandoned mid-way
    gc.collect()
    w = torch.nn.Parameter(torch.ones(3))
    (w * torch.ones(3)).sum().backward()  # what a later trainer does: no inference tensors anywhere
    assert not torch.is_inference_mode_enabled() and w.grad is not None
