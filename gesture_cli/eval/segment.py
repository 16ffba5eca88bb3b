"""Segmentation metrics, inference, `gx evaluate segment` and `gx infer segment`.

Metrics come from one confusion matrix over every labelled pixel (ignore 255 excluded): IoU per class
= TP / (TP + FP + FN), mIoU = mean over classes that occur in the labels or the predictions, pixel
accuracy = TP / labelled pixels, mean class accuracy = mean of TP / (TP + FN) over the classes that
occur in the labels, and, as a yardstick, the mIoU of always predicting the split's most frequent
class. The averaging conventions differ between libraries, so every result names its own under
"conventions" (MEAN_CONVENTIONS): torchmetrics' macro accuracy (1.x) also averages in a class that is
predicted but absent from the labels, as 0, and gives a lower number whenever that happens.

Inference modes, both scored at each image's own resolution:
  whole   the image is resized to S x S (the backbone's input side), scores are upsampled to H x W.
  slide   the image is resized so that its short side is S (aspect kept), S x S windows with stride
          2S/3 cover it, overlapping scores are averaged, then upsampled to H x W.

Class maps at inference: a head trained on source classes with `--class-map` given here has its
per-class scores summed per group (scores @ aggregation matrix) before the argmax; the labels are
folded the same way. A head trained with a class map already predicts groups.

`gx infer segment --input IMG|DIR` writes infer/segment-<backbone>/: masks/<name>.png (colour mask),
overlays/<name>.png (mask blended on the image), features.csv (one row per image: the fraction of its
pixels in every class or group) with features.schema.json, and predictions.json. With `--detect
DETECTOR` an object detector also counts chosen classes per image: one det_count_<class> column each
(eval/scene.py), boxes drawn on the overlays, every detection in predictions.json.
"""

from __future__ import annotations

import csv
import io
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gesture_cli.core.errors import ArtifactError, DataError, UsageError, unknown_choice
from gesture_cli.eval.scene import column_slug

IGNORE_INDEX = 255
MEAN_CONVENTIONS = {  # written beside the numbers: which classes each mean runs over
    "mIoU": "mean IoU over the classes present in the labels or the predictions (pixels labelled 255 ignored)",
    "mean_acc": "mean per-class accuracy TP/(TP+FN) over the classes present in the labels; a class absent from the labels is "
                "left out, not counted as 0 (torchmetrics' macro accuracy counts a class predicted but absent from the labels as 0)",
}
INFERENCE_MODES = ("whole", "slide")
SLIDE_OVERLAP = 1 / 3  # windows overlap by a third of their side: stride = 2S/3
OVERLAY_ALPHA = 0.5  # weight of the colour mask in overlays/*.png


# ---- metrics --------------------------------------------------------------------------------------


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 [K, K], rows = true class, columns = predicted class, over pixels whose target is not 255."""
    pred, target = np.asarray(pred).ravel(), np.asarray(target).ravel()
    valid = target != IGNORE_INDEX
    idx = target[valid].astype(np.int64) * num_classes + pred[valid].astype(np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def segmentation_metrics(cm: np.ndarray, classes: Sequence[str]) -> dict:
    """mIoU, pixel accuracy, mean class accuracy, per-class rows and the majority-class baseline."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    gt, pred = cm.sum(1), cm.sum(0)
    union = gt + pred - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
    total = cm.sum()
    present = gt > 0
    # Predicting the most frequent class everywhere: IoU = its share of the pixels for it, 0 for the rest.
    majority = float(gt.max() / total / max(1, present.sum())) if total else float("nan")
    rows = [
        {"class": str(c), "iou": _num(iou[i]), "acc": _num(acc[i]), "pixels": int(gt[i]), "predicted": int(pred[i])}
        for i, c in enumerate(classes)
    ]
    return {
        "mIoU": _num(np.nanmean(iou)) if np.isfinite(iou).any() else None,
        "pixel_acc": _num(tp.sum() / total) if total else None,
        "mean_acc": _num(np.nanmean(acc)) if np.isfinite(acc).any() else None,
        "majority_mIoU": _num(majority),
        "labelled_pixels": int(total),
        "classes_present": int(present.sum()),
        "conventions": dict(MEAN_CONVENTIONS),
        "per_class": rows,
    }


def _num(x) -> float | None:
    x = float(x)
    return round(x, 6) if math.isfinite(x) else None


# ---- inference ------------------------------------------------------------------------------------


def slide_windows(length: int, size: int, stride: int) -> list[int]:
    """Start offsets of windows of `size` covering [0, length) with `stride`, the last one flush with the end."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size, stride))
    return starts + [length - size]


def image_scores(model, image: np.ndarray, *, size: int, mode: str, aggregate=None):
    """float32 [K', H, W] scores of one uint8 [H, W, 3] image (see the module docstring); `aggregate`
    [K, G] folds class scores into group scores."""
    import torch
    import torch.nn.functional as F

    dev = next(model.head.parameters()).device
    h, w = image.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(image)).to(dev).permute(2, 0, 1)[None].float().div_(255.0)  # [1, 3, H, W]
    if mode == "whole":
        scores = model.scores(images=x, size=(h, w))[0]
    elif mode == "slide":
        scale = size / min(h, w)
        sh, sw = max(size, round(h * scale)), max(size, round(w * scale))
        xr = F.interpolate(x, size=(sh, sw), mode="bilinear", align_corners=False, antialias=True)
        stride = max(1, round(size * (1 - SLIDE_OVERLAP)))
        boxes = [(top, left) for top in slide_windows(sh, size, stride) for left in slide_windows(sw, size, stride)]
        crops = torch.cat([xr[:, :, top : top + size, left : left + size] for top, left in boxes])
        win = model.scores(images=crops, size=(size, size))  # [n, K, S, S]
        acc = torch.zeros((win.shape[1], sh, sw), device=dev)
        count = torch.zeros((1, sh, sw), device=dev)
        for (top, left), s in zip(boxes, win, strict=True):
            acc[:, top : top + size, left : left + size] += s
            count[:, top : top + size, left : left + size] += 1
        scores = F.interpolate((acc / count)[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    else:
        raise unknown_choice("--inference mode", mode, INFERENCE_MODES)
    if aggregate is not None:
        scores = torch.einsum("khw,kg->ghw", scores, aggregate.to(scores.device))
    return scores.float()


def predict_image(model, image: np.ndarray, *, size: int, mode: str, aggregate=None, precision=None) -> np.ndarray:
    """uint8 [H, W] predicted class (or group) ids. `precision` (the core.device.Precision the model runs in):
    NaN/Inf scores stop with a one-line error instead of becoming an arbitrary argmax."""
    import torch

    with torch.inference_mode():
        scores = image_scores(model, image, size=size, mode=mode, aggregate=aggregate)
        if precision is not None:
            precision.check_finite(scores, what="the segmentation scores")
        return scores.argmax(0).to(torch.uint8).cpu().numpy()


def evaluate_dataset(model, ds, *, size: int, mode: str = "whole", aggregate=None, max_samples: int | None = None,
                     on_progress: Callable[[int, int], None] | None = None, precision=None) -> dict:
    """segmentation_metrics of `model` on a SegDataset at each image's own resolution (`precision`: see predict_image)."""
    n = len(ds) if max_samples is None else min(len(ds), max_samples)
    k = ds.num_classes
    cm = np.zeros((k, k), dtype=np.int64)
    for i in range(n):
        image, mask = ds.sample(i)
        pred = predict_image(model, image, size=size, mode=mode, aggregate=aggregate, precision=precision)
        if int(pred.max(initial=0)) >= k:
            raise ArtifactError(f"the head predicts {int(pred.max()) + 1}+ classes but dataset {ds.spec!r} has {k}; evaluate on its label set")
        cm += confusion_matrix(pred, mask, k)
        if on_progress is not None:
            on_progress(i + 1, n)
    return {"images": n, "mode": mode, **segmentation_metrics(cm, ds.classes)}


# ---- the trained head in a run dir ---------------------------------------------------------------


def segment_dir(run, backbone: str | None) -> tuple[str, Path]:
    """(backbone folder, segment/<backbone>/) of a trained head; None picks the only one."""
    from gesture_cli.eval.trained import trained_dir

    return trained_dir(run, "segment", backbone, what="segmentation head", command="segment-train")


def load_segmenter(path: Path, *, precision):
    """(Segmenter in eval mode, head header) from segment/<backbone>/head.safetensors, run in `precision` (a
    core.device.Precision, on its device); the backbone is rebuilt from the header at the size it was trained at."""
    from gesture_cli.models.backbones import build_backbone
    from gesture_cli.models.seg_heads import Segmenter, load_seg_head

    dev = precision.device
    head, meta = load_seg_head(path / "head.safetensors", device=dev)
    info = meta["backbone"]
    # The backbone is frozen and untouched by the head's weights: built straight in the compute dtype, so a
    # large one never needs an fp32 copy in memory. for_inference then rounds the (small) head once.
    backbone = build_backbone(info["name"], device=dev, dtype=precision.dtype, image_size=int(info["image_size"]))
    return precision.for_inference(Segmenter(backbone, head)), meta


def _head_class_map(meta: dict):
    from gesture_cli.data.class_map import parse_class_map

    saved = meta.get("class_map")
    return parse_class_map(saved, source=f"{saved.get('name', 'class map')} (saved with the head)") if saved else None


def _resolve_class_map(meta: dict, class_map: str | None, *, head_path: Path):
    """(ClassMap for the labels or None, aggregation matrix [K, G] or None, output class names)."""
    import torch

    from gesture_cli.data.class_map import load_class_map

    trained = _head_class_map(meta)
    classes = list(meta["classes"])
    if class_map is None:
        return trained, None, classes
    cmap = load_class_map(class_map)
    if trained is not None:
        if cmap.token == trained.token:
            return trained, None, classes
        raise UsageError(
            f"{head_path}: this head was trained with class map '{trained.name}' and already predicts its {len(classes)} groups; "
            "drop --class-map, or train a head on the source classes to aggregate them with another map"
        )
    matrix = cmap.aggregation_matrix(classes, what=f"the head in {head_path} (trained on {meta.get('dataset', '?')})")
    return cmap, torch.from_numpy(matrix), list(cmap.groups)


# ---- gx evaluate segment --------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentEvalOptions:
    backbone: str | None = None  # backbone folder of the head; None = the only one
    dataset: str | None = None  # dataset spec; None = the one the head was trained on (with its options)
    split: str = "test"  # split to score; a dataset without `test` needs --split val
    inference: str = "whole"  # whole | slide
    class_map: str | None = None  # fold a source-class head's predictions and the labels into groups
    max_samples: int | None = None  # score only the first N images
    precision: str | None = None  # auto | fp32 | bf16 | fp16; None = the head's own (core.device.inference_precision)

    def validate(self) -> None:
        from gesture_cli.eval.trained import check_precision_option

        check_precision_option(self.precision)
        if self.inference not in INFERENCE_MODES:
            raise unknown_choice("--inference mode", self.inference, INFERENCE_MODES)
        if self.max_samples is not None and self.max_samples < 1:
            raise UsageError("--max-samples must be at least 1")


def evaluate_segment(run, opts: SegmentEvalOptions, *, device: str = "auto", argv=None, force: bool = False,
                     on_progress: Callable[[int, int], None] | None = None, notify=None) -> dict:
    """Score segment/<backbone>/ on a dataset split; writes eval/segment-<backbone>.json. The model runs in
    opts.precision, by default the one the head was trained in (`notify` gets the "precision: ..." line)."""
    from gesture_cli.core.artifacts import load_tensors, save_json
    from gesture_cli.data.registry import parse_dataset_opts
    from gesture_cli.data.segmentation import make_seg_dataset
    from gesture_cli.eval.trained import run_precision
    from gesture_cli.models.seg_heads import SEG_HEAD_KIND

    opts.validate()
    name, path = segment_dir(run, opts.backbone)
    _, meta = load_tensors(path / "head.safetensors", kind=SEG_HEAD_KIND)
    cmap, aggregate, classes = _resolve_class_map(meta, opts.class_map, head_path=path)
    cfg = meta.get("config", {})
    dataset = opts.dataset or meta.get("dataset") or cfg.get("dataset")
    ds_opts = parse_dataset_opts(cfg.get("dataset_opts", [])) if dataset == cfg.get("dataset") else {}
    ds = make_seg_dataset(dataset, split=opts.split, seed=int(cfg.get("seed", 0)), class_map=cmap, **ds_opts)
    if list(ds.classes) != classes:
        raise DataError(
            f"dataset '{dataset}' has classes {ds.classes[:6]}... but the head predicts {classes[:6]}...; evaluate on the same label set "
            "(or pass the --class-map the head was trained with)"
        )
    prec = run_precision(device, opts.precision, meta.get("precision"), notify=notify)
    out_rel = f"eval/segment-{name}.json"
    config = {"task": "segment", "backbone": name, "dataset": dataset, "split": opts.split, "inference": opts.inference,
              "class_map": cmap.to_json() if cmap else None, "max_samples": opts.max_samples, "precision": prec.name}
    step = run.begin("evaluate", config=config, outputs=[out_rel], inputs=[path / "head.safetensors", *ds.source_files],
                     input_keys={"dataset": ds.cache_token}, argv=argv, force=force)
    if step.cached:
        from gesture_cli.core.artifacts import load_json

        return {**load_json(run.path(out_rel)), "cached": True, "output": str(run.path(out_rel))}
    with step:
        t0 = time.perf_counter()
        model, meta = load_segmenter(path, precision=prec)
        res = evaluate_dataset(model, ds, size=int(meta["backbone"]["image_size"]), mode=opts.inference, aggregate=aggregate,
                               max_samples=opts.max_samples, on_progress=on_progress, precision=prec)
        result = {"task": "segment", "backbone": name, "dataset": dataset, "split": opts.split, "head": meta["head"],
                  "class_map": cmap.name if cmap else None, "precision": prec.name, "seconds": round(time.perf_counter() - t0, 3), **res}
        save_json(step.stage(out_rel, is_dir=False), result, kind="eval-segment")
        step.metrics.update({"mIoU": res["mIoU"], "pixel_acc": res["pixel_acc"], "images": res["images"], "precision": prec.name})
    return {**result, "cached": False, "output": str(run.path(out_rel))}


# ---- gx infer segment -----------------------------------------------------------------------------


def write_features_csv(path: Path, *, images: Sequence[str], groups: Sequence[str], fractions: np.ndarray,
                       extra: dict[str, Sequence[float]] | None = None, extra_descriptions: dict[str, str] | None = None,
                       extra_schema: dict[str, dict] | None = None, seg_source: str = "segmentation class",
                       seg_members: dict[str, Sequence[str]] | None = None, schema_meta: dict | None = None,
                       schema_path: Path | None = None) -> list[str]:
    """Write the per-image feature table; returns its column names.

    Columns: `image`, then `seg_<group>` (fraction of the image's pixels predicted as that group, the
    row sums to 1), then every `extra` column in order (e.g. object counts from a detector);
    `schema_path` gets {"columns": [...], "num_features": N, **schema_meta}: every column with its name,
    type, source (`seg_source` for the seg_ columns: "segmentation group" when a class map folded the
    head's classes, else "segmentation class"), unit and description. `extra_schema` gives the fields of
    the extra columns (`extra_descriptions` only their descriptions); `seg_members` lists the source
    classes of each group.
    """
    from gesture_cli.core.artifacts import atomic_write_text, save_json

    fractions = np.asarray(fractions, dtype=np.float64)
    n = len(images)
    if fractions.shape != (n, len(groups)):
        raise ValueError(f"fractions of shape {fractions.shape}; expected ({n}, {len(groups)})")
    seg_cols = [f"seg_{column_slug(g)}" for g in groups]
    extra = dict(extra or {})
    for col, values in extra.items():
        if len(values) != n:
            raise ValueError(f"extra column '{col}' has {len(values)} values for {n} images")
    columns = ["image", *seg_cols, *extra]
    if len(set(columns)) != len(columns):
        dup = sorted({c for c in columns if columns.count(c) > 1})
        raise ValueError(f"duplicate feature column(s): {', '.join(dup)}")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for i in range(n):
        writer.writerow([images[i], *(f"{v:.6f}" for v in fractions[i]), *(_cell(extra[c][i]) for c in extra)])
    atomic_write_text(Path(path), buf.getvalue())
    if schema_path is not None:
        desc = dict(extra_descriptions or {})
        fields = dict(extra_schema or {})
        members = dict(seg_members or {})
        key = "group" if "group" in seg_source else "class"
        schema = [{"name": "image", "type": "string", "source": "input", "unit": None, "description": "input image, relative to --input"}]
        for c, g in zip(seg_cols, groups, strict=True):
            text = f"fraction of the image's pixels predicted as {seg_source.split()[-1]} '{g}' (0..1)"
            if members.get(g):
                text += f"; members: {', '.join(members[g])}"
            schema.append({"name": c, "type": "float", "source": seg_source, key: g, "unit": "fraction of pixels", "description": text})
        for c in extra:
            kind = "int" if all(isinstance(v, (int, np.integer)) for v in extra[c]) else "float"
            entry = {"name": c, "type": kind, "source": "extra", "unit": None, "description": desc.get(c, "")}
            entry.update(fields.get(c, {}))
            schema.append(entry)
        save_json(Path(schema_path), {"columns": schema, "num_features": len(columns) - 1, **(schema_meta or {})}, kind="features-schema")
    return columns


def _cell(v) -> str:
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{float(v):.6f}"


@dataclass(frozen=True)
class SegmentInferOptions:
    input: str = ""  # image file or folder of images
    backbone: str | None = None
    inference: str = "whole"  # whole | slide
    class_map: str | None = None  # fold a source-class head's predictions into groups
    detect: str | None = None  # object detector (hub id, folder, tiny-rtdetr/tiny-detr): adds det_count_<class> columns
    detect_classes: tuple[str, ...] | None = None  # classes to count; None = eval.scene.DEFAULT_DETECT_CLASSES
    detect_threshold: float | None = None  # minimum detection score; None = 0.5
    precision: str | None = None  # auto | fp32 | bf16 | fp16; None = the head's own (core.device.inference_precision)

    def validate(self) -> None:
        from gesture_cli.eval.scene import check_threshold
        from gesture_cli.eval.trained import check_precision_option

        check_precision_option(self.precision)
        if not self.input:
            raise UsageError("--input is required: an image file or a folder of images")
        if self.inference not in INFERENCE_MODES:
            raise unknown_choice("--inference mode", self.inference, INFERENCE_MODES)
        if self.detect is None and (self.detect_classes is not None or self.detect_threshold is not None):
            raise UsageError("--detect-classes and --detect-threshold need --detect DETECTOR (e.g. --detect PekingU/rtdetr_r18vd)")
        if self.detect_threshold is not None:
            check_threshold(self.detect_threshold)


def list_images(path: Path) -> tuple[list[Path], list[str]]:
    """(image files, names relative to the input) of an image file or a folder (searched recursively)."""
    from gesture_cli.data.images import IMAGE_EXTENSIONS

    path = Path(path).expanduser()
    if not path.exists():
        raise UsageError(f"--input {path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise UsageError(f"--input {path}: not an image ({', '.join(sorted(IMAGE_EXTENSIONS))}) or a folder of images")
        return [path], [path.name]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
    if not files:
        raise DataError(f"{path}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in this folder or below it")
    return files, [p.relative_to(path).as_posix() for p in files]


def render_mask(pred: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] colour image of a class-id map."""
    return palette[np.minimum(pred, len(palette) - 1)]


def render_overlay(image: np.ndarray, colour: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    return np.clip(image.astype(np.float32) * (1 - alpha) + colour.astype(np.float32) * alpha, 0, 255).astype(np.uint8)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    from gesture_cli.core.artifacts import atomic_write_bytes

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise DataError(f"{path}: cannot encode PNG")
    atomic_write_bytes(path, buf.tobytes())


def infer_segment(run, opts: SegmentInferOptions, *, device: str = "auto", argv=None,
                  on_progress: Callable[[int, int], None] | None = None, notify=None) -> dict:
    """Segment every input image (and, with opts.detect, count objects); writes infer/segment-<backbone>/
    (see the module docstring and eval/scene.py). The segmenter runs in opts.precision, by default the head's."""
    from gesture_cli.core.artifacts import load_tensors, save_json
    from gesture_cli.data.images import decode_image, to_rgb
    from gesture_cli.data.segmentation import class_palette
    from gesture_cli.eval.trained import run_precision
    from gesture_cli.models.seg_heads import SEG_HEAD_KIND

    opts.validate()
    name, path = segment_dir(run, opts.backbone)
    _, meta = load_tensors(path / "head.safetensors", kind=SEG_HEAD_KIND)
    cmap, aggregate, classes = _resolve_class_map(meta, opts.class_map, head_path=path)
    files, names = list_images(Path(opts.input))
    prec = run_precision(device, opts.precision, meta.get("precision"), notify=notify)
    scene = _scene_detector(opts, precision=prec)  # before the step: an unknown class stops here, cleanly
    out_rel = f"infer/segment-{name}"
    config = {"task": "segment", "backbone": name, "input": str(opts.input), "inference": opts.inference,
              "class_map": cmap.to_json() if cmap else None,
              "detect": scene.describe() if scene else None, "precision": prec.name}
    step = run.begin("infer", config=config, outputs=[out_rel], inputs=[path / "head.safetensors"], argv=argv, force=True)
    palette = class_palette(classes)
    with step:
        t0 = time.perf_counter()
        model, meta = load_segmenter(path, precision=prec)
        size = int(meta["backbone"]["image_size"])
        out = step.stage(out_rel)
        (out / "masks").mkdir()
        (out / "overlays").mkdir()
        fractions = np.zeros((len(files), len(classes)), dtype=np.float64)
        counts = np.zeros((len(files), len(scene.classes) if scene else 0), dtype=np.int64)
        records: list[dict | None] = [None] * len(files)
        stems = _unique_stems(names)
        for i, f in enumerate(files):
            image = to_rgb(decode_image(f))
            pred = predict_image(model, image, size=size, mode=opts.inference, aggregate=aggregate, precision=prec)
            fractions[i] = np.bincount(pred.ravel(), minlength=len(classes))[: len(classes)] / pred.size
            colour = render_mask(pred, palette)
            overlay = render_overlay(image, colour)
            if scene is not None:
                counts[i], records[i] = scene.run(image)
                overlay = draw_boxes(overlay, scene.boxes(records[i]))
            _write_png(out / "masks" / f"{stems[i]}.png", colour)
            _write_png(out / "overlays" / f"{stems[i]}.png", overlay)
            if on_progress is not None:
                on_progress(i + 1, len(files))
        extra = {col: counts[:, j].tolist() for j, col in enumerate(scene.columns)} if scene else {}
        seg_info = {"columns": len(classes), "head": meta["head"], "backbone": name, "class_map": cmap.name if cmap else None,
                    "classes": (f"the {len(classes)} groups of class map '{cmap.name}'" if cmap
                                else f"the head's own {len(classes)} classes (no class map: pass --class-map FILE to fold them into groups)")}
        columns = write_features_csv(out / "features.csv", images=names, groups=classes, fractions=fractions, extra=extra,
                                     extra_schema=scene.schema() if scene else None,
                                     seg_source="segmentation group" if cmap else "segmentation class",
                                     seg_members={g: list(cmap.members[g]) for g in cmap.groups} if cmap else None,
                                     schema_meta={"segmentation": seg_info, "detector": scene.describe() if scene else None},
                                     schema_path=out / "features.schema.json")
        predictions = [{"image": n, "mask": f"masks/{s}.png", "overlay": f"overlays/{s}.png",
                        "fractions": {c: round(float(v), 6) for c, v in zip(classes, fractions[i], strict=True)},
                        **({"detections": records[i]} if scene else {})}
                       for i, (n, s) in enumerate(zip(names, stems, strict=True))]
        save_json(out / "predictions.json", {"backbone": name, "head": meta["head"], "classes": classes, "class_map": cmap.name if cmap else None,
                                             "inference": opts.inference, "input": str(opts.input), "precision": prec.name,
                                             "detector": scene.describe() if scene else None, "images": predictions}, kind="infer-segment")
        step.metrics.update({"images": len(files), "features": len(columns) - 1, "seconds": round(time.perf_counter() - t0, 3),
                             "precision": prec.name})
    return {"backbone": name, "head": meta["head"], "precision": prec.name, "classes": classes, "class_map": cmap.name if cmap else None, "names": names,
            "fractions": fractions, "columns": columns, "output": str(run.path(out_rel)), "input": str(opts.input),
            "detect": {"detector": scene.detector.name, "classes": scene.classes, "columns": scene.columns, "counts": counts,
                       "threshold": scene.threshold} if scene else None}


def _scene_detector(opts: SegmentInferOptions, *, precision):
    """The SceneDetector of --detect/--detect-classes/--detect-threshold, or None without --detect; the detector
    runs in the segmenter's `precision` (a core.device.Precision)."""
    if opts.detect is None:
        return None
    from gesture_cli.eval.scene import DEFAULT_DETECT_THRESHOLD, SceneDetector, parse_detect_classes
    from gesture_cli.models.detect import build_detector

    classes = parse_detect_classes(opts.detect_classes)
    detector = build_detector(opts.detect, device=precision.device)
    precision.for_inference(detector.model)  # inputs converted, forward under autocast, outputs back in fp32
    return SceneDetector(detector, classes, DEFAULT_DETECT_THRESHOLD if opts.detect_threshold is None else opts.detect_threshold)


def draw_boxes(image: np.ndarray, boxes: Sequence[tuple[str, Sequence[float]]]) -> np.ndarray:
    """A copy of uint8 [H, W, 3] `image` with each (class, x0 y0 x1 y1 box) outlined and labelled."""
    import cv2

    out = np.ascontiguousarray(image.copy())
    for label, (x0, y0, x1, y1) in boxes:
        p0, p1 = (int(round(x0)), int(round(y0))), (int(round(x1)), int(round(y1)))
        cv2.rectangle(out, p0, p1, (255, 255, 0), 1)
        cv2.putText(out, str(label), (p0[0] + 2, max(p0[1] + 10, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 0), 1, cv2.LINE_AA)
    return out


def _unique_stems(names: Sequence[str]) -> list[str]:
    """File-system-safe stems for output files, unique even when two inputs share a stem."""
    out, seen = [], set()
    for n in names:
        stem = re.sub(r"[^0-9A-Za-z._-]+", "_", str(Path(n).with_suffix("")).replace("/", "__")) or "image"
        base, k = stem, 1
        while stem in seen:
            k += 1
            stem = f"{base}-{k}"
        seen.add(stem)
        out.append(stem)
    return out


__all__ = [
    "INFERENCE_MODES",
    "SegmentEvalOptions",
    "SegmentInferOptions",
    "confusion_matrix",
    "evaluate_dataset",
    "evaluate_segment",
    "infer_segment",
    "segmentation_metrics",
    "write_features_csv",
]
