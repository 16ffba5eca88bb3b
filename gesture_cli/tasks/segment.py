"""`gx segment-train`, `gx evaluate segment` and `gx infer segment`: the steps of a segmentation head.

Class maps at inference: a head trained on source classes with `--class-map` given here has its
per-class scores summed per group (scores @ aggregation matrix) before the argmax; the labels are
folded the same way. A head trained with a class map already predicts groups.

`gx infer segment --input IMG|DIR` writes infer/segment-<backbone>/: masks/<name>.png (colour mask),
overlays/<name>.png (mask blended on the image), features.csv (one row per image: the fraction of its
pixels in every class or group) with features.schema.json, and predictions.json. With `--detect
DETECTOR` an object detector also counts chosen classes per image: one det_count_<class> column each
(eval/scene.py), boxes drawn on the overlays, every detection in predictions.json.

Metrics and the inference modes (whole, slide) are `gesture_cli.eval.segment`; training is
`gesture_cli.train.segment`.
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gesture_cli.core.errors import DataError, UsageError, unknown_choice
from gesture_cli.eval.scene import column_slug
from gesture_cli.eval.segment import INFERENCE_MODES, evaluate_dataset, predict_image
from gesture_cli.models.backbone_ref import backbone_dirname
from gesture_cli.tasks.trained import check_precision_option, run_precision, trained_dir
from gesture_cli.tasks.training import run_trainer
from gesture_cli.train.segment import SegmentTrainConfig, SegmentTrainer
from gesture_cli.viz.segment import draw_boxes, render_mask, render_overlay


def train_segment(cfg: SegmentTrainConfig, run, *, device: str = "auto", force: bool = False, resume: bool = False,
                  argv: list[str] | None = None, callbacks: dict[str, list[Callable]] | None = None,
                  notify: Callable[[str], None] | None = None,
                  on_cache_progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Train, evaluate and write segment/<backbone>/ (see the module docstring); returns a summary dict."""
    name = backbone_dirname(cfg.backbone)
    trainer = SegmentTrainer(cfg, run, out_rel=f"segment/{name}", resume=resume, force=force, cache_root=run.path("cache", "segment", name),
                             on_cache_progress=on_cache_progress)
    return run_trainer(trainer, device=device, argv=argv, callbacks=callbacks, notify=notify)


__all__ = ["SegmentEvalOptions", "SegmentInferOptions", "SegmentTrainConfig", "evaluate_segment", "infer_segment", "train_segment",
           "write_features_csv"]


def segment_dir(run, backbone: str | None) -> tuple[str, Path]:
    """(backbone folder, segment/<backbone>/) of a trained head; None picks the only one."""

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
    from gesture_cli.data.registry import parse_dataset, recorded_dataset, same_dataset
    from gesture_cli.data.segmentation import make_seg_dataset
    from gesture_cli.models.seg_heads import SEG_HEAD_KIND

    opts.validate()
    name, path = segment_dir(run, opts.backbone)
    _, meta = load_tensors(path / "head.safetensors", kind=SEG_HEAD_KIND)
    cmap, aggregate, classes = _resolve_class_map(meta, opts.class_map, head_path=path)
    cfg = meta.get("config", {})
    dataset = opts.dataset or meta.get("dataset") or cfg.get("dataset")
    same = same_dataset(cfg.get("dataset"), dataset)
    if opts.dataset:
        ds_spec = parse_dataset(dataset, cfg.get("dataset_opts", []) if same else (), kind="segmentation")
    else:
        ds_spec = recorded_dataset(dataset, cfg.get("dataset_opts", []) if same else (), kind="segmentation", recorded_in=f"the head in {path}")
    ds = make_seg_dataset(ds_spec, split=opts.split, seed=int(cfg.get("seed", 0)), class_map=cmap)
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
