"""`gx lora-train`, `gx evaluate classify` and `gx infer classify`: the steps of a classifier, a linear
probe (`--from probe`, probe/<backbone>/, written by `gx probe`: tasks/probe.py) or a fine-tuned one
(`--from lora`, lora/<backbone>/, written by `gx lora-train`: `train_lora` here, trainer in train/lora.py), and their shared plumbing
(which artifact, which backbone, which features).

Inputs (`load_inputs`): one image file, a folder of images (searched recursively, sorted), or a
Sign-MNIST-style CSV: 784 pixel columns, or 785 with the label first; a header line is optional.
Each becomes an `ImageDataset`, so images go through exactly the path feature extraction uses
(`ImageDataset.batch(size=...)` then `Backbone.preprocess`).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gesture_cli.core.errors import ArtifactError, DataError, UsageError, shell_word, unknown_choice
from gesture_cli.models.backbone_ref import backbone_dirname
from gesture_cli.tasks.training import run_trainer
from gesture_cli.train.lora import LoraTrainConfig, LoraTrainer


def train_lora(cfg: LoraTrainConfig, run, *, device: str = "auto", force: bool = False, resume: bool = False,
               argv: list[str] | None = None, callbacks: dict[str, list[Callable]] | None = None,
               notify: Callable[[str], None] | None = None) -> dict:
    """Fine-tune, evaluate and write lora/<backbone>/ (see the module docstring); returns a summary dict.

    `notify(line)` receives one-line notices (trainable parameters, resume point); `callbacks` go to fit().
    Under several processes only the main one writes; the others return {"is_main": False}.
    """
    trainer = LoraTrainer(cfg, run, out_rel=f"lora/{backbone_dirname(cfg.backbone)}", resume=resume, force=force)
    return run_trainer(trainer, device=device, argv=argv, callbacks=callbacks, notify=notify)


__all__ = ["EvaluateConfig", "InferConfig", "LoraTrainConfig", "check_source", "evaluate_lora", "evaluate_lora_classifier", "evaluate_probe", "infer_lora",
           "infer_probe", "train_lora"]

CLASSIFIER_SOURCES = ("probe", "lora")  # --from: where the classifier comes from
PIXELS = 784  # 28 x 28 Sign MNIST image


# ---- the fine-tuned classifier of a run (lora/<backbone>/) ------------------------------------------


def lora_dir(run, backbone: str) -> Path:
    """lora/<backbone>/ of a run dir (a core.rundir.RunDir), which must hold a trained classifier."""
    path = run.path("lora", backbone_dirname(backbone))
    if not (path / "head.safetensors").is_file():
        raise ArtifactError(f"{path}: no trained classifier for backbone '{backbone}'; run `gx lora-train --backbone {shell_word(backbone)} -r {shell_word(run.root)}` first")
    return path


def load_lora_classifier(run, backbone: str, device="cpu", *, precision=None):
    """(model: pixels [B, 3, S, S] -> logits [B, K], classes, backbone describe(), preprocess: images -> pixels).

    `preprocess` takes uint8 or [0, 1] float images in any layout `Backbone.preprocess` accepts; the model
    is in eval mode with LoRA merged into the weights. `precision` (a core.device.Precision, e.g. from
    `inference_precision`): weights stored in its dtype and the forward run under it; None = plain fp32.
    """
    import torch

    from gesture_cli.core.device import resolve_device
    from gesture_cli.models.lora import load_classifier

    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    # Loaded in fp32 whatever the precision: LoRA is merged into the weights before they are rounded once.
    model, meta = load_classifier(lora_dir(run, backbone), device=dev)
    if precision is not None:
        precision.for_inference(model)
    return model, list(meta["classes"]), meta["backbone"], model.backbone.preprocess


def evaluate_lora(run, backbone: str, dataset_spec: str, split: str = "test", device="cpu", *, batch_size: int = 64,
                  max_samples: int | None = None, dataset_opts: dict | None = None) -> dict:
    """Score a trained classifier on one split of a dataset: classification_metrics + loss (see eval.classify).

    `dataset_opts` are the source's options (as make_dataset takes them); a HaGRID classifier trained
    with a no_gesture class gets `no_gesture=True` by default.
    """
    from gesture_cli.data import make_dataset, parse_dataset
    from gesture_cli.data.splits import cap_samples
    from gesture_cli.train.lora import ImageBatches, predict, score

    model, classes, info, _ = load_lora_classifier(run, backbone, device)
    spec = parse_dataset(dataset_spec, dict(dataset_opts or {}))
    if spec.name == "hagrid" and "no_gesture" in classes and "no_gesture" not in spec.options:
        spec = parse_dataset(spec, {"no_gesture": True})
    ds = make_dataset(spec, split=split)
    if list(ds.classes) != classes:
        raise DataError(
            f"dataset '{dataset_spec}' has classes {ds.classes[:6]}... but the classifier was trained on {classes[:6]}...; evaluate on the same label set"
        )
    ds = cap_samples(ds, max_samples, 0)
    logits, labels = predict(model, ImageBatches(ds, size=info["image_size"]), batch_size=batch_size)
    return {"backbone": info["name"], "dataset": dataset_spec, "split": split, **score(logits, labels, classes)}



@dataclass(frozen=True)
class EvaluateConfig:
    """`gx evaluate TASK`: which artifact to score on which data."""

    source: str = "probe"  # --from: probe | lora
    backbone: str | None = None  # backbone folder of the artifact; None = the only one in the run dir
    dataset: str | None = None  # dataset spec; None = the one the classifier's features came from
    split: str = "test"  # dataset split to score
    max_samples: int | None = None  # score only the first N samples (features are then extracted anew)
    batch_size: int = 0  # images per forward pass when extracting; 0 = auto (32 on CPU, 256 on CUDA)
    seed: int | None = None  # dataset split seed; None = the seed the features were extracted with
    precision: str | None = None  # auto | fp32 | bf16 | fp16; None = the artifact's own (core.device.inference_precision)

    def validate(self) -> None:
        from gesture_cli.tasks.trained import check_precision_option

        if self.source not in CLASSIFIER_SOURCES:
            raise unknown_choice("--from source", self.source, CLASSIFIER_SOURCES)
        check_precision_option(self.precision)
        if self.max_samples is not None and self.max_samples < 1:
            raise UsageError("--max-samples must be at least 1")
        if self.batch_size < 0:
            raise UsageError("--batch-size must be 0 (auto) or a positive number")


@dataclass(frozen=True)
class InferConfig:
    """`gx infer TASK`: which artifact to run on which inputs."""

    input: str = ""  # image file, folder of images, or Sign-MNIST-style CSV
    source: str = "probe"  # --from: probe | lora
    backbone: str | None = None  # backbone folder of the artifact; None = the only one in the run dir
    top_k: int = 3  # classes shown per input
    batch_size: int = 0  # images per forward pass; 0 = auto
    precision: str | None = None  # auto | fp32 | bf16 | fp16; None = the artifact's own (core.device.inference_precision)

    def validate(self) -> None:
        from gesture_cli.tasks.trained import check_precision_option

        if not self.input:
            raise UsageError("--input is required: an image file, a folder of images or a CSV")
        if self.source not in CLASSIFIER_SOURCES:
            raise unknown_choice("--from source", self.source, CLASSIFIER_SOURCES)
        check_precision_option(self.precision)
        if self.top_k < 1:
            raise UsageError("--top-k must be at least 1")
        if self.batch_size < 0:
            raise UsageError("--batch-size must be 0 (auto) or a positive number")


@dataclass
class InferInputs:
    dataset: object  # ImageDataset (labels are placeholders; see `labels`)
    names: list[str]  # one display name per input: file path or "FILE row N"
    labels: list[str | None]  # known true label per input (CSV label column, class subfolder), else None


def check_source(run, source: str, backbone: str | None) -> None:
    """Validate --from; `lora` needs lora/<backbone>/ (written by `gx lora-train`)."""
    from gesture_cli.models.backbone_ref import backbone_dirname

    if source not in CLASSIFIER_SOURCES:
        raise unknown_choice("--from source", source, CLASSIFIER_SOURCES)
    if source == "lora":
        found = sorted(p.name for p in run.path("lora").iterdir() if p.is_dir()) if run.path("lora").is_dir() else []
        where = run.path("lora", backbone_dirname(backbone)) if backbone else run.path("lora")
        if (backbone and not where.is_dir()) or not found:
            raise ArtifactError(  # a missing artifact, like every other task's: exit 1, not a usage error
                f"no LoRA artifact in {where}: run `gx lora-train --backbone {shell_word(backbone) if backbone else 'NAME'} -r {shell_word(run.root)}` first, or use --from probe"
            )


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def load_inputs(path: Path | str, *, classes: list[str]) -> InferInputs:
    """An image file, a folder of images, or a Sign-MNIST-style CSV -> InferInputs."""
    from gesture_cli.data.images import IMAGE_EXTENSIONS

    path = Path(path).expanduser()
    if not path.exists():
        raise UsageError(f"--input {path}: no such file or folder")
    if path.is_dir():
        return _load_folder(path, classes=classes)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _load_csv(path, classes=classes)
    if suffix in IMAGE_EXTENSIONS:
        return _image_inputs([path], [str(path)], [None], spec=str(path))
    raise UsageError(f"--input {path}: not an image ({', '.join(sorted(IMAGE_EXTENSIONS))}), a folder of images or a .csv file")


def _image_inputs(paths: list[Path], names: list[str], labels: list[str | None], *, spec: str) -> InferInputs:
    from gesture_cli.data.images import ImageDataset, probe_image

    kinds = [probe_image(p) for p in paths]
    bad = [p for p, k in zip(paths, kinds, strict=True) if k is None]
    if bad:
        raise DataError(f"{bad[0]}: not a readable image (empty, truncated, corrupt or unsupported format); remove or re-export it")
    ds = ImageDataset(spec=f"infer:{spec}", split="infer", classes=["?"], labels=np.zeros(len(paths), dtype=np.int64),
                      paths=list(paths), source_files=list(paths), color=any(kinds))
    return InferInputs(dataset=ds, names=names, labels=labels)


def _load_folder(root: Path, *, classes: list[str]) -> InferInputs:
    from gesture_cli.data.images import IMAGE_EXTENSIONS

    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
    if not paths:
        raise DataError(f"{root}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) in this folder or below it")
    known = set(classes)
    labels = [p.parent.name if p.parent != root and p.parent.name in known else None for p in paths]  # class subfolders
    names = [p.relative_to(root).as_posix() for p in paths]
    return _image_inputs(paths, names, labels, spec=str(root))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _load_csv(path: Path, *, classes: list[str]) -> InferInputs:
    """Sign-MNIST-style CSV; the first problem raises a DataError naming the file, row and line."""
    from gesture_cli.data.images import ImageDataset

    rows: list[np.ndarray] = []
    raw_labels: list[int | None] = []
    width = None
    header = False
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            for line, cells in enumerate(csv.reader(f), start=1):
                if not any(c.strip() for c in cells):
                    continue  # blank line
                if line == 1 and not any(_is_number(c) for c in cells):
                    header = True  # label,pixel1,... or pixel1,...: a data row with one bad cell is still data
                    if len(cells) not in (PIXELS, PIXELS + 1):
                        raise DataError(f"{path}: header (line 1) has {len(cells)} columns; expected {PIXELS} pixel columns, or {PIXELS + 1} with the label first")
                    width = len(cells)
                    continue
                row = len(rows) + 1  # 1-based data row
                where = f"{path}: row {row} (line {line})"
                if len(cells) not in (PIXELS, PIXELS + 1):
                    raise DataError(f"{where}: has {len(cells)} columns; expected {PIXELS} pixel values, or {PIXELS + 1} with the label first; fix or remove that row")
                if width is None:
                    width = len(cells)
                elif len(cells) != width:
                    raise DataError(f"{where}: has {len(cells)} columns but the file's {'header' if header else 'first row'} has {width}; fix or remove that row")
                try:
                    values = np.asarray([float(c) for c in cells], dtype=np.float64)
                except ValueError:
                    j = next(j for j, c in enumerate(cells) if not _is_number(c))
                    raise DataError(f"{where}: column {j + 1} is not a number ({cells[j].strip()[:20]!r}); fix or remove that row") from None
                pixels = values[-PIXELS:]
                bad = np.flatnonzero(~np.isfinite(pixels) | (pixels < 0) | (pixels > 255))
                if bad.size:
                    j = int(bad[0]) + width - PIXELS
                    raise DataError(f"{where}: pixel {int(bad[0]) + 1} (column {j + 1}) is {cells[j].strip()!r}; pixels must lie in 0..255")
                raw_labels.append(int(values[0]) if width == PIXELS + 1 else None)
                rows.append(np.rint(pixels).astype(np.uint8))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a text CSV (undecodable byte at offset {e.start})") from None
    if not rows:
        raise DataError(f"{path}: no data rows; expected Sign-MNIST-style rows of {PIXELS} pixels (or label + {PIXELS} pixels)")
    # Sign MNIST's own labels skip 9 (J): a 9 means a copy remapped to 0..23 (what label_map=contiguous reads),
    # a 24 the original; with neither, labels from 10 up read one letter apart in the two conventions
    contiguous = 9 in raw_labels
    if not contiguous and 24 not in raw_labels and any(v is not None and v >= 10 for v in raw_labels) and _letters(classes):
        import warnings

        from gesture_cli.core.errors import GxWarning

        warnings.warn(GxWarning(f"{path}: its labels have neither a 9 nor a 24, so they may be Sign MNIST's own (0..24 without 9, "
                                "as read) or a copy remapped to 0..23; if remapped, the accuracy line is wrong"), stacklevel=2)
    labels = [_csv_label(path, i + 1, v, classes, contiguous=contiguous) for i, v in enumerate(raw_labels)]
    images = np.stack(rows).reshape(-1, 28, 28)
    ds = ImageDataset(spec=f"infer:{path}", split="infer", classes=["?"], labels=np.zeros(len(images), dtype=np.int64),
                      images=images, source_files=[path])
    return InferInputs(dataset=ds, names=[f"{path.name} row {i + 1}" for i in range(len(images))], labels=labels)


def _letters(classes: list[str]) -> bool:
    """Whether a classifier's classes are Sign MNIST's 24 letters (so a CSV's numeric labels name letters)."""
    from gesture_cli.data.sign_mnist import SIGN_MNIST_LETTERS

    return list(classes) == list(SIGN_MNIST_LETTERS)


def _csv_label(path: Path, row: int, raw: int | None, classes: list[str], *, contiguous: bool = False) -> str | None:
    """A CSV label -> class name: Sign MNIST's 0..24 (no 9) when the classifier knows letters, or 0..23 in a
    `contiguous` (remapped) file, else an id."""
    if raw is None:
        return None
    from gesture_cli.data.sign_mnist import sign_mnist_label_to_letter

    if _letters(classes) and contiguous:
        if not 0 <= raw < len(classes):
            raise DataError(f"{path}: row {row}: label {raw} is outside 0..{len(classes) - 1}, the remapped labels this file uses "
                            "(it has a 9, which Sign MNIST's own labels skip); fix or remove that row")
        return classes[raw]
    if _letters(classes):
        try:
            return sign_mnist_label_to_letter(raw)
        except DataError as e:
            raise DataError(f"{path}: row {row}: {e}") from None
    return classes[raw] if 0 <= raw < len(classes) else str(raw)


# ----------------------------------------------------------------------------------------------
# Features of new inputs
# ----------------------------------------------------------------------------------------------


def build_classifier_backbone(meta: dict, *, device, path: Path, precision):
    """Rebuild the backbone a probe was trained on, from the describe() in its header, run in `precision`
    (a core.device.Precision). It is frozen, so it is built straight in the compute dtype: a large
    backbone never needs its fp32 copy in memory."""
    from gesture_cli.models.backbones import build_backbone

    desc = meta.get("backbone") or {}
    if not desc.get("name"):
        raise ArtifactError(f"{path}: the classifier does not record its backbone; rerun `gx probe --force`")
    backbone = build_backbone(desc["name"], device=device, dtype=precision.dtype, image_size=desc.get("image_size"))
    return precision.for_inference(backbone)


DTYPE_PRECISIONS = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}  # features meta "dtype" -> precision name


def features_precision(run, name: str) -> str | None:
    """The precision features/<name>/ was extracted in (its meta.json), None when unknown: a probe's recorded precision."""
    from gesture_cli.core.artifacts import load_json

    path = run.path("features", name, "meta.json")
    if not path.is_file():
        return None
    return _features_precision(load_json(path, kind="features-meta"))


def _features_precision(fmeta: dict) -> str | None:
    # Extractions before the precision key recorded only their torch dtype.
    return fmeta.get("precision") or DTYPE_PRECISIONS.get(str(fmeta.get("dtype")))


def extract_for_classifier(backbone, dataset, *, meta: dict, path: Path, device, batch_size: int = 0, max_samples=None, on_progress=None):
    """Pooled features of `dataset` as the classifier expects them; checks the dimension."""
    from gesture_cli.models.features import extract_split

    pool = meta.get("pool") or "cls"
    want = int(meta.get("feature_dim") or 0)
    got = backbone.feature_dim(pool)
    if want and got != want:
        raise ArtifactError(
            f"backbone '{backbone.info.name}' gives {got}-d '{pool}' features but {path} expects {want}-d; "
            "the backbone changed since the probe was trained: rerun `gx extract-features` and `gx probe`"
        )
    bs = batch_size or (256 if device.type == "cuda" else 32)  # as extract-features: 32 is fastest on CPU
    feats, _ = extract_split(backbone, dataset, pool=pool, batch_size=bs, device=device, max_samples=max_samples, on_progress=on_progress)
    return feats.numpy()


def check_feature_dim(features: np.ndarray, *, want: int, features_path: Path, classifier_path: Path) -> None:
    got = int(features.shape[1])
    if got != want:
        raise ArtifactError(
            f"{features_path} has {got}-d features but {classifier_path} expects {want}-d; "
            "the features were re-extracted with another backbone or --pool since the probe: rerun `gx probe`"
        )


# ----------------------------------------------------------------------------------------------
# gx infer classify --from probe
# ----------------------------------------------------------------------------------------------


def infer_probe(run, *, backbone: str | None, input_path: Path | str, top_k: int = 3, device="auto", batch_size: int = 0,
                argv=None, precision: str | None = None, notify=None) -> dict:
    """Top-k classes of every input with a probe classifier; writes infer/classify-probe-<backbone>.json.

    The backbone runs in `precision` (--precision), by default in the one its features were extracted in."""
    import torch

    from gesture_cli.core.device import resolve_device
    from gesture_cli.tasks.probe import load_classifier, require_classifier
    from gesture_cli.tasks.trained import run_precision

    if top_k < 1:
        raise UsageError("--top-k must be at least 1")
    name, clf_path = require_classifier(run, backbone)
    probe, meta = load_classifier(clf_path)
    classes = list(meta["classes"])
    inputs = load_inputs(input_path, classes=classes)
    dev = resolve_device(device)
    prec = run_precision(dev, precision, features_precision(run, name), notify=notify)
    out_rel = f"infer/classify-probe-{name}.json"
    step = run.begin("infer", config={"task": "classify", "from": "probe", "backbone": name, "input": str(input_path), "top_k": top_k,
                                      "precision": prec.name},
                      outputs=[out_rel], inputs=[clf_path], argv=argv, force=True)
    with step:
        t0 = time.perf_counter()
        bb = build_classifier_backbone(meta, device=dev, path=clf_path, precision=prec)
        feats = extract_for_classifier(bb, inputs.dataset, meta=meta, path=clf_path, device=dev, batch_size=batch_size)
        prec.check_finite(torch.from_numpy(feats), what=f"the features of backbone '{bb.info.name}'")
        probs = probe.predict_proba(feats)
        result = _save_predictions(step, out_rel, probs, inputs, classes, top_k=top_k, t0=t0, precision=prec.name,
                                   header={"from": "probe", "backbone": name, "classifier": str(clf_path), "input": str(input_path)})
    return {**result, "output": str(run.path(out_rel))}


# ----------------------------------------------------------------------------------------------
# gx evaluate classify --from probe
# ----------------------------------------------------------------------------------------------


def _map_labels(labels: np.ndarray, ds_classes: list[str], clf_classes: list[str], *, where: str) -> np.ndarray:
    """Dataset label ids -> classifier label ids, matched by class name."""
    if list(ds_classes) == list(clf_classes):
        return np.asarray(labels, dtype=np.int64)
    index = {c: i for i, c in enumerate(clf_classes)}
    unknown = [c for c in ds_classes if c not in index]
    if unknown:
        raise DataError(f"{where}: classes {', '.join(unknown[:5])} are not among the classifier's {len(clf_classes)} classes ({', '.join(clf_classes[:5])}, ...)")
    lut = np.asarray([index[c] for c in ds_classes], dtype=np.int64)
    return lut[np.asarray(labels, dtype=np.int64)]


def evaluate_probe(run, *, backbone: str | None, dataset: str | None = None, split: str = "test", device="auto",
                   seed: int | None = None, max_samples: int | None = None, batch_size: int = 0, argv=None, force: bool = False,
                   on_progress=None, precision: str | None = None, notify=None) -> dict:
    """Score a saved probe classifier; writes eval/classify-probe-<backbone>.json.

    The extracted features are reused when they come from the same dataset (and split, seed, every
    sample) in the precision asked for (`precision`, by default theirs); otherwise the backbone is
    rebuilt from the classifier's header and the split's features are extracted on the fly.
    """
    import torch

    from gesture_cli.core.artifacts import load_json, save_json
    from gesture_cli.core.device import resolve_device
    from gesture_cli.data.registry import same_dataset
    from gesture_cli.eval.classify import classification_metrics
    from gesture_cli.tasks.features import load_features
    from gesture_cli.tasks.probe import load_classifier, require_classifier
    from gesture_cli.tasks.trained import run_precision

    name, clf_path = require_classifier(run, backbone)
    probe, meta = load_classifier(clf_path)
    classes = list(meta["classes"])
    spec = dataset or meta.get("dataset")
    if not spec:
        raise UsageError(f"{clf_path} does not record its dataset; pass --dataset")
    feats_path = run.path("features", name, f"{split}.safetensors")
    fmeta_path = run.path("features", name, "meta.json")
    fmeta = load_json(fmeta_path, kind="features-meta") if fmeta_path.is_file() else {}
    ds_seed = seed if seed is not None else (meta.get("dataset_seed") or 0)
    dev = resolve_device(device)
    prec = run_precision(dev, precision, _features_precision(fmeta), notify=notify)
    reuse = (
        feats_path.is_file() and same_dataset(fmeta.get("dataset"), spec) and max_samples is None
        and (seed is None or seed == meta.get("dataset_seed"))
        and _features_precision(fmeta) == prec.name  # --precision other than the features': extract anew in it
    )
    out_rel = f"eval/classify-probe-{name}.json"
    config = {"task": "classify", "from": "probe", "backbone": name, "dataset": spec, "split": split, "seed": ds_seed,
              "max_samples": max_samples, "features": "reused" if reuse else "extracted", "precision": prec.name}
    if reuse:
        inputs, keys, ds = [clf_path, feats_path], {}, None
    else:
        from gesture_cli.data import make_dataset
        from gesture_cli.data.registry import given_or_recorded_dataset

        ds_spec = given_or_recorded_dataset(dataset, meta.get("dataset"), recorded_in=f"the probe in {clf_path}")
        ds = make_dataset(ds_spec, split=split, seed=ds_seed)
        inputs = [clf_path, *[Path(p) for p in ds.source_files]]
        keys = {"dataset": ds.cache_token} if ds.cache_token else {}
    step = run.begin("evaluate", config=config, outputs=[out_rel], inputs=inputs, input_keys=keys, argv=argv, force=force)
    if step.cached:
        return {**load_json(run.path(out_rel), kind="eval-classify"), "cached": True, "output": str(run.path(out_rel))}

    with step:
        t0 = time.perf_counter()
        if reuse:
            x_t, y_t, smeta = load_features(run, name, split)
            x = x_t.numpy()
            check_feature_dim(x, want=probe.feature_dim, features_path=feats_path, classifier_path=clf_path)
            y = _map_labels(y_t.numpy(), list(smeta.get("classes") or classes), classes, where=str(feats_path))
        else:
            bb = build_classifier_backbone(meta, device=dev, path=clf_path, precision=prec)
            x = extract_for_classifier(bb, ds, meta=meta, path=clf_path, device=bb.device, batch_size=batch_size,
                                       max_samples=max_samples, on_progress=on_progress)
            y = _map_labels(ds.labels[: len(x)], ds.classes, classes, where=spec)
        prec.check_finite(torch.from_numpy(x), what=f"the features of {name}")
        pred = probe.predict(x)
        metrics = classification_metrics(y, pred, classes)
        result = {
            "task": "classify", "from": "probe", "backbone": name, "classifier": str(clf_path), "dataset": spec, "split": split,
            "features": config["features"], "precision": prec.name, "seconds": round(time.perf_counter() - t0, 3), "classes": classes,
            **metrics,
        }
        save_json(step.stage(out_rel, is_dir=False), result, kind="eval-classify")
        step.metrics.update({k: metrics[k] for k in ("accuracy", "macro_f1", "weighted_f1", "n")})
        step.metrics["precision"] = prec.name
    return {**result, "cached": False, "output": str(run.path(out_rel))}


# ----------------------------------------------------------------------------------------------
# gx evaluate / infer classify --from lora
# ----------------------------------------------------------------------------------------------


def require_lora(run, backbone: str | None) -> tuple[str, Path]:
    """(backbone folder name, lora/<backbone>/) of a trained LoRA classifier; None picks the only one."""
    from gesture_cli.tasks.trained import trained_dir

    return trained_dir(run, "lora", backbone, what="LoRA classifier", command="lora-train", none_hint=", or use --from probe")


def lora_head_meta(path: Path) -> dict:
    """The header of lora/<backbone>/head.safetensors: classes, backbone describe(), dataset, training config."""
    from gesture_cli.core.artifacts import load_tensors
    from gesture_cli.models.lora import HEAD_KIND

    _, meta = load_tensors(path / "head.safetensors", kind=HEAD_KIND, device="cpu")
    return meta


def _lora_logits(model, preprocess, dataset, *, size: int, batch_size: int, on_progress=None):
    """float32 [N, K] logits of every image of `dataset`, in eval mode, no augmentation."""
    import torch

    from gesture_cli.models.augment import to_float_images

    dev = model.head.weight.device
    out = []
    n = len(dataset)
    with torch.no_grad():
        for lo in range(0, n, batch_size):
            images = torch.from_numpy(np.ascontiguousarray(dataset.batch(list(range(lo, min(lo + batch_size, n))), size=size)))
            out.append(model(preprocess(to_float_images(images.to(dev)))).float().cpu())
            if on_progress is not None:
                on_progress(min(lo + batch_size, n), n)
    return torch.cat(out) if out else torch.zeros(0, model.head.out_features)


def evaluate_lora_classifier(run, *, backbone: str | None, dataset: str | None = None, split: str = "test", device="auto",
                             seed: int | None = None, max_samples: int | None = None, batch_size: int = 0, argv=None,
                             force: bool = False, on_progress=None, precision: str | None = None, notify=None) -> dict:
    """Score lora/<backbone>/ on a split; writes eval/classify-lora-<backbone>.json and eval/confusion-lora-<backbone>.png.

    The split is built as `gx lora-train` built its test split (same seed; `--max-samples` takes the same
    seeded subset), so evaluating with the training's settings (fp32 both: bf16 rounds differently in
    training, with fp32 master weights, than in inference) reproduces its test accuracy. The model runs
    in `precision` (--precision), by default the one it was trained in.
    """
    from gesture_cli.core.artifacts import load_json, save_json
    from gesture_cli.data import make_dataset, parse_dataset
    from gesture_cli.data.registry import given_or_recorded_dataset, same_dataset
    from gesture_cli.data.splits import cap_samples
    from gesture_cli.eval.classify import classification_metrics
    from gesture_cli.tasks.trained import run_precision
    from gesture_cli.viz.plots import render_confusion

    name, path = require_lora(run, backbone)
    meta = lora_head_meta(path)
    train_cfg = meta.get("config") or {}
    classes = list(meta["classes"])
    spec = dataset or meta.get("dataset")
    if not spec:
        raise UsageError(f"{path}/head.safetensors does not record its dataset; pass --dataset")
    ds_seed = seed if seed is not None else int(train_cfg.get("seed") or 0)
    same = same_dataset(meta.get("dataset"), spec)
    ds_spec = given_or_recorded_dataset(dataset, meta.get("dataset"), recorded_opts=train_cfg.get("dataset_opts"),
                                        recorded_in=f"the classifier in {path}")
    if (train_cfg.get("no_gesture") or (ds_spec.name == "hagrid" and "no_gesture" in classes)) and "no_gesture" not in ds_spec.options:
        ds_spec = parse_dataset(ds_spec, {"no_gesture": True})  # HaGRID trained with its no_gesture class
    held = _held_out_of_training(ds_spec, split, train_cfg) if same else None
    if held is not None:  # the split the classifier trained on: only what training held out for validation is scored
        ds = held
        if notify is not None:
            notify(f"'{spec}' split '{split}' is the one training drew from: scoring the {len(ds)} images it held out for validation")
    else:
        ds = make_dataset(ds_spec, split=split, seed=ds_seed)
    prec = run_precision(device, precision, meta.get("precision"), notify=notify)
    out_rel, png_rel = f"eval/classify-lora-{name}.json", f"eval/confusion-lora-{name}.png"
    config = {"task": "classify", "from": "lora", "backbone": name, "dataset": spec, "split": split, "seed": ds_seed, "max_samples": max_samples,
              "precision": prec.name}
    keys = {"dataset": ds.cache_token} if ds.cache_token else {}
    step = run.begin("evaluate", config=config, outputs=[out_rel, png_rel], inputs=[path / "head.safetensors", *[Path(p) for p in ds.source_files]],
                     input_keys=keys, argv=argv, force=force)
    if step.cached:
        return {**load_json(run.path(out_rel), kind="eval-classify"), "cached": True, "output": str(run.path(out_rel))}
    with step:
        t0 = time.perf_counter()
        model, clf_classes, info, preprocess = load_lora_classifier(run, name, prec.device, precision=prec)
        ds = cap_samples(ds, max_samples, ds_seed)
        y = _map_labels(ds.labels, ds.classes, clf_classes, where=spec)
        logits = _lora_logits(model, preprocess, ds, size=info["image_size"], batch_size=batch_size or 64, on_progress=on_progress)
        prec.check_finite(logits, what="the classifier's logits")
        metrics = classification_metrics(y, logits.argmax(-1).numpy(), classes)
        result = {
            "task": "classify", "from": "lora", "backbone": name, "classifier": str(path), "method": meta.get("method"), "dataset": spec,
            "split": split, "features": f"{meta.get('method', 'lora')} fine-tuned", "precision": prec.name,
            "seconds": round(time.perf_counter() - t0, 3), "classes": classes, **metrics,
        }
        if held is not None:
            result["scored"] = "the images training held out for validation"
        save_json(step.stage(out_rel, is_dir=False), result, kind="eval-classify")
        render_confusion(np.asarray(metrics["confusion"]), classes, step.stage(png_rel, is_dir=False),
                         title=f"lora {name}: {spec} / {split}, accuracy {metrics['accuracy']:.3f}")
        step.metrics.update({k: metrics[k] for k in ("accuracy", "macro_f1", "weighted_f1", "n")})
        step.metrics["precision"] = prec.name
    return {**result, "cached": False, "output": str(run.path(out_rel)), "confusion_png": str(run.path(png_rel))}


def _held_out_of_training(spec, split: str, train_cfg: dict):
    """The validation images training carved out of `split`, rebuilt from the recorded config, when `split` is the
    one it trained on and the dataset has no test split (e.g. HaGRID's val-only sample); None otherwise."""
    from dataclasses import fields

    from gesture_cli.train.lora import LoraTrainConfig, make_splits

    available = spec.splits()
    train_name = "train" if "train" in available else available[0]
    # only a dataset without a test split: with one, --split train asks for the training accuracy on purpose
    if split != train_name or "test" in available or ("val" in available and train_name != "val") or not train_cfg:
        return None
    known = {f.name for f in fields(LoraTrainConfig)} & {"dataset", "dataset_opts", "no_gesture", "val_fraction", "max_samples", "seed"}
    cfg = LoraTrainConfig(**{k: tuple(v) if k == "dataset_opts" else v for k, v in train_cfg.items() if k in known})
    held = make_splits(cfg).val
    if held is None:
        raise UsageError(f"'{spec}' split '{split}' is the classifier's training data and nothing was held out; pass another --dataset")
    return held


def infer_lora(run, *, backbone: str | None, input_path: Path | str, top_k: int = 3, device="auto", batch_size: int = 0,
               argv=None, precision: str | None = None, notify=None) -> dict:
    """Top-k classes of every input with a LoRA classifier; writes infer/classify-lora-<backbone>.json.

    The model runs in `precision` (--precision), by default the one it was trained in."""
    import torch

    from gesture_cli.tasks.trained import run_precision

    if top_k < 1:
        raise UsageError("--top-k must be at least 1")
    name, path = require_lora(run, backbone)
    meta = lora_head_meta(path)
    classes = list(meta["classes"])
    inputs = load_inputs(input_path, classes=classes)
    prec = run_precision(device, precision, meta.get("precision"), notify=notify)
    out_rel = f"infer/classify-lora-{name}.json"
    step = run.begin("infer", config={"task": "classify", "from": "lora", "backbone": name, "input": str(input_path), "top_k": top_k,
                                      "precision": prec.name},
                     outputs=[out_rel], inputs=[path / "head.safetensors"], argv=argv, force=True)
    with step:
        t0 = time.perf_counter()
        model, classes, info, preprocess = load_lora_classifier(run, name, prec.device, precision=prec)
        logits = _lora_logits(model, preprocess, inputs.dataset, size=info["image_size"], batch_size=batch_size or 64)
        prec.check_finite(logits, what="the classifier's logits")
        probs = torch.softmax(logits, dim=-1).numpy()
        result = _save_predictions(step, out_rel, probs, inputs, classes, top_k=top_k, t0=t0, precision=prec.name,
                                   header={"from": "lora", "backbone": name, "classifier": str(path), "input": str(input_path)})
    return {**result, "output": str(run.path(out_rel))}


def _save_predictions(step, out_rel: str, probs, inputs, classes, *, top_k: int, t0: float, header: dict, precision: str) -> dict:
    """Top-k predictions per input (+ accuracy where labels are known) into the step's infer JSON."""
    from gesture_cli.core.artifacts import save_json
    from gesture_cli.eval.classify import top_k_indices

    top = top_k_indices(probs, top_k)
    preds = [
        {"input": n, "label": lab, "top_k": [{"class": classes[j], "prob": round(float(probs[i, j]), 6)} for j in top[i]]}
        for i, (n, lab) in enumerate(zip(inputs.names, inputs.labels, strict=True))
    ]
    result = {"task": "classify", **header, "precision": precision, "n": len(preds), "top_k": int(top.shape[1]),
              "seconds": round(time.perf_counter() - t0, 3), "predictions": preds}
    known = [(p["label"], p["top_k"][0]["class"]) for p in preds if p["label"] is not None]
    if known:
        result["accuracy"] = round(sum(a == b for a, b in known) / len(known), 6)
        step.metrics["accuracy"] = result["accuracy"]
    save_json(step.stage(out_rel, is_dir=False), result, kind="infer-classify")
    step.metrics["inputs"] = len(preds)
    step.metrics["precision"] = precision
    return result
