"""`gx keypoint-train`, `gx evaluate keypoint` and `gx infer keypoint`: the steps of a keypoint regressor.

PCKh / PCK and the summary table are `gesture_cli.eval.keypoint`; the skeleton drawing
`gesture_cli.viz.keypoint`; training `gesture_cli.train.keypoint`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gesture_cli.core.errors import DataError, UsageError
from gesture_cli.data.keypoints import MPII_JOINTS
from gesture_cli.eval.keypoint import PCK_NOTE, keypoint_metrics, predict_keypoints, summary_rows
from gesture_cli.models.backbone_ref import backbone_dirname
from gesture_cli.tasks.trained import run_precision, trained_dir
from gesture_cli.tasks.training import run_trainer
from gesture_cli.train.keypoint import KeypointTrainConfig, KeypointTrainer
from gesture_cli.viz.keypoint import render_skeleton

# what `gx keypoint-train` and `gx evaluate keypoint` print beside their numbers comes from eval/


def train_keypoint(cfg: KeypointTrainConfig, run, *, device: str = "auto", force: bool = False, resume: bool = False,
                   argv: list[str] | None = None, callbacks: dict[str, list[Callable]] | None = None,
                   notify: Callable[[str], None] | None = None) -> dict:
    """Train, evaluate and write keypoint/<backbone>/ (see the module docstring); returns a summary dict."""
    trainer = KeypointTrainer(cfg, run, out_rel=f"keypoint/{backbone_dirname(cfg.backbone)}", resume=resume, force=force)
    return run_trainer(trainer, device=device, argv=argv, callbacks=callbacks, notify=notify)


__all__ = ["PCK_NOTE", "KeypointTrainConfig", "evaluate_keypoint", "infer_keypoint", "summary_rows", "train_keypoint"]


def require_keypoint(run, backbone: str | None) -> tuple[str, Path]:
    """(backbone folder name, keypoint/<backbone>/) of a trained regressor; None picks the only one."""

    return trained_dir(run, "keypoint", backbone, what="keypoint model", command="keypoint-train")


@dataclass
class EvalData:
    dataset: object  # KeypointDataset
    split: str  # what was scored, e.g. "test" or "all[val]"
    note: str | None  # why it differs from what was asked, for the summary


def resolve_eval_data(meta: dict, *, dataset: str | None, split: str, seed: int | None, max_samples: int | None) -> EvalData:
    """The dataset split `gx evaluate keypoint` scores (see `evaluate_keypoint`)."""
    from gesture_cli.data.keypoints import make_keypoint_dataset, make_keypoint_splits
    from gesture_cli.data.registry import given_or_recorded_dataset, same_dataset
    from gesture_cli.data.splits import cap_samples

    train_cfg = dict(meta.get("config") or {})
    spec = dataset or train_cfg.get("dataset")
    if not spec:
        raise UsageError("the keypoint model does not record its dataset; pass --dataset")
    same = same_dataset(train_cfg.get("dataset"), spec)
    ds_seed = seed if seed is not None else int(train_cfg.get("seed") or 0)
    ds_spec = given_or_recorded_dataset(dataset, train_cfg.get("dataset"), recorded_opts=train_cfg.get("dataset_opts"), kind="keypoints",
                                        recorded_in="the keypoint model")
    splits = ds_spec.splits()
    note = None
    if split not in splits:
        if len(splits) != 1:
            raise UsageError(f"keypoint dataset '{spec}' has no split '{split}'; valid splits: {', '.join(splits)}")
        note = f"'{spec}' has one split, '{splits[0]}'"
        split = splits[0]
    trained_on = meta.get("splits") or {}
    if same and split == trained_on.get("train") and trained_on.get("val_from_train"):
        # The split the model trained on: score only the part training held out for validation, rebuilt
        # from the recorded config (a key it lacks takes KeypointTrainConfig's default).
        held = make_keypoint_splits(ds_spec, val_fraction=train_cfg.get("val_fraction", 0.1),
                                    max_samples=train_cfg.get("max_samples"), seed=train_cfg.get("seed", 0)).val
        if held is None:
            raise UsageError(f"'{spec}' split '{split}' is the training data and nothing was held out; pass another --dataset")
        note = (note + "; " if note else "") + f"scoring the {len(held)} samples training held out for validation"
        return EvalData(dataset=cap_samples(held, max_samples, ds_seed), split=held.split, note=note)
    ds = make_keypoint_dataset(ds_spec, split=split, seed=ds_seed)
    return EvalData(dataset=cap_samples(ds, max_samples, ds_seed), split=split, note=note)


def evaluate_keypoint(run, *, backbone: str | None, dataset: str | None = None, split: str = "test", device="auto",
                      seed: int | None = None, max_samples: int | None = None, batch_size: int = 0, argv=None,
                      force: bool = False, on_progress=None, precision: str | None = None, notify=None) -> dict:
    """Score keypoint/<backbone>/ on a split; writes eval/keypoint.json and eval/keypoint-predictions.csv.

    Without --dataset the training dataset is used. A split the dataset lacks falls back to its only
    split (mpii: has one, `all`), and when that is the split training drew from, only the samples
    training held out for validation are scored, so a model is never scored on its training data.
    The model runs in `precision` (--precision), by default the one it was trained in.
    """
    import torch

    from gesture_cli.core.artifacts import load_json, save_json
    from gesture_cli.models.keypoint_head import load_keypoint_model, read_keypoint_meta

    name, path = require_keypoint(run, backbone)
    meta = read_keypoint_meta(path)
    data = resolve_eval_data(meta, dataset=dataset, split=split, seed=seed, max_samples=max_samples)
    ds = data.dataset
    if len(ds) == 0:
        raise DataError(f"dataset '{ds.spec}' split '{data.split}' has no samples to score")
    prec = run_precision(device, precision, meta.get("precision"), notify=notify)
    out_rel, csv_rel = "eval/keypoint.json", "eval/keypoint-predictions.csv"
    config = {"task": "keypoint", "backbone": name, "dataset": ds.spec, "split": data.split, "seed": seed, "max_samples": max_samples,
              "n": len(ds), "precision": prec.name}
    keys = {"dataset": ds.cache_token} if ds.cache_token else {}
    step = run.begin("evaluate", config=config, outputs=[out_rel, csv_rel], inputs=[path / "head.safetensors", *[Path(p) for p in ds.source_files]],
                     input_keys=keys, argv=argv, force=force)
    if step.cached:
        return {**load_json(run.path(out_rel), kind="eval-keypoint"), "cached": True, "output": str(run.path(out_rel)), "note": data.note}
    with step:
        t0 = time.perf_counter()
        model, meta = load_keypoint_model(path, device=prec.device, precision=prec)
        pred, truth = predict_keypoints(model, ds, size=meta["backbone"]["image_size"], batch_size=batch_size or 64, on_progress=on_progress)
        prec.check_finite(torch.from_numpy(pred), what="the predicted joints")
        metrics = keypoint_metrics(pred, truth["keypoints"], truth["visible"], head_size=truth["head_size"], torso_size=truth["torso_size"])
        result = {
            "task": "keypoint", "backbone": name, "model": str(path), "method": meta.get("method"), "head": meta["head"]["type"],
            "dataset": ds.spec, "split": data.split, "head_size_from": ds.head_source, "joints": list(MPII_JOINTS),
            "precision": prec.name, "seconds": round(time.perf_counter() - t0, 3), **metrics,
        }
        save_json(step.stage(out_rel, is_dir=False), result, kind="eval-keypoint")
        _write_predictions_csv(step.stage(csv_rel, is_dir=False), ds, pred, truth)
        step.metrics.update({"pck": metrics["pck"], "pck_kind": metrics["pck_kind"], "n": metrics["n"], "precision": prec.name})
    return {**result, "cached": False, "output": str(run.path(out_rel)), "predictions_csv": str(run.path(csv_rel)), "note": data.note}


def _write_predictions_csv(path: Path, ds, pred: np.ndarray, truth: dict) -> None:
    """One row per person and joint: predicted and true crop coordinates, annotated flag, error."""
    import csv
    import io

    from gesture_cli.core.artifacts import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["sample", "joint", "x_pred", "y_pred", "x_true", "y_true", "visible", "error"])
    for i in range(len(pred)):
        for j in range(pred.shape[1]):
            vis = bool(truth["visible"][i, j] > 0)
            err = float(np.linalg.norm(pred[i, j] - truth["keypoints"][i, j])) if vis else None
            w.writerow([ds.names[i], MPII_JOINTS[j], f"{pred[i, j, 0]:.5f}", f"{pred[i, j, 1]:.5f}",
                        f"{truth['keypoints'][i, j, 0]:.5f}" if vis else "", f"{truth['keypoints'][i, j, 1]:.5f}" if vis else "",
                        int(vis), f"{err:.5f}" if err is not None else ""])
    atomic_write_text(path, buf.getvalue())


def image_inputs(path: Path | str) -> tuple[list[Path], list[str]]:
    """(image files, display names) of an image file or a folder of images (recursive, sorted)."""
    from gesture_cli.data.images import IMAGE_EXTENSIONS

    path = Path(path).expanduser()
    if not path.exists():
        raise UsageError(f"--input {path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
        if not files:
            raise DataError(f"{path}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in this folder or below it")
        return files, [p.relative_to(path).as_posix() for p in files]
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise UsageError(f"--input {path}: not an image ({', '.join(sorted(IMAGE_EXTENSIONS))}) or a folder of images")
    return [path], [path.name]


def square_crop(img: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Pad an image to a square (centred, black borders): (square image, (x0, y0, side)) in source pixels."""
    h, w = img.shape[:2]
    side = max(h, w)
    x0, y0 = -((side - w) // 2), -((side - h) // 2)
    out = np.zeros((side, side, 3), dtype=np.uint8)
    out[-y0 : -y0 + h, -x0 : -x0 + w] = img
    return out, (x0, y0, side)


def infer_keypoint(run, *, backbone: str | None, input_path: Path | str, device="auto", batch_size: int = 0, argv=None,
                   precision: str | None = None, notify=None) -> dict:
    """Predict the 16 joints of the person in each input image; draws infer/keypoint-<backbone>/<name>.png
    and writes infer/keypoint-<backbone>.json. Each image is taken as one person crop: padded to a
    square around its centre, as training crops are square around the person. The model runs in
    `precision` (--precision), by default the one it was trained in."""
    import cv2
    import torch

    from gesture_cli.core.artifacts import save_json
    from gesture_cli.data.images import decode_image, resize_image, to_rgb
    from gesture_cli.models.augment import to_float_images
    from gesture_cli.models.keypoint_head import load_keypoint_model, read_keypoint_meta

    name, path = require_keypoint(run, backbone)
    files, names = image_inputs(input_path)
    prec = run_precision(device, precision, read_keypoint_meta(path).get("precision"), notify=notify)
    out_rel, png_rel = f"infer/keypoint-{name}.json", f"infer/keypoint-{name}"
    step = run.begin("infer", config={"task": "keypoint", "backbone": name, "input": str(input_path), "precision": prec.name},
                     outputs=[out_rel, png_rel], inputs=[path / "head.safetensors"], argv=argv, force=True)
    with step:
        t0 = time.perf_counter()
        model, meta = load_keypoint_model(path, device=prec.device, precision=prec)
        size = meta["backbone"]["image_size"]
        png_dir = step.stage(png_rel)
        preds = []
        bs = batch_size or 32
        for lo in range(0, len(files), bs):
            chunk = list(range(lo, min(lo + bs, len(files))))
            images = [to_rgb(decode_image(files[i])) for i in chunk]
            squares = [square_crop(im) for im in images]
            x = torch.from_numpy(np.stack([resize_image(sq, size) for sq, _ in squares]))
            with torch.no_grad():
                out = model(model.backbone.preprocess(to_float_images(x.to(model.backbone.device))))
            prec.check_finite(out, what="the predicted joints")
            xy = out.float().cpu().numpy()
            for i, im, (_, (x0, y0, side)), uv in zip(chunk, images, squares, xy, strict=True):
                pixels = uv * side + (x0, y0) - 0.5  # crop units -> source pixels (inverse of KeypointDataset.normalised)
                flat = names[i].replace("/", "__")  # a.jpg -> a.jpg.png: a.jpg and a.png never collide
                png = png_dir / (flat if flat.lower().endswith(".png") else flat + ".png")
                cv2.imwrite(str(png), cv2.cvtColor(render_skeleton(im, pixels), cv2.COLOR_RGB2BGR))
                preds.append({
                    "input": names[i], "width": int(im.shape[1]), "height": int(im.shape[0]),
                    "image": str(run.path(png_rel, png.name)),
                    "joints": {MPII_JOINTS[j]: [round(float(pixels[j, 0]), 2), round(float(pixels[j, 1]), 2)] for j in range(len(pixels))},
                })
        result = {"task": "keypoint", "backbone": name, "model": str(path), "input": str(input_path), "precision": prec.name, "n": len(preds),
                  "units": "pixels of the input image, (0, 0) = centre of the top-left pixel", "seconds": round(time.perf_counter() - t0, 3),
                  "predictions": preds}
        save_json(step.stage(out_rel, is_dir=False), result, kind="infer-keypoint")
        step.metrics.update({"inputs": len(preds), "precision": prec.name})
    return {**result, "output": str(run.path(out_rel)), "images_dir": str(run.path(png_rel))}
