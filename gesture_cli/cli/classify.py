"""`gx evaluate classify` and `gx infer classify`: a probe (`--from probe`) or a `gx lora-train` classifier
(`--from lora`) on a dataset split or on new inputs, and their summaries (cli/artifact_tasks.py dispatches here)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from gesture_cli.cli.options import argv, precision_line

MAX_ROWS_SHOWN = 50  # the infer table shows this many inputs; --json and the written file have all


def run_evaluate(cfg, *, run, device: str, force: bool, console) -> None:
    """`gx evaluate classify`: accuracy, macro/weighted P/R/F1 and per-class scores of the probe or LoRA classifier."""
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


def run_infer(cfg, *, run, device: str, as_json: bool, console) -> None:
    """`gx infer classify`: the top-k classes per input image, folder or CSV row."""
    from gesture_cli.tasks.classify import check_source, infer_lora, infer_probe

    check_source(run, cfg.source, cfg.backbone)
    infer_fn = infer_lora if cfg.source == "lora" else infer_probe
    res = infer_fn(run, backbone=cfg.backbone, input_path=Path(cfg.input), top_k=cfg.top_k, device=device, batch_size=cfg.batch_size,
                   argv=argv(), precision=cfg.precision, notify=precision_line(console, as_json))
    if as_json:
        typer.echo(json.dumps(res["predictions"], indent=1))
        return
    _classify_table(console, res)


def _classify_table(console, res: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    preds = res["predictions"]
    has_label = any(p["label"] is not None for p in preds)
    table = Table(title=escape(f"classify ({res['from']}, {res['backbone']}): {res['n']} input(s) from {res['input']}"))
    table.add_column("input")
    if has_label:
        table.add_column("label")
    for i in range(res["top_k"]):
        table.add_column(f"#{i + 1}", justify="right")
    for p in preds[:MAX_ROWS_SHOWN]:
        cells = [f"{t['class']} {t['prob']:.3f}" for t in p["top_k"]]
        if has_label:
            ok = p["label"] == p["top_k"][0]["class"]
            cells[0] = f"[{'green' if ok else 'red'}]{cells[0]}[/]"
        table.add_row(escape(p["input"]), *([escape(str(p["label"] or ""))] if has_label else []), *cells)
    console.print(table)
    if len(preds) > MAX_ROWS_SHOWN:
        console.print(f"... {len(preds) - MAX_ROWS_SHOWN} more in {res['output']}")
    if "accuracy" in res:
        console.print(f"top-1 accuracy on the labelled inputs: {res['accuracy']:.4f}")
    console.print(f"Wrote {res['output']}")
