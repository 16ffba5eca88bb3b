"""`gx pose-convert`: keypoint sequences in any format gx reads -> gx's pose folder (index.jsonl + safetensors)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gesture_cli.cli.options import PrecisionOpt, argv, dataset_opt, flags, gx_command, make_console, opt, precision_line

EXAMPLE = (
    "Example: gx pose-convert data/phoenix -o data/phoenix-gx   |   gx pose-convert samples.pkl --allow-pickle -o data/gx   |   "
    "gx pose-convert synthetic-signs -o data/signs --dataset-opt train_size=1000"
)


@gx_command
def pose_convert(
    source: Annotated[str, typer.Argument(metavar="INPUT", help="A file or folder (.pose, OpenPose *_keypoints.json, Kaggle .parquet, ASL-App .json, a pickle), or a pose spec: pose:PATH, synthetic-signs.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write (index.jsonl, meta.json, samples/*.safetensors).", show_default=False)],
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Read pickle files (they can run arbitrary code: only for files you trust).")] = False,
    layout: Annotated[str | None, typer.Option("--layout", help="auto | mediapipe-holistic | openpose-137 | coco-wholebody-133: keep only samples of this layout [default: auto].", show_default=False)] = None,
    texts: Annotated[Path | None, typer.Option("--texts", help="Label table (CSV/TSV with a name column and text/gloss columns, or a labels pickle with --allow-pickle).", show_default=False)] = None,
    fps: Annotated[float | None, typer.Option("--fps", help="Frame rate for formats that record none (OpenPose JSON, parquet, pickle).", show_default=False)] = None,
    split: Annotated[str | None, typer.Option("--split", help="Convert one split: train | val | test [default: all samples].", show_default=False)] = None,
    dataset_opt: Annotated[list[str] | None, typer.Option("--dataset-opt", help="Source option KEY=VALUE (repeatable), e.g. train_size=1000 for synthetic-signs.", show_default=False)] = None,
    seed=None,
    force: Annotated[bool, typer.Option("--force", help="Replace OUTDIR if it holds a gx pose folder (an earlier pose-convert's); no other folder is replaced.")] = False,
    verbose=False,
) -> None:
    """Convert keypoint sequences to gx's pose format: one safetensors file per sample (keypoints + mask) and an index with texts."""
    from gesture_cli.tasks.pose import convert_poses

    ds, out = convert_poses(source, output, allow_pickle=allow_pickle, layout=layout, texts=texts, fps=fps, split=split, dataset_opts=dataset_opt,
                            seed=seed, force=force)
    _summary(make_console(), ds, out)


def _summary(console, ds, out: Path) -> None:
    import numpy as np
    from rich.table import Table

    fps = sorted({round(s.fps, 2) for s in ds.samples})
    table = Table(title=f"{ds.spec}: {len(ds)} samples, {ds.layout}, {ds.dims}D, {', '.join(f'{f:g}' for f in fps[:4])}{'...' if len(fps) > 4 else ''} fps")
    for col in ("split", "samples", "frames min", "mean", "max", "valid points", "with text", "with gloss"):
        table.add_column(col, justify="left" if col == "split" else "right")
    groups: dict[str, list] = {}
    for s in ds.samples:
        groups.setdefault(s.split or "-", []).append(s)
    for name in sorted(groups, key=lambda n: ("train", "val", "test", "-").index(n) if n in ("train", "val", "test", "-") else 9):
        ss = groups[name]
        frames = np.array([s.num_frames for s in ss])
        valid = sum(int(s.mask.sum()) for s in ss) / max(1, sum(s.mask.size for s in ss))
        table.add_row(name, str(len(ss)), str(frames.min()), f"{frames.mean():.1f}", str(frames.max()), f"{valid:.0%}",
                      str(sum(bool(s.text) for s in ss)), str(sum(bool(s.gloss) for s in ss)))
    console.print(table)
    if ds.skipped:
        console.print("Skipped: " + "; ".join(f"{k}: {v}" for k, v in ds.skipped.items()), highlight=False)
    console.print(f"Wrote {out}", highlight=False)


PRETRAIN_EXAMPLE = ("Example: gx pose-pretrain --dataset synthetic-signs --text-model tiny-umt5 --encoder-opt d_model=64 --encoder-opt n_layers=2 "
                    "--epochs 10 -r runs/signs")
FINETUNE_EXAMPLE = "Example: gx pose-finetune --dataset synthetic-signs --epochs 20 --num-beams 4 -r runs/signs"


# Options both training commands share (Annotated types: one definition, one help text).
DatasetSpecOpt = Annotated[str | None, dataset_opt("Pose dataset spec: synthetic-signs, pose:FILE|DIR (a gx pose folder, .pose files, ...) [default: synthetic-signs].")]
DatasetOptOpt = Annotated[list[str] | None, opt("--dataset-opt", "Dataset source option KEY=VALUE (repeatable), e.g. train_size=1000.")]
EncoderConfigOpt = Annotated[Path | None, opt("--encoder-config", "JSON/YAML pose encoder settings (see configs/pose_encoder.json) [default: its defaults].")]
EncoderOptOpt = Annotated[list[str] | None, opt("--encoder-opt", "Pose encoder setting KEY=VALUE (repeatable), e.g. d_model=128, n_layers=2.")]
KeypointsOpt = Annotated[str | None, opt("--keypoints", "Body parts the encoder sees, e.g. body,hands,face-lite [default: the encoder config's].")]
MaxFramesOpt = Annotated[int | None, opt("--max-frames", "Frames per sequence at most; longer ones are subsampled [default: 256].")]
EpochsOpt = Annotated[int | None, opt("--epochs", "Passes over the training split.")]
BatchOpt = Annotated[int | None, opt("--batch-size", "Sequences per micro-batch and process.")]
LrOpt = Annotated[float | None, opt("--lr", "Peak learning rate.")]
WarmupOpt = Annotated[int | None, opt("--warmup-steps", "Linear warm-up in optimizer steps [default: 5% of all steps].")]
PatienceOpt = Annotated[int | None, opt("--patience", "Evaluations without improvement before stopping; 0 = never [default: 5].")]
MaxSamplesOpt = Annotated[int | None, opt("--max-samples", "Cap on sequences per split (seeded subset), for quick runs.")]
ValFractionOpt = Annotated[float | None, opt("--val-fraction", "Share of train held out when the dataset has no val samples [default: 0.1].")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from checkpoints/last/ (after Ctrl-C, SIGTERM or a pre-emption).")]


@gx_command
def pose_pretrain(
    dataset: DatasetSpecOpt = None,
    dataset_opt: DatasetOptOpt = None,
    text_model: Annotated[str | None, opt("--text-model", "Frozen text encoder: umt5-small, umt5-base, tiny-umt5 (offline), a hub id or a local directory [default: umt5-small].")] = None,
    encoder_config: EncoderConfigOpt = None,
    encoder_opt: EncoderOptOpt = None,
    keypoints: KeypointsOpt = None,
    normalize: Annotated[str | None, opt("--normalize", "none | max-abs | shoulders | shoulders-frame [default: shoulders].")] = None,
    max_frames: MaxFramesOpt = None,
    embed_dim: Annotated[int | None, opt("--embed-dim", "Width of the shared pose-text space [default: 256].")] = None,
    temperature: Annotated[float | None, opt("--temperature", "Initial softmax temperature; learned [default: 0.07].")] = None,
    epochs: EpochsOpt = None,
    max_steps=None,
    batch_size: BatchOpt = None,
    grad_accum=None,
    lr: LrOpt = None,
    weight_decay=None,
    warmup_steps: WarmupOpt = None,
    patience: PatienceOpt = None,
    eval_every=None, checkpoint_every=None,
    precision: PrecisionOpt = None,
    max_samples: MaxSamplesOpt = None,
    val_fraction: ValFractionOpt = None,
    resume: ResumeOpt = False,
    run_dir=None, device="auto", seed=None, config=None, force=False, verbose=False,
) -> None:
    """Align a pose encoder with a frozen UMT5 text encoder (symmetric InfoNCE, learnable temperature).

    Pooled pose embeddings and pooled embeddings of the frozen text encoder meet in a shared space
    through linear heads. Each evaluation logs validation retrieval R@1/R@5 (pose -> text among the
    split's distinct sentences); the best R@1 is kept. Writes pose/pretrain/{encoder.safetensors,config.json,heads.safetensors,
    text_model/,pretrain.json,metrics.json,train_log.csv,checkpoints/}. [defaults: --epochs 20,
    --batch-size 32, --lr 5e-4]
    """
    from gesture_cli.core.config import resolve_config
    from gesture_cli.core.rundir import RunDir
    from gesture_cli.tasks.datasets import config_as_recorded
    from gesture_cli.tasks.translate import PosePretrainConfig, pretrain_pose

    cfg = config_as_recorded(resolve_config(PosePretrainConfig, config, flags(
        dataset=dataset, dataset_opts=dataset_opt or None, text_model=text_model, encoder_config=str(encoder_config) if encoder_config else None,
        encoder_opts=encoder_opt or None, keypoints=keypoints, normalize=normalize, max_frames=max_frames, embed_dim=embed_dim,
        temperature=temperature, epochs=epochs, max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum, lr=lr,
        weight_decay=weight_decay, warmup_steps=warmup_steps, patience=patience, eval_every=eval_every, checkpoint_every=checkpoint_every,
        precision=precision, max_samples=max_samples, val_fraction=val_fraction, seed=seed)))
    console = make_console()
    out = _train(console, "pose-pretrain", pretrain_pose, cfg, RunDir(run_dir), device=device, force=force, resume=resume,
                 show=lambda m: f"R@1 {m.get('val_r1', 0):.3f}, R@5 {m.get('val_r5', 0):.3f}")
    if out is not None:
        _pretrain_summary(console, out)


@gx_command
def pose_finetune(
    dataset: DatasetSpecOpt = None,
    dataset_opt: DatasetOptOpt = None,
    init: Annotated[str | None, opt("--init", "auto: the pretrained encoder when there is one, else from scratch | pretrained: require it | scratch [default: auto].")] = None,
    pretrained: Annotated[Path | None, opt("--pretrained", "A pose-pretrain folder (or its encoder.safetensors) [default: <run dir>/pose/pretrain].")] = None,
    text_model: Annotated[str | None, opt("--text-model", "umt5-small, umt5-base, tiny-umt5, a hub id or a local directory [default: the pretraining's, else umt5-small].")] = None,
    encoder_config: EncoderConfigOpt = None,
    encoder_opt: EncoderOptOpt = None,
    keypoints: KeypointsOpt = None,
    normalize: Annotated[str | None, opt("--normalize", "none | max-abs | shoulders | shoulders-frame [default: the pretraining's, else shoulders].")] = None,
    max_frames: MaxFramesOpt = None,
    bridge: Annotated[str | None, opt("--bridge", "encoder: pose tokens enter the UMT5 encoder as inputs_embeds | direct: they are the encoder outputs the decoder attends to [default: encoder].")] = None,
    num_beams: Annotated[int | None, opt("--num-beams", "Beams when decoding for validation and the final scores; 1 = greedy [default: 1].")] = None,
    max_new_tokens: Annotated[int | None, opt("--max-new-tokens", "Tokens generated per sequence at most [default: 64].")] = None,
    max_text_tokens: Annotated[int | None, opt("--max-text-tokens", "Target tokens at most, eos included [default: 128].")] = None,
    epochs: EpochsOpt = None,
    max_steps=None,
    batch_size: BatchOpt = None,
    grad_accum=None,
    lr: LrOpt = None,
    weight_decay=None,
    warmup_steps: WarmupOpt = None,
    patience: PatienceOpt = None,
    eval_every=None, checkpoint_every=None,
    precision: PrecisionOpt = None,
    max_samples: MaxSamplesOpt = None,
    val_fraction: ValFractionOpt = None,
    resume: ResumeOpt = False,
    run_dir=None, device="auto", seed=None, config=None, force=False, verbose=False,
) -> None:
    """Train pose encoder + projection + UMT5 to write the sentence a pose sequence signs.

    Starts from pose/pretrain/encoder.safetensors when it exists (and uses the text model it was
    aligned with), else from scratch, saying so. Teacher forcing; each evaluation decodes the
    validation split (greedy, or beam search with --num-beams) and the best sacrebleu BLEU-4 is kept.
    Writes pose/finetune/{encoder.safetensors,config.json,bridge.safetensors,text_model/,
    translator.json,metrics.json,train_log.csv,checkpoints/}. [defaults: --epochs 30, --batch-size 16,
    --lr 3e-4]
    """
    from gesture_cli.core.config import resolve_config
    from gesture_cli.core.rundir import RunDir
    from gesture_cli.tasks.datasets import config_as_recorded
    from gesture_cli.tasks.translate import PoseFinetuneConfig, finetune_pose

    cfg = config_as_recorded(resolve_config(PoseFinetuneConfig, config, flags(
        dataset=dataset, dataset_opts=dataset_opt or None, init=init, pretrained=str(pretrained) if pretrained else None, text_model=text_model,
        encoder_config=str(encoder_config) if encoder_config else None, encoder_opts=encoder_opt or None, keypoints=keypoints,
        normalize=normalize, max_frames=max_frames, bridge=bridge, num_beams=num_beams, max_new_tokens=max_new_tokens,
        max_text_tokens=max_text_tokens, epochs=epochs, max_steps=max_steps, batch_size=batch_size, grad_accum=grad_accum, lr=lr,
        weight_decay=weight_decay, warmup_steps=warmup_steps, patience=patience, eval_every=eval_every, checkpoint_every=checkpoint_every,
        precision=precision, max_samples=max_samples, val_fraction=val_fraction, seed=seed)))
    console = make_console()
    out = _train(console, "pose-finetune", finetune_pose, cfg, RunDir(run_dir), device=device, force=force, resume=resume,
                 show=lambda m: f"BLEU-4 {m.get('val_bleu4', 0):.2f}, chrF {m.get('val_chrf', 0):.2f}")
    if out is not None:
        _finetune_summary(console, out)


def _train(console, name: str, fn, cfg, run, *, device: str, force: bool, resume: bool, show) -> dict | None:
    """Run a trainer with a progress bar and one line per evaluation; None when there is nothing to show."""
    from gesture_cli.cli.progress import Bars, training_callbacks

    with Bars(console) as bars:
        out = fn(cfg, run, device=device, force=force, resume=resume, argv=argv(),
                 callbacks=training_callbacks(console, bars, name, describe=lambda m: f"val {show(m)}"),
                 notify=lambda line: console.print(line, highlight=False))
    if not out["is_main"]:
        return None
    if out.get("cached"):
        console.print(f"[dim]{name}: cached result for {cfg.dataset} in {run.root} (use --force to recompute)[/]")
        return None
    return out


def _pretrain_summary(console, out: dict) -> None:
    s, m = out["summary"], out["metrics"]["val"]
    console.print(f"val retrieval ({s['val']} sequences, {s['val_sentences']} distinct sentences): R@1 {m['val_r1']:.3f} "
                  f"(chance {s['chance_r1']:.3f}), R@5 {m['val_r5']:.3f}; text -> pose R@1 {m['val_t2p_r1']:.3f}; "
                  f"temperature {s['temperature']:.4f}", highlight=False)
    console.print(f"{s['trainable_params']:,} trainable parameters, text encoder frozen ({s['text_encoder_params']:,}); "
                  f"{s['steps']} steps, {s['train_samples_per_s']:.1f} sequences/s, {s['weights']} weights", highlight=False)
    console.print(f"Wrote {out['out']}", highlight=False)


def _finetune_summary(console, out: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    s = out["summary"]
    table = Table(title=f"{out['outputs'][0]}  ({s['trainable_params']:,} trainable, {s['steps']} steps, bridge {s['bridge']}, "
                        f"{'greedy' if s['num_beams'] == 1 else str(s['num_beams']) + ' beams'}, {s['weights']} weights)")
    for col in ("split", "n", "BLEU-1", "BLEU-4", "BLEU-4 SLT", "chrF", "ROUGE-L", "ROUGE-L b1.2"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for role, m in out["metrics"].items():
        table.add_row(f"{role} ({m['split']})", str(m["n"]),
                      *(f"{m[k]:.2f}" for k in ("bleu1", "bleu4", "bleu4_slt", "chrf", "rouge_l", "rouge_l_slt")))
    console.print(table)
    for ex in out.get("examples", [])[:3]:
        console.print(f"  {escape(ex['id'])}: {escape(ex['hypothesis'])!r}  (reference {escape(ex['reference'])!r})", highlight=False)
    if s.get("stopped_early"):
        console.print(f"Stopped early: no better val BLEU-4 since step {s['best_step']}.")
    console.print(f"Wrote {out['out']}", highlight=False)


# ---- `gx evaluate translate` / `gx infer translate` (their runners in cli/evaluate.py and cli/infer.py call these) ----
def _command_params() -> dict:
    """The options of the running `gx evaluate` / `gx infer` command, for the ones only translate has
    (--num-beams, --max-new-tokens, --sample-id): read here so the task runners keep one signature."""
    try:
        from typer._click.globals import get_current_context
    except ImportError:
        from click import get_current_context
    ctx = get_current_context(silent=True)
    return dict(ctx.params) if ctx is not None else {}


SHORT_VARIANTS = {  # the summary table's names; translate.json has the full descriptions and signatures
    "bleu1": "sacrebleu BLEU-1", "bleu2": "sacrebleu BLEU-2", "bleu3": "sacrebleu BLEU-3", "bleu4": "sacrebleu BLEU-4",
    **{f"bleu{n}_slt": f"BLEU-{n}, SLT convention (SignJoey: whitespace tokens, no smoothing)" for n in range(1, 5)},
    "chrf": "sacrebleu chrF", "rouge_l": "rouge-score ROUGE-L F1, sentence mean",
    "rouge_l_slt": "ROUGE-L beta 1.2, sentence mean (SLT papers)",
}


def run_evaluate(cfg, *, run, device: str, force: bool, console) -> None:
    """Score pose/finetune/ on a split and print the metrics; cfg: the shared EvaluateConfig (dataset, split, ...)."""
    from rich.markup import escape
    from rich.table import Table

    from gesture_cli.cli.progress import Bars
    from gesture_cli.tasks.translate import EvaluateTranslateConfig, evaluate_translation

    params = _command_params()
    cfg = EvaluateTranslateConfig(dataset=cfg.dataset, split=cfg.split, max_samples=cfg.max_samples, batch_size=cfg.batch_size,
                                  seed=cfg.seed, num_beams=params.get("num_beams"), max_new_tokens=params.get("max_new_tokens"),
                                  precision=cfg.precision)

    with Bars(console, unit="seq") as bars:
        res = evaluate_translation(run, cfg, device=device, argv=argv(), force=force, on_progress=bars.lazy(f"translate {cfg.split}"),
                                   notify=precision_line(console))
    if res.get("cached"):
        console.print("[dim]evaluate: cached result (use --force to recompute)[/]")
    table = Table(title=f"translate on {res['dataset']} / {res['split']}: {res['n']} sequences, {res['decoding']}")
    table.add_column("metric")
    table.add_column("score", justify="right")
    table.add_column("variant")
    for key, variant in SHORT_VARIANTS.items():
        table.add_row(key, f"{res[key]:.2f}", variant)
    console.print(table)
    sig, slt = (res["variants"][k].rsplit(": ", 1)[-1] for k in ("bleu4", "bleu4_slt"))
    console.print(f"sacrebleu BLEU signature {escape(sig)}; SLT convention {escape(slt)}; every variant in full in translate.json",
                  highlight=False)
    for ex in res.get("examples", [])[:3]:
        console.print(f"  {escape(ex['id'])}: {escape(ex['hypothesis'])!r}  (reference {escape(ex['reference'])!r})", highlight=False)
    console.print(f"Wrote {res['output']}", highlight=False)
    if not res.get("cached"):
        console.print(f"Wrote {res['results_txt']}", highlight=False)
        console.print(f"Wrote {res['predictions_csv']}", highlight=False)


def run_infer(cfg, *, run, device: str, as_json: bool, console) -> None:
    """Translate --input FILE or --sample-id ID and print the text (or JSON). `cfg` is unused (None): translate
    takes a dataset sample id where other tasks need --input, so it reads its own options (InferTranslateConfig)."""
    import json

    from rich.markup import escape

    from gesture_cli.core.config import resolve_config
    from gesture_cli.tasks.datasets import config_as_recorded
    from gesture_cli.tasks.translate import InferTranslateConfig, infer_translation

    p = _command_params()
    cfg = config_as_recorded(resolve_config(InferTranslateConfig, p.get("config"), flags(
        input=str(p["input_path"]) if p.get("input_path") is not None else None, sample_id=p.get("sample_id"), dataset=p.get("dataset"),
        batch_size=p.get("batch_size"), num_beams=p.get("num_beams"), max_new_tokens=p.get("max_new_tokens"), precision=p.get("precision"))))
    # stdout carries only the translations (for scripts): the precision line goes to stderr
    res = infer_translation(run, cfg, device=device, argv=argv(), notify=precision_line(console, True))
    if as_json:  # one object for --sample-id, a list for --input (a file or a folder of them)
        typer.echo(json.dumps(res["predictions"][0] if cfg.sample_id else res["predictions"], indent=1))
        return
    preds = res["predictions"]
    if len(preds) == 1:
        typer.echo(preds[0]["text"])
    else:
        for p in preds:
            typer.echo(f"{p['id']}\t{p['text']}")
    notes = make_console(stderr=True)  # stdout carries only the translations, for scripts
    if res.get("skipped"):  # what --input held that was not read (a label table that cannot be read, ...)
        notes.print("Skipped: " + "; ".join(f"{k}: {v}" for k, v in res["skipped"].items()), markup=False, highlight=False)
    for p in [p for p in preds if p.get("reference")][:3]:
        notes.print(f"[dim]reference ({escape(p['id'])}): {escape(p['reference'])}[/]", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("pose-convert", epilog=EXAMPLE)(pose_convert)
    app.command("pose-pretrain", epilog=PRETRAIN_EXAMPLE)(pose_pretrain)
    app.command("pose-finetune", epilog=FINETUNE_EXAMPLE)(pose_finetune)
