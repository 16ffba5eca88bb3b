"""`gx segment-train`: a segmentation head (linear or Mask2Former) on a frozen backbone, mIoU, class maps."""

from __future__ import annotations

from typing import Annotated

import typer

from gesture_cli.cli.options import (
    ImageSizeOpt,
    MaxSamplesOpt,
    PrecisionOpt,
    argv,
    dataset_opt,
    flags,
    gx_command,
    make_console,
    opt,
    precision_line,
)
from gesture_cli.cli.train_options import batch_size_option, epochs_option, patience_option, report_training, resume_option

EXAMPLE = "Example: gx segment-train --backbone tiny-dinov2 --dataset synthetic-scenes --head linear --epochs 5 -r runs/demo"
PER_CLASS_SHOWN = 30  # rows of the per-class IoU table; metrics.json has all
# The averaging conventions in one line (eval/segment.py MEAN_CONVENTIONS has them in full)
MEAN_NOTE = "mIoU: mean over classes in the labels or predictions; mean acc: mean over classes in the labels (absent ones left out)"


@gx_command
def segment_train(
    backbone=None,
    dataset: Annotated[str | None, dataset_opt("Segmentation dataset: synthetic-scenes, or seg:DIR (Cityscapes, ADE20K, or images/ + masks/ with classes.txt) [default: synthetic-scenes].")] = None,
    dataset_opt: Annotated[list[str] | None, opt("--dataset-opt", "Dataset option KEY=VALUE (repeatable): classes=FILE, reduce_zero_label=true, size=128 ...")] = None,
    head: Annotated[str | None, opt("--head", "linear | mask2former [default: linear].")] = None,
    train_only: Annotated[str | None, opt("--train-only", "mask2former: all | class_embed (only the class predictor, the head-only recipe) [default: all].")] = None,
    class_map: Annotated[str | None, opt("--class-map", "JSON file folding the dataset's classes into groups, e.g. configs/ade20k_to_26.json.")] = None,
    init_head: Annotated[str | None, opt("--init-head", "mask2former: start from this head.safetensors (or segment/<backbone> folder); a class predictor of another size starts fresh.")] = None,
    cache_features: Annotated[bool | None, opt("--cache-features/--no-cache-features", "Compute the frozen backbone's patch tokens once per split and train on them [default: off].")] = None,
    image_size: ImageSizeOpt = None,
    m2f_dim: Annotated[int | None, opt("--m2f-dim", "mask2former: decoder width, a multiple of 32 [default: 256].")] = None,
    m2f_queries: Annotated[int | None, opt("--m2f-queries", "mask2former: object queries [default: 100].")] = None,
    m2f_encoder_layers: Annotated[int | None, opt("--m2f-encoder-layers", "mask2former: pixel-decoder layers [default: 3].")] = None,
    m2f_decoder_layers: Annotated[int | None, opt("--m2f-decoder-layers", "mask2former: transformer-decoder layers [default: 6].")] = None,
    epochs: Annotated[int | None, epochs_option(10)] = None,
    max_steps=None,
    batch_size: Annotated[int | None, batch_size_option("Images", 8)] = None,
    grad_accum=None,
    lr: Annotated[float | None, opt("--lr", "Peak learning rate [default: 1e-3 linear, 1e-4 mask2former].")] = None,
    weight_decay=None, warmup_steps=None,
    patience: Annotated[int | None, patience_option("mIoU", 5)] = None,
    val_fraction: Annotated[float | None, opt("--val-fraction", "Share of the training images held out when the dataset has no val split [default: 0.1].")] = None,
    eval_every=None, checkpoint_every=None,
    hflip: Annotated[bool | None, opt("--hflip/--no-hflip", "Random horizontal flips of image and mask [default: off].")] = None,
    precision: PrecisionOpt = None,
    max_samples: MaxSamplesOpt = None,
    resume: Annotated[bool, resume_option("segment")] = False,
    run_dir=None, device="auto", seed=None, config=None, force=False, verbose=False,
) -> None:
    """Train a semantic-segmentation head on a frozen backbone's patch tokens and report mIoU.

    --head linear is the DINOv2/DINOv3 linear protocol (BatchNorm + 1x1 conv, bilinear upsampling);
    --head mask2former puts transformers' Mask2Former (small config) on the tokens, trained whole or,
    with --train-only class_embed, only its class predictor. The backbone never trains; the trainable
    parameter count is printed. --class-map folds the classes into groups (configs/ade20k_to_26.json:
    ADE20K's 150 classes -> 26). best/ is chosen by validation mIoU. Writes segment/<backbone>/{head.safetensors,
    class_map.json,metrics.json,train_log.csv,checkpoints/}; then `gx evaluate segment` and `gx infer segment`.
    """
    from gesture_cli.cli.progress import Bars, training_callbacks
    from gesture_cli.core.config import resolve_config
    from gesture_cli.core.rundir import RunDir
    from gesture_cli.tasks.datasets import config_as_recorded
    from gesture_cli.tasks.segment import SegmentTrainConfig, train_segment

    cfg = config_as_recorded(resolve_config(
        SegmentTrainConfig,
        config,
        flags(backbone=backbone, dataset=dataset, dataset_opts=dataset_opt or None, head=head, train_only=train_only, class_map=class_map,
              init_head=init_head, cache_features=cache_features, image_size=image_size, m2f_dim=m2f_dim, m2f_queries=m2f_queries,
              m2f_encoder_layers=m2f_encoder_layers, m2f_decoder_layers=m2f_decoder_layers, epochs=epochs, max_steps=max_steps,
              batch_size=batch_size, grad_accum=grad_accum, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps, patience=patience,
              val_fraction=val_fraction, eval_every=eval_every, checkpoint_every=checkpoint_every, hflip=hflip, precision=precision,
              max_samples=max_samples, seed=seed),
    ))
    run = RunDir(run_dir)
    console = make_console()

    def on_cache(role: str, done: int, total: int) -> None:
        bars.lazy(f"cache {role} tokens", unit="img")(done, total)
        if done >= total:
            bars.close()

    with Bars(console) as bars:
        out = train_segment(cfg, run, device=device, force=force, resume=resume, argv=argv(),
                            callbacks=training_callbacks(console, bars, f"segment-train {cfg.backbone}"),
                            notify=lambda line: console.print(line, highlight=False), on_cache_progress=on_cache)
    report_training(console, out, "segment-train", cfg, _summary)


def _summary(console, out: dict) -> None:
    from rich.table import Table

    s = out["summary"]
    title = (f"{out['outputs'][0]}  ({s['head']}{', ' + s['train_only'] if s['train_only'] != 'all' else ''}, "
             f"{s['trainable_params']:,} trainable of {s['total_params']:,}, {s['steps']} steps, "
             f"{s['train_samples_per_s']:.1f} img/s{', cached tokens' if s['cached_features'] else ''}, {s['weights']} weights)")
    if not out["metrics"]:
        console.print(f"{title}\nNothing scored: the dataset has no val or test split and --val-fraction held out no image; "
                      f"score with `gx evaluate segment --split SPLIT`.\nWrote {out['out']}", highlight=False)
        return
    table = Table(title=title, caption=MEAN_NOTE)
    for col in ("split", "images", "mIoU", "pixel acc", "mean acc", "majority mIoU"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for role, m in out["metrics"].items():
        table.add_row(f"{role} ({m['split']})", str(m["images"]), _f(m["mIoU"]), _f(m["pixel_acc"]), _f(m["mean_acc"]), _f(m["majority_mIoU"]))
    console.print(table)
    last = out["metrics"].get("test") or out["metrics"].get("val")
    if last:
        per = Table(title=f"per-class IoU ({'test' if 'test' in out['metrics'] else 'val'})")
        for col in ("class", "IoU", "acc", "pixels"):
            per.add_column(col, justify="left" if col == "class" else "right")
        for r in last["per_class"][:PER_CLASS_SHOWN]:
            per.add_row(r["class"], _f(r["iou"]), _f(r["acc"]), f"{r['pixels']:,}")
        console.print(per)
    if s.get("stopped_early"):
        console.print(f"Stopped early: no better val mIoU since step {s['best_step']}.")
    console.print(f"Wrote {out['out']}")


def _f(v) -> str:
    return "-" if v is None else f"{v:.4f}"


# ---- the `segment` task of gx evaluate / gx infer ---------------------------------------------------


def _task_options() -> dict:
    """--inference and --class-map of the running `gx evaluate` / `gx infer` command (None when not given).

    They are options of those shared commands, read here so that their runners keep one signature."""
    try:
        from typer._click.globals import get_current_context
    except ImportError:
        from click import get_current_context
    ctx = get_current_context(silent=True)
    params = ctx.params if ctx is not None else {}
    return {k: params.get(k) for k in ("inference", "class_map") if params.get(k) is not None}


def _detect_options() -> dict:
    """--detect, --detect-classes, --detect-threshold of the running `gx infer` (None when not given)."""
    try:
        from typer._click.globals import get_current_context
    except ImportError:
        from click import get_current_context
    ctx = get_current_context(silent=True)
    params = ctx.params if ctx is not None else {}
    out = {k: params.get(k) for k in ("detect", "detect_threshold") if params.get(k) is not None}
    if params.get("detect_classes"):  # a repeatable option not given arrives as an empty list
        out["detect_classes"] = tuple(params["detect_classes"])
    return out


def run_evaluate(cfg, *, run, device: str, force: bool, console) -> None:
    """`gx evaluate segment`: mIoU, per-class IoU, pixel accuracy of segment/<backbone>/ on a split."""
    from gesture_cli.cli.progress import Bars
    from gesture_cli.tasks.segment import SegmentEvalOptions, evaluate_segment

    opts = SegmentEvalOptions(backbone=cfg.backbone, dataset=cfg.dataset, split=cfg.split, max_samples=cfg.max_samples,
                              precision=cfg.precision, **_task_options())
    with Bars(console, unit="img") as bars:
        res = evaluate_segment(run, opts, device=device, argv=argv(), force=force, on_progress=bars.lazy(f"evaluate segment ({opts.inference})"),
                               notify=precision_line(console))
    if res.get("cached"):
        console.print("[dim]evaluate: cached result (use --force to recompute)[/]")
    _eval_summary(console, res)


def _eval_summary(console, res: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    cmap = f", class map {res['class_map']}" if res.get("class_map") else ""
    table = Table(title=escape(f"segment ({res['head']}, {res['backbone']}) on {res['dataset']} / {res['split']}: {res['images']} images, "
                               f"{res['mode']} inference{cmap}"))
    for col in ("class", "IoU", "acc", "pixels", "predicted"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for r in res["per_class"][:PER_CLASS_SHOWN]:
        table.add_row(escape(r["class"]), _f(r["iou"]), _f(r["acc"]), f"{r['pixels']:,}", f"{r['predicted']:,}")
    console.print(table)
    if len(res["per_class"]) > PER_CLASS_SHOWN:
        console.print(f"... {len(res['per_class']) - PER_CLASS_SHOWN} more classes in {res['output']}")
    console.print(f"[bold]mIoU {_f(res['mIoU'])}[/]  pixel accuracy {_f(res['pixel_acc'])}  mean class accuracy {_f(res['mean_acc'])}  "
                  f"(most-frequent-class mIoU {_f(res['majority_mIoU'])})   wrote {res['output']}")
    console.print(f"{MEAN_NOTE}; every convention in full in the JSON", highlight=False)


def run_infer(cfg, *, run, device: str, as_json: bool, console) -> None:
    """`gx infer segment --input IMG|DIR`: colour masks, overlays and features.csv under infer/segment-<backbone>/."""
    import json

    from gesture_cli.cli.progress import Bars
    from gesture_cli.tasks.segment import SegmentInferOptions, infer_segment

    opts = SegmentInferOptions(input=cfg.input, backbone=cfg.backbone, precision=cfg.precision, **_task_options(), **_detect_options())
    with Bars(console, unit="img") as bars:
        res = infer_segment(run, opts, device=device, argv=argv(), notify=precision_line(console, as_json),
                            on_progress=(lambda done, total: None) if as_json else bars.lazy("infer segment"))
    det = res.get("detect")
    if as_json:
        rows = [{"image": n, **{c: round(float(v), 6) for c, v in zip(res["classes"], f, strict=True)}} for n, f in zip(res["names"], res["fractions"], strict=True)]
        if det:
            for row, counts in zip(rows, det["counts"], strict=True):
                row.update({col: int(v) for col, v in zip(det["columns"], counts, strict=True)})
        typer.echo(json.dumps(rows, indent=1))
        return
    _infer_table(console, res)


def _infer_table(console, res: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    shown = 20  # rows; features.csv has every image
    table = Table(title=escape(f"segment ({res['head']}, {res['backbone']}): {len(res['names'])} image(s) from {res['input']}"
                               + (f", class map {res['class_map']}" if res.get("class_map") else "")))
    table.add_column("image")
    table.add_column("largest areas (fraction of pixels)")
    det = res.get("detect")
    if det:
        table.add_column(f"objects ({escape(det['detector'])}, score >= {det['threshold']:g})")
    for i, (name, frac) in enumerate(list(zip(res["names"], res["fractions"], strict=True))[:shown]):
        top = sorted(zip(res["classes"], frac, strict=True), key=lambda t: -t[1])[:4]
        cells = [escape(name), ", ".join(f"{escape(c)} {v:.2f}" for c, v in top if v > 0)]
        if det:
            found = [f"{escape(c)} {int(n)}" for c, n in zip(det["classes"], det["counts"][i], strict=True) if n > 0]
            cells.append(", ".join(found) or "-")
        table.add_row(*cells)
    console.print(table)
    if len(res["names"]) > shown:
        console.print(f"... {len(res['names']) - shown} more rows in features.csv")
    console.print(f"Wrote {res['output']} (masks/, overlays/, features.csv with {len(res['columns']) - 1} features per image)")


def register(app: typer.Typer) -> None:
    app.command("segment-train", epilog=EXAMPLE)(segment_train)
