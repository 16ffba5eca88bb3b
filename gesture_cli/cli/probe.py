"""`gx probe`: logistic-regression probes on extracted features, one table across backbones."""

from __future__ import annotations

from typing import Annotated

import typer

from gesture_cli.cli.options import argv, flags, gx_command, make_console

EXAMPLE = "Example: gx probe -r runs/demo --backbones tiny-dinov2,tiny-vit --tsne"


@gx_command
def probe(
    backbones: Annotated[str | None, typer.Option("--backbones", "-b", help="Comma-separated backbones [default: every folder under features/ with both splits].", show_default=False)] = None,
    c: Annotated[float | None, typer.Option("--c", help="Fix C (inverse L2 strength) instead of choosing it on a held-out slice.", show_default=False)] = None,
    full_grid: Annotated[bool | None, typer.Option("--full-grid/--short-grid", help="Sweep C over 10^linspace(-6,5,45) (DINOv2/v3) instead of 10^linspace(-4,3,8).", show_default=False)] = None,
    solver: Annotated[str | None, typer.Option("--solver", help="auto | sklearn | torch [default: auto: torch on CUDA, sklearn on CPU].", show_default=False)] = None,
    val_fraction: Annotated[float | None, typer.Option("--val-fraction", help="Stratified share of the training split held out to choose C [default: 0.2].", show_default=False)] = None,
    max_iter: Annotated[int | None, typer.Option("--max-iter", help="L-BFGS iterations per fit [default: 1000].", show_default=False)] = None,
    tsne: Annotated[bool | None, typer.Option("--tsne/--no-tsne", help="Also plot a t-SNE of the test features per backbone (at most 2000 points).", show_default=False)] = None,
    train_split: Annotated[str | None, typer.Option("--train-split", help="Split to fit on [default: train].", show_default=False)] = None,
    test_split: Annotated[str | None, typer.Option("--test-split", help="Split to score on [default: test].", show_default=False)] = None,
    run_dir=None, device="auto", seed=None, config=None, force=False, verbose=False,
) -> None:
    """Train linear probes on frozen features of every backbone and compare them (DINOv2/v3 protocol).

    Features are standardised, C is chosen on a stratified 20% slice of the training split, the probe is
    refit on the whole split and scored on the test split; weighted k-NN (k = 10, 20) accuracy is added.
    Writes probe/<backbone>/{metrics.json,classifier.safetensors,confusion.png} and probe/summary.{csv,md,png}.
    """
    from gesture_cli.core.config import resolve_config
    from gesture_cli.core.rundir import RunDir
    from gesture_cli.tasks.probe import ProbeConfig, run_probes

    names = [b.strip() for b in backbones.split(",") if b.strip()] if backbones else None
    cfg = resolve_config(
        ProbeConfig,
        config,
        flags(backbones=names, c=c, full_grid=full_grid, solver=solver, val_fraction=val_fraction, max_iter=max_iter, tsne=tsne,
              train_split=train_split, test_split=test_split, seed=seed),
    )
    run = RunDir(run_dir)
    console = make_console()
    out = run_probes(cfg, run, device=device, force=force, argv=argv(), on_event=lambda msg: console.print(f"[dim]probe {msg}[/]"))
    if out["cached"]:
        console.print(f"[dim]probe: cached result for {', '.join(out['cached'])} (use --force to recompute)[/]")
    unconverged = [r["backbone"] for r in out["results"] if r.get("converged") is False]
    if unconverged:
        console.print(f"[yellow]note:[/] the final fit of {', '.join(unconverged)} stopped at --max-iter {cfg.max_iter} before converging")
    _summary(console, run, out["rows"], cfg)


def _summary(console, run, rows: list[dict], cfg) -> None:
    from rich.table import Table

    knn_cols = [f"knn{k}_accuracy" for k in cfg.knn_k]
    table = Table(title=f"Linear probes ({cfg.test_split} split)")
    heads = ["backbone", "dim", "C", "acc", "macro F1", "wtd F1", *[f"kNN@{k}" for k in cfg.knn_k], "fit s"]
    for h in heads:
        table.add_column(h, justify="left" if h == "backbone" else "right", no_wrap=True)
    best = max(r["accuracy"] or 0.0 for r in rows)
    for r in rows:
        acc = f"{r['accuracy']:.4f}"
        table.add_row(
            r["backbone"], str(r["feature_dim"]), f"{r['c']:.3g}", f"[bold green]{acc}[/]" if r["accuracy"] == best and len(rows) > 1 else acc,
            f"{r['macro_f1']:.4f}", f"{r['weighted_f1']:.4f}", *[f"{r[k]:.4f}" for k in knn_cols], f"{r['fit_seconds']:.1f}",
        )
    console.print(table)
    console.print(f"Wrote {run.path('probe')}/{{<backbone>/,summary.csv,summary.md,summary.png}}")


def register(app: typer.Typer) -> None:
    app.command("probe", epilog=EXAMPLE)(probe)
