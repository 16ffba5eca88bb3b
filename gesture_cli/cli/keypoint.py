"""`gx keypoint-train`: ViT keypoint regression (16 MPII joints) with a frozen, LoRA or fully tuned backbone."""

from __future__ import annotations

from typing import Annotated

import typer

from gesture_cli.cli.options import PrecisionOpt, argv, dataset_opt, flags, gx_command, make_console, opt, precision_line
from gesture_cli.cli.train_options import (
    batch_size_option,
    epochs_option,
    patience_option,
    report_training,
    resume_option,
    split_modules,
)

EXAMPLE = "Example: gx keypoint-train --backbone tiny-dinov2 --dataset synthetic-keypoints --method full --epochs 5 -r runs/demo"


@gx_command
def keypoint_train(
    backbone=None,
    dataset: Annotated[str | None, dataset_opt("Keypoint dataset: synthetic-keypoints, or mpii:JSON[:IMGDIR] (MPII person records, HRNet/mmpose JSON) [default: synthetic-keypoints].")] = None,
    dataset_opt: Annotated[list[str] | None, opt("--dataset-opt", "Dataset source option KEY=VALUE (repeatable): margin=1.25 (mpii crop side / person height), train_samples=N, eval_samples=N, side=PX, clutter=false (synthetic).")] = None,
    method: Annotated[str | None, opt("--method", "frozen | lora | full [default: lora].")] = None,
    head: Annotated[str | None, opt("--head", "patch (integral regression over patch tokens) | pooled (MLP on pooled features) [default: patch].")] = None,
    hidden: Annotated[int | None, opt("--hidden", "Width of the head's hidden layer [default: 256].")] = None,
    pool: Annotated[str | None, opt("--pool", "cls | mean | cls+mean: what the pooled head sees [default: cls+mean].")] = None,
    target_modules=None, rank=None, alpha=None, dropout=None,
    image_size: Annotated[int | None, opt("--image-size", "Crop side in pixels fed to the backbone [default: the backbone's].")] = None,
    epochs: Annotated[int | None, epochs_option(30)] = None,
    max_steps=None,
    batch_size: Annotated[int | None, batch_size_option("Crops", 32)] = None,
    grad_accum=None,
    lr: Annotated[float | None, opt("--lr", "Peak learning rate [default: 1e-3 frozen, 5e-4 lora, 1e-4 full].")] = None,
    weight_decay=None, warmup_steps=None, warmup_ratio=None,
    patience: Annotated[int | None, patience_option("PCK", 10)] = None,
    val_fraction: Annotated[float | None, opt("--val-fraction", "Share of the training split held out when the dataset has no val split [default: 0.1].")] = None,
    eval_every=None, checkpoint_every=None,
    flip: Annotated[bool | None, opt("--flip/--no-flip", "Mirror half the crops and swap left/right joints [default: on].")] = None,
    rotate: Annotated[float | None, opt("--rotate", "Random rotation within +-DEG degrees [default: 15].")] = None,
    scale_jitter: Annotated[float | None, opt("--scale-jitter", "Random zoom: the crop window varies within 1 +- this [default: 0.15].")] = None,
    precision: PrecisionOpt = None,
    max_samples: Annotated[int | None, opt("--max-samples", "Cap on people per split (seeded subset), for quick runs.")] = None,
    resume: Annotated[bool, resume_option("keypoint")] = False,
    run_dir=None, device="auto", seed=None, config=None, force=False, verbose=False,
) -> None:
    """Train a backbone + regression head to predict the 16 MPII body joints of a person crop.

    mpii:JSON[:IMGDIR] crops each person from MPII's center and scale (side = margin x 200 x scale px) and
    masks unannotated joints out of the loss. The loss is the MSE of crop-normalised coordinates; AdamW with
    warm-up and cosine decay; flips swap left and right joints. The best checkpoint by validation PCK
    (PCKh@0.5, or PCK@0.2 of the torso without head sizes) becomes the final model. Writes keypoint/<backbone>/
    {head.safetensors, adapter/ or backbone/, joints.json, metrics.json, train_log.csv, checkpoints/{best,last}/};
    --resume continues after an interruption. Then: gx evaluate keypoint, gx infer keypoint --input IMG.
    """
    from gesture_cli.cli.progress import Bars, training_callbacks
    from gesture_cli.core.config import resolve_config
    from gesture_cli.core.rundir import RunDir
    from gesture_cli.tasks.datasets import config_as_recorded
    from gesture_cli.tasks.keypoint import KeypointTrainConfig, train_keypoint

    cfg = config_as_recorded(resolve_config(
        KeypointTrainConfig,
        config,
        flags(backbone=backbone, dataset=dataset, dataset_opts=dataset_opt or None, method=method, head=head, hidden=hidden, pool=pool,
              target_modules=split_modules(target_modules), rank=rank, alpha=alpha, dropout=dropout, image_size=image_size, epochs=epochs,
              max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps,
              warmup_ratio=warmup_ratio, patience=patience, val_fraction=val_fraction, eval_every=eval_every,
              checkpoint_every=checkpoint_every, flip=flip, rotate=rotate, scale_jitter=scale_jitter, precision=precision,
              max_samples=max_samples, seed=seed),
    ))
    run = RunDir(run_dir)
    console = make_console()
    with Bars(console) as bars:
        out = train_keypoint(cfg, run, device=device, force=force, resume=resume, argv=argv(),
                             callbacks=training_callbacks(console, bars, f"keypoint-train {cfg.backbone}", loss_format=".5f"),
                             notify=lambda line: console.print(line, highlight=False))
    report_training(console, out, "keypoint-train", cfg, _summary)


def _summary(console, out: dict) -> None:
    from rich.table import Table

    from gesture_cli.tasks.keypoint import PCK_NOTE, summary_rows

    s = out["summary"]
    console.print(f"{out['outputs'][0]}: {s['method']}, head {s['head']}, {s['trainable_params']:,} trainable "
                  f"({100 * s['trainable_fraction']:.2f}%), {s['steps']} steps, {s['train_samples_per_s']:.1f} samples/s, {s['weights']} weights",
                  highlight=False)
    for role, m in out["metrics"].items():
        table = Table(title=f"{role} ({m['split']}): {m['n']} people, headline {m['pck_kind']} {m['pck']:.4f}" if m["pck"] is not None
                      else f"{role} ({m['split']}): {m['n']} people", caption=PCK_NOTE)
        for col in ("joints", "PCKh@0.5", "PCK@0.2 torso"):
            table.add_column(col, justify="left" if col == "joints" else "right")
        for row in summary_rows(m):
            table.add_row(*row)
        console.print(table)
    if s.get("stopped_early"):
        console.print(f"Stopped early: no better val PCK since step {s['best_step']}.")
    console.print(f"Wrote {out['out']}")


# ---- runners for `gx evaluate keypoint` / `gx infer keypoint` (cli/artifact_tasks.py) ----


def run_evaluate(cfg, *, run, device: str, force: bool, console) -> None:
    """`gx evaluate keypoint`: PCKh@0.5 and PCK@0.2 (torso) per joint of keypoint/<backbone>/ -> eval/keypoint.json."""
    from rich.markup import escape
    from rich.table import Table

    from gesture_cli.cli.progress import Bars
    from gesture_cli.tasks.keypoint import PCK_NOTE, evaluate_keypoint, summary_rows

    with Bars(console, unit="img") as bars:
        res = evaluate_keypoint(run, backbone=cfg.backbone, dataset=cfg.dataset, split=cfg.split, device=device, seed=cfg.seed,
                                max_samples=cfg.max_samples, batch_size=cfg.batch_size, argv=argv(), force=force,
                                on_progress=bars.lazy("evaluate keypoint"), precision=cfg.precision, notify=precision_line(console))
    if res.get("note"):
        console.print(escape(f"note: {res['note']}"), highlight=False)
    if res.get("cached"):
        console.print("[dim]evaluate: cached result (use --force to recompute)[/]")
    table = Table(title=escape(f"keypoint ({res['method']}, {res['backbone']}) on {res['dataset']} / {res['split']}: {res['n']} people, "
                               f"head sizes from {res['head_size_from']}"), caption=PCK_NOTE)
    for col in ("joints", "PCKh@0.5", "PCK@0.2 torso"):
        table.add_column(col, justify="left" if col == "joints" else "right")
    for row in summary_rows(res):
        table.add_row(*row)
    console.print(table)
    headline = f"{res['pck']:.4f}" if res["pck"] is not None else "-"
    console.print(f"[bold]{res['pck_kind']} {headline}[/]   wrote {escape(res['output'])}")


def run_infer(cfg, *, run, device: str, as_json: bool, console) -> None:
    """`gx infer keypoint --input IMG|DIR`: joints per image, skeleton PNGs under infer/keypoint-<backbone>/."""
    import json
    from pathlib import Path

    from rich.markup import escape
    from rich.table import Table

    from gesture_cli.core.errors import UsageError
    from gesture_cli.tasks.keypoint import infer_keypoint

    if not cfg.input:
        raise UsageError("--input is required: an image file or a folder of images (person crops)")
    res = infer_keypoint(run, backbone=cfg.backbone, input_path=Path(cfg.input), device=device, batch_size=cfg.batch_size, argv=argv(),
                         precision=cfg.precision, notify=precision_line(console, as_json))
    if as_json:
        typer.echo(json.dumps(res["predictions"], indent=1))
        return
    for p in res["predictions"][:20]:
        table = Table(title=escape(f"{p['input']} ({p['width']}x{p['height']}) -> {p['image']}"))
        for col in ("joint", "x", "y"):
            table.add_column(col, justify="left" if col == "joint" else "right")
        for name, (x, y) in p["joints"].items():
            table.add_row(name, f"{x:.1f}", f"{y:.1f}")
        console.print(table)
    if len(res["predictions"]) > 20:
        console.print(f"... {len(res['predictions']) - 20} more in {escape(res['output'])}")
    console.print(f"Wrote {escape(res['output'])} and {len(res['predictions'])} skeleton PNG(s) in {escape(res['images_dir'])}")


def register(app: typer.Typer) -> None:
    app.command("keypoint-train", epilog=EXAMPLE)(keypoint_train)
