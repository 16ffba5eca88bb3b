"""`gx lora-train`: fine-tune a backbone for gesture classification (LoRA, full, or head only)."""

from __future__ import annotations

from typing import Annotated

import typer

from gesture_cli.cli.options import (
    DatasetOpt,
    ImageSizeOpt,
    MaxSamplesOpt,
    PrecisionOpt,
    argv,
    flags,
    gx_command,
    make_console,
    opt,
)
from gesture_cli.cli.train_options import (
    batch_size_option,
    epochs_option,
    patience_option,
    report_training,
    resume_option,
    split_modules,
)

EXAMPLE = "Example: gx lora-train --backbone tiny-dinov2 --dataset synthetic-hands --epochs 5 -r runs/demo"


@gx_command
def lora_train(
    backbone=None,
    dataset: DatasetOpt = None,
    dataset_opt: Annotated[list[str] | None, opt("--dataset-opt", "Dataset source option KEY=VALUE (repeatable), e.g. label_map=contiguous.")] = None,
    method: Annotated[str | None, opt("--method", "lora | full | head [default: lora].")] = None,
    target_modules=None, rank=None, alpha=None, dropout=None,
    pool: Annotated[str | None, opt("--pool", "cls | mean | cls+mean: what the head sees [default: cls].")] = None,
    image_size: ImageSizeOpt = None,
    epochs: Annotated[int | None, epochs_option(10)] = None,
    max_steps=None,
    batch_size: Annotated[int | None, batch_size_option("Images", 32)] = None,
    grad_accum=None,
    lr: Annotated[float | None, opt("--lr", "Peak learning rate [default: 5e-4 lora, 2e-5 full, 1e-3 head].")] = None,
    weight_decay=None, warmup_steps=None, warmup_ratio=None,
    patience: Annotated[int | None, patience_option("accuracy", 5)] = None,
    val_fraction: Annotated[float | None, opt("--val-fraction", "Stratified share of the training split held out when the dataset has no val split [default: 0.1].")] = None,
    eval_every=None, checkpoint_every=None,
    hflip: Annotated[bool | None, opt("--hflip/--no-hflip", "Random horizontal flips [default: off: handedness carries meaning in sign languages].")] = None,
    no_gesture: Annotated[bool | None, opt("--no-gesture/--no-no-gesture", "HaGRID: keep 'no_gesture' boxes as a class [default: off].")] = None,
    merge: Annotated[bool | None, opt("--merge/--no-merge", "Also write merged/: LoRA folded into a standalone transformers model [default: off].")] = None,
    precision: PrecisionOpt = None,
    max_samples: MaxSamplesOpt = None,
    resume: Annotated[bool, resume_option("lora")] = False,
    run_dir=None, device="auto", seed=None, config=None, force=False, verbose=False,
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
    from gesture_cli.tasks.classify import LoraTrainConfig, train_lora
    from gesture_cli.tasks.datasets import config_as_recorded

    cfg = config_as_recorded(resolve_config(
        LoraTrainConfig,
        config,
        flags(backbone=backbone, dataset=dataset, dataset_opts=dataset_opt or None, method=method,
              target_modules=split_modules(target_modules), rank=rank, alpha=alpha, dropout=dropout, pool=pool, image_size=image_size, epochs=epochs, max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum,
              lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps, warmup_ratio=warmup_ratio, patience=patience,
              val_fraction=val_fraction, eval_every=eval_every, checkpoint_every=checkpoint_every, hflip=hflip,
              no_gesture=no_gesture, merge=merge, precision=precision, max_samples=max_samples, seed=seed),
    ))
    run = RunDir(run_dir)
    console = make_console()
    with Bars(console) as bars:
        out = train_lora(cfg, run, device=device, force=force, resume=resume, argv=argv(),
                         callbacks=training_callbacks(console, bars, f"lora-train {cfg.backbone}"),
                         notify=lambda line: console.print(line, highlight=False))
    report_training(console, out, "lora-train", cfg, _summary)


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
