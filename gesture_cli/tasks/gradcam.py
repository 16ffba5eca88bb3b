"""`gx gradcam`: the lora or probe classifier(s) of a run, images, a RunDir step, PNG strips under
gradcam/<from>-<backbone>/.

Three layers, as elsewhere in gx:
    render_gradcam_run(cfg, run)     (here) classifier(s), inputs, RunDir step, the strips
    explain_images(classifier, ...)  maps of a batch (`gesture_cli.viz.gradcam`)
    gradcam_maps / attention_maps    the maps themselves (`gesture_cli.viz.gradcam`)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gesture_cli.core.errors import UsageError, did_you_mean, unknown_choice
from gesture_cli.tasks.trained import check_precision_option
from gesture_cli.viz.gradcam import METHODS, Explained, ProbeClassifier, explain_images, render_strip

SOURCES = ("lora", "probe")


TARGET_KEYWORDS = ("pred", "true")  # --target: the predicted class, the true class; anything else is a class name


@dataclass(frozen=True)
class GradcamConfig:
    """`gx gradcam`: which classifier, which images, which map."""

    source: str = "lora"  # --from: lora | probe
    backbone: str | None = None  # backbone folder of the artifact; None = the only one in the run dir
    input: str | None = None  # image file, folder of images or Sign-MNIST CSV; None = --samples-per-class from the dataset
    samples_per_class: int = 1  # images per class from the dataset's test split when --input is not given
    dataset: str | None = None  # dataset spec; None = the one the classifier was trained on
    split: str = "test"  # dataset split the samples come from
    method: str = "gradcam"  # gradcam | gradcam++
    compare: bool = False  # probe and lora maps of the same backbone side by side
    max_images: int = 48  # at most this many strips (one PNG each)
    target: str = "pred"  # which class the Grad-CAM explains: pred | true | a class name of the classifier
    precision: str | None = None  # auto | fp32 | bf16 | fp16; None = each artifact's own (core.device.inference_precision)

    def validate(self) -> None:
        check_precision_option(self.precision)
        if self.source not in SOURCES:
            raise unknown_choice("--from source", self.source, SOURCES)
        if self.method not in METHODS:
            raise unknown_choice("--method", self.method, METHODS)
        if self.samples_per_class < 1:
            raise UsageError("--samples-per-class must be at least 1")
        if self.max_images < 1:
            raise UsageError("--max-images must be at least 1")
        if not str(self.target).strip():
            raise UsageError("--target is empty; use pred, true or a class name")


def load_explained(run, source: str, backbone: str | None, *, device, precision: str | None = None) -> Explained:
    """The lora or probe classifier of a run dir, as one torch module (errors say what to run), run in
    `precision` (--precision), by default the artifact's own: the LoRA training's, the probe features'."""
    from gesture_cli.core.device import inference_precision

    if source == "lora":
        from gesture_cli.tasks.classify import load_lora_classifier, lora_head_meta, require_lora

        name, path = require_lora(run, backbone)
        meta = lora_head_meta(path)
        prec = inference_precision(device, precision, meta.get("precision"))
        model, classes, info, _ = load_lora_classifier(run, name, prec.device, precision=prec)
        return Explained("lora", name, model, classes, int(info["image_size"]), meta.get("dataset"),
                         int((meta.get("config") or {}).get("seed") or 0), prec)
    if source == "probe":
        from gesture_cli.tasks.classify import build_classifier_backbone, features_precision
        from gesture_cli.tasks.probe import load_classifier, require_classifier

        name, path = require_classifier(run, backbone)
        probe, meta = load_classifier(path)
        prec = inference_precision(device, precision, features_precision(run, name))
        bb = build_classifier_backbone(meta, device=prec.device, path=path, precision=prec)
        model = ProbeClassifier(bb, probe, pool=meta.get("pool") or "cls").eval()
        return Explained("probe", name, model, list(meta["classes"]), int(bb.image_size), meta.get("dataset"),
                         int(meta.get("dataset_seed") or 0), prec)
    raise unknown_choice("--from source", source, SOURCES)


def precision_names(explained: list[Explained]) -> str:
    """"bf16", or with --compare and artifacts made in different precisions "lora bf16, probe fp32"."""
    if len({ex.precision.name for ex in explained}) == 1:
        return explained[0].precision.name
    return ", ".join(f"{ex.source} {ex.precision.name}" for ex in explained)


@dataclass
class Images:
    images: np.ndarray  # uint8 [N, S, S] or [N, S, S, 3] at the classifier's size
    names: list[str]
    labels: list[str | None]


def make_images(cfg: GradcamConfig, explained: Explained) -> Images:
    """--input, or the first --samples-per-class images of each class of the dataset's split."""
    size = explained.image_size
    if cfg.input:
        from gesture_cli.tasks.classify import load_inputs

        inputs = load_inputs(cfg.input, classes=explained.classes)
        n = min(len(inputs.dataset), cfg.max_images)
        return Images(inputs.dataset.batch(list(range(n)), size=size), inputs.names[:n], inputs.labels[:n])
    from gesture_cli.data import make_dataset
    from gesture_cli.data.registry import given_or_recorded_dataset

    if not (cfg.dataset or explained.dataset):
        raise UsageError(f"the {explained.source} classifier does not record its dataset; pass --dataset or --input")
    spec = given_or_recorded_dataset(cfg.dataset, explained.dataset, recorded_in=f"the {explained.source} classifier")
    ds = make_dataset(spec, split=cfg.split, seed=explained.seed)
    idx = [int(i) for c in range(len(ds.classes)) for i in np.flatnonzero(ds.labels == c)[: cfg.samples_per_class]][: cfg.max_images]
    if not idx:
        raise UsageError(f"dataset '{spec}' split '{cfg.split}' has no images")
    return Images(ds.batch(idx, size=size), [f"{spec} {cfg.split} #{i}" for i in idx], [ds.classes[ds.labels[i]] for i in idx])


def target_indices(target: str, explained: Explained, imgs: Images) -> np.ndarray | None:
    """Class index per image that `--target` asks the maps of `explained` to explain; None = its prediction.

    `true` needs every image's label among the classifier's classes; a class name is matched exactly,
    else case-insensitively when that is unambiguous (Sign MNIST letters: `b` is `B`).
    """
    target = str(target).strip()
    classes = explained.classes
    n = len(imgs.labels)
    if target == "pred":
        return None
    if target == "true":
        missing = [i for i, label in enumerate(imgs.labels) if label is None]
        if missing:
            raise UsageError(f"--target true needs the true class of every image; {len(missing)} of {n} have none "
                             f"(e.g. {imgs.names[missing[0]]}): use --target pred or a class name")
        unknown = [i for i, label in enumerate(imgs.labels) if label not in classes]
        if unknown:
            i = unknown[0]
            raise UsageError(f"--target true: image {imgs.names[i]} is labelled '{imgs.labels[i]}', not a class of the "
                             f"{explained.source} classifier ({', '.join(classes)})")
        return np.array([classes.index(label) for label in imgs.labels], dtype=np.int64)
    if target in classes:
        index = classes.index(target)
    else:
        folded = [i for i, c in enumerate(classes) if c.casefold() == target.casefold()]
        if len(folded) != 1:
            raise UsageError(f"--target '{target}' is not a class of the {explained.source} classifier{did_you_mean(target, classes)}; "
                             f"valid: {', '.join(TARGET_KEYWORDS)} or a class: {', '.join(classes)}")
        index = folded[0]
    return np.full(n, index, dtype=np.int64)


def _resized_maps(res: dict, size: int) -> dict:
    import cv2

    def fit(maps: np.ndarray) -> np.ndarray:
        flat = maps.reshape(-1, *maps.shape[-2:])
        out = np.stack([cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR) for m in flat])
        return out.reshape(*maps.shape[:-2], size, size)

    return {k: fit(v) if k in ("gradcam", "cls_heads", "cls_mean", "rollout") else v for k, v in res.items()}


def render_gradcam_run(cfg: GradcamConfig, run, *, device="auto", argv=None, notify=None) -> dict:
    """Maps and PNG strips of every image into gradcam/<from>-<backbone>/ (compare-<backbone>/ with --compare).
    `notify(line)` gets the one "precision: ..." line."""
    from gesture_cli.core.artifacts import save_json
    from gesture_cli.core.device import resolve_device

    cfg.validate()
    dev = resolve_device(device)
    sources = SOURCES if cfg.compare else (cfg.source,)
    explained = [load_explained(run, s, cfg.backbone, device=dev, precision=cfg.precision) for s in sources]
    if notify is not None:
        notify(f"precision: {precision_names(explained)} on {explained[0].precision.device}")
    if cfg.compare and explained[0].name != explained[1].name:
        raise UsageError(f"--compare needs one backbone with both artifacts; lora has '{explained[0].name}', probe '{explained[1].name}': pass --backbone")
    first = explained[0]
    imgs = make_images(cfg, first)
    targets = [target_indices(cfg.target, ex, imgs) for ex in explained]  # before the step: a bad --target leaves no trace
    out_rel = f"gradcam/{'compare' if cfg.compare else first.source}-{first.name}"
    used = {ex.source: ex.precision.name for ex in explained}
    step = run.begin("gradcam", config={**cfg.__dict__, "backbone": first.name, "precision": used}, outputs=[out_rel], argv=argv, force=True)
    with step:
        out = step.stage(out_rel)
        rows_per_source = []
        arrays = {}
        for ex, tgt in zip(explained, targets, strict=True):
            res = explain_images(ex, imgs.images, method=cfg.method, targets=tgt)
            if ex.image_size != first.image_size:  # probe and lora may run at different sizes: maps at the shown image's
                res = _resized_maps(res, imgs.images.shape[1])
            rows_per_source.append(res)
            arrays.update({f"{ex.source}_{k}": v for k, v in res.items() if k not in ("kind", "deletion")})
        records = []
        for i, (name, label) in enumerate(zip(imgs.names, imgs.labels, strict=True)):
            rows = [{"label": ex.source, "gradcam": r["gradcam"][i], "rollout": r["rollout"][i], "kind": r["kind"], "method": cfg.method,
                     "target": ex.classes[int(r["target"][i])]} for ex, r in zip(explained, rows_per_source, strict=True)]
            preds = ", ".join(f"{ex.source} {ex.classes[int(r['pred'][i])]} ({r['prob'][i]:.2f})" for ex, r in zip(explained, rows_per_source, strict=True))
            file = f"{i:03d}.png"
            render_strip(out / file, imgs.images[i], rows, title=f"{name}: true {label or '?'}, predicted {preds}")
            records.append({"file": file, "input": name, "label": label,
                            **{f"{ex.source}_pred": ex.classes[int(r["pred"][i])] for ex, r in zip(explained, rows_per_source, strict=True)},
                            **{f"{ex.source}_target": ex.classes[int(r["target"][i])] for ex, r in zip(explained, rows_per_source, strict=True)},
                            **{f"{ex.source}_deletion_drop": round(float(r["deletion"]["drop_top"][i]), 4) for ex, r in zip(explained, rows_per_source, strict=True)}})
        np.savez_compressed(out / "maps.npz", **arrays)
        # a class name as the classifier spells it (--target b explains class B)
        target = cfg.target.strip() if cfg.target.strip() in TARGET_KEYWORDS else explained[0].classes[int(targets[0][0])]
        result = {"from": [ex.source for ex in explained], "backbone": first.name, "method": cfg.method, "target": target,
                  "precision": used,  # per source, like "deletion": with --compare each artifact defaults to its own
                  "attention": rows_per_source[0]["kind"], "n": len(records),
                  "deletion": {ex.source: {k: r["deletion"][k] for k in ("patches", "of", "mean_drop_top", "mean_drop_random")}
                               for ex, r in zip(explained, rows_per_source, strict=True)},
                  "images": records}
        save_json(out / "gradcam.json", result, kind="gradcam")
        step.metrics.update({"images": len(records), "precision": precision_names(explained)})
    return {**result, "output": str(run.path(out_rel))}
