"""What `gx pose-pretrain` and `gx pose-finetune` share: config checks, the pose encoder's settings, the
data both read (train/pose.py's docstring: Data) and their run-dir step record."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gesture_cli.core.errors import DataError, UsageError, unknown_choice
from gesture_cli.data.pose import PoseBatches, PoseSplits, make_pose_splits
from gesture_cli.train.common import check_data_fields, check_resume, loop_config
from gesture_cli.train.skeleton import Plan, Trainer

PRETRAIN_REL = "pose/pretrain"


def check_dataset_exists(spec: str) -> None:
    """The cheap part of reading a pose dataset: a known source, and for pose:PATH a path that exists.

    Runs before the text model and the pretrained encoder are looked for, so that a mistyped path is
    reported as such, not as a model to download."""
    from gesture_cli.data.pose import get_pose_source

    source, arg = get_pose_source(spec)
    if source.name == "pose" and arg and not Path(arg).expanduser().exists():
        raise DataError(f"{Path(arg).expanduser()}: no such file or directory (--dataset {spec})")


def validate_common(cfg) -> None:
    """The checks of the settings both pose configs have."""
    from gesture_cli.data.pose import NORMALIZATIONS

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

    def train_config(self):
        return loop_config(self.cfg, lr=self.cfg.lr, monitor=self.monitor)

    def check_resume(self, settings: dict) -> None:
        check_resume(self.checkpoint_dir / "last", settings, self.resume_keys, command=self.command)

    def make_splits(self, context) -> PoseSplits:
        cfg = self.cfg
        return make_pose_splits(cfg.dataset, cfg.dataset_opts, seed=cfg.seed, max_samples=cfg.max_samples, val_fraction=cfg.val_fraction)

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


__all__ = ["PRETRAIN_REL", "PoseSetup", "PoseTrainer", "check_dataset_exists", "parse_encoder_opts", "points_of", "resolve_encoder_config",
           "validate_common"]
