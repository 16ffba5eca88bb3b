"""`gx pose-pretrain` and `gx pose-finetune`: sign-to-text from keypoint sequences.

Three layers, as in train/lora.py:
    pretrain_pose(cfg, run) / finetune_pose(cfg, run)   tasks/translate.py: the run-dir step under pose/, run by the
                                                        trainer skeleton with PretrainTrainer (train/pose_pretrain.py)
                                                        or FinetuneTrainer (train/pose_finetune.py); this module
                                                        holds what both share
    fit(...)                                            gesture_cli.train.loop: the shared training loop
    PoseTextAligner / PoseToText                        gesture_cli.models.sign2text (+ models/text.py for UMT5)

Pretraining aligns pooled pose embeddings with the pooled embeddings of a frozen UMT5 encoder
(symmetric InfoNCE, learnable temperature). The text encoder never trains: its embedding of each distinct sentence is computed once
before training. Each evaluation ranks the validation split's distinct sentences for every pose
sequence (R@1, R@5 pose -> text, eval/retrieval.py; chance R@1 = 1 / number of distinct sentences) and
the best R@1 picks `checkpoints/best/`.

Fine-tuning starts from `pose/pretrain/encoder.safetensors` (`--init auto`: when it exists, else from
scratch with a notice; `--init pretrained` requires it; `--init scratch` ignores it) and uses the text
model pretraining was aligned with (its tokenizer and, for tiny-umt5, its weights come from
`pose/pretrain/text_model/`). Pose tokens are projected into UMT5 (models/sign2text.py: `--bridge
encoder|direct`), trained with teacher forcing; each evaluation decodes the validation split (greedy,
or beam search with `--num-beams`) and scores sacrebleu BLEU-4, which picks `checkpoints/best/`.

Data. Samples are normalised once (`--normalize`, data/pose.py) and reduced to the encoder's body
parts; a training batch takes at most `--max-frames` frames per sequence, one random frame from each of
that many equal segments (seeded by the batch's sample indices, so a resumed run draws the same
frames); evaluation takes evenly spaced ones. Splits: the dataset's own train / val / test (pose
folders without splits get a stable 80/10/10 by sample id); an empty val split is replaced by a seeded
`--val-fraction` of train.

Checkpoints and the atomic final directory work as in train/lora.py: checkpoints are written live to
`pose/<stage>/checkpoints/` and hard-linked into the staged directory that replaces `pose/<stage>/`.
"""

# What both trainers share: config checks, the pose encoder's settings, the data both read and their
# run-dir step record.

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gesture_cli.core.errors import DataError, UsageError, unknown_choice
from gesture_cli.data.pose import PoseSplits, make_pose_splits
from gesture_cli.data.pose_batches import NORMALIZATIONS, PoseBatches
from gesture_cli.data.registry import DatasetSpec, parse_dataset
from gesture_cli.train.common import check_data_fields, check_resume, loop_config
from gesture_cli.train.skeleton import Plan, Trainer

PRETRAIN_REL = "pose/pretrain"


def read_dataset_spec(cfg) -> DatasetSpec:
    """The cheap part of reading a pose dataset, done once: cfg.dataset + cfg.dataset_opts parsed (a known
    source, options it takes), and for pose:PATH a path that exists.

    Runs before the text model and the pretrained encoder are looked for, so that a mistyped path is
    reported as such, not as a model to download."""
    spec = parse_dataset(cfg.dataset, cfg.dataset_opts, kind="pose")
    if spec.name == "pose" and spec.arg and not Path(spec.arg).expanduser().exists():
        raise DataError(f"{Path(spec.arg).expanduser()}: no such file or directory (--dataset {spec.text})")
    return spec


def validate_common(cfg) -> None:
    """The checks of the settings both pose configs have."""
    parse_encoder_opts(cfg.encoder_opts)

    if cfg.normalize is not None and cfg.normalize not in NORMALIZATIONS:
        raise unknown_choice("normalisation", cfg.normalize, NORMALIZATIONS)
    if cfg.max_frames < 1:
        raise UsageError(f"--max-frames must be at least 1; got {cfg.max_frames}")
    check_data_fields(cfg)
    loop_config(cfg, lr=cfg.lr, monitor="x").validate()


# ---- encoder settings -----------------------------------------------------------------------------
def parse_encoder_opts(opts: tuple[str, ...]) -> dict[str, str]:
    """`--encoder-opt KEY=VALUE` strings -> {key: value}, checking the keys against PoseEncoderConfig."""
    import dataclasses

    from gesture_cli.core.errors import did_you_mean
    from gesture_cli.models.pose_encoder import PoseEncoderConfig

    valid = [f.name for f in dataclasses.fields(PoseEncoderConfig) if f.name != "layout"]  # the layout follows the data
    out = {}
    for item in opts:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UsageError(f"--encoder-opt '{item}' must look like KEY=VALUE, e.g. d_model=128")
        if key not in valid:
            raise UsageError(f"--encoder-opt: unknown key '{key}'{did_you_mean(key, valid)}; valid keys: {', '.join(valid)}")
        out[key] = value.strip()
    return out


def resolve_encoder_config(file: str | None, opts: tuple[str, ...], keypoints: str | None, *, dims: int, layout: str):
    """PoseEncoderConfig from a file and KEY=VALUE overrides; the layout and coordinates follow the data."""
    from gesture_cli.models.pose_encoder import pose_encoder_config
    from gesture_cli.models.skeletons import parse_parts

    overrides = parse_encoder_opts(opts)
    if keypoints:
        overrides["parts"] = parse_parts(keypoints)
    overrides["layout"] = layout
    try:
        enc = pose_encoder_config(file, **overrides)
    except UsageError as exc:  # resolve_config calls the overrides "command line": they came from --encoder-opt / --keypoints
        raise UsageError(str(exc).replace("command line:", "--encoder-opt / --keypoints:", 1)) from None
    if enc.in_channels > dims:
        if "in_channels" in overrides:
            raise UsageError(f"--encoder-opt in_channels={enc.in_channels}, but the dataset has {dims} coordinates per point")
        enc = pose_encoder_config(enc, in_channels=dims)  # 2D data: the encoder reads x, y
    return enc


def points_of(enc_cfg) -> np.ndarray:
    """Indices of the points of the layout that the encoder's body parts keep."""
    from gesture_cli.models.skeletons import select_parts

    return select_parts(enc_cfg.layout, enc_cfg.parts).indices


# ---- the trainers' shared steps -------------------------------------------------------------------
@dataclass
class PoseSetup:
    """What a pose trainer resolves once its data is read, before the run-dir step opens."""

    resolved: dict  # the config as the step and the checkpoints record it
    encoder: Any  # models.pose_encoder.PoseEncoderConfig
    normalize: str  # data/pose.py normalisation of every sample
    inputs: list[Path] = field(default_factory=list)  # files the step reads besides the dataset's
    found: Any = None  # what the trainer's checks found before the data was read (e.g. the text model's source)


class PoseTrainer(Trainer):
    """A pose trainer: pose splits, a setup resolved from the data, the dataset as one cached input."""

    monitor: str  # the validation number that picks checkpoints/best/
    dataset: DatasetSpec  # cfg.dataset + cfg.dataset_opts, read once by check() (read_dataset_spec)

    def train_config(self):
        return loop_config(self.cfg, lr=self.cfg.lr, monitor=self.monitor)

    def check_resume(self, settings: dict) -> None:
        check_resume(self.checkpoint_dir / "last", settings, self.resume_keys, command=self.command)

    def make_splits(self, context) -> PoseSplits:
        cfg = self.cfg
        return make_pose_splits(self.dataset, seed=cfg.seed, max_samples=cfg.max_samples, val_fraction=cfg.val_fraction)

    @abstractmethod
    def resolve(self, splits: PoseSplits, context) -> PoseSetup:
        """The encoder settings and the resolved config, now that the data is known."""

    def plan(self, splits: PoseSplits, context, *, device: str) -> Plan:
        setup = self.resolve(splits, context)
        if self.resume:
            self.check_resume(setup.resolved)
        keys = {"dataset": splits.cache_token} if splits.cache_token else {}
        return Plan(out_rel=self.out_rel, config={**setup.resolved, "device": device}, inputs=[*splits.source_files, *setup.inputs],
                    input_keys=keys, splits=splits, context=setup)

    def pose_batches(self, samples, setup: PoseSetup, **kwargs) -> PoseBatches:
        """Samples as fit()'s batches: normalised, reduced to the encoder's points, at most --max-frames frames."""
        enc = setup.encoder
        return PoseBatches(samples, points=points_of(enc), normalize=setup.normalize, max_frames=self.cfg.max_frames, dims=enc.in_channels,
                           seed=self.cfg.seed, **kwargs)


__all__ = ["PRETRAIN_REL", "PoseSetup", "PoseTrainer", "read_dataset_spec", "parse_encoder_opts", "points_of", "resolve_encoder_config",
           "validate_common"]
