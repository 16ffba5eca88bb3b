"""Helpers of the training commands (lora-train, keypoint-train, segment-train, pose-pretrain, pose-finetune).

Options whose help differs only by a command's default or noun are small factories returning the
typer.Option, used as `Annotated[int | None, epochs_option(10)]`; the options that are the same in
every trainer are shared options (cli/options.py, SHARED_OPTIONS).

No torch or transformers import here: `gx --help` must stay fast.
"""

from __future__ import annotations

import typer

from gesture_cli.cli.options import opt


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
