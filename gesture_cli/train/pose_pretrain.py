"""`gx pose-pretrain`: align pooled pose embeddings with a frozen UMT5 encoder's sentence embeddings
(train/pose_common.py's docstring says how), written to pose/pretrain/."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gesture_cli.core.errors import UsageError
from gesture_cli.data.pose import PoseSplits
from gesture_cli.data.pose_batches import PoseBatches
from gesture_cli.eval.retrieval import retrieval_metrics
from gesture_cli.models.translator import device_of, pose_inputs
from gesture_cli.train.common import LoopSettings
from gesture_cli.train.pose_common import (
    PoseSetup,
    PoseTrainer,
    points_of,
    read_dataset_spec,
    resolve_encoder_config,
    validate_common,
)
from gesture_cli.train.skeleton import Built, FitData, Outcome, Plan, fit_summary

PRETRAIN_KIND = "pose-pretrain"
HEADS_KIND = "pose-text-heads"
# Settings a resumed run must share with its checkpoint: they fix the model and the data it sees.
PRETRAIN_RESUME_KEYS = ("dataset", "dataset_opts", "text_model", "encoder", "normalize", "max_frames", "embed_dim", "max_samples",
                        "val_fraction", "seed")


@dataclass(frozen=True)
class PosePretrainConfig(LoopSettings):
    dataset: str = "synthetic-signs"  # pose dataset spec: synthetic-signs, pose:FILE|DIR (DESIGN §5)
    dataset_opts: tuple[str, ...] = ()  # KEY=VALUE options of the dataset source, e.g. train_size=1000
    text_model: str = "umt5-small"  # frozen text side: umt5-small, umt5-base, tiny-umt5, a hub id or a local directory
    encoder_config: str | None = None  # JSON/YAML file of pose encoder settings (configs/pose_encoder.json); None = its defaults
    encoder_opts: tuple[str, ...] = ()  # KEY=VALUE overrides of encoder settings, e.g. d_model=128, n_layers=2
    keypoints: str | None = None  # body parts the encoder sees, e.g. body,hands,face-lite; None = the encoder config's
    normalize: str = "shoulders"  # none | max-abs | shoulders | shoulders-frame (data/pose.py)
    max_frames: int = 256  # frames per sequence at most (longer ones are subsampled)
    embed_dim: int = 256  # width of the shared pose-text space
    temperature: float = 0.07  # initial softmax temperature (learned, without weight decay; 1/temperature is capped at 100)
    epochs: int = 20  # passes over the training split
    batch_size: int = 32  # sequences per micro-batch and process (the negatives of InfoNCE: they stay within a micro-batch)
    lr: float = 5e-4  # peak learning rate
    patience: int = 5  # evaluations without a better val R@1 before stopping; 0 = never
    max_samples: int | None = None  # cap per split (seeded random subset), for quick runs
    val_fraction: float = 0.1  # share of train held out when the dataset has no val samples
    seed: int = 0  # weights, split, data order, frame sampling, dropout

    def validate(self) -> None:
        validate_common(self)
        if self.embed_dim < 1:
            raise UsageError(f"--embed-dim must be at least 1; got {self.embed_dim}")
        if not 0 < self.temperature <= 1:
            raise UsageError(f"--temperature must lie in (0, 1]; got {self.temperature}")
        if self.batch_size < 2:
            raise UsageError("--batch-size must be at least 2: InfoNCE contrasts the sequences of a batch")


def _sentence_table(texts: list[str]) -> tuple[list[str], np.ndarray]:
    """(distinct sentences in first-seen order, row of each text)."""
    table: dict[str, int] = {}
    rows = np.array([table.setdefault(t, len(table)) for t in texts], dtype=np.int64)
    return list(table), rows


def _embed_poses(model, data: PoseBatches, *, batch_size: int):
    """[N, E] pose embeddings of a dataset, in eval mode, on the CPU."""
    import torch

    was = model.training
    model.eval()
    out = []
    dev = device_of(model)
    with torch.no_grad():
        for lo in range(0, len(data), batch_size):
            b = data.get_batch(range(lo, min(lo + batch_size, len(data))))
            out.append(model.embed_pose(*pose_inputs(b, dev)).float().cpu())
    model.train(was)
    return torch.cat(out)


@dataclass
class PretrainBuilt(Built):
    text: object = None  # models.text.TextModel, frozen
    train_feats: object = None  # [M_train, D_text] embeddings of the distinct training sentences, computed once
    train_rows: np.ndarray | None = None  # [N_train] row of each training sample's sentence
    val_feats: object = None  # [M_val, D_text]
    val_rows: np.ndarray | None = None  # [N_val]
    val_sentences: int = 0  # distinct validation sentences
    text_params: int = 0
    text_trainable: int = 0


class PretrainTrainer(PoseTrainer):
    command = "pose-pretrain"
    resume_keys = PRETRAIN_RESUME_KEYS
    monitor = "val_r1"

    def check(self):
        """The config, the dataset's path and the text model, before any data is read; returns the text model's source."""
        from gesture_cli.models.text import resolve_text_model, text_model_dir

        self.cfg.validate()
        self.dataset = read_dataset_spec(self.cfg)
        src = resolve_text_model(self.cfg.text_model)  # fail fast, before any data is read
        if src.kind != "tiny":
            text_model_dir(src)
        return src

    def resolve(self, splits: PoseSplits, context) -> PoseSetup:
        from gesture_cli.core.config import config_to_dict

        cfg = self.cfg
        enc_cfg = resolve_encoder_config(cfg.encoder_config, cfg.encoder_opts, cfg.keypoints, dims=splits.train.dims, layout=splits.train.layout)
        return PoseSetup(resolved={**config_to_dict(cfg), "encoder": enc_cfg.to_dict()}, encoder=enc_cfg, normalize=cfg.normalize,
                         found=context)

    def build(self, plan: Plan, *, acc, prec, say) -> PretrainBuilt:
        import torch

        from gesture_cli.models.pose_encoder import PoseEncoder
        from gesture_cli.models.sign2text import PoseTextAligner, count_parameters
        from gesture_cli.models.text import build_text_model, embed_texts, text_encoder

        cfg, splits, setup = self.cfg, plan.splits, plan.context
        src, enc_cfg = setup.found, setup.encoder
        text = build_text_model(src, corpus=splits.train.texts, encoder_only=src.kind != "tiny", device=acc.device)
        text.model.requires_grad_(False).eval()  # frozen: never in the optimizer, no dropout in its embeddings
        # Autocast only: its weights stay as they are, since a tiny text model is saved with the encoder.
        prec.wrap(text_encoder(text.model))
        train_sentences, train_rows = _sentence_table(splits.train.texts)
        val_sentences, val_rows = _sentence_table(splits.val.texts)
        train_feats = embed_texts(text, train_sentences)  # [M, D_text], frozen: computed once
        val_feats = embed_texts(text, val_sentences)
        prec.check_finite(train_feats, what="the frozen text encoder's sentence embeddings")
        text_params = sum(p.numel() for p in text.model.parameters())
        text_trainable = sum(p.numel() for p in text.model.parameters() if p.requires_grad)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = PoseTextAligner(PoseEncoder(enc_cfg), text_dim=text.d_model, embed_dim=cfg.embed_dim, temperature=cfg.temperature)
        model.to(acc.device)
        trainable, total = count_parameters(model)
        notices = [
            f"trainable parameters: {trainable:,} (pose encoder {sum(p.numel() for p in model.encoder.parameters()):,} + heads + temperature); "
            f"text encoder {text.source.describe()} frozen: {text_params:,} parameters, embeddings of {len(train_sentences)} + "
            f"{len(val_sentences)} distinct sentences computed once",
            f"data: train {len(splits.train)}, val {len(splits.val)} ({splits.names['val']}), "
            f"{enc_cfg.layout} {','.join(enc_cfg.parts)} ({len(points_of(enc_cfg))} points), normalize {cfg.normalize}",
        ]
        meta = {"config": setup.resolved, "text_model": text.describe()}
        return PretrainBuilt(model=model, resolved=setup.resolved, meta=meta, notices=notices, text=text, train_feats=train_feats,
                             train_rows=train_rows, val_feats=val_feats, val_rows=val_rows, val_sentences=len(val_sentences),
                             trainable=trainable, total=total, text_params=text_params, text_trainable=text_trainable)

    def make_data(self, plan: Plan, built: PretrainBuilt, *, acc, say) -> FitData:
        import torch

        from gesture_cli.models.sign2text import info_nce

        splits, setup = plan.splits, plan.context
        train_data = self.pose_batches(splits.train.samples, setup, random_frames=True,
                                       extras={"text_features": built.train_feats[torch.as_tensor(built.train_rows)]})
        val_data = self.pose_batches(splits.val.samples, setup)

        def loss_fn(m, batch):
            dev = device_of(m)
            pose, txt, scale = m(*pose_inputs(batch, dev), batch["text_features"].to(dev))
            loss = info_nce(pose, txt, scale)
            return {"loss": loss, "temperature": (1.0 / scale).detach()}

        def eval_fn(m) -> dict[str, float]:
            pose = _embed_poses(m, val_data, batch_size=max(self.cfg.batch_size, 64))
            return retrieval_metrics(pose, m.embed_text(built.val_feats.to(device_of(m))).cpu(), built.val_rows)

        return FitData(model=built.model, train_data=train_data, loss_fn=loss_fn, eval_fn=eval_fn)

    def evaluate(self, plan: Plan, built: PretrainBuilt, data: FitData, result, *, prec) -> Outcome:
        import torch

        splits, model = plan.splits, built.model
        with torch.no_grad():
            final = data.eval_fn(model)
        chance = 1.0 / built.val_sentences
        summary = {
            **fit_summary(result, processes=False), "trainable_params": built.trainable, "total_params": built.total,
            "text_encoder_params": built.text_params, "text_encoder_trainable": built.text_trainable, "text_model": built.text.describe(),
            "temperature": round(1.0 / float(model.scale.detach()), 6), "val_sentences": built.val_sentences, "chance_r1": round(chance, 6),
            "best_val_r1": result.state.best_metric, "train": len(splits.train), "val": len(splits.val), "val_split": splits.names["val"],
        }
        step_metrics = {"val_r1": final["val_r1"], "val_r5": final["val_r5"], "chance_r1": summary["chance_r1"],
                        "trainable_params": built.trainable, "steps": result.state.step}
        return Outcome(metrics={"val": final}, summary=summary, step_metrics=step_metrics)

    def save(self, out: Path, plan: Plan, built: PretrainBuilt, outcome: Outcome) -> None:
        from gesture_cli.core.artifacts import save_json, save_tensors
        from gesture_cli.models.pose_encoder import save_pose_encoder
        from gesture_cli.models.text import save_text_model

        cfg, model, text = self.cfg, built.model, built.text
        data = {"dataset": cfg.dataset, "dataset_opts": list(cfg.dataset_opts), "normalize": cfg.normalize, "max_frames": cfg.max_frames}
        save_pose_encoder(model.encoder, out, extra={"stage": "pretrain", **data})
        heads = {k: v for k, v in model.state_dict().items() if not k.startswith("encoder.")}
        save_tensors(out / "heads.safetensors", heads, kind=HEADS_KIND,
                     meta={"embed_dim": cfg.embed_dim, "text_dim": text.d_model, "temperature": outcome.summary["temperature"]})
        save_text_model(text, out / "text_model", weights=text.source.kind == "tiny")
        save_json(out / "pretrain.json", {**data, "text_model": text.describe(), "embed_dim": cfg.embed_dim,
                                          "encoder": built.resolved["encoder"], "config": built.resolved}, kind=PRETRAIN_KIND)
        save_json(out / "metrics.json", {**outcome.summary, **outcome.metrics}, kind="pose-pretrain-metrics")


__all__ = ["HEADS_KIND", "PRETRAIN_KIND", "PosePretrainConfig"]
