"""`gx pose-finetune`: pose encoder + projection + UMT5 trained to generate text (train/pose_common.py's docstring
says how), written to pose/finetune/."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gesture_cli.core.errors import ArtifactError, DataError, UsageError, shell_word, unknown_choice
from gesture_cli.data.pose import PoseSplits
from gesture_cli.models.translator import BRIDGE_KIND, TRANSLATOR_KIND, device_of, generate_texts, pose_inputs
from gesture_cli.train.common import LoopSettings
from gesture_cli.train.pose_common import (
    PRETRAIN_REL,
    PoseSetup,
    PoseTrainer,
    read_dataset_spec,
    resolve_encoder_config,
    validate_common,
)
from gesture_cli.train.pose_pretrain import PRETRAIN_KIND
from gesture_cli.train.skeleton import Built, FitData, Outcome, Plan, fit_summary

INITS = ("auto", "pretrained", "scratch")
# Settings a resumed run must share with its checkpoint: they fix the model and the data it sees.
FINETUNE_RESUME_KEYS = ("dataset", "dataset_opts", "text_model", "encoder", "normalize", "max_frames", "bridge", "init_from", "max_samples",
                        "val_fraction", "max_text_tokens", "seed")


@dataclass(frozen=True)
class PoseFinetuneConfig(LoopSettings):
    dataset: str = "synthetic-signs"  # pose dataset spec with texts
    dataset_opts: tuple[str, ...] = ()  # KEY=VALUE options of the dataset source
    init: str = "auto"  # auto: the pretrained encoder when there is one, else from scratch | pretrained (required) | scratch
    pretrained: str | None = None  # pretrain folder (or its encoder.safetensors); None = <run dir>/pose/pretrain
    text_model: str | None = None  # None = the pretrained encoder's text model, else umt5-small; or tiny-umt5, a hub id, a directory
    encoder_config: str | None = None  # from scratch: JSON/YAML pose encoder settings; None = the defaults
    encoder_opts: tuple[str, ...] = ()  # from scratch: KEY=VALUE overrides of encoder settings
    keypoints: str | None = None  # from scratch: body parts the encoder sees; None = the encoder config's
    normalize: str | None = None  # None = the pretraining's (shoulders from scratch)
    max_frames: int = 256  # frames per sequence at most
    bridge: str = "encoder"  # encoder: pose tokens are the UMT5 encoder's inputs_embeds | direct: they are its outputs
    max_text_tokens: int = 128  # target tokens at most (eos included); longer texts are truncated
    epochs: int = 30  # passes over the training split
    batch_size: int = 16  # sequences per micro-batch and process
    lr: float = 3e-4  # peak learning rate (pose encoder, projection and UMT5 alike)
    patience: int = 5  # evaluations without a better val BLEU-4 before stopping; 0 = never
    num_beams: int = 1  # beams when decoding for validation and the final scores (1 = greedy); evaluate/infer default to it
    max_new_tokens: int = 64  # tokens generated per sequence at most
    max_samples: int | None = None  # cap per split (seeded random subset), for quick runs
    val_fraction: float = 0.1  # share of train held out when the dataset has no val samples
    seed: int = 0  # weights, split, data order, frame sampling, dropout

    def validate(self) -> None:
        from gesture_cli.models.sign2text import BRIDGES

        validate_common(self)
        if self.init not in INITS:
            raise unknown_choice("--init", self.init, INITS)
        if self.bridge not in BRIDGES:
            raise unknown_choice("--bridge", self.bridge, BRIDGES)
        if self.num_beams < 1 or self.max_new_tokens < 1 or self.max_text_tokens < 2:
            raise UsageError("--num-beams and --max-new-tokens must be at least 1, --max-text-tokens at least 2")
        if self.init == "scratch" and self.pretrained:
            raise UsageError("--pretrained and --init scratch contradict each other; drop one")


def find_pretrained(run, path: str | None) -> Path | None:
    """The pretrain folder holding encoder.safetensors, or None when absent."""
    base = Path(path).expanduser() if path else run.path(PRETRAIN_REL)
    if base.is_file() and base.name.endswith(".safetensors"):
        base = base.parent
    return base if (base / "encoder.safetensors").is_file() else None


def tokenize_targets(tokenizer, texts: list[str], *, max_tokens: int) -> list[list[int]]:
    """Token ids of each text with eos appended (truncated to max_tokens, eos kept last)."""
    eos = tokenizer.eos_token_id
    out = []
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        out.append([*ids[: max_tokens - 1], eos])
    return out


@dataclass(frozen=True)
class Start:
    """Where fine-tuning starts, as found before any data is read."""

    pre_dir: Path | None  # the pretrain folder (encoder.safetensors), None from scratch
    pre_text: Path | None  # its text_model/ folder, when it has one
    text_name: str  # the text model's name
    normalize: str  # the normalisation: --normalize, else the pretraining's, else shoulders


@dataclass
class FinetuneBuilt(Built):
    text: object = None  # models.text.TextModel whose model is inside PoseToText


class FinetuneTrainer(PoseTrainer):
    command = "pose-finetune"
    resume_keys = FINETUNE_RESUME_KEYS
    monitor = "val_bleu4"

    def check(self) -> Start:
        """The config, the dataset's path, the pretrained encoder and the text model, before any data is read."""
        from gesture_cli.core.artifacts import load_json
        from gesture_cli.models.text import DEFAULT_TEXT_MODEL, read_text_model_info, resolve_text_model, text_model_dir

        cfg, run = self.cfg, self.run
        cfg.validate()
        self.dataset = read_dataset_spec(cfg)
        pre_dir = None if cfg.init == "scratch" else find_pretrained(run, cfg.pretrained)
        if pre_dir is None and (cfg.init == "pretrained" or cfg.pretrained):
            where = Path(cfg.pretrained).expanduser() if cfg.pretrained else run.path(PRETRAIN_REL)
            raise ArtifactError(f"no pretrained pose encoder at {where} (encoder.safetensors); run `gx pose-pretrain -r {shell_word(run.root)}` first, "
                                "or use --init scratch")
        pre_info = load_json(pre_dir / "pretrain.json", kind=PRETRAIN_KIND) if pre_dir is not None and (pre_dir / "pretrain.json").is_file() else {}
        pre_text = pre_dir / "text_model" if pre_dir is not None and (pre_dir / "text_model").is_dir() else None
        if pre_text is not None:
            aligned = read_text_model_info(pre_text)
            pre_name = aligned["name"]
            if cfg.text_model and cfg.text_model != pre_name and (
                    not aligned.get("location") or resolve_text_model(cfg.text_model).location != aligned["location"]):
                raise UsageError(f"{pre_dir} was aligned with text model '{pre_name}', not '{cfg.text_model}'; drop --text-model "
                                 f"(or pass --text-model {pre_name}), or use --init scratch")
            text_name = pre_name
        else:
            src = resolve_text_model(cfg.text_model or DEFAULT_TEXT_MODEL)
            if src.kind != "tiny":
                text_model_dir(src)
            text_name = src.name
        return Start(pre_dir=pre_dir, pre_text=pre_text, text_name=text_name,
                     normalize=cfg.normalize or pre_info.get("normalize") or "shoulders")

    def resolve(self, splits: PoseSplits, context: Start) -> PoseSetup:
        from gesture_cli.core.artifacts import load_tensors
        from gesture_cli.core.config import config_to_dict
        from gesture_cli.models.pose_encoder import pose_encoder_config

        cfg, pre_dir = self.cfg, context.pre_dir
        if pre_dir is not None:
            _, enc_meta = load_tensors(pre_dir / "encoder.safetensors", kind="pose-encoder")
            enc_cfg = pose_encoder_config(enc_meta["config"])
            if enc_cfg.layout != splits.train.layout:
                raise DataError(f"{pre_dir} was pretrained on {enc_cfg.layout} keypoints; dataset '{cfg.dataset}' has {splits.train.layout}")
            if cfg.encoder_config or cfg.encoder_opts or cfg.keypoints:
                raise UsageError("--encoder-config, --encoder-opt and --keypoints apply from scratch; the pretrained encoder keeps its own "
                                 "(use --init scratch to change them)")
        else:
            enc_cfg = resolve_encoder_config(cfg.encoder_config, cfg.encoder_opts, cfg.keypoints, dims=splits.train.dims,
                                             layout=splits.train.layout)
        init_from = str((pre_dir / "encoder.safetensors").resolve()) if pre_dir is not None else "scratch"
        resolved = {**config_to_dict(cfg), "text_model": context.text_name, "normalize": context.normalize, "encoder": enc_cfg.to_dict(),
                    "init_from": init_from}
        return PoseSetup(resolved=resolved, encoder=enc_cfg, normalize=context.normalize,
                         inputs=[pre_dir / "encoder.safetensors"] if pre_dir is not None else [], found=context)

    def build(self, plan: Plan, *, acc, prec, say) -> FinetuneBuilt:
        import torch

        from gesture_cli.models.pose_encoder import PoseEncoder, load_pose_encoder
        from gesture_cli.models.sign2text import PoseToText, count_parameters
        from gesture_cli.models.text import build_text_model, load_text_model

        cfg, splits, setup = self.cfg, plan.splits, plan.context
        start, enc_cfg = setup.found, setup.encoder
        if start.pre_text is not None:
            text = load_text_model(start.pre_text, device=acc.device)
        else:
            text = build_text_model(start.text_name, corpus=splits.train.texts, device=acc.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            encoder = load_pose_encoder(start.pre_dir, device=acc.device) if start.pre_dir is not None else PoseEncoder(enc_cfg)
            model = PoseToText(encoder, text.model, bridge=cfg.bridge)
        if cfg.bridge == "direct":  # the UMT5 encoder is skipped: freeze what only it uses (not the shared embeddings)
            shared = {id(p) for p in model.text.get_decoder().parameters()} | {id(p) for p in model.text.get_output_embeddings().parameters()}
            for p in model.text.get_encoder().parameters():
                if id(p) not in shared:
                    p.requires_grad_(False)
        model.to(acc.device)
        trainable, total = count_parameters(model)
        if start.pre_dir is not None:
            origin = f"pose encoder: pretrained, from {start.pre_dir}"
        elif cfg.init == "auto":
            origin = (f"pose encoder: from scratch (no pretrained encoder at {self.run.path(PRETRAIN_REL)}; run `gx pose-pretrain` first to "
                      "start from an aligned one)")
        else:
            origin = "pose encoder: from scratch (--init scratch)"
        notices = [
            origin,
            f"trainable parameters: {trainable:,} of {total:,}; text model {text.source.describe()}, bridge {cfg.bridge}",
            f"data: train {len(splits.train)}, val {len(splits.val)} ({splits.names['val']}), test {len(splits.test) if splits.test else 0}; "
            f"{enc_cfg.layout} {','.join(enc_cfg.parts)}, normalize {setup.normalize}",
        ]
        meta = {"config": setup.resolved, "text_model": text.describe()}
        return FinetuneBuilt(model=model, resolved=setup.resolved, meta=meta, notices=notices, text=text, trainable=trainable, total=total)

    def _generate(self, model, built: FinetuneBuilt, data) -> list[str]:
        """Decoded texts of a PoseBatches source, as --num-beams and --max-new-tokens say."""
        cfg = self.cfg
        return generate_texts(model, built.text.tokenizer, data, batch_size=max(cfg.batch_size, 32), num_beams=cfg.num_beams,
                              max_new_tokens=cfg.max_new_tokens)

    def make_data(self, plan: Plan, built: FinetuneBuilt, *, acc, say) -> FitData:
        from gesture_cli.eval.translate import translation_metrics

        splits, setup = plan.splits, plan.context
        labels = tokenize_targets(built.text.tokenizer, splits.train.texts, max_tokens=self.cfg.max_text_tokens)
        train_data = self.pose_batches(splits.train.samples, setup, random_frames=True, labels=labels)
        val_data = self.pose_batches(splits.val.samples, setup)

        def loss_fn(m, batch):
            dev = device_of(m)
            return m(*pose_inputs(batch, dev), batch["labels"].to(dev))

        def eval_fn(m) -> dict[str, float]:
            s = translation_metrics(self._generate(m, built, val_data), splits.val.texts)
            return {"val_bleu4": s["bleu4"], "val_bleu1": s["bleu1"], "val_chrf": s["chrf"], "val_rouge_l": s["rouge_l"]}

        return FitData(model=built.model, train_data=train_data, loss_fn=loss_fn, eval_fn=eval_fn)

    def evaluate(self, plan: Plan, built: FinetuneBuilt, data: FitData, result, *, prec) -> Outcome:
        from gesture_cli.eval.translate import translation_metrics

        cfg, splits = self.cfg, plan.splits
        metrics: dict[str, Any] = {}
        examples = []
        for role, ds in (("val", splits.val), ("test", splits.test)):
            if ds is None:
                continue
            hyps = self._generate(built.model, built, self.pose_batches(ds.samples, plan.context))
            scores = translation_metrics(hyps, ds.texts)
            scores.pop("signatures")
            metrics[role] = {"split": splits.names.get(role, role), **scores}
            if role == "val":
                examples = [{"id": s.id, "reference": s.text, "hypothesis": h} for s, h in zip(ds.samples[:5], hyps[:5], strict=False)]
        summary = {**fit_summary(result, processes=False), "trainable_params": built.trainable, "total_params": built.total,
                   "text_model": built.text.describe(), "bridge": cfg.bridge, "init_from": built.resolved["init_from"],
                   "best_val_bleu4": result.state.best_metric, "num_beams": cfg.num_beams,
                   "train": len(splits.train), "val": len(splits.val), "test": len(splits.test) if splits.test else 0}
        step_metrics = {"val_bleu4": metrics["val"]["bleu4"], "test_bleu4": metrics.get("test", {}).get("bleu4"),
                        "trainable_params": built.trainable, "steps": result.state.step}
        return Outcome(metrics=metrics, summary=summary, step_metrics=step_metrics, extra={"examples": examples})

    def save(self, out: Path, plan: Plan, built: FinetuneBuilt, outcome: Outcome) -> None:
        from gesture_cli.core.artifacts import save_json, save_tensors
        from gesture_cli.models.pose_encoder import save_pose_encoder
        from gesture_cli.models.text import TextModel, save_text_model

        cfg, model, text, enc_cfg = self.cfg, built.model, built.text, plan.context.encoder
        translator = {
            "dataset": cfg.dataset, "dataset_opts": list(cfg.dataset_opts), "normalize": plan.context.normalize, "max_frames": cfg.max_frames,
            "bridge": cfg.bridge, "num_beams": cfg.num_beams, "max_new_tokens": cfg.max_new_tokens, "seed": cfg.seed,
            "max_samples": cfg.max_samples, "val_fraction": cfg.val_fraction, "init_from": built.resolved["init_from"], "layout": enc_cfg.layout,
            "parts": list(enc_cfg.parts), "dims": enc_cfg.in_channels,
        }
        save_pose_encoder(model.encoder, out, extra={"stage": "finetune"})
        save_tensors(out / "bridge.safetensors", {"weight": model.proj.weight, "bias": model.proj.bias}, kind=BRIDGE_KIND,
                     meta={"bridge": model.bridge, "pose_dim": model.proj.in_features, "text_dim": model.proj.out_features})
        model.text.float()  # fp32 on disk: frozen parts (the skipped encoder of the direct bridge) were held in the compute dtype
        save_text_model(TextModel(tokenizer=text.tokenizer, model=model.text, source=text.source), out / "text_model", weights=True,
                        extra={"fine_tuned": True})
        save_json(out / "translator.json", {**translator, "text_model": text.describe(), "config": built.resolved,
                                            "precision": outcome.summary["precision"]},
                  kind=TRANSLATOR_KIND)  # precision: what `gx evaluate/infer translate` run it in by default
        save_json(out / "metrics.json", {**outcome.summary, **outcome.metrics, "examples": outcome.extra["examples"]},
                  kind="pose-finetune-metrics")


__all__ = ["INITS", "PoseFinetuneConfig", "find_pretrained", "tokenize_targets"]
