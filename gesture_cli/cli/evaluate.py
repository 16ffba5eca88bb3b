"""`gx evaluate TASK`: score a trained artifact of the run dir on a dataset split.

Tasks are a registry (TASKS: name -> runner); `classify` scores a probe (`--from probe`) or a
`gx lora-train` classifier (`--from lora`). Later tasks add one entry each.
"""

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
    check_task_options,
    flags,
    gx_command,
    make_console,
    precision_line,
)

EXAMPLE = "Example: gx evaluate classify --from lora --backbone tiny-dinov2 -r runs/demo"
# --precision of the commands that run a saved artifact (evaluate, infer, gradcam): same choices as training's
# PrecisionOpt, but the default is the artifact's own (core.device.inference_precision), not plain auto.
ArtifactPrecisionOpt = Annotated[
    str | None,
    typer.Option("--precision", help="auto | fp32 | bf16 | fp16 [default: the one the artifact was made in (a probe: its features'), "
                                     "where this device runs it at speed; else auto]. The results record it.", show_default=False),
]


def _classify(cfg, *, run, device: str, force: bool, console) -> None:
    from gesture_cli.cli.progress import Bars
    from gesture_cli.tasks.classify import check_source, evaluate_lora_classifier, evaluate_probe

    check_source(run, cfg.source, cfg.backbone)
    evaluate_fn = evaluate_lora_classifier if cfg.source == "lora" else evaluate_probe
    with Bars(console, unit="img") as bars:  # a bar only when features are extracted anew
        res = evaluate_fn(run, backbone=cfg.backbone, dataset=cfg.dataset, split=cfg.split, device=device, seed=cfg.seed,
                          max_samples=cfg.max_samples, batch_size=cfg.batch_size, argv=argv(), force=force,
                          on_progress=bars.lazy(f"extract {cfg.split}"), precision=cfg.precision, notify=precision_line(console))
    if res.get("cached"):
        console.print("[dim]evaluate: cached result (use --force to recompute)[/]")
    _classify_summary(console, res)
    _compare_sources(console, run, res)


def _compare_sources(console, run, res: dict) -> None:
    """Probe and LoRA side by side when the other one's eval json exists for the same backbone."""
    import json

    from rich.table import Table

    other = "probe" if res["from"] == "lora" else "lora"
    path = run.path("eval", f"classify-{other}-{res['backbone']}.json")
    if not path.is_file():
        return
    try:
        theirs = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    pair = {res["from"]: res, other: theirs}
    table = Table(title=f"probe vs lora ({res['backbone']})")
    table.add_column("metric")
    for src in ("probe", "lora"):
        r = pair[src]
        table.add_column(f"{src} ({r.get('dataset', '?')} / {r.get('split', '?')}, n={r.get('n', '?')})", justify="right")
    for key in ("accuracy", "macro_f1", "weighted_f1"):
        table.add_row(key, *(f"{pair[src][key]:.4f}" if isinstance(pair[src].get(key), (int, float)) else "-" for src in ("probe", "lora")))
    console.print(table)


def _classify_summary(console, res: dict) -> None:
    from rich.table import Table

    title = f"classify ({res['from']}, {res['backbone']}) on {res['dataset']} / {res['split']}: {res['n']} samples, features {res['features']}"
    table = Table(title=title)
    for col in ("metric", "precision", "recall", "F1"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for avg in ("macro", "weighted"):
        table.add_row(avg, *(f"{res[f'{avg}_{m}']:.4f}" for m in ("precision", "recall", "f1")))
    console.print(table)
    worst = sorted((r for r in res["per_class"] if r["support"]), key=lambda r: r["f1"])[:5]
    if worst:
        console.print("lowest F1: " + ", ".join(f"{r['class']} {r['f1']:.2f}" for r in worst))
    console.print(f"[bold]accuracy {res['accuracy']:.4f}[/]   wrote {res['output']}")
    if res.get("confusion_png"):
        console.print(f"confusion matrix: {res['confusion_png']}")


def _segment(cfg, *, run, device: str, force: bool, console) -> None:
    from gesture_cli.cli.segment import run_evaluate

    run_evaluate(cfg, run=run, device=device, force=force, console=console)


def _keypoint(cfg, *, run, device: str, force: bool, console) -> None:
    from gesture_cli.cli.keypoint import run_evaluate

    run_evaluate(cfg, run=run, device=device, force=force, console=console)


def _translate(cfg, *, run, device: str, force: bool, console) -> None:
    from gesture_cli.cli.pose import run_evaluate_translate

    run_evaluate_translate(cfg, run=run, device=device, force=force, console=console)


TASKS = {"classify": _classify, "segment": _segment, "keypoint": _keypoint, "translate": _translate}  # task name -> runner(cfg, ...)


@gx_command
def evaluate(
    task: Annotated[str, typer.Argument(help="What to evaluate: classify, segment, keypoint, translate.", show_default=False)],
    source: Annotated[str | None, typer.Option("--from", help="Which artifact: probe | lora [default: probe].", show_default=False)] = None,
    backbone: BackboneOpt = None,
    dataset: DatasetOpt = None,
    split: Annotated[str | None, typer.Option("--split", help="Dataset split to score [default: test].", show_default=False)] = None,
    max_samples: Annotated[int | None, typer.Option("--max-samples", help="Score only the first N samples (extracts features anew).", show_default=False)] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Images per batch when extracting; 0 = auto.", show_default=False)] = None,
    inference: Annotated[str | None, typer.Option("--inference", help="segment: whole | slide (sliding S x S windows) [default: whole].", show_default=False)] = None,
    class_map: Annotated[str | None, typer.Option("--class-map", help="segment: fold the head's classes and the labels into groups (JSON class map).", show_default=False)] = None,
    num_beams: Annotated[int | None, typer.Option("--num-beams", help="translate: beam search width; 1 = greedy [default: the model's].", show_default=False)] = None,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", help="translate: tokens generated per sequence at most [default: the model's].", show_default=False)] = None,
    precision: ArtifactPrecisionOpt = None,
    run_dir: RunDirOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = None,
    config: ConfigOpt = None,
    force: ForceOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Score a trained artifact of the run on a dataset split; writes its results under eval/.

    classify: accuracy, macro/weighted precision, recall, F1 and a per-class report. --from probe
    reuses the extracted features when the dataset is the one they came from; otherwise the backbone
    is rebuilt from the classifier's header. --from lora runs the fine-tuned classifier on the split
    (built as `gx lora-train` built it) and also writes eval/confusion-lora-<backbone>.png. With both
    results for one backbone, the summary shows them side by side.

    segment: mIoU, per-class IoU and pixel accuracy (--inference whole|slide, --class-map).
    keypoint: PCKh@0.5 and PCK@0.2 per joint and mean. translate: BLEU-1..4, chrF, ROUGE-L and the
    SLT per-sentence ROUGE-L (beta 1.2), with per-sample references and hypotheses.
    """
    from gesture_cli.core.config import resolve_config
    from gesture_cli.core.errors import unknown_choice
    from gesture_cli.core.rundir import RunDir
    from gesture_cli.tasks.classify import EvaluateConfig

    runner = TASKS.get(task)
    if runner is None:
        raise unknown_choice("task", task, TASKS)
    check_task_options("evaluate", task, **{"--from": (source, ("classify",)), "--backbone": (backbone, ("classify", "segment", "keypoint")),
                                            "--inference": (inference, ("segment",)),
                                            "--class-map": (class_map, ("segment",)), "--num-beams": (num_beams, ("translate",)),
                                            "--max-new-tokens": (max_new_tokens, ("translate",))})
    cfg = resolve_config(
        EvaluateConfig, config,
        flags(source=source, backbone=backbone, dataset=dataset, split=split, max_samples=max_samples, batch_size=batch_size, seed=seed,
              precision=precision),
    )
    runner(cfg, run=RunDir(run_dir), device=device, force=force, console=make_console())


def register(app: typer.Typer) -> None:
    app.command("evaluate", epilog=EXAMPLE)(evaluate)
