"""`gx pose-pretrain`, `gx pose-finetune`, `gx evaluate translate` and `gx infer translate`: the steps of
the pose -> text translator, and the fine-tuned translator's files (pose/finetune/).

Files of `gx evaluate translate` under eval/: translate.json (metrics, variants, settings),
evaluation_results.txt (per sample: id, reference, hypothesis, sentence BLEU-4 and ROUGE-L), and
predictions.csv (the same as a table). The metrics are `gesture_cli.eval.translate`; the trainers are
`gesture_cli.train.pose_pretrain` and `gesture_cli.train.pose_finetune` (what they share, and how: train/pose_common.py).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gesture_cli.core.errors import ArtifactError, DataError, UsageError, shell_word
from gesture_cli.eval.translate import METRIC_KEYS, metric_variants, normalize_whitespace, score_translations
from gesture_cli.models.translator import BRIDGE_KIND, FINETUNE_REL, TRANSLATOR_KIND, Translator
from gesture_cli.tasks.trained import check_precision_option, run_precision
from gesture_cli.tasks.training import run_trainer
from gesture_cli.train.pose_common import PRETRAIN_REL
from gesture_cli.train.pose_finetune import FinetuneTrainer, PoseFinetuneConfig
from gesture_cli.train.pose_pretrain import PosePretrainConfig, PretrainTrainer


def pretrain_pose(cfg: PosePretrainConfig, run, *, device: str = "auto", force: bool = False, resume: bool = False,
                  argv: list[str] | None = None, callbacks: dict[str, list[Callable]] | None = None,
                  notify: Callable[[str], None] | None = None) -> dict:
    """Align the pose encoder with a frozen text encoder; writes pose/pretrain/ (see train/pose_common.py's docstring)."""
    trainer = PretrainTrainer(cfg, run, out_rel=PRETRAIN_REL, resume=resume, force=force)
    return run_trainer(trainer, device=device, argv=argv, callbacks=callbacks, notify=notify)


def finetune_pose(cfg: PoseFinetuneConfig, run, *, device: str = "auto", force: bool = False, resume: bool = False,
                  argv: list[str] | None = None, callbacks: dict[str, list[Callable]] | None = None,
                  notify: Callable[[str], None] | None = None) -> dict:
    """Train pose encoder + projection + UMT5 to generate text; writes pose/finetune/ (see train/pose_common.py's docstring)."""
    trainer = FinetuneTrainer(cfg, run, out_rel=FINETUNE_REL, resume=resume, force=force)
    return run_trainer(trainer, device=device, argv=argv, callbacks=callbacks, notify=notify)


__all__ = ["EvaluateTranslateConfig", "InferTranslateConfig", "PoseFinetuneConfig", "PosePretrainConfig", "evaluate_translation", "finetune_pose",
           "infer_translation", "load_translator", "pretrain_pose"]

EVAL_JSON, EVAL_TXT, EVAL_CSV = "eval/translate.json", "eval/evaluation_results.txt", "eval/predictions.csv"


INFER_JSON = "infer/translate.json"


@dataclass(frozen=True)
class EvaluateTranslateConfig:
    """`gx evaluate translate`: the fine-tuned translator of the run dir on one split."""

    dataset: str | None = None  # pose dataset spec; None = the one pose-finetune trained on (with its options)
    split: str = "test"  # train | val | test
    max_samples: int | None = None  # score only the first N samples of the split
    batch_size: int = 0  # sequences per generate call; 0 = 32
    num_beams: int | None = None  # beam search width; None = the model's (pose-finetune --num-beams)
    max_new_tokens: int | None = None  # tokens generated per sequence at most; None = the model's
    seed: int | None = None  # split seed; None = the training seed
    precision: str | None = None  # auto | fp32 | bf16 | fp16; None = the model's own (core.device.inference_precision)

    def validate(self) -> None:

        check_precision_option(self.precision)
        if self.max_samples is not None and self.max_samples < 1:
            raise UsageError("--max-samples must be at least 1")
        if self.batch_size < 0:
            raise UsageError("--batch-size must be 0 (auto) or a positive number")
        if (self.num_beams is not None and self.num_beams < 1) or (self.max_new_tokens is not None and self.max_new_tokens < 1):
            raise UsageError("--num-beams and --max-new-tokens must be at least 1")


@dataclass(frozen=True)
class InferTranslateConfig:
    """`gx infer translate`: a keypoint file (or folder), or one sample of a dataset by id."""

    input: str | None = None  # .pose file, OpenPose JSON folder, parquet, gx pose folder...
    sample_id: str | None = None  # id of a sample of the dataset (--dataset, default the training one)
    dataset: str | None = None  # where --sample-id is looked up; None = the one pose-finetune trained on
    batch_size: int = 0  # sequences per generate call; 0 = 32
    num_beams: int | None = None  # None = the model's
    max_new_tokens: int | None = None  # None = the model's
    precision: str | None = None  # auto | fp32 | bf16 | fp16; None = the model's own (core.device.inference_precision)

    def validate(self) -> None:

        check_precision_option(self.precision)
        if bool(self.input) == bool(self.sample_id):
            raise UsageError("give one of --input FILE (a .pose file or other keypoint file/folder) or --sample-id ID")
        if self.batch_size < 0:
            raise UsageError("--batch-size must be 0 (auto) or a positive number")
        if (self.num_beams is not None and self.num_beams < 1) or (self.max_new_tokens is not None and self.max_new_tokens < 1):
            raise UsageError("--num-beams and --max-new-tokens must be at least 1")


def _dataset_for(info: dict, spec: str | None):
    """The pose dataset to read, parsed once (a DatasetSpec): the training one, with its options, unless another spec is given."""
    from gesture_cli.data.registry import given_or_recorded_dataset, same_dataset

    other = spec if spec and not same_dataset(info["dataset"], spec) else None  # a spec that names the training data reads as recorded
    return given_or_recorded_dataset(other, info["dataset"], recorded_opts=info.get("dataset_opts"), kind="pose",
                                     recorded_in="the translator (pose-finetune)")


def _check_layout(samples, info: dict, where: str) -> None:
    for s in samples:
        if s.layout != info["layout"]:
            raise DataError(f"{s.source or where}: sample '{s.id}' has {s.layout} keypoints; this model was trained on {info['layout']}")
        if s.dims < int(info["dims"]):
            raise DataError(f"{s.source or where}: sample '{s.id}' has {s.dims}D keypoints; this model reads {info['dims']}D")


def _checked_generate(tr, prec, samples, **kwargs) -> list[str]:
    """generate_texts, stopping with a one-line error when the source tokens handed to the text model hold
    NaN/Inf: generated token ids cannot show it, they would just be arbitrary words."""
    from gesture_cli.models.translator import generate_texts

    def check(_module, _inputs, output):
        prec.check_finite(output, what="the pose encoder's tokens for the text model")

    handle = tr.model.proj.register_forward_hook(check)
    try:
        return generate_texts(tr.model, tr.tokenizer, tr.batches(samples), **kwargs)
    finally:
        handle.remove()


def evaluate_translation(run, cfg: EvaluateTranslateConfig, *, device="auto", argv=None, force: bool = False,
                         on_progress: Callable[[int, int], None] | None = None, notify=None) -> dict:
    """Translate one split with pose/finetune/ and score it; writes eval/translate.json, evaluation_results.txt, predictions.csv.

    The model runs in cfg.precision, by default the one pose-finetune trained it in (`notify` gets the "precision: ..." line)."""
    from gesture_cli.core.artifacts import atomic_write_text, load_json, save_json
    from gesture_cli.data.pose import POSE_SPLITS, make_pose_splits, normalize_split
    from gesture_cli.data.registry import same_dataset

    cfg.validate()
    path = finetune_dir(run)
    info = load_json(path / "translator.json", kind=TRANSLATOR_KIND)
    split = normalize_split(cfg.split)
    if split not in POSE_SPLITS:
        raise UsageError(f"--split '{cfg.split}' is not one of {', '.join(POSE_SPLITS)}")
    spec = _dataset_for(info, cfg.dataset)
    seed = cfg.seed if cfg.seed is not None else int(info.get("seed") or 0)
    # the splits exactly as pose-finetune made them (its --max-samples subset included); --max-samples then takes the first N
    same = same_dataset(info["dataset"], spec.text)
    opts = tuple(info.get("dataset_opts") or ()) if same else ()  # as recorded, for this step's config
    splits = make_pose_splits(spec, seed=seed, max_samples=info.get("max_samples") if same else None,
                              val_fraction=float(info.get("val_fraction", 0.1)), need_text=False, training=False)
    ds = getattr(splits, split)
    if ds is None or not len(ds):
        raise DataError(f"dataset '{spec}' has no '{split}' samples; choose another --split")
    samples = ds.samples[: cfg.max_samples] if cfg.max_samples else ds.samples
    if not any(s.text for s in samples):
        raise DataError(f"dataset '{spec}' split '{split}' has no reference texts to score against")
    _check_layout(samples, info, spec)
    num_beams = cfg.num_beams or int(info.get("num_beams", 1))
    max_new = cfg.max_new_tokens or int(info.get("max_new_tokens", 64))
    prec = run_precision(device, cfg.precision, info.get("precision"), notify=notify)
    config = {"task": "translate", "dataset": spec.text, "dataset_opts": list(opts), "split": split, "seed": seed, "max_samples": cfg.max_samples,
              "num_beams": num_beams, "max_new_tokens": max_new, "precision": prec.name}
    files = [path / "encoder.safetensors", path / "bridge.safetensors", path / "text_model"]
    step = run.begin("evaluate", config=config, outputs=[EVAL_JSON, EVAL_TXT, EVAL_CSV], inputs=[*files, *splits.source_files],
                     input_keys={"dataset": splits.cache_token} if splits.cache_token else {}, argv=argv, force=force)
    if step.cached:
        return {**load_json(run.path(EVAL_JSON), kind="eval-translate"), "cached": True, "output": str(run.path(EVAL_JSON))}
    with step:
        t0 = time.perf_counter()
        tr = load_translator(run, prec.device, precision=prec)
        hyps = _checked_generate(tr, prec, samples, batch_size=cfg.batch_size or 32, num_beams=num_beams, max_new_tokens=max_new,
                                 on_progress=on_progress)
        metrics, rows = score_translations([s.id for s in samples], hyps, [s.text for s in samples], glosses=[s.gloss for s in samples])
        variants = metric_variants(metrics.pop("signatures"))
        result = {"task": "translate", "model": str(path), "dataset": spec.text, "split": split, "num_beams": num_beams,
                  "decoding": "greedy" if num_beams == 1 else f"beam search ({num_beams} beams)", "precision": prec.name, **metrics,
                  "variants": variants, "seconds": round(time.perf_counter() - t0, 3)}
        save_json(step.stage(EVAL_JSON, is_dir=False), result, kind="eval-translate")
        atomic_write_text(step.stage(EVAL_TXT, is_dir=False), _results_text(result, rows))
        atomic_write_text(step.stage(EVAL_CSV, is_dir=False), _predictions_csv(rows))
        step.metrics.update({k: metrics[k] for k in ("bleu4", "bleu4_slt", "chrf", "rouge_l", "rouge_l_slt", "n")})
        step.metrics["precision"] = prec.name
    return {**result, "cached": False, "output": str(run.path(EVAL_JSON)), "results_txt": str(run.path(EVAL_TXT)),
            "predictions_csv": str(run.path(EVAL_CSV)), "examples": rows[:5]}


def _results_text(result: dict, rows: list[dict]) -> str:
    lines = [f"# gx evaluate translate: {result['dataset']} / {result['split']}, {result['n']} samples, {result['decoding']}", "#"]
    for key in METRIC_KEYS:
        lines.append(f"# {key:<12} {result[key]:8.2f}   {result['variants'][key]}")
    lines.append("")
    for r in rows:
        lines += [f"id:         {r['id']}", f"reference:  {r['reference']}", f"hypothesis: {r['hypothesis']}",
                  f"BLEU-4 (sentence) {r['bleu4']:.2f}   ROUGE-L (beta 1.2) {r['rouge_l_slt']:.2f}", ""]
    return "\n".join(lines)


def _predictions_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["id", "reference", "hypothesis", "bleu4", "rouge_l_slt", "gloss"], lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r[k] for k in w.fieldnames})
    return buf.getvalue()


def infer_translation(run, cfg: InferTranslateConfig, *, device="auto", argv=None, notify=None) -> dict:
    """Translate a keypoint file/folder or one dataset sample; writes infer/translate.json. The model runs in
    cfg.precision, by default the one pose-finetune trained it in."""
    from gesture_cli.core.artifacts import load_json, save_json
    from gesture_cli.data.pose import make_pose_dataset

    cfg.validate()
    path = finetune_dir(run)
    info = load_json(path / "translator.json", kind=TRANSLATOR_KIND)
    if cfg.input:
        src = Path(cfg.input).expanduser()
        if not src.exists():
            raise UsageError(f"--input {src}: no such file or folder")
        ds = make_pose_dataset(f"pose:{src}")
        samples, where, skipped = ds.samples, str(src), dict(ds.skipped)
        if not samples:
            raise DataError(f"{src}: no keypoint sequences found")
    else:
        spec = _dataset_for(info, cfg.dataset)
        ds = make_pose_dataset(spec, seed=int(info.get("seed") or 0))
        hit = [s for s in ds.samples if s.id == cfg.sample_id]
        if not hit:
            ids = [s.id for s in ds.samples]
            from gesture_cli.core.errors import did_you_mean

            raise UsageError(f"--sample-id '{cfg.sample_id}' is not in dataset '{spec}' ({len(ids)} samples, "
                            f"ids like {', '.join(ids[:3])}){did_you_mean(cfg.sample_id, ids)}")
        samples, where, skipped = hit, f"{spec} sample {cfg.sample_id}", {}
    _check_layout(samples, info, where)
    num_beams = cfg.num_beams or int(info.get("num_beams", 1))
    max_new = cfg.max_new_tokens or int(info.get("max_new_tokens", 64))
    prec = run_precision(device, cfg.precision, info.get("precision"), notify=notify)
    step = run.begin("infer", config={"task": "translate", "input": cfg.input, "sample_id": cfg.sample_id, "dataset": cfg.dataset,
                                      "num_beams": num_beams, "precision": prec.name},
                     outputs=[INFER_JSON], inputs=[path / "encoder.safetensors"], argv=argv, force=True)
    with step:
        t0 = time.perf_counter()
        tr = load_translator(run, prec.device, precision=prec)
        hyps = _checked_generate(tr, prec, samples, batch_size=cfg.batch_size or 32, num_beams=num_beams, max_new_tokens=max_new)
        preds = [{"id": s.id, "source": s.source, "frames": s.num_frames, "text": normalize_whitespace(h), **({"reference": s.text} if s.text else {})}
                 for s, h in zip(samples, hyps, strict=True)]
        result = {"task": "translate", "model": str(path), "input": where, "num_beams": num_beams, "precision": prec.name, "n": len(preds),
                  "seconds": round(time.perf_counter() - t0, 3), "predictions": preds}
        save_json(step.stage(INFER_JSON, is_dir=False), result, kind="infer-translate")
        step.metrics.update({"inputs": len(preds), "precision": prec.name})
    return {**result, "output": str(run.path(INFER_JSON)), "skipped": skipped}


def finetune_dir(run) -> Path:
    """pose/finetune/ of a run dir (a core.rundir.RunDir), which must hold a trained translator."""
    path = run.path(FINETUNE_REL)
    if not (path / "translator.json").is_file():
        raise ArtifactError(f"{path}: no trained translator; run `gx pose-finetune -r {shell_word(run.root)}` first")
    return path


def load_translator(run, device="cpu", *, precision=None) -> Translator:
    """Rebuild the fine-tuned PoseToText of a run dir from its files alone (in fp32). `precision` (a
    core.device.Precision, e.g. from `inference_precision`): weights then stored in its dtype and the
    forward and `generate` run under it."""
    import torch

    from gesture_cli.core.artifacts import load_json, load_tensors
    from gesture_cli.core.device import resolve_device
    from gesture_cli.models.pose_encoder import load_pose_encoder
    from gesture_cli.models.sign2text import PoseToText
    from gesture_cli.models.text import load_text_model

    path = finetune_dir(run)
    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    info = load_json(path / "translator.json", kind=TRANSLATOR_KIND)
    text = load_text_model(path / "text_model", device=dev)
    encoder = load_pose_encoder(path, device=dev)
    tensors, meta = load_tensors(path / "bridge.safetensors", kind=BRIDGE_KIND, device=str(dev))
    model = PoseToText(encoder, text.model, bridge=meta.get("bridge", info["bridge"]))
    try:
        model.proj.load_state_dict(tensors)
    except RuntimeError as exc:
        raise ArtifactError(f"{path / 'bridge.safetensors'}: does not fit the encoder and text model ({str(exc).splitlines()[0]})") from None
    model.to(dev).eval()
    if precision is not None:
        precision.for_inference(model)
    return Translator(model=model, tokenizer=text.tokenizer, info=info, path=path)
