"""Metric conventions (DESIGN section 10; issue #18, items 10-12): each number names its convention,
and matches the reference it claims to follow on hand-computed or independent numbers."""

from __future__ import annotations

import numpy as np
import pytest

# ---- segmentation: mIoU and mean class accuracy -----------------------------------------------------

# 4 classes; class 2 is in neither labels nor predictions, class 3 is predicted once but never labelled.
SEG_TARGET = np.array([0, 0, 0, 1, 1, 1, 255], np.uint8)
SEG_PRED = np.array([0, 0, 1, 1, 1, 3, 2], np.uint8)


def test_segmentation_means_follow_their_named_conventions():
    from gesture_cli.eval.segment import confusion_matrix, segmentation_metrics

    m = segmentation_metrics(confusion_matrix(SEG_PRED, SEG_TARGET, 4), ["a", "b", "c", "d"])
    # IoU: a 2/3, b 2/4, d 0/1 (predicted, never labelled); c is in neither and left out
    assert m["mIoU"] == pytest.approx((2 / 3 + 2 / 4 + 0) / 3, abs=1e-6)
    # accuracy TP/(TP+FN): a 2/3, b 2/3; d has no labelled pixel and is left out (not counted as 0)
    assert m["mean_acc"] == pytest.approx((2 / 3 + 2 / 3) / 2, abs=1e-6)
    conv = m["conventions"]
    assert "present in the labels or the predictions" in conv["mIoU"] and "255" in conv["mIoU"]
    assert "present in the labels" in conv["mean_acc"] and "not counted as 0" in conv["mean_acc"]


def test_segmentation_means_against_torchmetrics():
    """torchmetrics is no dependency: this runs where it is installed (e.g. a reference venv)."""
    pytest.importorskip("torchmetrics")
    import torch
    from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

    from gesture_cli.eval.segment import confusion_matrix, segmentation_metrics

    m = segmentation_metrics(confusion_matrix(SEG_PRED, SEG_TARGET, 4), ["a", "b", "c", "d"])
    p, t = torch.from_numpy(SEG_PRED.astype(np.int64)), torch.from_numpy(SEG_TARGET.astype(np.int64))
    assert float(MulticlassJaccardIndex(num_classes=4, average="macro", ignore_index=255)(p, t)) == pytest.approx(m["mIoU"], abs=1e-5)
    # torchmetrics averages class d in as 0: (2/3 + 2/3 + 0) / 3, below gx's (2/3 + 2/3) / 2
    tm_acc = float(MulticlassAccuracy(num_classes=4, average="macro", ignore_index=255)(p, t))
    assert tm_acc == pytest.approx(4 / 9, abs=1e-5) and m["mean_acc"] == pytest.approx(2 / 3, abs=1e-6)


# ---- PCKh per body part: MPII's mean of left and right, and its <= test ------------------------------


def _mpii_reference(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, head: np.ndarray, threshold: float = 0.5) -> dict:
    """The MPII summary as the Python port of MPII's evaluation computes it (HRNet / mmpose `_report_metric`):
    arrays in its [K, N] layout, `scaled_uv_err <= threshold`, a part = 0.5 * (PCKh[left] + PCKh[right])."""
    uv_err = np.linalg.norm(pred - gt, axis=-1).T  # [K, N]
    jnt_visible = visible.T
    scaled = uv_err / head[None, :] * jnt_visible
    less = (scaled <= threshold) * jnt_visible
    pckh = less.sum(1) / jnt_visible.sum(1)
    lsho, lelb, lwri, lhip, lkne, lank = 13, 14, 15, 3, 4, 5
    rsho, relb, rwri, rhip, rkne, rank = 12, 11, 10, 2, 1, 0
    return {"head": pckh[9], "shoulder": 0.5 * (pckh[lsho] + pckh[rsho]), "elbow": 0.5 * (pckh[lelb] + pckh[relb]),
            "wrist": 0.5 * (pckh[lwri] + pckh[rwri]), "hip": 0.5 * (pckh[lhip] + pckh[rhip]), "knee": 0.5 * (pckh[lkne] + pckh[rkne]),
            "ankle": 0.5 * (pckh[lank] + pckh[rank])}


def test_pckh_parts_average_left_and_right_as_mpii_does():
    from gesture_cli.eval.keypoint import pck_table

    rng = np.random.default_rng(0)
    n = 4
    gt = rng.uniform(0, 10, (n, 16, 2))
    pred = gt.copy()
    visible = np.ones((n, 16))
    visible[1:, 10] = 0  # right wrist annotated once only, and that prediction is wrong
    pred[0, 10] += [3.0, 0.0]
    head = np.full(n, 2.0)  # threshold 0.5 x 2 = 1 pixel
    t = pck_table(pred, gt, visible, head, threshold=0.5)
    assert t["per_joint"]["r_wrist"] == 0.0 and t["per_joint"]["l_wrist"] == 1.0
    assert t["groups"]["wrist"] == 0.5  # pooled hits over counts would say 4/5
    ref = _mpii_reference(pred, gt, visible, head)
    assert t["groups"] == pytest.approx(ref)
    assert "mean of its left and right" in t["conventions"]["groups"]


def test_pckh_threshold_is_inclusive_as_in_mpii():
    from gesture_cli.eval.keypoint import keypoint_metrics

    gt = np.zeros((1, 16, 2))
    pred = gt.copy()
    pred[0, :, 0] = 1.0  # every error is exactly 0.5 x the head size of 2
    m = keypoint_metrics(pred, gt, np.ones((1, 16)), head_size=np.array([2.0]), torso_size=np.array([np.nan]))
    assert m["pckh@0.5"]["mean"] == 1.0 == _mpii_reference(pred, gt, np.ones((1, 16)), np.array([2.0]))["head"]
    assert m["pckh@0.5"]["conventions"]["threshold_test"].startswith("a joint is correct when error <= threshold")


# ---- BLEU: sacreBLEU's default and the SLT convention; whitespace-normalised hypotheses -----------------

HYPS = ["Am Tag scheint die Sonne, im Norden regnet es.", "Morgen wird es kälter!", "Im Süden bleibt es trocken", "Der Wind weht stark."]
REFS = ["Am Tag scheint die Sonne, im Norden gibt es Regen.", "morgen wird es kälter.", "Im Süden bleibt es trocken.", "Der Wind weht mäßig."]


def _signjoey_bleu(hyps: list[str], refs: list[str]) -> dict[str, float]:
    """BLEU-1..4 as SignJoey's vendored sacrebleu 1.4 computes them (raw_corpus_bleu): whitespace tokens, n-grams
    of orders 1..4 counted once, floor smoothing with value 0, BLEU-n = BP * exp(mean log p_1..p_n)."""
    import math
    from collections import Counter

    def ngrams(tokens):
        return Counter(tuple(tokens[i:i + n]) for n in range(1, 5) for i in range(len(tokens) - n + 1))

    correct, total, sys_len, ref_len = [0] * 4, [0] * 4, 0, 0
    for h, r in zip(hyps, refs, strict=True):
        ht, rt = h.rstrip().split(), r.rstrip().split()
        sys_len, ref_len = sys_len + len(ht), ref_len + len(rt)
        hc, rc = ngrams(ht), ngrams(rt)
        for g, c in hc.items():
            correct[len(g) - 1] += min(c, rc.get(g, 0))
            total[len(g) - 1] += c
    precisions = [100.0 * c / t if t and c else 0.0 for c, t in zip(correct, total, strict=True)]
    bp = math.exp(1 - ref_len / sys_len) if sys_len < ref_len else 1.0
    log = [math.log(p) if p else -9999999999 for p in precisions]
    return {f"bleu{n}_slt": bp * math.exp(sum(log[:n]) / n) for n in range(1, 5)}


def test_bleu_slt_reproduces_signjoeys_bleu_and_differs_from_sacrebleus_default():
    from sacrebleu.metrics import BLEU

    from gesture_cli.eval.translate import metric_variants, translation_metrics

    m = translation_metrics(HYPS, REFS)
    for key, value in _signjoey_bleu(HYPS, REFS).items():
        assert m[key] == pytest.approx(value, abs=1e-3), key
    direct = BLEU(tokenize="none", smooth_method="floor", smooth_value=0).corpus_score(HYPS, [REFS]).score
    assert m["bleu4_slt"] == pytest.approx(direct, abs=1e-3)
    assert m["bleu4"] == pytest.approx(BLEU().corpus_score(HYPS, [REFS]).score, abs=1e-3)  # sacrebleu's default: 13a, exp
    assert m["bleu4"] - m["bleu4_slt"] > 1  # punctuation glued to words and case cost the SLT convention matches
    one = translation_metrics(["Heute, am Montag, regnet es im Norden."], ["Heute, am Dienstag, regnet es im Norden."])
    assert one["bleu4"] - one["bleu4_slt"] > 10  # on one punctuated sentence the two conventions are far apart
    variants = metric_variants(m["signatures"])
    for n in range(1, 5):
        assert "tok:13a" in variants[f"bleu{n}"] and "smooth:exp" in variants[f"bleu{n}"]
        assert "tok:none" in variants[f"bleu{n}_slt"] and "smooth:floor[0.00]" in variants[f"bleu{n}_slt"] and "SignJoey" in variants[f"bleu{n}_slt"]


def test_no_smoothing_in_the_slt_convention():
    from gesture_cli.eval.translate import translation_metrics

    m = translation_metrics(["a b c d e"], ["a b x d e"])  # no 3-gram matches: BLEU-3 and BLEU-4 are 0 without smoothing
    assert m["bleu2_slt"] > 0 and m["bleu3_slt"] == 0 and m["bleu4_slt"] == 0
    assert m["bleu4"] > 0  # sacrebleu's exponential smoothing gives credit


def _signjoey_rouge(hyp: str, ref: str, beta: float = 1.2) -> float:
    """SignJoey's mscoco_rouge.calc_score: tokens split on single spaces, ROUGE-L F with beta 1.2."""
    h, r = hyp.split(" "), ref.split(" ")
    prev = [0] * (len(h) + 1)
    for x in r:
        cur = [0]
        for j, y in enumerate(h):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    p, rec = lcs / len(h), lcs / len(r)
    return (1 + beta**2) * p * rec / (rec + beta**2 * p) if p and rec else 0.0


def test_decoder_output_is_whitespace_normalised_before_scoring_and_writing():
    from gesture_cli.eval.translate import score_translations, translation_metrics

    raw = ["  Am Tag  scheint die Sonne,\tim Norden regnet es. ", *HYPS[1:]]
    metrics, rows = score_translations(["a", "b", "c", "d"], raw, REFS)
    assert rows[0]["hypothesis"] == HYPS[0]  # the written text is what was scored
    clean = translation_metrics(HYPS, REFS)
    assert {k: v for k, v in metrics.items() if k != "signatures"} == {k: v for k, v in clean.items() if k != "signatures"}
    # SignJoey's ROUGE on the raw output would see empty tokens; on gx's rows it agrees with rouge_l_slt
    assert _signjoey_rouge(raw[0], REFS[0]) != pytest.approx(_signjoey_rouge(HYPS[0], REFS[0]))
    mean = sum(_signjoey_rouge(r["hypothesis"], r["reference"]) for r in rows) / len(rows)
    assert metrics["rouge_l_slt"] == pytest.approx(100 * mean, abs=1e-3)
