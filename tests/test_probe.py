"""`gx probe`, `gx evaluate classify`, `gx infer classify` and the probe core (solvers, k-NN, metrics).

Two tiny random-init backbones on `synthetic-hands`, extracted once per module through the CLI at
8 px (one 8x8 patch: pooled features of a random ViT keep the most information about the whole
image there; at the default 64 px they are near chance level).
"""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from tests.conftest import invoke, one_line_error

BACKBONES = ("tiny-dinov2", "tiny-vit")
CHANCE = 1 / 24
FAST = ("--max-iter", "100")  # the tiny features are ill-conditioned: cap L-BFGS for test speed


@pytest.fixture(scope="module")
def module_env(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("gx_home_probe")
        mp.setenv("GX_HOME", str(home))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.delenv("GX_RUN_DIR", raising=False)
        yield


@pytest.fixture(scope="module")
def probed(module_env, tmp_path_factory):
    """A run dir with features of both backbones and one finished `gx probe`; returns (run path, probe output)."""
    from typer.testing import CliRunner

    runner = CliRunner()
    run = tmp_path_factory.mktemp("probe") / "run"
    for bb in BACKBONES:
        res = invoke(runner, "extract-features", "--backbone", bb, "--dataset", "synthetic-hands", "--image-size", "8", "-r", run)
        assert res.exit_code == 0, res.output
    res = invoke(runner, "probe", "-r", run, *FAST)
    assert res.exit_code == 0, res.output
    return run, res.output


def _png_ok(path, min_side=100):
    import cv2

    img = cv2.imread(str(path))
    assert img is not None, f"{path} does not decode"
    assert img.ndim == 3 and min(img.shape[:2]) >= min_side, img.shape
    return img


def _clean_error(res, code: int, *needles: str) -> None:
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    for n in needles:
        assert n in res.output, res.output
    assert len([ln for ln in res.output.strip().splitlines() if ln.startswith("Error:")]) == 1


# ---- gx probe ------------------------------------------------------------------------------


def test_probe_writes_classifiers_metrics_plots_and_summary(probed):
    from gesture_cli.core.artifacts import load_tensors
    from gesture_cli.data.sign_mnist import SIGN_MNIST_LETTERS

    run, output = probed
    for bb in BACKBONES:
        d = run / "probe" / bb
        m = json.loads((d / "metrics.json").read_text())
        assert m["kind"] == "probe-metrics" and m["backbone"] == bb
        assert m["accuracy"] >= 3 * CHANCE, (bb, m["accuracy"])
        assert {"macro_precision", "macro_recall", "macro_f1", "weighted_precision", "weighted_recall", "weighted_f1",
                "knn10_accuracy", "knn20_accuracy"} <= set(m)
        assert [r["class"] for r in m["per_class"]] == SIGN_MNIST_LETTERS
        assert len(m["sweep"]) == 8 and m["c"] in [p["c"] for p in m["sweep"]]
        tensors, meta = load_tensors(d / "classifier.safetensors", kind="linear-probe")
        assert tuple(tensors["weight"].shape) == (24, 64) and tuple(tensors["scaler_mean"].shape) == (64,)
        assert meta["classes"] == SIGN_MNIST_LETTERS and meta["c"] == m["c"] and meta["feature_dim"] == 64
        assert meta["pool"] == "cls" and meta["backbone"]["name"] == bb and meta["backbone"]["image_size"] == 8
        _png_ok(d / "confusion.png")
        assert not list(run.rglob("*.pkl")) and not list(run.rglob("*.joblib"))
    with open(run / "probe" / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["backbone"] for r in rows] == list(BACKBONES)
    md = (run / "probe" / "summary.md").read_text()
    assert sum(line.startswith(f"| {bb} |") for bb in BACKBONES for line in md.splitlines()) == 2
    _png_ok(run / "probe" / "summary.png")
    assert "Linear probes" in output and all(bb in output for bb in BACKBONES)
    steps = json.loads((run / "run.json").read_text())["steps"]
    assert [s["status"] for s in steps if s["command"] == "probe"] == ["ok", "ok"]
    assert [s["status"] for s in steps if s["command"] == "probe-summary"] == ["ok"]


def test_second_probe_is_a_cache_hit(probed, runner):
    run, _ = probed
    n_steps = len(json.loads((run / "run.json").read_text())["steps"])
    res = invoke(runner, "probe", "-r", run, *FAST)
    assert res.exit_code == 0, res.output
    assert "cached result for tiny-dinov2, tiny-vit" in res.output
    assert len(json.loads((run / "run.json").read_text())["steps"]) == n_steps  # nothing recomputed


def test_probe_fixed_c_and_tsne(probed, runner, tmp_path):
    run, _ = probed
    other = tmp_path / "run"
    shutil.copytree(run / "features" / "tiny-vit", other / "features" / "tiny-vit")
    res = invoke(runner, "probe", "-r", other, "--backbones", "tiny-vit", "--c", "0.5", "--tsne", *FAST)
    assert res.exit_code == 0, res.output
    m = json.loads((other / "probe" / "tiny-vit" / "metrics.json").read_text())
    assert m["c"] == 0.5 and m["sweep"] == [] and m["c_chosen_by"] == "fixed (--c)"
    _png_ok(other / "probe" / "tiny-vit" / "tsne.png")
    with open(other / "probe" / "summary.csv", newline="") as f:
        assert [r["backbone"] for r in csv.DictReader(f)] == ["tiny-vit"]


def test_probe_without_features_names_extract_features(runner, tmp_path):
    res = invoke(runner, "probe", "-r", tmp_path / "empty")
    _clean_error(res, 1, "no extracted features", "run `gx extract-features")
    res = invoke(runner, "probe", "-r", tmp_path / "empty", "--backbones", "tiny-vit")
    _clean_error(res, 1, "no 'train' features for backbone 'tiny-vit'", "gx extract-features --backbone tiny-vit")


def test_probe_of_one_class_is_a_data_error_like_lora_train(runner, tmp_path):
    """A probe of features from a one-class folder was refused as a usage error (exit 2) in words lora-train does not
    use: now the data error lora-train gives, naming the dataset, its class and the layout folder:DIR expects."""
    from PIL import Image

    folder = tmp_path / "onecls" / "a"
    folder.mkdir(parents=True)
    for i in range(10):
        Image.new("RGB", (16, 16), (i * 20, 0, 0)).save(folder / f"{i}.jpg")
    spec = f"folder:{folder.parent}"
    res = invoke(runner, "extract-features", "--backbone", "tiny-vit", "--dataset", spec, "--device", "cpu", "-r", tmp_path / "r")
    assert res.exit_code == 0, res.output
    res = invoke(runner, "probe", "-r", tmp_path / "r", "--device", "cpu")
    _clean_error(res, 1, f"dataset '{spec}' has 1 class ('a'); a probe needs at least 2", "DIR/<class>/*.jpg")
    assert not (tmp_path / "r" / "probe" / "tiny-vit").exists()


def test_the_command_an_error_suggests_keeps_a_spaced_run_dir_one_word(runner, tmp_path):
    """`run gx extract-features ... -r my runs/x` split the run dir in two when pasted into a shell."""
    run = tmp_path / "my runs" / "x"
    res = invoke(runner, "probe", "-r", run)
    _clean_error(res, 1, f"run `gx extract-features --backbone NAME -r '{run}'` first")


def test_probe_bad_solver_is_usage_error(runner, tmp_path):
    res = invoke(runner, "probe", "-r", tmp_path / "r", "--solver", "sklaern")
    _clean_error(res, 2, "unknown solver 'sklaern' (did you mean 'sklearn'?)")


# ---- gx evaluate / gx infer ---------------------------------------------------------------------


def test_evaluate_reuses_features_and_matches_probe(probed, runner):
    run, _ = probed
    res = invoke(runner, "evaluate", "classify", "--from", "probe", "--backbone", "tiny-dinov2", "-r", run)
    assert res.exit_code == 0, res.output
    ev = json.loads((run / "eval" / "classify-probe-tiny-dinov2.json").read_text())
    m = json.loads((run / "probe" / "tiny-dinov2" / "metrics.json").read_text())
    assert ev["features"] == "reused" and ev["n"] == m["test_samples"] == 360
    for k in ("accuracy", "macro_f1", "weighted_f1", "macro_precision", "weighted_recall"):
        assert ev[k] == pytest.approx(m[k]), k
    assert len(ev["per_class"]) == 24 and "accuracy" in res.output


def _write_hands_csv(path, n: int, *, header: bool = True, contiguous: bool = False) -> np.ndarray:
    """The first n synthetic-hands test images as a Sign MNIST CSV (raw labels 0..24 without 9, or the letter
    indices 0..23 of a remapped copy)."""
    from gesture_cli.data import make_dataset

    ds = make_dataset("synthetic-hands", split="test", seed=0)
    raw = ds.labels[:n] if contiguous else ds.labels[:n] + (ds.labels[:n] >= 9)  # J = 9 is skipped in Sign MNIST's own
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow(["label"] + [f"pixel{i}" for i in range(1, 785)])
        for lab, img in zip(raw, ds.images[:n], strict=True):
            w.writerow([int(lab), *img.reshape(-1).tolist()])
    return ds.images[:n]


def _probe_predictions(run, bb: str, n: int) -> list[str]:
    from gesture_cli.core.rundir import RunDir
    from gesture_cli.tasks.features import load_features
    from gesture_cli.tasks.probe import load_classifier

    probe, meta = load_classifier(run / "probe" / bb / "classifier.safetensors")
    x, _, _ = load_features(RunDir(run), bb, "test")
    return [meta["classes"][i] for i in probe.predict(x.numpy()[:n])]


def test_infer_csv_and_evaluate_on_the_fly_agree_with_the_probe(probed, runner, tmp_path):
    run, _ = probed
    data = tmp_path / "hands.csv"
    _write_hands_csv(data, 40)
    res = invoke(runner, "infer", "classify", "--from", "probe", "--backbone", "tiny-vit", "--input", data, "--top-k", "3", "--json", "-r", run)
    assert res.exit_code == 0, res.output
    preds = json.loads(res.stdout)
    assert len(preds) == 40 and preds[0]["input"] == "hands.csv row 1"
    top1 = [p["top_k"][0]["class"] for p in preds]
    assert top1 == _probe_predictions(run, "tiny-vit", 40)
    probs = [t["prob"] for t in preds[0]["top_k"]]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-6
    saved = json.loads((run / "infer" / "classify-probe-tiny-vit.json").read_text())
    assert saved["n"] == 40 and "accuracy" in saved  # the CSV's label column gives an accuracy

    res = invoke(runner, "evaluate", "classify", "--from", "probe", "--backbone", "tiny-vit", "--dataset", f"csv:{data}", "--split", "all", "-r", run)
    assert res.exit_code == 0, res.output
    ev = json.loads((run / "eval" / "classify-probe-tiny-vit.json").read_text())
    assert ev["features"] == "extracted" and ev["n"] == 40
    assert ev["accuracy"] == pytest.approx(saved["accuracy"])

    res = invoke(runner, "infer", "classify", "--backbone", "tiny-vit", "--input", data, "-r", run)  # Rich table
    assert res.exit_code == 0 and "hands.csv row 1" in res.output and "#3" in res.output


def test_infer_reads_a_csv_remapped_to_0_23(probed, runner, tmp_path):
    """A copy of Sign MNIST whose labels were remapped to 0..23 (it has a 9, which the original skips) gives the
    same letters, and so the same accuracy, as the original labels."""
    run, _ = probed
    accuracy = {}
    for contiguous in (False, True):
        data = tmp_path / f"hands-{contiguous}.csv"
        _write_hands_csv(data, 60, contiguous=contiguous)
        assert (9 in {int(line.split(",")[0]) for line in data.read_text().splitlines()[1:]}) == contiguous
        res = invoke(runner, "infer", "classify", "--from", "probe", "--backbone", "tiny-vit", "--input", data, "--json", "-r", run)
        assert res.exit_code == 0, res.output
        accuracy[contiguous] = json.loads((run / "infer" / "classify-probe-tiny-vit.json").read_text())["accuracy"]
    assert accuracy[True] == accuracy[False]
    bad = tmp_path / "bad.csv"
    bad.write_text("label," + ",".join(f"p{i}" for i in range(784)) + "\n" + "\n".join(f"{v}," + ",".join(["0"] * 784) for v in (9, 24)) + "\n")
    res = invoke(runner, "infer", "classify", "--from", "probe", "--backbone", "tiny-vit", "--input", bad, "-r", run)
    one_line_error(res, 1, "row 2: label 24 is outside 0..23")
    unsure = tmp_path / "unsure.csv"  # neither a 9 nor a 24: read as Sign MNIST's own, and said to be unsure
    unsure.write_text("label," + ",".join(f"p{i}" for i in range(784)) + "\n" + "\n".join(f"{v}," + ",".join(["0"] * 784) for v in (3, 12)) + "\n")
    res = invoke(runner, "infer", "classify", "--from", "probe", "--backbone", "tiny-vit", "--input", unsure, "-r", run)
    assert res.exit_code == 0 and "neither a 9 nor a 24" in res.output, res.output
    assert [r["label"] for r in json.loads((run / "infer" / "classify-probe-tiny-vit.json").read_text())["predictions"]] == ["D", "M"]


def test_infer_image_file_and_folder(probed, runner, tmp_path):
    import cv2

    from gesture_cli.data import make_dataset

    run, _ = probed
    ds = make_dataset("synthetic-hands", split="test", seed=0)
    folder = tmp_path / "imgs"
    for i in range(5):
        sub = folder / ds.classes[ds.labels[i]]
        sub.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(sub / f"img{i}.png"), ds.images[i])
    res = invoke(runner, "infer", "classify", "--backbone", "tiny-dinov2", "--input", folder, "--json", "-r", run)
    assert res.exit_code == 0, res.output
    preds = json.loads(res.stdout)
    assert [p["label"] for p in preds] == [ds.classes[ds.labels[i]] for i in range(5)]
    expected = _probe_predictions(run, "tiny-dinov2", 5)
    assert [p["top_k"][0]["class"] for p in preds] == expected
    one = next(folder.rglob("img0.png"))
    res = invoke(runner, "infer", "classify", "--backbone", "tiny-dinov2", "--input", one, "--json", "-r", run)
    assert res.exit_code == 0, res.output
    assert [p["top_k"][0]["class"] for p in json.loads(res.stdout)] == expected[:1]


def test_infer_csv_row_of_wrong_width_names_file_and_row(probed, runner, tmp_path):
    run, _ = probed
    bad = tmp_path / "bad.csv"
    bad.write_text(",".join(["0"] * 785) + "\n" + ",".join(["0"] * 700) + "\n")
    res = invoke(runner, "infer", "classify", "--backbone", "tiny-vit", "--input", bad, "-r", run)
    _clean_error(res, 1, "bad.csv: row 2 (line 2): has 700 columns; expected 784 pixel values")
    bad.write_text(",".join(["0"] * 784) + "\n" + ",".join(["0"] * 783 + ["300"]) + "\n")
    res = invoke(runner, "infer", "classify", "--backbone", "tiny-vit", "--input", bad, "-r", run)
    _clean_error(res, 1, "bad.csv: row 2 (line 2): pixel 784", "0..255")


def test_features_of_another_dimension_than_the_classifier(probed, runner, tmp_path):
    import torch

    from gesture_cli.core.artifacts import load_tensors, save_tensors

    run, _ = probed
    other = tmp_path / "run"
    shutil.copytree(run, other)
    feats = other / "features" / "tiny-vit" / "test.safetensors"
    tensors, meta = load_tensors(feats, kind="features")
    n = tensors["features"].shape[0]
    save_tensors(feats, {"features": torch.randn(n, 128), "labels": tensors["labels"]}, kind="features", meta=meta)
    res = invoke(runner, "evaluate", "classify", "--from", "probe", "--backbone", "tiny-vit", "-r", other)
    _clean_error(res, 1, "has 128-d features but", "expects 64-d")


def test_evaluate_and_infer_usage_errors(probed, runner, tmp_path):
    run, _ = probed
    res = invoke(runner, "evaluate", "classify", "--from", "lora", "--backbone", "tiny-vit", "-r", run)
    _clean_error(res, 1, "no LoRA artifact in", "lora/tiny-vit", "run `gx lora-train --backbone tiny-vit")  # a missing artifact: exit 1
    res = invoke(runner, "infer", "classify", "--from", "lora", "--backbone", "tiny-vit", "--input", run, "-r", run)
    _clean_error(res, 1, "no LoRA artifact in")
    res = invoke(runner, "evaluate", "clasify", "-r", run)
    _clean_error(res, 2, "unknown task 'clasify' (did you mean 'classify'?)")
    res = invoke(runner, "evaluate", "classify", "-r", run)  # two probed backbones: which one?
    _clean_error(res, 2, "pass --backbone, one of tiny-dinov2, tiny-vit")
    res = invoke(runner, "evaluate", "classify", "--backbone", "tiny-ijepa", "-r", run)
    _clean_error(res, 1, "no probe classifier for backbone 'tiny-ijepa'", "gx probe --backbones tiny-ijepa")


# ---- the core ----------------------------------------------------------------------------------


def _blobs(n=1500, d=32, k=6, seed=0):
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=n, n_features=d, n_informative=12, n_redundant=4, n_classes=k, n_clusters_per_class=1,
                               class_sep=1.0, random_state=seed)
    x = (x * np.linspace(1, 50, d)).astype(np.float32)  # unequal column scales, like raw backbone features
    return x[: n * 4 // 5], y[: n * 4 // 5], x[n * 4 // 5 :], y[n * 4 // 5 :]


def test_torch_and_sklearn_solvers_agree():
    from gesture_cli.eval.probe import c_grid, fit_probe

    xtr, ytr, xte, yte = _blobs()
    accs = {}
    for solver in ("sklearn", "torch"):
        p = fit_probe(xtr, ytr, num_classes=6, grid=c_grid(), solver=solver, device="cpu")
        assert p.solver == solver and len(p.sweep) == 8
        accs[solver] = float((p.predict(xte) == yte).mean())
    assert accs["sklearn"] > 0.5
    assert abs(accs["sklearn"] - accs["torch"]) <= 0.005, accs
    # the same objective: at one fixed C both reach the same weights
    ps = fit_probe(xtr, ytr, num_classes=6, c=0.1, solver="sklearn")
    pt = fit_probe(xtr, ytr, num_classes=6, c=0.1, solver="torch")
    assert np.abs(ps.weight - pt.weight).max() < 2e-3 * max(1.0, np.abs(ps.weight).max())


def test_absent_class_is_never_predicted_and_binary_works():
    from gesture_cli.eval.probe import fit_probe

    xtr, ytr, xte, _ = _blobs(k=3)
    p = fit_probe(xtr, ytr, num_classes=4, c=1.0)  # class 3 has no sample
    assert p.weight.shape == (4, 32) and (p.predict(xte) != 3).all()
    keep = ytr < 2
    b = fit_probe(xtr[keep], ytr[keep], num_classes=2, c=1.0)
    assert b.weight.shape == (2, 32) and np.allclose(b.predict_proba(xte).sum(axis=1), 1.0, atol=1e-5)


def test_knn_matches_a_direct_computation():
    from gesture_cli.eval.probe import knn_accuracy

    xtr, ytr, xte, yte = _blobs(n=600)
    got = knn_accuracy(xtr, ytr, xte, yte, num_classes=6, ks=(1, 10), temperature=0.07, chunk=37)
    a = xtr / np.linalg.norm(xtr, axis=1, keepdims=True)
    q = xte / np.linalg.norm(xte, axis=1, keepdims=True)
    sim = q @ a.T
    for k in (1, 10):
        idx = np.argsort(-sim, axis=1)[:, :k]
        votes = np.zeros((len(q), 6))
        for i in range(len(q)):
            np.add.at(votes[i], ytr[idx[i]], np.exp(sim[i, idx[i]] / 0.07))
        assert got[k] == pytest.approx((votes.argmax(1) == yte).mean(), abs=1 / len(q))


def test_metrics_match_scikit_learn():
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    from gesture_cli.eval.classify import classification_metrics

    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 300)
    p = np.where(rng.random(300) < 0.6, y, rng.integers(0, 6, 300))  # class 5 only ever predicted
    m = classification_metrics(y, p, list("ABCDEF"))
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p))
    for avg in ("macro", "weighted"):
        pr, rc, f1, _ = precision_recall_fscore_support(y, p, average=avg, zero_division=0)
        assert (m[f"{avg}_precision"], m[f"{avg}_recall"], m[f"{avg}_f1"]) == pytest.approx((pr, rc, f1), abs=1e-6)
    assert m["per_class"][5] == {"class": "F", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert np.asarray(m["confusion"]).sum() == 300
