"""Keypoint metrics, `gx evaluate keypoint` and `gx infer keypoint`.

Metrics (pure functions on numpy arrays in crop units; the ratios do not depend on the unit):

  PCKh@0.5   a joint is correct when its error is at most 0.5 x the person's head size (error <= 0.5 h,
             as MPII's official evaluation, computePCK.m, and the HRNet / mmpose 0.x port test it;
             mmpose 1.x's MpiiPCKAccuracy tests <, which differs only exactly at the threshold); per joint,
             and a mean over the annotated joints of every person with a known head size. As in the
             MPII benchmark, pelvis and thorax are left out of the mean (they sit on the torso, where
             every method is near-perfect) and "head" in the summary table is the head top. A body
             part of the summary table (shoulder, elbow, ...) is the mean of its left and right joints'
             PCKh, as in MPII's summary and mmpose, not hits over counts pooled over both sides: the
             two differ whenever the sides are annotated a different number of times.
  PCK@0.2    the same with 0.2 x the torso diameter (left shoulder to right hip, else right shoulder
             to left hip): the protocol for data without head sizes. Always computed where the torso
             is annotated, so two datasets can be compared on it.

Only annotated joints count (MPII `joints_vis` = 1); a person without a usable norm size is left
out of that metric and counted in `skipped`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gesture_cli.core.errors import DataError, UsageError
from gesture_cli.data.keypoints import MPII_JOINTS, NUM_JOINTS, SKELETON, side_of

PCKH_THRESHOLD = 0.5
TORSO_THRESHOLD = 0.2
MEAN_EXCLUDED = (6, 7)  # pelvis, thorax: outside the MPII mean
GROUPS = {  # the MPII summary table: head top and the left/right pairs
    "head": (9,), "shoulder": (12, 13), "elbow": (11, 14), "wrist": (10, 15),
    "hip": (2, 3), "knee": (1, 4), "ankle": (0, 5),
}
PCK_CONVENTIONS = {  # written into every PCK table, so a number says how it was made
    "threshold_test": "a joint is correct when error <= threshold x norm size (<=, as MPII's computePCK.m and the HRNet / mmpose 0.x "
                      "MPII evaluation; mmpose 1.x tests <)",
    "groups": "a body part is the mean of its left and right joints' PCK (MPII summary, mmpose); a side never annotated is left out",
    "mean": "annotated joints pooled over all people, pelvis and thorax left out (MPII's PCKh total)",
}
PCK_NOTE = "correct: error <= threshold (MPII); a part = mean of its left and right joints' PCK (MPII summary, mmpose)"


def _round(x: float | None, nd: int = 6) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), nd)


def pck_table(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, norm: np.ndarray, *, threshold: float) -> dict | None:
    """PCK of predictions [N, K, 2] against gt [N, K, 2], joints counted where visible [N, K] > 0,
    errors divided by norm [N] (NaN / non-positive: that person is skipped). None when nothing counts."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    norm = np.asarray(norm, np.float64).reshape(-1)
    has_norm = np.isfinite(norm) & (norm > 0)
    valid = (np.asarray(visible) > 0) & has_norm[:, None]
    if not valid.any():
        return None
    dist = np.linalg.norm(pred - gt, axis=-1) / np.where(has_norm, norm, 1.0)[:, None]
    correct = (dist <= threshold) & valid
    counts, hits = valid.sum(0), correct.sum(0)
    per_joint = {MPII_JOINTS[j] if pred.shape[1] == NUM_JOINTS else str(j): _round(hits[j] / counts[j]) if counts[j] else None
                 for j in range(pred.shape[1])}
    keep = [j for j in range(pred.shape[1]) if j not in MEAN_EXCLUDED] if pred.shape[1] == NUM_JOINTS else list(range(pred.shape[1]))
    groups = {}
    if pred.shape[1] == NUM_JOINTS:
        for name, joints in GROUPS.items():
            sides = [hits[j] / counts[j] for j in joints if counts[j]]  # per-joint PCK of each annotated side
            groups[name] = _round(sum(sides) / len(sides)) if sides else None
    return {
        "threshold": threshold,
        "mean": _round(hits[keep].sum() / max(1, counts[keep].sum())),
        "mean_all_joints": _round(hits.sum() / counts.sum()),
        "groups": groups,
        "per_joint": per_joint,
        "people": int(has_norm.sum()),
        "joints_counted": int(counts.sum()),
        "skipped_people": int((~has_norm).sum()),
        "conventions": dict(PCK_CONVENTIONS),
    }


def keypoint_metrics(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, *, head_size: np.ndarray, torso_size: np.ndarray) -> dict:
    """PCKh@0.5 (head-size normalised), PCK@0.2 (torso) and the mean error, plus `pck`: the headline
    number (PCKh@0.5 when any person has a head size, else PCK@0.2) and `pck_kind` naming it."""
    pckh = pck_table(pred, gt, visible, head_size, threshold=PCKH_THRESHOLD)
    torso = pck_table(pred, gt, visible, torso_size, threshold=TORSO_THRESHOLD)
    vis = np.asarray(visible) > 0
    err = np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(gt, np.float64), axis=-1)
    headline, kind = (pckh, "pckh@0.5") if pckh is not None else (torso, "pck@0.2")
    return {
        "n": int(len(pred)),
        "pck": headline["mean"] if headline is not None else None,
        "pck_kind": kind,
        "pckh@0.5": pckh,
        "pck@0.2": torso,
        "mean_error": _round(err[vis].mean()) if vis.any() else None,  # in crop sides (1 = the crop's width)
    }


def masked_mse(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray) -> float | None:
    """Mean squared coordinate error over annotated joints (the training loss, in numpy)."""
    vis = np.asarray(visible) > 0
    if not vis.any():
        return None
    return float((((np.asarray(pred) - np.asarray(gt)) ** 2).sum(-1)[vis]).mean() / 2)


# ---- gx evaluate keypoint -----------------------------------------------------------------------


def require_keypoint(run, backbone: str | None) -> tuple[str, Path]:
    """(backbone folder name, keypoint/<backbone>/) of a trained regressor; None picks the only one."""
    from gesture_cli.eval.trained import trained_dir

    return trained_dir(run, "keypoint", backbone, what="keypoint model", command="keypoint-train")


def predict_keypoints(model, dataset, *, size: int, batch_size: int = 64, on_progress=None):
    """(pred float32 [N, K, 2], the KeypointBatch fields of every sample concatenated) in eval mode."""
    import torch

    from gesture_cli.models.augment import to_float_images

    was_training = model.training
    model.eval()
    preds, parts = [], {"keypoints": [], "visible": [], "head_size": [], "torso_size": []}
    n = len(dataset)
    dev = model.backbone.device
    if on_progress is not None:
        on_progress(0, n)
    with torch.no_grad():
        for lo in range(0, n, batch_size):
            b = dataset.batch(range(lo, min(lo + batch_size, n)), size=size)
            x = to_float_images(torch.from_numpy(np.ascontiguousarray(b.images)).to(dev))
            preds.append(model(model.backbone.preprocess(x)).float().cpu().numpy())
            for k in parts:
                parts[k].append(getattr(b, k))
            if on_progress is not None:
                on_progress(min(lo + batch_size, n), n)
    model.train(was_training)
    k = NUM_JOINTS
    if not preds:
        return np.zeros((0, k, 2), np.float32), {"keypoints": np.zeros((0, k, 2)), "visible": np.zeros((0, k)),
                                                  "head_size": np.zeros(0), "torso_size": np.zeros(0)}
    return np.concatenate(preds), {key: np.concatenate(v) for key, v in parts.items()}


@dataclass
class EvalData:
    dataset: object  # KeypointDataset
    split: str  # what was scored, e.g. "test" or "all[val]"
    note: str | None  # why it differs from what was asked, for the summary


def resolve_eval_data(meta: dict, *, dataset: str | None, split: str, seed: int | None, max_samples: int | None) -> EvalData:
    """The dataset split `gx evaluate keypoint` scores (see `evaluate_keypoint`)."""
    from gesture_cli.data.keypoints import keypoint_dataset_splits, make_keypoint_dataset, make_keypoint_splits
    from gesture_cli.data.registry import parse_dataset_opts
    from gesture_cli.data.splits import cap_samples

    train_cfg = dict(meta.get("config") or {})
    spec = dataset or train_cfg.get("dataset")
    if not spec:
        raise UsageError("the keypoint model does not record its dataset; pass --dataset")
    same = spec == train_cfg.get("dataset")
    ds_seed = seed if seed is not None else int(train_cfg.get("seed") or 0)
    opts = parse_dataset_opts(tuple(train_cfg.get("dataset_opts") or ())) if same else {}
    splits = keypoint_dataset_splits(spec)
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
        held = make_keypoint_splits(spec, tuple(train_cfg.get("dataset_opts") or ()), val_fraction=train_cfg.get("val_fraction", 0.1),
                                    max_samples=train_cfg.get("max_samples"), seed=train_cfg.get("seed", 0)).val
        if held is None:
            raise UsageError(f"'{spec}' split '{split}' is the training data and nothing was held out; pass another --dataset")
        note = (note + "; " if note else "") + f"scoring the {len(held)} samples training held out for validation"
        return EvalData(dataset=cap_samples(held, max_samples, ds_seed), split=held.split, note=note)
    ds = make_keypoint_dataset(spec, split=split, seed=ds_seed, **opts)
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
    from gesture_cli.eval.trained import run_precision
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


# ---- gx infer keypoint --------------------------------------------------------------------------

COLOURS = {"right": (230, 60, 50), "left": (40, 110, 240), "centre": (60, 200, 80)}  # RGB


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


def render_skeleton(img: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """Draw bones and joints (right red, left blue, centre green) on a copy of an RGB image; joints [16, 2] in pixels."""
    import cv2

    out = np.ascontiguousarray(img.copy())
    h, w = out.shape[:2]
    thick = max(1, round(max(h, w) / 200))
    pts = [tuple(int(round(v)) for v in p) for p in joints]
    for a, b in SKELETON:
        side = side_of(b) if side_of(b) != "centre" else side_of(a)
        cv2.line(out, pts[a], pts[b], COLOURS[side], thick, cv2.LINE_AA)
    for j, p in enumerate(pts):
        cv2.circle(out, p, thick + 2, COLOURS[side_of(j)], -1, cv2.LINE_AA)
        cv2.circle(out, p, thick + 2, (255, 255, 255), 1, cv2.LINE_AA)
    return out


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
    from gesture_cli.eval.trained import run_precision
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


def summary_rows(metrics: dict) -> list[tuple[str, str, str]]:
    """(group, PCKh@0.5, PCK@0.2) rows for a summary table: the MPII groups, then the mean."""
    pckh, torso = metrics.get("pckh@0.5") or {}, metrics.get("pck@0.2") or {}

    def fmt(table: dict, key: str) -> str:
        v = table.get("groups", {}).get(key) if key != "mean" else table.get("mean")
        return f"{v:.4f}" if isinstance(v, (int, float)) else "-"

    return [(g, fmt(pckh, g), fmt(torso, g)) for g in [*GROUPS, "mean"]]
