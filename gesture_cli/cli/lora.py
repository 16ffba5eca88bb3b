"""`gx lora-train`: fine-tune a backbone for gesture classification (LoRA, full, or head only)."""

from __future__ import annotations

from typing import Annotated

import typer

from gesture_cli.cli.options import (
    BackboneOpt,
    ConfigOpt,
    DatasetOpt,
    DeviceOpt,
    ForceOpt,
    RunDirOpt,
    SeedOpt,
    VerboseOpt,
    argv,
    flags,
    gx_command,
    make_console,
)

EXAMPLE = "Example: gx lora-train --backbone tiny-dinov2 --dataset synthetic-hands --epochs 5 -r runs/demo"


def _opt(name: str, help: str, *extra: str):
    return typer.Option(name, *extra, help=help, show_default=False)


@gx_command
def lora_train(
    backbone: BackboneOpt = None,
    dataset: DatasetOpt = None,
    dataset_opt: Annotated[list[str] | None, _opt("--dataset-opt", "Dataset source option KEY=VALUE (repeatable), e.g. label_map=contiguous.")] = None,
    method: Annotated[str | None, _opt("--method", "lora | full | head [default: lora].")] = None,
    target_modules: Annotated[str | None, _opt("--target-modules", "Comma-separated Linear module names for LoRA [default: the family's query/value projections].")] = None,
    rank: Annotated[int | None, _opt("--rank", "LoRA rank r [default: 8].")] = None,
    alpha: Annotated[float | None, _opt("--alpha", "LoRA alpha; updates scale by alpha/r [default: 16].")] = None,
    dropout: Annotated[float | None, _opt("--dropout", "Dropout on the LoRA input [default: 0.1].")] = None,
    pool: Annotated[str | None, _opt("--pool", "cls | mean | cls+mean: what the head sees [default: cls].")] = None,
    image_size: Annotated[int | None, _opt("--image-size", "Input side in pixels [default: the backbone's].")] = None,
    epochs: Annotated[int | None, _opt("--epochs", "Passes over the training split [default: 10].")] = None,
    max_steps: Annotated[int | None, _opt("--max-steps", "Optimizer steps in all; overrides --epochs.")] = None,
    batch_size: Annotated[int | None, _opt("--batch-size", "Images per micro-batch and process [default: 32].")] = None,
    grad_accum: Annotated[int | None, _opt("--grad-accum", "Micro-batches per optimizer step [default: 1].")] = None,
    lr: Annotated[float | None, _opt("--lr", "Peak learning rate [default: 5e-4 lora, 2e-5 full, 1e-3 head].")] = None,
    weight_decay: Annotated[float | None, _opt("--weight-decay", "AdamW weight decay, not on biases/norms [default: 0.01].")] = None,
    warmup_steps: Annotated[int | None, _opt("--warmup-steps", "Linear warm-up in optimizer steps [default: --warmup-ratio of all steps].")] = None,
    warmup_ratio: Annotated[float | None, _opt("--warmup-ratio", "Warm-up share of all steps when --warmup-steps is not given [default: 0.05].")] = None,
    patience: Annotated[int | None, _opt("--patience", "Evaluations without a better val accuracy before stopping; 0 = never [default: 5].")] = None,
    val_fraction: Annotated[float | None, _opt("--val-fraction", "Stratified share of the training split held out when the dataset has no val split [default: 0.1].")] = None,
    eval_every: Annotated[int | None, _opt("--eval-every", "Optimizer steps between evaluations; 0 = every epoch [default: 0].")] = None,
    checkpoint_every: Annotated[int | None, _opt("--checkpoint-every", "Optimizer steps between saves of checkpoints/last/ [default: 100].")] = None,
    hflip: Annotated[bool | None, _opt("--hflip/--no-hflip", "Random horizontal flips [default: off: handedness carries meaning in sign languages].")] = None,
    no_gesture: Annotated[bool | None, _opt("--no-gesture/--no-no-gesture", "HaGRID: keep 'no_gesture' boxes as a class [default: off].")] = None,
    merge: Annotated[bool | None, _opt("--merge/--no-merge", "Also write merged/: LoRA folded into a standalone transformers model [default: off].")] = None,
    precision: Annotated[str | None, _opt("--precision", "auto | bf16 | fp32 [default: auto: bf16 only where the hardware multiplies it natively].")] = None,
    max_samples: Annotated[int | None, _opt("--max-samples", "Cap on images per split (seeded subset), for quick runs.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from lora/<backbone>/checkpoints/last/ (after Ctrl-C, SIGTERM or a pre-emption).")] = False,
    run_dir: RunDirOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = None,
    config: ConfigOpt = None,
    force: ForceOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Fine-tune a backbone with a linear head on a gesture dataset: LoRA adapters, the full model, or the head alone.

    Augmentation: random resized crop, rotation within 10 degrees, brightness and contrast; no flips unless
    --hflip. Checkpoints go to lora/<backbone>/checkpoints/{last,best}/ every --checkpoint-every steps and on
    Ctrl-C / SIGTERM; --resume continues and ends with the same weights as an uninterrupted run. Runs unchanged
    under `accelerate launch` or `torchrun` with several processes. Writes lora/<backbone>/{adapter/,
    head.safetensors,labels.json,metrics.json,train_log.csv,checkpoints/} (+ merged/ with --merge).
    """
    from gesture_cli.cli.progress import Bars, training_callbacks
    from gesture_cli.core.config import resolve_config
    from gesture_cli.core.rundir import RunDir
    from gesture_cli.train.lora import LoraTrainConfig, train_lora

    targets = [t.strip() for t in target_modules.split(",") if t.strip()] if target_modules else None
    cfg = resolve_config(
        LoraTrainConfig,
        config,
        flags(backbone=backbone, dataset=dataset, dataset_opts=dataset_opt or None, method=method, target_modules=targets, rank=rank, alpha=alpha, dropout=dropout,
              pool=pool, image_size=image_size, epochs=epochs, max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum,
              lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps, warmup_ratio=warmup_ratio, patience=patience,
              val_fraction=val_fraction, eval_every=eval_every, checkpoint_every=checkpoint_every, hflip=hflip,
              no_gesture=no_gesture, merge=merge, precision=precision, max_samples=max_samples, seed=seed),
    )
    run = RunDir(run_dir)
    console = make_console()
    with Bars(console) as bars:
        out = train_lora(cfg, run, device=device, force=force, resume=resume, argv=argv(),
                         callbacks=training_callbacks(console, bars, f"lora-train {cfg.backbone}"),
                         notify=lambda line: console.print(line, highlight=False))
    if not out["is_main"]:
        return
    if out.get("cached"):
        console.print(f"[dim]lora-train: cached result for {cfg.backbone} on {cfg.dataset} (use --force to recompute)[/]")
        return
    _summary(console, out)


def _summary(console, out: dict) -> None:
    from rich.table import Table

    s = out["summary"]
    table = Table(title=f"{out['outputs'][0]}  ({s['method']}, {s['trainable_params']:,} trainable = {100 * s['trainable_fraction']:.2f}%, "
                        f"{s['steps']} steps, {s['train_samples_per_s']:.1f} samples/s, {s['weights']} weights)")
    for col in ("split", "images", "accuracy", "macro-F1", "weighted-F1", "loss"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for role, m in out["metrics"].items():
        table.add_row(f"{role} ({m['split']})", str(m["n"]), f"{m['accuracy']:.4f}", f"{m['macro_f1']:.4f}", f"{m['weighted_f1']:.4f}",
                      f"{m['loss']:.4f}" if m.get("loss") is not None else "-")
    console.print(table)
    if s.get("stopped_early"):
        console.print(f"Stopped early: no better val accuracy since step {s['best_step']}.")
    console.print(f"Wrote {out['out']}")


def register(app: typer.Typer) -> None:
    app.command("lora-train", epilog=EXAMPLE)(lora_train)
