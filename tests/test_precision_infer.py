"""`--precision` on every evaluate / infer / gradcam path (DESIGN section 8), on tiny models trained once per module.

One run dir holds artifacts trained with an explicit `--precision bf16` (so on any CPU): a LoRA classifier,
a probe on bf16 features, a segmentation head, a keypoint model and a translator, all on tiny models.
Every path runs at fp32 and at bf16: exit 0, the "precision:" line once, finite numbers, and the precision
asked for in its JSON and its step metrics (what `gx report` shows). Without --precision each follows its
artifact: bf16 where the CPU multiplies bf16 natively (GX_NATIVE_BF16=1), else fp32 (GX_NATIVE_BF16=0); an
fp32 artifact runs in fp32 even where auto would pick bf16.
"""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from tests.conftest import invoke, one_line_error

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = ["--device", "cpu"]
HANDS = ["--dataset", "synthetic-hands", "--image-size", "32", "--max-samples", "48", "--batch-size", "16"]
LORA = ["lora-train", "--backbone", "tiny-dinov2", *HANDS, "--epochs", "1", "--pool", "mean", "--patience", "0"]
SCENES = ["--dataset", "synthetic-scenes", *(a for o in ("size=48", "train_images=16", "val_images=4", "test_images=4") for a in ("--dataset-opt", o))]
SEGMENT = ["segment-train", "--backbone", "tiny-dinov2", *SCENES, "--cache-features", "--epochs", "1", "--batch-size", "8"]
KEYPOINT = ["keypoint-train", "--backbone", "tiny-dinov2", "--method", "frozen", "--image-size", "32", "--max-steps", "4", "--batch-size", "8",
            *(a for o in ("train_samples=32", "eval_samples=8", "side=32", "clutter=false") for a in ("--dataset-opt", o))]
SIGN_OPTS = ("train_size=32", "val_size=8", "test_size=8", "signers=1", "max_glosses=3")
TRANSLATE = ["pose-finetune", "--dataset", "synthetic-signs", *(a for o in SIGN_OPTS for a in ("--dataset-opt", o)),
             *(a for o in ("d_model=32", "n_layers=1", "n_heads=2", "gcn_dims=16") for a in ("--encoder-opt", o)),
             "--keypoints", "body,hands", "--max-frames", "8", "--text-model", "tiny-umt5", "--bridge", "direct", "--epochs", "1",
             "--batch-size", "16", "--patience", "0"]


def _train(runner, run, *commands: list[str], precision: str) -> None:
    for args in commands:
        res = invoke(runner, *args, "--precision", precision, *CPU, "-r", run)
        assert res.exit_code == 0, res.output


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory):
    """(run dir, inputs) with every kind of artifact trained in bf16, and inputs for `gx infer`."""
    from typer.testing import CliRunner

    from gesture_cli.data import make_dataset
    from gesture_cli.data.pose import make_pose_dataset
    from gesture_cli.data.registry import parse_dataset

    root = tmp_path_factory.mktemp("precision_infer")
    run = root / "run"
    with pytest.MonkeyPatch.context() as mp:  # module scope: the autouse env fixture has not run yet
        mp.setenv("GX_HOME", str(root / "gx_home"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.delenv("GX_RUN_DIR", raising=False)
        runner = CliRunner()
        _train(runner, run, [*LORA, "--merge"], ["extract-features", "--backbone", "tiny-dinov2", "--dataset", "synthetic-hands", "--max-samples", "48"],
               SEGMENT, KEYPOINT, TRANSLATE, precision="bf16")
        res = invoke(runner, "probe", *CPU, "-r", run)  # a probe has no precision of its own: its features have
        assert res.exit_code == 0, res.output
    hands = root / "hands"  # 28 x 28 grey hands, one per class folder: the classifiers' inputs
    ds = make_dataset("synthetic-hands", split="test", seed=0)
    for i in (0, 30, 60):
        (hands / ds.classes[ds.labels[i]]).mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(hands / ds.classes[ds.labels[i]] / f"{i}.png"), ds.images[i])
    photos = root / "photos"  # colour images of another size: the segmenter's and the keypoint model's inputs
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        assert cv2.imwrite(str(photos / f"p{i}.png"), rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    sample = make_pose_dataset(parse_dataset("synthetic-signs", SIGN_OPTS, kind="pose"), seed=0).samples[0].id
    return run, {"hands": hands, "photos": photos, "sample": sample}


# (id, command arguments with {hands}/{photos}/{sample} filled from the fixture, JSON written, step command)
PATHS = [
    ("evaluate-classify-lora", ["evaluate", "classify", "--from", "lora", "--max-samples", "24"], "eval/classify-lora-tiny-dinov2.json", "evaluate"),
    ("evaluate-classify-probe", ["evaluate", "classify", "--from", "probe"], "eval/classify-probe-tiny-dinov2.json", "evaluate"),
    ("infer-classify-lora", ["infer", "classify", "--from", "lora", "--input", "{hands}"], "infer/classify-lora-tiny-dinov2.json", "infer"),
    ("infer-classify-probe", ["infer", "classify", "--from", "probe", "--input", "{hands}", "--json"], "infer/classify-probe-tiny-dinov2.json",
     "infer"),
    ("evaluate-segment", ["evaluate", "segment"], "eval/segment-tiny-dinov2.json", "evaluate"),
    ("evaluate-segment-slide", ["evaluate", "segment", "--inference", "slide"], "eval/segment-tiny-dinov2.json", "evaluate"),
    ("infer-segment", ["infer", "segment", "--input", "{photos}"], "infer/segment-tiny-dinov2/predictions.json", "infer"),
    ("infer-segment-detect", ["infer", "segment", "--input", "{photos}", "--detect", "tiny-rtdetr", "--detect-threshold", "0.01"],
     "infer/segment-tiny-dinov2/predictions.json", "infer"),
    ("evaluate-keypoint", ["evaluate", "keypoint"], "eval/keypoint.json", "evaluate"),
    ("infer-keypoint", ["infer", "keypoint", "--input", "{photos}", "--json"], "infer/keypoint-tiny-dinov2.json", "infer"),
    ("evaluate-translate", ["evaluate", "translate"], "eval/translate.json", "evaluate"),
    ("infer-translate", ["infer", "translate", "--sample-id", "{sample}"], "infer/translate.json", "infer"),
    ("gradcam-lora", ["gradcam", "--from", "lora", "--max-images", "2"], "gradcam/lora-tiny-dinov2/gradcam.json", "gradcam"),
    ("gradcam-probe", ["gradcam", "--from", "probe", "--method", "gradcam++", "--max-images", "2"], "gradcam/probe-tiny-dinov2/gradcam.json",
     "gradcam"),
]


def _args(args: list[str], inputs: dict) -> list[str]:
    return [a.format(**inputs) for a in args]


def _numbers(obj) -> list[float]:
    """Every float in a JSON document (json reads NaN and Infinity as floats, so they are caught too)."""
    if isinstance(obj, float):
        return [obj]
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _numbers(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in _numbers(v)]
    return []


def _ran_in(run, res, rel: str, command: str, precision: str) -> dict:
    """Checks that the invocation `res` ran in `precision` (printed once, recorded in its JSON and step) with finite
    numbers; returns the JSON."""
    from gesture_cli.core.rundir import RunDir

    assert res.exit_code == 0, res.output
    assert res.output.count("precision: ") == 1 and f"precision: {precision} on cpu" in res.output, res.output
    out = json.loads((run / rel).read_text())
    recorded = out["precision"]
    assert recorded == ({s: precision for s in out["from"]} if command == "gradcam" else precision), recorded
    numbers = _numbers(out)
    assert numbers and all(math.isfinite(x) for x in numbers)
    # the step that wrote the file (a cached evaluate adds no step: its result was made in the same precision)
    wrote = [s for s in RunDir(run).steps(command) if s.get("status") == "ok" and any(rel.startswith(o) for o in s["outputs"])]
    assert wrote[-1]["metrics"]["precision"] == precision
    return out


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize(("path", "args", "rel", "command"), PATHS, ids=[p[0] for p in PATHS])
def test_every_path_runs_in_the_precision_asked_for(bf16_run, runner, path, args, rel, command, precision):
    run, inputs = bf16_run
    res = invoke(runner, *_args(args, inputs), "--precision", precision, *CPU, "-r", run)
    out = _ran_in(run, res, rel, command, precision)
    if path == "evaluate-classify-probe":  # the bf16 features are reused only at their own precision
        assert out["features"] == ("reused" if precision == "bf16" else "extracted")
    if "--json" in args or path == "infer-translate":  # stdout is the data alone: the precision line went to stderr
        assert "precision:" not in res.stdout
        if path != "infer-translate":
            assert json.loads(res.stdout)


@pytest.mark.parametrize("native", ["1", "0"])
@pytest.mark.parametrize(("path", "args", "rel", "command"), PATHS, ids=[p[0] for p in PATHS])
def test_without_precision_a_bf16_artifact_runs_in_bf16_only_where_the_cpu_has_it(bf16_run, runner, monkeypatch, path, args, rel,
                                                                                    command, native):
    monkeypatch.setenv("GX_NATIVE_BF16", native)
    run, inputs = bf16_run
    res = invoke(runner, *_args(args, inputs), *CPU, "-r", run)
    _ran_in(run, res, rel, command, "bf16" if native == "1" else "fp32")


def test_gradcam_compare_runs_both_classifiers_in_one_precision(bf16_run, runner):
    run, _ = bf16_run
    res = invoke(runner, "gradcam", "--compare", "--max-images", "2", "--precision", "fp32", *CPU, "-r", run)
    out = _ran_in(run, res, "gradcam/compare-tiny-dinov2/gradcam.json", "gradcam", "fp32")
    assert out["precision"] == {"lora": "fp32", "probe": "fp32"}


def test_a_bf16_training_still_merges_into_an_fp32_model(bf16_run):
    """The frozen base weights are held in bf16 while training; merged/ is written in fp32 all the same, so
    AutoModel users can feed it fp32 pixels."""
    import torch
    from safetensors import safe_open
    from transformers import AutoModel

    run, _ = bf16_run
    merged = run / "lora" / "tiny-dinov2" / "merged"
    with safe_open(str(merged / "model.safetensors"), framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}
    model = AutoModel.from_pretrained(merged).eval()
    with torch.no_grad():
        out = model(pixel_values=torch.rand(2, 3, 32, 32)).last_hidden_state
    assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())


def test_without_precision_an_fp32_artifact_runs_in_fp32_even_where_auto_is_bf16(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("GX_NATIVE_BF16", "1")  # auto would pick bf16 on this "CPU"
    run = tmp_path / "run"
    _train(runner, run, LORA, SEGMENT, KEYPOINT, precision="fp32")
    for args, rel in ((["evaluate", "classify", "--from", "lora", "--max-samples", "24"], "eval/classify-lora-tiny-dinov2.json"),
                      (["evaluate", "segment"], "eval/segment-tiny-dinov2.json"), (["evaluate", "keypoint"], "eval/keypoint.json")):
        _ran_in(run, invoke(runner, *args, *CPU, "-r", run), rel, "evaluate", "fp32")
    # --precision overrides the artifact's, auto included
    res = invoke(runner, "evaluate", "segment", "--precision", "auto", *CPU, "-r", run)
    _ran_in(run, res, "eval/segment-tiny-dinov2.json", "evaluate", "bf16")


@pytest.mark.parametrize("args", [["evaluate", "classify", "--from", "lora"], ["evaluate", "classify", "--from", "probe"],
                                  ["infer", "classify", "--from", "lora", "--input", "{hands}"], ["infer", "segment", "--input", "{photos}"],
                                  ["evaluate", "keypoint"], ["infer", "translate", "--sample-id", "{sample}"], ["gradcam", "--compare"]],
                         ids=lambda a: "-".join(x for x in a if not x.startswith(("-", "{"))))
def test_fp16_on_a_cpu_and_unknown_precisions_are_one_line_usage_errors(bf16_run, runner, args):
    run, inputs = bf16_run
    res = invoke(runner, *_args(args, inputs), "--precision", "fp16", *CPU, "-r", run)
    one_line_error(res, 2, "--precision fp16", "use --precision bf16")
    res = invoke(runner, *_args(args, inputs), "--precision", "fp8", *CPU, "-r", run)
    one_line_error(res, 2, "--precision 'fp8'", "auto|fp32|bf16|fp16")


def _poison(path, name: str) -> None:
    """Overwrite tensor `name` of a gx safetensors file with NaN, keeping its header."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
    tensors = load_file(str(path))
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(path), metadata=header)


@pytest.mark.parametrize(("args", "file", "tensor"), [
    (["evaluate", "classify", "--from", "lora", "--max-samples", "8"], "lora/tiny-dinov2/head.safetensors", "bias"),
    (["evaluate", "segment"], "segment/tiny-dinov2/head.safetensors", None),
    (["evaluate", "keypoint"], "keypoint/tiny-dinov2/head.safetensors", None),
    (["evaluate", "translate"], "pose/finetune/bridge.safetensors", "bias"),  # NaN reaches only token ids: caught at the bridge
], ids=["lora", "segment", "keypoint", "translate"])
def test_non_finite_outputs_stop_with_a_hint_to_use_fp32(bf16_run, runner, tmp_path, args, file, tensor):
    import shutil

    from safetensors import safe_open

    run, _ = bf16_run
    copy = tmp_path / "run"
    folder = file.split("/")[0]
    shutil.copytree(run / folder, copy / folder)
    if tensor is None:  # the head's last bias: every output goes through it
        with safe_open(str(copy / file), framework="pt") as f:
            tensor = [k for k in f.keys() if k.endswith("bias")][-1]
    _poison(copy / file, tensor)
    res = invoke(runner, *args, "--precision", "bf16", *CPU, "-r", copy)
    one_line_error(res, 1, "non-finite values (NaN/Inf)", "--precision bf16", "rerun with --precision fp32")
    res = invoke(runner, *args, "--precision", "fp32", *CPU, "-r", copy)  # in fp32 there is nothing to suggest
    err = one_line_error(res, 1, "non-finite values (NaN/Inf)", "--precision fp32")
    assert "rerun" not in err


def test_the_detector_of_infer_segment_runs_in_the_segmenters_precision():
    import torch

    from gesture_cli.core.device import Precision
    from gesture_cli.tasks.segment import SegmentInferOptions, _scene_detector

    opts = SegmentInferOptions(backbone=None, input=".", detect="tiny-rtdetr", detect_threshold=0.01)
    scene = _scene_detector(opts, precision=Precision("bf16", torch.device("cpu")))
    assert {p.dtype for p in scene.detector.model.parameters()} == {torch.bfloat16}
    found = scene.detector.detect(np.zeros((48, 64, 3), dtype=np.uint8), threshold=0.0)
    assert np.isfinite(found.boxes).all() and np.isfinite(found.scores).all()
