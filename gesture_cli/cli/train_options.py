"""Options shared by the training commands (lora-train, keypoint-train, segment-train).

Every option here defaults to None ("not given") so that resolve_config lets a --config file or the
config dataclass fill it; the help text names the dataclass default instead of Typer showing None.
Options whose help differs only by a command's default or noun are small factories returning the
typer.Option, used as `Annotated[int | None, epochs_option(10)]`.

No torch or transformers import here: `gx --help` must stay fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from gesture_cli.cli.options import PrecisionOpt  # noqa: F401  (re-exported: every trainer takes --precision)


def opt(name: str, help: str, *extra: str):
    """A typer.Option whose default (None) is not shown; the help text says the real default."""
    return typer.Option(name, *extra, help=help, show_default=False)


# ---- LoRA adapters (lora-train, keypoint-train) ----

TargetModulesOpt = Annotated[
    str | None,
    opt("--target-modules", "Comma-separated Linear module names for LoRA [default: the family's query/value projections]."),
]
RankOpt = Annotated[int | None, opt("--rank", "LoRA rank r [default: 8].")]
AlphaOpt = Annotated[float | None, opt("--alpha", "LoRA alpha; updates scale by alpha/r [default: 16].")]
DropoutOpt = Annotated[float | None, opt("--dropout", "Dropout on the LoRA input [default: 0.1].")]

# ---- input (lora-train, segment-train) ----

ImageSizeOpt = Annotated[int | None, opt("--image-size", "Input side in pixels [default: the backbone's].")]
MaxSamplesOpt = Annotated[int | None, opt("--max-samples", "Cap on images per split (seeded subset), for quick runs.")]

# ---- the training loop (train/loop.py), all three commands ----

MaxStepsOpt = Annotated[int | None, opt("--max-steps", "Optimizer steps in all; overrides --epochs.")]
GradAccumOpt = Annotated[int | None, opt("--grad-accum", "Micro-batches per optimizer step [default: 1].")]
WeightDecayOpt = Annotated[float | None, opt("--weight-decay", "AdamW weight decay, not on biases/norms [default: 0.01].")]
WarmupStepsOpt = Annotated[
    int | None,
    opt("--warmup-steps", "Linear warm-up in optimizer steps [default: --warmup-ratio of all steps]."),
]
WarmupRatioOpt = Annotated[
    float | None,
    opt("--warmup-ratio", "Warm-up share of all steps when --warmup-steps is not given [default: 0.05]."),
]
EvalEveryOpt = Annotated[int | None, opt("--eval-every", "Optimizer steps between evaluations; 0 = every epoch [default: 0].")]
CheckpointEveryOpt = Annotated[
    int | None,
    opt("--checkpoint-every", "Optimizer steps between saves of checkpoints/last/ [default: 100]."),
]


def epochs_option(default: int):
    return opt("--epochs", f"Passes over the training split [default: {default}].")


def batch_size_option(unit: str, default: int):
    """unit: what one sample is, capitalised ("Images", "Crops")."""
    return opt("--batch-size", f"{unit} per micro-batch and process [default: {default}].")


def patience_option(metric: str, default: int):
    return opt("--patience", f"Evaluations without a better val {metric} before stopping; 0 = never [default: {default}].")


def resume_option(task: str):
    """task: the run-directory folder of the command's outputs (lora, keypoint, segment)."""
    return typer.Option("--resume", help=f"Continue from {task}/<backbone>/checkpoints/last/ (after Ctrl-C, SIGTERM or a pre-emption).")


def split_modules(target_modules: str | None) -> list[str] | None:
    """--target-modules "query, value" -> ["query", "value"]; None when not given (the family's default)."""
    return [t.strip() for t in target_modules.split(",") if t.strip()] if target_modules else None


def report_training(console, out: dict, command: str, cfg, summary) -> None:
    """After a trainer returned: nothing on non-main processes, one dim line for a cached result, else summary(console, out)."""
    if not out["is_main"]:
        return
    if out.get("cached"):
        console.print(f"[dim]{command}: cached result for {cfg.backbone} on {cfg.dataset} (use --force to recompute)[/]")
        return
    summary(console, out)
