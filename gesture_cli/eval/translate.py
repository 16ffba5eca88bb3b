"""Translation metrics (the steps `gx evaluate translate` / `gx infer translate` are `gesture_cli.tasks.translate`).

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

"""

from __future__ import annotations

SLT_ROUGE_BETA = 1.2
# SignJoey's BLEU (sacrebleu 1.x raw_corpus_bleu): no tokenization, mixed case, floor smoothing with value 0 = none
SLT_BLEU = {"tokenize": "none", "smooth_method": "floor", "smooth_value": 0.0}
METRIC_KEYS = ("bleu1", "bleu2", "bleu3", "bleu4", "bleu1_slt", "bleu2_slt", "bleu3_slt", "bleu4_slt", "chrf", "rouge_l", "rouge_l_slt")


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


# ---- scoring decoder outputs ---------------------------------------------------------------------------


def score_translations(ids: list[str], hypotheses: list[str], references: list[str], *, glosses: list | None = None) -> tuple[dict, list[dict]]:
    """(corpus metrics with "signatures", one row per sample) of decoder outputs; the rows hold the
    whitespace-normalised hypotheses, the text every metric scored and the output files show."""
    hyps = [normalize_whitespace(h) for h in hypotheses]
    metrics = translation_metrics(hyps, references)
    rows = [{"id": i, "reference": r, "hypothesis": h, "gloss": g, **sentence_scores(h, r)}
            for i, h, r, g in zip(ids, hyps, references, glosses or [None] * len(hyps), strict=True)]
    return metrics, rows


__all__ = [
    "METRIC_KEYS", "SLT_BLEU", "metric_variants",
    "most_frequent_baseline", "normalize_whitespace", "rouge_l_slt", "score_translations", "sentence_scores", "translation_metrics",
]
