"""Translation metrics, and `gx evaluate translate` / `gx infer translate` on a `gx pose-finetune` model.

Metrics (`translation_metrics`), all on a 0-100 scale; the output names each variant:
  bleu1..bleu4   sacrebleu corpus BLEU with n-gram orders 1..n and uniform weights (BLEU-n as SLT papers
                 report it), brevity penalty, sacrebleu's defaults: tokenizer 13a, mixed case, exponential
                 smoothing; the exact sacrebleu signature is written beside the numbers
  bleu1_slt..    the same BLEU-n in the SLT convention of SignJoey (Camgoz et al., 2020) and the papers
  bleu4_slt      that compare with it: SignJoey scores with sacrebleu 1.x's raw_corpus_bleu, i.e. no
                 tokenization (tokens are the whitespace-separated words: "Hello," stays one token),
                 mixed case and 'floor' smoothing with value 0, which is no smoothing (an order without
                 a match gives 0). Reproduced with sacrebleu's BLEU(tokenize="none", smooth_method="floor",
                 smooth_value=0); on cased or punctuated text it differs from bleu1..4 by several points
  chrf           sacrebleu chrF (character 6-grams, beta 2)
  rouge_l        rouge-score ROUGE-L F1 per sentence (its default tokenizer: lower-cased alphanumeric
                 tokens, no stemming), mean over sentences
  rouge_l_slt    the sign-language-translation variant: per-sentence ROUGE-L F with beta = 1.2 on
                 whitespace tokens, F = (1 + b^2) P R / (R + b^2 P) from the longest common subsequence,
                 mean over sentences (as in the SignJoey code of Camgoz et al., 2020), so numbers compare
                 with the literature

Hypotheses and references are whitespace-normalised (runs of whitespace -> one space, no space at
either end) before every metric, and the hypotheses are written that way: SignJoey's ROUGE splits on
single spaces, so a stray space would change its ROUGE-L on the files gx writes.

Files of `gx evaluate translate` under eval/: translate.json (metrics, variants, settings),
evaluation_results.txt (per sample: id, reference, hypothesis, sentence BLEU-4 and ROUGE-L), and
predictions.csv (the same as a table).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gesture_cli.core.errors import DataError, UsageError

SLT_ROUGE_BETA = 1.2
# SignJoey's BLEU (sacrebleu 1.x raw_corpus_bleu): no tokenization, mixed case, floor smoothing with value 0 = none
SLT_BLEU = {"tokenize": "none", "smooth_method": "floor", "smooth_value": 0.0}
METRIC_KEYS = ("bleu1", "bleu2", "bleu3", "bleu4", "bleu1_slt", "bleu2_slt", "bleu3_slt", "bleu4_slt", "chrf", "rouge_l", "rouge_l_slt")
EVAL_JSON, EVAL_TXT, EVAL_CSV = "eval/translate.json", "eval/evaluation_results.txt", "eval/predictions.csv"
INFER_JSON = "infer/translate.json"


# ---- metrics ----------------------------------------------------------------------------------------
def _lcs(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two token lists (O(len(a) * len(b)), one row of memory)."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def normalize_whitespace(text: str) -> str:
    """Runs of whitespace -> one space, none at either end: the token layout SLT scorers assume."""
    return " ".join(str(text).split())


def rouge_l_slt(hypothesis: str, reference: str, *, beta: float = SLT_ROUGE_BETA) -> float:
    """Per-sentence ROUGE-L F with recall weighted by beta (0..1), on whitespace tokens."""
    hyp, ref = hypothesis.split(), reference.split()
    lcs = _lcs(ref, hyp)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(hyp), lcs / len(ref)
    return (1 + beta**2) * p * r / (r + beta**2 * p)


def metric_variants(signatures: dict[str, str] | None = None) -> dict[str, str]:
    """What each metric key is; `signatures` are sacrebleu's (from translation_metrics), named in the BLEU/chrF lines."""
    from importlib.metadata import version

    sig = signatures or {}
    return {
        **{f"bleu{n}": f"sacrebleu corpus BLEU-{n} (n-gram orders 1..{n}, uniform weights, brevity penalty)"
                       + (f": {sig[f'bleu{n}']}" if f"bleu{n}" in sig else "") for n in range(1, 5)},
        **{f"bleu{n}_slt": f"SLT-convention corpus BLEU-{n} as in SignJoey (sacrebleu raw_corpus_bleu): tokenize='none' (whitespace "
                           f"tokens), mixed case, floor smoothing with value 0 (no smoothing), n-gram orders 1..{n}, brevity penalty"
                           + (f": {sig[f'bleu{n}_slt']}" if f"bleu{n}_slt" in sig else "") for n in range(1, 5)},
        "chrf": "sacrebleu chrF (character 6-grams, beta 2)" + (f": {sig['chrf']}" if "chrf" in sig else ""),
        "rouge_l": f"rouge-score {version('rouge-score')} ROUGE-L F1 (default tokenizer: lower-cased alphanumerics, no stemming), "
                   "mean over sentences",
        "rouge_l_slt": f"ROUGE-L F with beta={SLT_ROUGE_BETA} per sentence on whitespace tokens, mean over sentences "
                       "(the SLT papers' variant: SignJoey, Camgoz et al. 2020)",
    }


def translation_metrics(hypotheses: list[str], references: list[str]) -> dict:
    """Corpus metrics of hypotheses against one reference each (see the module docstring); 0-100.

    Also returns "signatures": sacrebleu's signature of each BLEU-n and of chrF (tokenizer, case,
    smoothing, version), for the output files.
    """
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import BLEU, CHRF

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    hypotheses = [normalize_whitespace(h) for h in hypotheses]
    references = [normalize_whitespace(r) for r in references]
    n = len(references)
    out: dict = {"n": n}
    if n == 0:
        return {**out, **dict.fromkeys(METRIC_KEYS), "signatures": {}}
    signatures = {}
    for suffix, settings in (("", {}), ("_slt", SLT_BLEU)):
        for order in range(1, 5):
            bleu = BLEU(max_ngram_order=order, **settings)
            out[f"bleu{order}{suffix}"] = round(bleu.corpus_score(hypotheses, [references]).score, 4)
            signatures[f"bleu{order}{suffix}"] = str(bleu.get_signature())
    chrf = CHRF()
    out["chrf"] = round(chrf.corpus_score(hypotheses, [references]).score, 4)
    signatures["chrf"] = str(chrf.get_signature())
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    out["rouge_l"] = round(100 * sum(scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hypotheses, references, strict=True)) / n, 4)
    out["rouge_l_slt"] = round(100 * sum(rouge_l_slt(h, r) for h, r in zip(hypotheses, references, strict=True)) / n, 4)
    out["signatures"] = signatures
    return out


def sentence_scores(hypothesis: str, reference: str) -> dict[str, float]:
    """Per-sample BLEU-4 (sacrebleu sentence BLEU, effective order) and ROUGE-L (beta 1.2), 0-100."""
    from sacrebleu.metrics import BLEU

    hypothesis, reference = normalize_whitespace(hypothesis), normalize_whitespace(reference)
    return {"bleu4": round(BLEU(effective_order=True).sentence_score(hypothesis, [reference]).score, 2),
            "rouge_l_slt": round(100 * rouge_l_slt(hypothesis, reference), 2)}


def most_frequent_baseline(train_texts: list[str], references: list[str]) -> dict:
    """translation_metrics of always answering the most frequent training sentence (a floor any model must beat)."""
    from collections import Counter

    top = Counter(train_texts).most_common(1)[0][0]
    return {"sentence": top, **translation_metrics([top] * len(references), references)}


# ---- configs ------------------------------------------------------------------------------------------
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
        from gesture_cli.eval.trained import check_precision_option

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
        from gesture_cli.eval.trained import check_precision_option

        check_precision_option(self.precision)
        if bool(self.input) == bool(self.sample_id):
            raise UsageError("give one of --input FILE (a .pose file or other keypoint file/folder) or --sample-id ID")
        if self.batch_size < 0:
            raise UsageError("--batch-size must be 0 (auto) or a positive number")
        if (self.num_beams is not None and self.num_beams < 1) or (self.max_new_tokens is not None and self.max_new_tokens < 1):
            raise UsageError("--num-beams and --max-new-tokens must be at least 1")


# ---- evaluate / infer ---------------------------------------------------------------------------------
def _dataset_for(info: dict, spec: str | None) -> tuple[str, tuple[str, ...]]:
    """The dataset spec and options to read: the training ones unless another spec is given."""
    spec = spec or info["dataset"]
    return spec, tuple(info.get("dataset_opts") or ()) if spec == info["dataset"] else ()


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
    from gesture_cli.core.artifacts import load_json as _load
    from gesture_cli.data.pose import POSE_SPLITS, make_pose_splits, normalize_split
    from gesture_cli.eval.trained import run_precision
    from gesture_cli.models.translator import TRANSLATOR_KIND, finetune_dir, load_translator

    cfg.validate()
    path = finetune_dir(run)
    info = _load(path / "translator.json", kind=TRANSLATOR_KIND)
    split = normalize_split(cfg.split)
    if split not in POSE_SPLITS:
        raise UsageError(f"--split '{cfg.split}' is not one of {', '.join(POSE_SPLITS)}")
    spec, opts = _dataset_for(info, cfg.dataset)
    seed = cfg.seed if cfg.seed is not None else int(info.get("seed") or 0)
    # the splits exactly as pose-finetune made them (its --max-samples subset included); --max-samples then takes the first N
    splits = make_pose_splits(spec, opts, seed=seed, max_samples=info.get("max_samples") if spec == info["dataset"] else None,
                              val_fraction=float(info.get("val_fraction", 0.1)), need_text=False)
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
    config = {"task": "translate", "dataset": spec, "dataset_opts": list(opts), "split": split, "seed": seed, "max_samples": cfg.max_samples,
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
        result = {"task": "translate", "model": str(path), "dataset": spec, "split": split, "num_beams": num_beams,
                  "decoding": "greedy" if num_beams == 1 else f"beam search ({num_beams} beams)", "precision": prec.name, **metrics,
                  "variants": variants, "seconds": round(time.perf_counter() - t0, 3)}
        save_json(step.stage(EVAL_JSON, is_dir=False), result, kind="eval-translate")
        atomic_write_text(step.stage(EVAL_TXT, is_dir=False), _results_text(result, rows))
        atomic_write_text(step.stage(EVAL_CSV, is_dir=False), _predictions_csv(rows))
        step.metrics.update({k: metrics[k] for k in ("bleu4", "bleu4_slt", "chrf", "rouge_l", "rouge_l_slt", "n")})
        step.metrics["precision"] = prec.name
    return {**result, "cached": False, "output": str(run.path(EVAL_JSON)), "results_txt": str(run.path(EVAL_TXT)),
            "predictions_csv": str(run.path(EVAL_CSV)), "examples": rows[:5]}


def score_translations(ids: list[str], hypotheses: list[str], references: list[str], *, glosses: list | None = None) -> tuple[dict, list[dict]]:
    """(corpus metrics with "signatures", one row per sample) of decoder outputs; the rows hold the
    whitespace-normalised hypotheses, the text every metric scored and the output files show."""
    hyps = [normalize_whitespace(h) for h in hypotheses]
    metrics = translation_metrics(hyps, references)
    rows = [{"id": i, "reference": r, "hypothesis": h, "gloss": g, **sentence_scores(h, r)}
            for i, h, r, g in zip(ids, hyps, references, glosses or [None] * len(hyps), strict=True)]
    return metrics, rows


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
    from gesture_cli.data.registry import parse_dataset_opts
    from gesture_cli.eval.trained import run_precision
    from gesture_cli.models.translator import TRANSLATOR_KIND, finetune_dir, load_translator

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
        spec, opts = _dataset_for(info, cfg.dataset)
        ds = make_pose_dataset(spec, seed=int(info.get("seed") or 0), **parse_dataset_opts(opts))
        hit = [s for s in ds.samples if s.id == cfg.sample_id]
        if not hit:
            ids = [s.id for s in ds.samples]
            from gesture_cli.core.errors import did_you_mean

            raise DataError(f"--sample-id '{cfg.sample_id}' is not in dataset '{spec}' ({len(ids)} samples, "
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


__all__ = [
    "METRIC_KEYS", "SLT_BLEU", "EvaluateTranslateConfig", "InferTranslateConfig", "evaluate_translation", "infer_translation", "metric_variants",
    "most_frequent_baseline", "normalize_whitespace", "rouge_l_slt", "score_translations", "sentence_scores", "translation_metrics",
]
