"""What the trainers that tune a pretrained backbone under a new head share (`gx lora-train`, `gx keypoint-train`):
the LoRA options (--method lora, --rank, --alpha, --dropout, --target-modules), the --resume check before any
data is read, the parameter notice, and the first fields of the summary."""

from __future__ import annotations

from dataclasses import dataclass

from gesture_cli.core.errors import UsageError
from gesture_cli.train.skeleton import Built, Trainer


def check_lora_fields(cfg) -> None:
    """--rank, --alpha, --dropout, and --target-modules only with --method lora."""
    if cfg.rank < 1:
        raise UsageError(f"--rank must be at least 1; got {cfg.rank}")
    if not cfg.alpha > 0:
        raise UsageError(f"--alpha must be positive; got {cfg.alpha}")
    if not 0 <= cfg.dropout < 1:
        raise UsageError(f"--dropout must lie in [0, 1); got {cfg.dropout}")
    if cfg.target_modules and cfg.method != "lora":
        raise UsageError(f"--target-modules applies to --method lora, not {cfg.method}")


def lora_record(cfg, resolved: dict) -> dict | None:
    """What an artifact records of its LoRA adapters (None for other methods)."""
    lora = {"targets": list(resolved.get("target_modules") or []), "rank": cfg.rank, "alpha": cfg.alpha, "dropout": cfg.dropout}
    return lora if cfg.method == "lora" else None


@dataclass
class TunedBuilt(Built):
    backbone: object = None  # models.backbones.Backbone inside the model


class TuningTrainer(Trainer):
    """A trainer whose config has backbone, method, LoRA options and image_size."""

    def settings_before_data(self) -> dict:
        """The config as its checkpoint records it, without what the backbone fills in (unset image size and
        target modules), target modules sorted: fail fast with --resume, before any data is read."""
        from gesture_cli.core.config import config_to_dict

        return {k: sorted(v) if k == "target_modules" else v for k, v in config_to_dict(self.cfg).items()
                if not (k in ("image_size", "target_modules") and not v)}

    def parameter_notice(self, trainable: int, total: int, targets: list[str], *, detail: str = "") -> str:
        """"trainable parameters: N of M (P%), method X<detail>[, LoRA r=.. alpha=.. on targets]"."""
        cfg = self.cfg
        lora = f", LoRA r={cfg.rank} alpha={cfg.alpha:g} on {', '.join(targets)}" if cfg.method == "lora" else ""
        return f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / max(1, total):.2f}%), method {cfg.method}{detail}{lora}"

    def summary_start(self, built: TunedBuilt, **after_method) -> dict:
        """The summary's first fields: method (then `after_method`), backbone, parameter counts."""
        trainable, total = built.trainable, built.total
        return {"method": self.cfg.method, **after_method, "backbone": built.backbone.describe(), "trainable_params": trainable,
                "total_params": total, "trainable_fraction": round(trainable / max(1, total), 6)}


__all__ = ["TunedBuilt", "TuningTrainer", "check_lora_fields", "lora_record"]
