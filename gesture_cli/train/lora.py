"""`gx lora-train`: fine-tune a backbone for image classification (LoRA, full, or head only).

Three layers, as elsewhere in gx:
    train_lora(cfg, run)        LoraTrainer through the trainer skeleton (train/skeleton.py): datasets,
                                run-dir step, checkpoints, final artifacts under lora/<backbone>/
    fit(...)                    gesture_cli.train.loop: the shared training loop
    build_classifier(...)       gesture_cli.models.lora: backbone + PEFT adapters + Linear head

Splits. Training uses the dataset's `train` split (or its first split when it has none, e.g. a HaGRID
folder with only `val`); validation uses its `val` split when there is one, else a stratified
`val_fraction` of the training split; the `test` split, when there is one, is scored once at the
end with the best weights (best validation `val_accuracy`; the last ones without validation).

Checkpoints and the atomic final directory. `lora/<backbone>/` is written as one RunDir step: the
final files (adapter/ or backbone/, head.safetensors, labels.json, metrics.json, train_log.csv,
merged/) are staged in a temporary sibling and renamed into place on success. Checkpoints must
outlive a crash, so they are written live to `lora/<backbone>/checkpoints/` while training runs. On
success they are hard-linked (copied where links are impossible) into the staged directory before
the rename, so at every moment a complete `checkpoints/last/` exists either in the old
`lora/<backbone>/` or in the new one; nothing is moved out of the live directory. A fresh run (no
`--resume`) clears the live `checkpoints/` first; it refuses to when they hold an unfinished run,
unless `--force` is given (then `--resume` is what you want).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gesture_cli.core.errors import ArtifactError, DataError, UsageError, unknown_choice
from gesture_cli.data.splits import Splits
from gesture_cli.data.splits import make_splits as shared_splits
from gesture_cli.train.common import LoopSettings, SizedBatches, check_data_fields, check_resume, loop_config, split_numbers
from gesture_cli.train.skeleton import FitData, Outcome, Plan, fit_summary
from gesture_cli.train.tuning import TunedBuilt, TuningTrainer, check_lora_fields, lora_record

COMMAND = "lora-train"
METHODS = ("lora", "full", "head")
POOL_KINDS = ("cls", "mean", "cls+mean")
DEFAULT_LR = {"lora": 5e-4, "full": 2e-5, "head": 1e-3}  # per method when --lr is not given
# Settings a resumed run must share with its checkpoint: they fix the model and the data it sees.
RESUME_KEYS = ("backbone", "method", "dataset", "dataset_opts", "target_modules", "rank", "alpha", "dropout", "pool", "image_size",
               "val_fraction", "max_samples", "no_gesture", "seed")


@dataclass(frozen=True)
class LoraTrainConfig(LoopSettings):
    backbone: str = "tiny-dinov2"  # registry name, hub id, local dir, timm:NAME or TorchScript file
    dataset: str = "synthetic-hands"  # dataset spec (DESIGN §5)
    dataset_opts: tuple[str, ...] = ()  # KEY=VALUE options of the dataset source, e.g. label_map=contiguous, margin=0.2
    method: str = "lora"  # lora | full | head
    target_modules: tuple[str, ...] = ()  # Linear module names for LoRA; empty = the family default (q/v projections)
    rank: int = 8  # LoRA rank r
    alpha: float = 16.0  # LoRA alpha (updates are scaled by alpha / r)
    dropout: float = 0.1  # dropout on the LoRA input
    pool: str = "cls"  # cls | mean | cls+mean: what the head sees
    image_size: int | None = None  # input side in pixels; None = the backbone's default
    epochs: int = 10  # passes over the training split
    batch_size: int = 32  # images per micro-batch and process
    lr: float | None = None  # peak learning rate; None = 5e-4 (lora), 2e-5 (full), 1e-3 (head)
    patience: int = 5  # evaluations (epochs) without a better val_accuracy before stopping; 0 = never
    val_fraction: float = 0.1  # stratified share of the training split held out when the dataset has no val split
    hflip: bool = False  # random horizontal flips (off: handedness carries meaning in sign languages)
    no_gesture: bool = False  # HaGRID: keep "no_gesture" boxes as a class
    merge: bool = False  # also write merged/: LoRA folded into a standalone transformers model
    max_samples: int | None = None  # cap per split (seeded random subset), for quick runs
    seed: int = 0  # head init, split, data order, dropout and augmentation

    def validate(self) -> None:
        if self.method not in METHODS:
            raise unknown_choice("method", self.method, METHODS)
        if self.pool not in POOL_KINDS:
            raise unknown_choice("pool", self.pool, POOL_KINDS)
        check_lora_fields(self)
        check_data_fields(self)
        if self.merge and self.method != "lora":
            raise UsageError(f"--merge applies to --method lora; --method {self.method} has no adapter to merge")
        self.train_config().validate()

    def train_config(self):
        return loop_config(self, lr=self.lr if self.lr is not None else DEFAULT_LR.get(self.method, 1e-3), monitor="val_accuracy")


# ---- data ---------------------------------------------------------------------------------------


def make_splits(cfg: LoraTrainConfig) -> Splits:
    """Train / validation / test datasets for a config (see the module docstring)."""
    from gesture_cli.data import make_dataset, parse_dataset
    from gesture_cli.data.images import check_two_classes, stratified_split

    spec = parse_dataset(cfg.dataset, cfg.dataset_opts)  # read once; every split below is made from it
    if cfg.no_gesture:
        if spec.name != "hagrid":
            raise UsageError(f"--no-gesture applies to hagrid:DIR datasets, not '{cfg.dataset}'")
        spec = parse_dataset(spec, {"no_gesture": True})

    def stratified(train, fraction):  # every class keeps its share in both parts
        return stratified_split(train.labels, test_fraction=fraction, seed=cfg.seed)

    out = shared_splits(cfg.dataset, spec.splits(), lambda split: make_dataset(spec, split=split, seed=cfg.seed),
                        val_fraction=cfg.val_fraction, holdout=stratified, max_samples=cfg.max_samples, seed=cfg.seed)
    for ds in (out.val, out.test):
        if ds is not None and list(ds.classes) != list(out.train.classes):
            raise DataError(f"dataset '{cfg.dataset}': split '{ds.split}' has classes {ds.classes[:5]}... unlike the training split's {out.train.classes[:5]}...")
    check_two_classes(cfg.dataset, out.train.classes, out.train.labels, folder=spec.name == "folder")
    return out


class ImageBatches(SizedBatches):
    """An image dataset as a `BatchSource` for fit(): get_batch(indices) -> (uint8 images tensor, int64 labels)."""

    def get_batch(self, indices):
        import torch

        images = self.dataset.batch(indices, size=self.size)
        return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(self.dataset.labels[np.asarray(indices, dtype=np.int64)])


def make_loss_fn(*, augment):
    """(model, (images, labels)) -> {"loss", "accuracy"}: augment on the device, preprocess, cross-entropy."""
    import torch.nn.functional as F

    from gesture_cli.models.augment import augment_batch, to_float_images

    def loss_fn(model, batch):
        images, labels = batch
        inner = model.module if hasattr(model, "module") else model  # DDP wraps the classifier
        dev = inner.head.weight.device
        x = to_float_images(images.to(dev, non_blocking=True))
        if augment is not None:
            x = augment_batch(x, augment)
        logits = model(inner.backbone.preprocess(x))
        labels = labels.to(dev)
        loss = F.cross_entropy(logits.float(), labels)
        return {"loss": loss, "accuracy": (logits.argmax(-1) == labels).float().mean()}

    return loss_fn


def predict(model, batches: ImageBatches, *, batch_size: int = 64):
    """(logits float32 [N, K], labels int64 [N]) of a dataset, no augmentation, in eval mode."""
    import torch

    was_training = model.training
    model.eval()
    outs, labels = [], []
    from gesture_cli.models.augment import to_float_images

    dev = model.head.weight.device
    with torch.no_grad():
        for lo in range(0, len(batches), batch_size):
            images, y = batches.get_batch(list(range(lo, min(lo + batch_size, len(batches)))))
            x = to_float_images(images.to(dev))
            outs.append(model(model.backbone.preprocess(x)).float().cpu())
            labels.append(y)
    model.train(was_training)
    if not outs:
        return torch.zeros(0, model.head.out_features), torch.zeros(0, dtype=torch.int64)
    return torch.cat(outs), torch.cat(labels)


def score(logits, labels, classes) -> dict:
    """classification_metrics (accuracy, macro/weighted P/R/F1, per-class rows by class name, confusion) + loss."""
    import torch.nn.functional as F

    from gesture_cli.eval.classify import classification_metrics

    out = classification_metrics(labels.numpy(), logits.argmax(-1).numpy(), classes)
    out["loss"] = round(float(F.cross_entropy(logits, labels)), 6) if len(labels) else None
    return out


# ---- the trainer ---------------------------------------------------------------------------------


@dataclass
class LoraBuilt(TunedBuilt):
    classes: list[str] | None = None  # class names, in label order


class LoraTrainer(TuningTrainer):
    command = COMMAND
    resume_keys = RESUME_KEYS

    def check_resume(self, settings: dict) -> None:
        """`check_resume`, and when this backbone has no checkpoint but another one in the run has, point at that one."""
        from gesture_cli.models.backbone_ref import backbone_dirname
        from gesture_cli.train.checkpoint import find_checkpoint, read_checkpoint_state

        cfg, last_dir = self.cfg, self.checkpoint_dir / "last"
        if find_checkpoint(last_dir) is None:
            others = []
            for state_path in sorted(self.checkpoint_dir.parent.parent.glob("*/checkpoints/last/state.json")):  # the other backbones' folders
                try:
                    meta = read_checkpoint_state(state_path.parent).get("meta", {})
                except ArtifactError:
                    continue
                if backbone_dirname(meta.get("config", {}).get("backbone", "")) != backbone_dirname(cfg.backbone):
                    others.append((meta.get("config", {}).get("backbone", "?"), state_path.parent))
            if others:
                name, path = others[0]
                raise ArtifactError(
                    f"nothing to resume for backbone '{cfg.backbone}' in {self.run.root}: the checkpoint there ({path}) is from "
                    f"backbone '{name}'; resume with --backbone {name}, or drop --resume to train '{cfg.backbone}' from scratch"
                )
        check_resume(last_dir, settings, RESUME_KEYS, backbone_hint=True)

    def make_splits(self, context) -> Splits:
        return make_splits(self.cfg)

    def build(self, plan: Plan, *, acc, prec, say) -> LoraBuilt:
        import torch

        from gesture_cli.core.config import config_to_dict
        from gesture_cli.models.backbones import build_backbone
        from gesture_cli.models.lora import build_classifier, count_parameters, lora_targets_of

        cfg = self.cfg
        # Built in fp32: fit() stores the frozen part in the compute dtype once the trained part is known.
        backbone = build_backbone(cfg.backbone, device=acc.device, dtype=torch.float32, image_size=cfg.image_size)
        classes = list(plan.splits.train.classes)
        model = build_classifier(
            backbone, num_classes=len(classes), method=cfg.method, pool=cfg.pool, targets=cfg.target_modules or None,
            rank=cfg.rank, alpha=cfg.alpha, dropout=cfg.dropout, seed=cfg.seed,
        )
        targets = lora_targets_of(model)
        resolved = {**config_to_dict(cfg), "image_size": backbone.image_size, "target_modules": targets}
        if self.resume:  # now with the defaults the backbone resolved
            self.check_resume(resolved)
        trainable, total = count_parameters(model)
        notices = [self.parameter_notice(trainable, total, targets), f"data: {self.describe_splits(plan.splits)}; {len(classes)} classes"]
        meta = {"config": resolved, "classes": classes, "backbone": backbone.describe(), "method": cfg.method}
        return LoraBuilt(model=model, resolved=resolved, meta=meta, notices=notices, backbone=backbone, classes=classes, trainable=trainable,
                         total=total)

    def make_data(self, plan: Plan, built: LoraBuilt, *, acc, say) -> FitData:
        from gesture_cli.models.augment import AugmentConfig

        splits, size = plan.splits, built.backbone.image_size
        val_data = ImageBatches(splits.val, size=size) if splits.val is not None else None

        def eval_fn(m) -> dict[str, float]:
            s = self._score(m, val_data, built.classes)
            return {"val_loss": s["loss"], "val_accuracy": s["accuracy"], "val_macro_f1": s["macro_f1"]}

        return FitData(model=built.model, train_data=ImageBatches(splits.train, size=size),
                       loss_fn=make_loss_fn(augment=AugmentConfig(hflip=self.cfg.hflip)), eval_fn=eval_fn if val_data is not None else None)

    def _score(self, model, batches: ImageBatches, classes: list[str]) -> dict:
        logits, labels = predict(model, batches, batch_size=max(self.cfg.batch_size, 64))
        return score(logits, labels, classes)

    def evaluate(self, plan: Plan, built: LoraBuilt, data: FitData, result, *, prec) -> Outcome:
        cfg, size = self.cfg, built.backbone.image_size
        metrics = self.score_splits(plan.splits, lambda ds: self._score(built.model, ImageBatches(ds, size=size), built.classes))
        summary = {**self.summary_start(built), **fit_summary(result, best="best_val_accuracy")}
        step_metrics = {
            "method": cfg.method,
            **split_numbers(metrics, val_accuracy="val.accuracy", test_accuracy="test.accuracy", test_macro_f1="test.macro_f1"),
            "trainable_params": built.trainable,
            "steps": result.state.step,
            "samples_per_s": summary["train_samples_per_s"],
        }
        return Outcome(metrics=metrics, summary=summary, step_metrics=step_metrics, extra={"classes": built.classes})

    def save(self, out: Path, plan: Plan, built: LoraBuilt, outcome: Outcome) -> None:
        """Everything under the staged lora/<backbone>/ (see the module docstring)."""
        from gesture_cli.core.artifacts import save_json
        from gesture_cli.models.lora import save_backbone_weights, save_head, save_merged

        cfg, classes, model = self.cfg, built.classes, built.model
        save_backbone_weights(out, model)
        save_head(out / "head.safetensors", model, classes=classes,
                  extra={"lora": lora_record(cfg, built.resolved), "dataset": cfg.dataset, "config": built.resolved,
                         "precision": outcome.summary["precision"]})
        save_json(out / "labels.json", {"classes": classes, "num_classes": len(classes), "dataset": cfg.dataset}, kind="labels")
        save_json(out / "metrics.json", {**outcome.summary, **outcome.metrics}, kind="lora-metrics")
        if cfg.merge:
            save_merged(out / "merged", model)


# ---- for `gx evaluate` / `gx infer` -------------------------------------------------------------


__all__ = ["LoraTrainConfig", "make_splits"]
