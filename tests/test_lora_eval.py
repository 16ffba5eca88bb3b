"""`gx evaluate classify --from lora` and `gx infer classify --from lora` on one tiny LoRA run.

The run is trained once per module through the CLI (tiny-dinov2, 32 px, 96 samples per split, a few
epochs): evaluating on the training's own test split must reproduce the test accuracy it recorded.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from tests.conftest import invoke

QUICK = ["--dataset", "synthetic-hands", "--image-size", "32", "--max-samples", "96", "--batch-size", "16", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run dir with one finished `gx lora-train` of tiny-dinov2; returns (run path, its metrics.json)."""
    from typer.testing import CliRunner

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GX_HOME", str(tmp_path_factory.mktemp("gx_home_lora_eval")))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.delenv("GX_RUN_DIR", raising=False)
        run = tmp_path_factory.mktemp("lora_eval") / "run"
        # fp32: the evaluation below must reproduce the training's numbers, and infer is compared with an fp32 reload
        res = invoke(CliRunner(), "lora-train", "--backbone", "tiny-dinov2", *QUICK, "--epochs", "3", "--lr", "2e-2",
                     "--pool", "mean", "--patience", "0", "--precision", "fp32", "-r", run)
        assert res.exit_code == 0, res.output
        yield run, json.loads((run / "lora" / "tiny-dinov2" / "metrics.json").read_text())


def _clean_error(res, code: int, *needles: str) -> None:
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    for n in needles:
        assert n in res.output, res.output
    assert len([ln for ln in res.output.strip().splitlines() if ln.startswith("Error:")]) == 1


def test_evaluate_lora_reproduces_the_training_test_accuracy(trained, runner):
    import cv2

    run, metrics = trained
    res = invoke(runner, "evaluate", "classify", "--from", "lora", "--backbone", "tiny-dinov2", "--max-samples", "96",
                 "--device", "cpu", "-r", run)
    assert res.exit_code == 0, res.output
    out = json.loads((run / "eval" / "classify-lora-tiny-dinov2.json").read_text())
    assert out["from"] == "lora" and out["split"] == "test" and out["n"] == 96 == metrics["test"]["n"]
    assert out["accuracy"] == metrics["test"]["accuracy"]
    assert out["macro_f1"] == metrics["test"]["macro_f1"] and out["confusion"] == metrics["test"]["confusion"]
    assert {"weighted_precision", "weighted_recall", "macro_precision", "per_class"} <= set(out)
    img = cv2.imread(str(run / "eval" / "confusion-lora-tiny-dinov2.png"))
    assert img is not None and min(img.shape[:2]) > 100
    assert "accuracy" in res.output and "classify-lora-tiny-dinov2.json" in res.output

    # a probe result for the same backbone: the summary shows both side by side
    probe = {**out, "from": "probe", "accuracy": 0.125, "macro_f1": 0.1, "weighted_f1": 0.11}
    (run / "eval" / "classify-probe-tiny-dinov2.json").write_text(json.dumps(probe))
    res = invoke(runner, "evaluate", "classify", "--from", "lora", "--backbone", "tiny-dinov2", "--max-samples", "96",
                 "--device", "cpu", "-r", run)
    assert res.exit_code == 0 and "cached result" in res.output
    assert "probe vs lora (tiny-dinov2)" in res.output and "0.1250" in res.output and f"{out['accuracy']:.4f}" in res.output


def test_infer_lora_top1_matches_the_model(trained, runner, tmp_path):
    from gesture_cli.core.rundir import RunDir
    from gesture_cli.data import make_dataset
    from gesture_cli.data.sign_mnist import SIGN_MNIST_LETTERS
    from gesture_cli.tasks.classify import load_lora_classifier

    run, _ = trained
    ds = make_dataset("synthetic-hands", split="test", seed=0)
    idx = list(range(0, 360, 30))  # 12 images of different classes
    images = ds.batch(idx)  # uint8 [12, 28, 28]
    path = tmp_path / "hands.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", *[f"pixel{i + 1}" for i in range(784)]])
        for i, img in zip(idx, images, strict=True):
            letter = ds.classes[ds.labels[i]]
            w.writerow([SIGN_MNIST_LETTERS.index(letter) + (letter > "J"), *img.reshape(-1).tolist()])

    res = invoke(runner, "infer", "classify", "--from", "lora", "--backbone", "tiny-dinov2", "--input", path, "--top-k", "3",
                 "--json", "--device", "cpu", "-r", run)
    assert res.exit_code == 0, res.output
    preds = json.loads(res.stdout)
    assert len(preds) == 12 and all(len(p["top_k"]) == 3 for p in preds)
    assert [p["label"] for p in preds] == [ds.classes[ds.labels[i]] for i in idx]

    model, classes, info, preprocess = load_lora_classifier(RunDir(run), "tiny-dinov2")
    with torch.no_grad():
        probs = torch.softmax(model(preprocess(torch.from_numpy(ds.batch(idx, size=info["image_size"])))), -1).numpy()
    assert [p["top_k"][0]["class"] for p in preds] == [classes[j] for j in probs.argmax(1)]
    np.testing.assert_allclose([p["top_k"][0]["prob"] for p in preds], probs.max(1), atol=1e-4)
    written = json.loads((run / "infer" / "classify-lora-tiny-dinov2.json").read_text())
    assert written["from"] == "lora" and written["n"] == 12 and written["predictions"] == preds

    table = invoke(runner, "infer", "classify", "--from", "lora", "--input", path, "--device", "cpu", "-r", run)
    assert table.exit_code == 0 and "classify (lora, tiny-dinov2)" in table.output and "top-1 accuracy" in table.output


def test_lora_errors_are_one_line(trained, runner, tmp_path):
    run, _ = trained
    bad = tmp_path / "bad.csv"
    bad.write_text(",".join(["0"] * 785) + "\n" + ",".join(["0"] * 100) + "\n")
    res = invoke(runner, "infer", "classify", "--from", "lora", "--input", bad, "--device", "cpu", "-r", run)
    _clean_error(res, 1, str(bad), "row 2", "has 100 columns")
    res = invoke(runner, "evaluate", "classify", "--from", "lora", "--backbone", "tiny-vit", "-r", run)
    _clean_error(res, 1, "no LoRA artifact in", "lora/tiny-vit")


def test_evaluating_the_split_training_drew_from_scores_only_what_it_held_out(runner, tmp_path):
    """HaGRID's sample has one split, val: training draws train and validation from it, so evaluating on it scores
    the held-out part only (it once scored all 45 images, 30 of them trained on)."""
    from conftest import SHARED_REAL

    if not (SHARED_REAL / "hagrid").is_dir():
        pytest.skip("shared HaGRID sample not found")
    run = tmp_path / "run"
    res = invoke(runner, "lora-train", "-b", "tiny-vit", "-d", f"hagrid:{SHARED_REAL / 'hagrid'}", "--method", "head", "--image-size", "16",
                 "--max-steps", "2", "--batch-size", "4", "--precision", "fp32", "-r", run)
    assert res.exit_code == 0, res.output
    res = invoke(runner, "evaluate", "classify", "--from", "lora", "-b", "tiny-vit", "--split", "val", "-r", run)
    assert res.exit_code == 0, res.output
    assert "is the one training drew from: scoring the 15 images it held out for validation" in res.output
    ev = json.loads((run / "eval" / "classify-lora-tiny-vit.json").read_text())
    assert ev["n"] == 15 and ev["scored"] == "the images training held out for validation"
