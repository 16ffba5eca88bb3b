"""Sign-to-text: the UMT5 text side (tiny-umt5, hub snapshots, local dirs), `gx pose-pretrain`, `gx pose-finetune`,
`gx evaluate translate`, `gx infer translate` on synthetic-signs with tiny models, resume, and clean errors."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from gesture_cli.core.errors import ArtifactError, ModelError, UsageError
from gesture_cli.core.rundir import RunDir
from tests.conftest import invoke

# Small enough to learn in seconds: one signer, half the noise, sentences of 2-3 glosses, 67 points (body + hands), 16 frames.
DATA_OPTS = ("train_size=160", "val_size=30", "test_size=40", "signers=1", "noise=0.5", "max_glosses=3")
DATA = [a for o in DATA_OPTS for a in ("--dataset-opt", o)]
ENC_OPTS = ("d_model=64", "n_layers=2", "n_heads=4", "gcn_dims=32")
ENC = [*(a for o in ENC_OPTS for a in ("--encoder-opt", o)), "--keypoints", "body,hands"]
FAST = ["--max-frames", "16", "--precision", "fp32", "--device", "cpu"]
PRETRAIN = ["pose-pretrain", *DATA, *ENC, *FAST, "--text-model", "tiny-umt5", "--embed-dim", "64", "--epochs", "6", "--batch-size", "32",
            "--lr", "2e-3", "--patience", "0"]
FINETUNE = ["pose-finetune", *DATA, *FAST, "--bridge", "direct", "--epochs", "16", "--batch-size", "16", "--lr", "5e-3", "--patience", "0",
            "--eval-every", "40"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _one_line_error(res, *parts: str) -> str:
    out = res.output.strip()
    assert res.exit_code != 0, out
    assert "Traceback" not in out and len(out.splitlines()) == 1, out
    for part in parts:
        assert part in out, f"{part!r} not in {out!r}"
    return out


def _corpus(n: int = 200, seed: int = 0) -> list[str]:
    """Sentences of the synthetic-signs grammar (without rendering their poses)."""
    import numpy as np

    from gesture_cli.data.synthetic_signs import sample_sentence, translate

    rng = np.random.default_rng(seed)
    return [translate(sample_sentence(rng)) for _ in range(n)]


# ---- text side --------------------------------------------------------------------------------------


def test_tiny_tokenizer_is_trained_on_the_corpus_and_reloads_through_transformers(tmp_path):
    from transformers import AutoTokenizer

    from gesture_cli.models.text import build_text_model, load_text_model, save_text_model

    corpus = _corpus()
    text = build_text_model("tiny-umt5", corpus=corpus)
    tok = text.tokenizer
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert len(tok) <= 256 and len(tok) == text.model.config.vocab_size
    ids = tok("Yesterday my friend did not go to school.")["input_ids"]
    assert ids[-1] == tok.eos_token_id and len(ids) < 20  # mostly whole words of the corpus, not 42 characters
    assert tok.decode(ids, skip_special_tokens=True) == "Yesterday my friend did not go to school."
    assert tok.decode(tok("Zebra!")["input_ids"], skip_special_tokens=True) == "Zebra!"  # unseen word: letter by letter, no <unk>

    save_text_model(text, tmp_path / "tm", weights=True)
    again = load_text_model(tmp_path / "tm")
    plain = AutoTokenizer.from_pretrained(str(tmp_path / "tm"))  # what any transformers user would call
    for t in corpus[:20]:
        assert again.tokenizer(t)["input_ids"] == plain(t)["input_ids"] == tok(t)["input_ids"]
    for (name, a), b in zip(text.model.state_dict().items(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def _fake_hub_snapshot(home, repo: str, corpus: list[str]):
    """A tiny UMT5 saved where `gx download` / huggingface_hub put a snapshot: models--o--n/{refs/main,snapshots/<sha>/}."""
    from gesture_cli.models.text import build_tiny_umt5, train_tokenizer

    tok = train_tokenizer(corpus)
    model = build_tiny_umt5(len(tok))
    folder = home / "models" / ("models--" + repo.replace("/", "--"))
    sha = "0123456789abcdef0123456789abcdef01234567"
    snap = folder / "snapshots" / sha
    snap.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(sha)
    model.save_pretrained(str(snap))
    tok.save_pretrained(str(snap))
    return snap, tok, model


def test_hub_id_registry_name_and_local_dir_load_offline_from_a_snapshot(tmp_path, monkeypatch):
    import os
    from pathlib import Path

    from gesture_cli.models.text import build_text_model, embed_texts, resolve_text_model

    home = Path(os.environ["GX_HOME"])
    snap, tok, model = _fake_hub_snapshot(home, "google/umt5-small", _corpus(50))
    for spec in ("umt5-small", "google/umt5-small", str(snap)):
        text = build_text_model(spec)
        assert type(text.model).__name__ == "UMT5ForConditionalGeneration"
        assert text.tokenizer("I am happy.")["input_ids"] == tok("I am happy.")["input_ids"]
        torch.testing.assert_close(text.model.lm_head.weight, model.lm_head.weight)
    assert resolve_text_model(str(snap)).kind == "local" and resolve_text_model("umt5-small").location == "google/umt5-small"
    enc = build_text_model("umt5-small", encoder_only=True)  # pretraining loads the encoder alone
    assert type(enc.model).__name__ == "UMT5EncoderModel"
    full = build_text_model("umt5-small")
    torch.testing.assert_close(embed_texts(enc, ["I am happy.", "You see me."]), embed_texts(full, ["I am happy.", "You see me."]))


def test_text_model_errors_are_one_line_and_say_what_to_do(tmp_path):
    from transformers import BertConfig, BertModel

    from gesture_cli.models.text import build_text_model, resolve_text_model

    with pytest.raises(UsageError, match="unknown text model 'umt5-smal' \\(did you mean 'umt5-small'\\?\\)"):
        resolve_text_model("umt5-smal")
    with pytest.raises(ModelError, match="text model directory .*nowhere not found"):
        resolve_text_model(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="has no config.json"):
        resolve_text_model(str(tmp_path / "empty"))
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=50)).save_pretrained(
        str(tmp_path / "bert"))
    with pytest.raises(ModelError, match="is a 'bert' model; sign-to-text needs a T5-family encoder-decoder"):
        build_text_model(str(tmp_path / "bert"))
    with pytest.raises(ModelError) as err:  # offline and not cached: names the download that fixes it
        build_text_model("umt5-base")
    assert "gx download google/umt5-base" in str(err.value) and "\n" not in str(err.value)


# ---- losses and metrics -------------------------------------------------------------------------------


def test_info_nce_is_symmetric_and_lowest_for_aligned_pairs():
    from gesture_cli.models.sign2text import info_nce

    g = torch.Generator().manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=-1)
    pose = torch.nn.functional.normalize(text + 0.1 * torch.randn(6, 8, generator=g), dim=-1)
    scale = torch.tensor(20.0)
    aligned = info_nce(pose, text, scale)
    assert aligned == pytest.approx(float(info_nce(text, pose, scale)), abs=1e-6)
    assert info_nce(pose[[1, 2, 3, 4, 5, 0]], text, scale) > aligned + 1.0
    assert aligned < 0.1 and info_nce(pose, text, torch.tensor(1.0)) > 1.0  # the temperature sharpens the softmax


def test_retrieval_metrics_rank_sentences_and_poses():
    from gesture_cli.eval.retrieval import retrieval_metrics

    sentences = torch.eye(3)
    s0, s1, s2 = sentences
    # poses 0, 1 sign sentence 0; pose 2 sentence 1; pose 3 sentence 2 but looks more like sentence 1
    poses = torch.nn.functional.normalize(torch.stack([s0, s0, s1 + 0.5 * s2, s1 + 0.1 * s2]), dim=-1)
    m = retrieval_metrics(poses, sentences, [0, 0, 1, 2], ks=(1, 2))
    assert m["val_r1"] == pytest.approx(0.75) and m["val_r2"] == 1.0
    # sentence 1 finds pose 3 first, sentence 2 finds pose 2 first: each has its own pose second
    assert m["val_t2p_r1"] == pytest.approx(1 / 3) and m["val_t2p_r2"] == 1.0


def test_translation_metrics_name_their_variants():
    from sacrebleu.metrics import BLEU

    from gesture_cli.eval.translate import metric_variants, rouge_l_slt, sentence_scores, translation_metrics

    refs = ["I am happy.", "My friend eats food.", "You see me."]
    hyps = ["I am happy.", "My mother eats food.", "You see the book."]
    m = translation_metrics(hyps, refs)
    assert m["bleu4"] == pytest.approx(BLEU().corpus_score(hyps, [refs]).score, abs=1e-3)
    assert m["bleu1"] > m["bleu2"] > m["bleu3"] > m["bleu4"] > 0
    assert translation_metrics(refs, refs)["bleu4"] == pytest.approx(100.0) and translation_metrics(refs, refs)["rouge_l_slt"] == pytest.approx(100.0)
    # LCS of "a b c d" and "a c d e f" is "a c d": P = 3/4, R = 3/5, F(beta=1.2) = 2.44 * P * R / (R + 1.44 * P)
    assert rouge_l_slt("a b c d", "a c d e f") == pytest.approx(2.44 * 0.75 * 0.6 / (0.6 + 1.44 * 0.75))
    assert rouge_l_slt("", "a") == 0.0
    variants = metric_variants(m["signatures"])
    assert "tok:13a" in variants["bleu4"] and "nrefs:1" in variants["bleu4"] and "beta=1.2" in variants["rouge_l_slt"]
    assert sentence_scores("I am happy.", "I am happy.") == {"bleu4": 100.0, "rouge_l_slt": 100.0}


def test_bridges_train_what_they_use_and_generate():
    from gesture_cli.data.pose_batches import collate_pose
    from gesture_cli.data.synthetic_signs import generate_split
    from gesture_cli.models.pose_encoder import build_pose_encoder
    from gesture_cli.models.sign2text import PoseToText
    from gesture_cli.models.text import build_text_model

    samples = generate_split("train", 3, seed=0)
    text = build_text_model("tiny-umt5", corpus=[s.text for s in samples])
    batch = collate_pose(samples, max_frames=12, normalize="shoulders")
    tok = text.tokenizer([s.text for s in samples], padding=True, return_tensors="pt")
    labels = tok["input_ids"].masked_fill(tok["attention_mask"] == 0, -100)
    for bridge in ("encoder", "direct"):
        torch.manual_seed(0)
        encoder = build_pose_encoder(d_model=32, n_layers=1, n_heads=2, gcn_dims=(16,))
        model = PoseToText(encoder, build_text_model("tiny-umt5", corpus=[s.text for s in samples]).model, bridge=bridge)
        loss = model(batch["keypoints"], batch["point_mask"], batch["frame_mask"], labels)
        loss.backward()
        enc_block = model.text.get_encoder().block[0].layer[0].SelfAttention.q.weight
        assert model.encoder.spatial.input.weight.grad is not None and model.text.lm_head.weight.grad is not None
        assert (enc_block.grad is not None) == (bridge == "encoder")
        ids = model.generate(batch["keypoints"], batch["point_mask"], batch["frame_mask"], num_beams=2, max_new_tokens=5)
        assert ids.shape[0] == 3 and ids.shape[1] <= 6


# ---- the pipeline on synthetic-signs: convert-free, pretrain -> finetune -> evaluate -> infer ------------------


@pytest.fixture(scope="module")
def pose_run(tmp_path_factory):
    """One run dir trained once for the module: pose-pretrain, pose-finetune, evaluate translate (CLI, in process)."""
    from typer.testing import CliRunner

    root = tmp_path_factory.mktemp("pose_run")
    with pytest.MonkeyPatch.context() as mp:  # module scope: the autouse env fixture has not run yet
        mp.setenv("GX_HOME", str(root / "gx_home"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.delenv("GX_RUN_DIR", raising=False)
        runner = CliRunner()
        run = root / "run"
        out = {"run": run, "pretrain": invoke(runner, *PRETRAIN, "-r", run)}
        out["finetune"] = invoke(runner, *FINETUNE, "-r", run)
        out["evaluate"] = invoke(runner, "evaluate", "translate", "-r", run, "--device", "cpu")
        if out["evaluate"].exit_code == 0:  # later tests rewrite eval/: keep the greedy predictions
            out["predictions"] = {r["id"]: r for r in csv.DictReader((run / "eval" / "predictions.csv").open())}
    return out


def test_pretraining_aligns_poses_with_their_sentences(pose_run):
    from safetensors import safe_open

    res = pose_run["pretrain"]
    assert res.exit_code == 0, res.output
    out = pose_run["run"] / "pose" / "pretrain"
    m = json.loads((out / "metrics.json").read_text())
    assert m["val"]["val_r1"] > 2 * m["chance_r1"], m  # chance: 1 / distinct validation sentences
    assert m["val"]["val_r5"] >= m["val"]["val_r1"]
    # the text encoder stays frozen: trainable = pose encoder + two heads + the temperature
    with safe_open(str(out / "encoder.safetensors"), framework="pt") as f:
        encoder_params = sum(f.get_slice(k).get_shape().numel() if hasattr(f.get_slice(k).get_shape(), "numel") else
                             int(torch.tensor(f.get_slice(k).get_shape()).prod()) for k in f.keys())
    with safe_open(str(out / "heads.safetensors"), framework="pt") as f:
        head_params = sum(int(torch.tensor(f.get_slice(k).get_shape()).prod()) for k in f.keys())
    assert m["trainable_params"] == encoder_params + head_params and m["text_encoder_trainable"] == 0 and m["text_encoder_params"] > 0
    rows = list(csv.DictReader((out / "train_log.csv").open()))
    evals = [r for r in rows if r.get("val_r1")]
    assert len(evals) == 6 and all(r["val_r5"] for r in evals)  # R@1 and R@5 logged at every epoch's evaluation
    assert (out / "checkpoints" / "best" / "state.json").is_file() and (out / "checkpoints" / "last" / "state.json").is_file()
    assert (out / "text_model" / "tokenizer.json").is_file() and (out / "text_model" / "model.safetensors").is_file()
    assert "R@1" in res.output and "chance" in res.output


def test_finetuned_model_beats_the_most_frequent_sentence(pose_run):
    from gesture_cli.eval.translate import most_frequent_baseline

    res = pose_run["finetune"]
    assert res.exit_code == 0, res.output
    assert "pose encoder: pretrained" in res.output
    run = pose_run["run"]
    ev = json.loads((run / "eval" / "translate.json").read_text())
    base = most_frequent_baseline(_split_texts("train"), [r["reference"] for r in pose_run["predictions"].values()])
    assert ev["bleu4"] >= 2 * base["bleu4"] > 0, (ev["bleu4"], base)
    out = run / "pose" / "finetune"
    state = json.loads((out / "checkpoints" / "best" / "state.json").read_text())
    assert state["config"]["monitor"] == "val_bleu4" and state["trainer"]["best_metric"] == json.loads((out / "metrics.json").read_text())["best_val_bleu4"]
    for name in ("encoder.safetensors", "config.json", "bridge.safetensors", "translator.json", "train_log.csv", "text_model/model.safetensors",
                 "text_model/tokenizer.json"):
        assert (out / name).is_file(), name


def _split_texts(split: str) -> list[str]:
    from gesture_cli.data.pose import make_pose_splits

    return getattr(make_pose_splits("synthetic-signs", DATA_OPTS, seed=0, max_samples=None, val_fraction=0.1), split).texts


def test_evaluate_translate_writes_metrics_results_and_predictions(pose_run, runner):
    res = pose_run["evaluate"]
    assert res.exit_code == 0, res.output
    run = pose_run["run"]
    ev = json.loads((run / "eval" / "translate.json").read_text())
    assert ev["n"] == 40 and ev["split"] == "test" and ev["decoding"] == "greedy"
    for key in ("bleu1", "bleu2", "bleu3", "bleu4", "bleu1_slt", "bleu2_slt", "bleu3_slt", "bleu4_slt", "chrf", "rouge_l", "rouge_l_slt"):
        assert 0 <= ev[key] <= 100 and key in ev["variants"]
    assert "tok:13a" in ev["variants"]["bleu4"] and "beta=1.2" in ev["variants"]["rouge_l_slt"]
    assert "tok:none" in ev["variants"]["bleu4_slt"] and "smooth:floor[0.00]" in ev["variants"]["bleu4_slt"]
    rows = list(csv.DictReader((run / "eval" / "predictions.csv").open()))
    assert len(rows) == 40 and set(rows[0]) >= {"id", "reference", "hypothesis", "bleu4", "rouge_l_slt"}
    text = (run / "eval" / "evaluation_results.txt").read_text()
    assert text.count("reference:  ") == 40 and text.count("hypothesis: ") == 40
    assert f"reference:  {rows[0]['reference']}\nhypothesis: {rows[0]['hypothesis']}" in text
    assert all(f"# bleu{n}_slt " in text for n in range(1, 5)) and "tok:none" in text
    assert all(r["hypothesis"] == " ".join(r["hypothesis"].split()) for r in rows)  # whitespace-normalised decoder output
    assert "bleu4" in res.output and "bleu4_slt" in res.output and "Wrote" in res.output
    from gesture_cli.tasks.report import write_report

    page, _ = write_report(run, pose_run["run"].parent / "report-slt.html")
    html = page.read_text()
    assert all(f"bleu{n}_slt" in html for n in range(1, 5))  # the report's tables of translate.json show both conventions
    again = invoke(runner, "evaluate", "translate", "-r", run, "--device", "cpu")
    assert again.exit_code == 0 and "cached" in again.output
    beams = invoke(runner, "evaluate", "translate", "-r", run, "--device", "cpu", "--num-beams", "3", "--max-samples", "8")
    assert beams.exit_code == 0, beams.output
    ev3 = json.loads((run / "eval" / "translate.json").read_text())
    assert ev3["decoding"] == "beam search (3 beams)" and ev3["n"] == 8


def test_infer_translate_prints_the_text(pose_run, runner, real_data):
    run = pose_run["run"]
    rows = pose_run["predictions"]
    sid = sorted(rows)[3]
    res = invoke(runner, "infer", "translate", "--sample-id", sid, "-r", run, "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == rows[sid]["hypothesis"]  # the same greedy decoding as evaluate
    res = invoke(runner, "infer", "translate", "--sample-id", sid, "--json", "-r", run, "--device", "cpu")
    pred = json.loads(res.stdout)
    assert pred["id"] == sid and pred["text"] == rows[sid]["hypothesis"] and pred["reference"] == rows[sid]["reference"]
    assert json.loads((run / "infer" / "translate.json").read_text())["predictions"][0]["text"] == pred["text"]
    # a real MediaPipe Holistic .pose file: the synthetic model reads it (what it says is not meant to be right)
    real = real_data / "sign_pose" / "sgg_lexicon" / "sgg" / "pizza.pose"
    res = invoke(runner, "infer", "translate", "--input", real, "-r", run, "--device", "cpu")
    assert res.exit_code == 0 and len(res.stdout.strip().splitlines()) == 1 and res.stdout.strip(), res.output
    res = invoke(runner, "infer", "translate", "--input", real_data / "sign_pose" / "pose_format_tests" / "openpose.pose", "-r", run)
    _one_line_error(res, "openpose-137", "trained on mediapipe-holistic")
    res = invoke(runner, "infer", "translate", "--sample-id", "test-99999", "-r", run)
    _one_line_error(res, "--sample-id 'test-99999' is not in dataset 'synthetic-signs'")
    res = invoke(runner, "infer", "translate", "-r", run)
    _one_line_error(res, "give one of --input FILE")
    assert res.exit_code == 2


def test_evaluate_translate_on_a_test_only_dataset(pose_run, runner, real_data, tmp_path):
    """Evaluation needs neither a train nor a val split: one real .pose file labelled as test is scored."""
    import shutil

    folder = tmp_path / "test-only"
    folder.mkdir()
    shutil.copy(real_data / "sign_pose" / "sgg_lexicon" / "sgg" / "pizza.pose", folder / "pizza.pose")
    (folder / "labels.csv").write_text("path,text,split\npizza.pose,a pizza,test\n")
    res = invoke(runner, "evaluate", "translate", "--dataset", f"pose:{folder}", "--force", "-r", pose_run["run"], "--device", "cpu")
    assert res.exit_code == 0, res.output
    ev = json.loads((pose_run["run"] / "eval" / "translate.json").read_text())
    assert ev["n"] == 1 and ev["split"] == "test" and ev["dataset"] == f"pose:{folder}"
    res = invoke(runner, "evaluate", "translate", "--dataset", f"pose:{folder}", "--split", "val", "-r", pose_run["run"])
    _one_line_error(res, "has no 'val' samples; choose another --split")
    invoke(runner, "evaluate", "translate", "--force", "-r", pose_run["run"], "--device", "cpu")  # the module's own result back


def test_bad_input_gives_one_line_errors(pose_run, runner, tmp_path):
    empty = tmp_path / "empty"
    res = invoke(runner, "pose-finetune", "--init", "pretrained", *DATA, "-r", empty)
    _one_line_error(res, f"no pretrained pose encoder at {empty / 'pose' / 'pretrain'}", "gx pose-pretrain")
    res = invoke(runner, "pose-pretrain", "--text-model", str(tmp_path / "no-such-model"), *DATA, "-r", empty)
    _one_line_error(res, f"text model directory {tmp_path / 'no-such-model'} not found")
    res = invoke(runner, "pose-finetune", "--text-model", "umt5-small", *DATA, "-r", pose_run["run"])
    _one_line_error(res, "was aligned with text model 'tiny-umt5', not 'umt5-small'")
    res = invoke(runner, "evaluate", "translate", "-r", empty)
    _one_line_error(res, "no trained translator", "gx pose-finetune")
    res = invoke(runner, "evaluate", "translate", "--from", "lora", "-r", pose_run["run"])
    _one_line_error(res, "--from applies to `gx evaluate classify`, not to `gx evaluate translate`")
    res = invoke(runner, "pose-finetune", "--bridge", "sideways", "-r", empty)
    _one_line_error(res, "unknown --bridge 'sideways'")
    # a mistyped path is named as such before any model is looked for (umt5-small is in no cache here)
    for command in ("pose-pretrain", "pose-finetune"):
        res = invoke(runner, command, "--dataset", f"pose:{tmp_path / 'no-such-poses'}", "--text-model", "umt5-small", "-r", empty)
        _one_line_error(res, f"{tmp_path / 'no-such-poses'}: no such file or directory")
    assert not (empty / "pose").exists()


# ---- resume -------------------------------------------------------------------------------------------


def test_finetune_resumes_to_the_same_weights(tmp_path):
    from gesture_cli.tasks.translate import PoseFinetuneConfig, finetune_pose
    from gesture_cli.train.checkpoint import load_checkpoint
    from gesture_cli.train.loop import TrainingInterrupted

    cfg = PoseFinetuneConfig(dataset_opts=("train_size=24", "val_size=6", "test_size=0", "signers=1"), text_model="tiny-umt5",
                             encoder_opts=ENC_OPTS, keypoints="body,hands", max_frames=12, bridge="direct", max_steps=6, batch_size=8,
                             eval_every=3, checkpoint_every=2, lr=3e-3, precision="fp32", patience=0)
    notes: list[str] = []
    whole = finetune_pose(cfg, RunDir(tmp_path / "a"), device="cpu", notify=notes.append)
    assert any("from scratch (no pretrained encoder at" in n for n in notes), notes  # --init auto without pose-pretrain says so
    assert whole["summary"]["steps"] == 6

    run = RunDir(tmp_path / "b")
    stop = {"on_step_end": [lambda s: s.request_stop("test") if s.step == 3 else None]}
    with pytest.raises(TrainingInterrupted, match="--resume"):
        finetune_pose(cfg, run, device="cpu", callbacks=stop)
    with pytest.raises(UsageError, match="max_frames=12, this run has max_frames=16"):
        finetune_pose(PoseFinetuneConfig(**{**cfg.__dict__, "max_frames": 16}), run, device="cpu", resume=True)
    with pytest.raises(UsageError, match=r"another encoder \(d_model 64 -> 32\); use the same settings"):  # not both whole configs
        finetune_pose(PoseFinetuneConfig(**{**cfg.__dict__, "encoder_opts": (*ENC_OPTS, "d_model=32")}), run, device="cpu", resume=True)
    resumed = finetune_pose(cfg, run, device="cpu", resume=True)
    assert resumed["summary"]["resumed_from"] == 3 and resumed["summary"]["steps"] == 6
    a, _, _, _ = load_checkpoint(tmp_path / "a" / "pose" / "finetune" / "checkpoints" / "last")
    b, _, _, _ = load_checkpoint(tmp_path / "b" / "pose" / "finetune" / "checkpoints" / "last")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    with pytest.raises(ArtifactError, match="nothing to resume"):
        finetune_pose(cfg, RunDir(tmp_path / "c"), device="cpu", resume=True)


@pytest.mark.slow
def test_default_encoder_bridge_learns_from_the_pretrained_encoder(pose_run, runner, tmp_path):
    """The default bridge (pose tokens as UMT5 encoder inputs_embeds) on the same data, from the same pretrained encoder."""
    import shutil

    from gesture_cli.eval.translate import most_frequent_baseline

    run = tmp_path / "run"
    shutil.copytree(pose_run["run"] / "pose" / "pretrain", run / "pose" / "pretrain")
    args = [a for a in FINETUNE if a not in ("--bridge", "direct")]
    args[args.index("--epochs") + 1], args[args.index("--lr") + 1] = "24", "3e-3"
    res = invoke(runner, *args, "-r", run)
    assert res.exit_code == 0 and "bridge encoder" in res.output, res.output
    res = invoke(runner, "evaluate", "translate", "-r", run, "--device", "cpu")
    assert res.exit_code == 0, res.output
    ev = json.loads((run / "eval" / "translate.json").read_text())
    refs = [r["reference"] for r in csv.DictReader((run / "eval" / "predictions.csv").open())]
    base = most_frequent_baseline(_split_texts("train"), refs)
    assert ev["bleu4"] >= 2 * base["bleu4"], (ev["bleu4"], base)


def test_a_hub_text_model_is_referenced_not_copied_and_reloaded_for_finetuning(tmp_path):
    """pose-pretrain with a (fake, offline) google/umt5-small snapshot keeps only its tokenizer in the run dir;
    pose-finetune reloads the weights from the cache and saves the fine-tuned ones."""
    import os
    from pathlib import Path

    from gesture_cli.models.text import read_text_model_info
    from gesture_cli.tasks.translate import PoseFinetuneConfig, PosePretrainConfig, finetune_pose, pretrain_pose

    _fake_hub_snapshot(Path(os.environ["GX_HOME"]), "google/umt5-small", _corpus(100))
    data = ("train_size=16", "val_size=4", "test_size=0", "signers=1")
    small = dict(dataset_opts=data, max_frames=8, max_steps=2, batch_size=8, eval_every=2, precision="fp32", patience=0)
    run = RunDir(tmp_path / "run")
    pre = pretrain_pose(PosePretrainConfig(text_model="umt5-small", encoder_opts=ENC_OPTS, keypoints="body,hands", embed_dim=16, **small),
                        run, device="cpu")
    out = Path(pre["out"])
    assert read_text_model_info(out / "text_model")["location"] == "google/umt5-small"
    assert (out / "text_model" / "tokenizer.json").is_file() and not (out / "text_model" / "model.safetensors").exists()
    notes: list[str] = []
    fine = finetune_pose(PoseFinetuneConfig(bridge="direct", **small), run, device="cpu", notify=notes.append)
    assert any("text model umt5-small (google/umt5-small)" in n for n in notes), notes
    info = read_text_model_info(Path(fine["out"]) / "text_model")
    assert info["weights"] and info["fine_tuned"] and info["location"] == "google/umt5-small"


def test_infer_translate_sample_id_not_in_the_dataset_is_a_usage_error(runner, tmp_path):
    """Exit 2, as any option value that names nothing; the line names the id, ids that exist and the closest one.
    The lookup comes before the model is loaded: translator.json alone is enough here."""
    from gesture_cli.core.artifacts import save_json
    from gesture_cli.models.translator import FINETUNE_REL, TRANSLATOR_KIND

    run = tmp_path / "run"
    (run / FINETUNE_REL).mkdir(parents=True)
    save_json(run / FINETUNE_REL / "translator.json", {"dataset": "synthetic-signs", "seed": 0}, kind=TRANSLATOR_KIND)
    res = invoke(runner, "infer", "translate", "--sample-id", "test-99999", "-r", run, "--device", "cpu")
    out = _one_line_error(res, "--sample-id 'test-99999' is not in dataset 'synthetic-signs'", "ids like ", "(did you mean '")
    assert res.exit_code == 2, out
