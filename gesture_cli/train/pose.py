"""`gx pose-pretrain` and `gx pose-finetune`: sign-to-text from keypoint sequences.

Three layers, as in train/lora.py:
    pretrain_pose(cfg, run) / finetune_pose(cfg, run)   data, run-dir step, checkpoints, artifacts under pose/
    fit(...)                                            gesture_cli.train.loop: the shared training loop
    PoseTextAligner / PoseToText                        gesture_cli.models.sign2text (+ models/text.py for UMT5)

Pretraining aligns pooled pose embeddings with the pooled embeddings of a frozen UMT5 encoder
(symmetric InfoNCE, learnable temperature). The text encoder never trains: its embedding of each distinct sentence is computed once
before training. Each evaluation ranks the validation split's distinct sentences for every pose
sequence (R@1, R@5 pose -> text; chance R@1 = 1 / number of distinct sentences) and the best R@1
picks `checkpoints/best/`.

Fine-tuning starts from `pose/pretrain/encoder.safetensors` (`--init auto`: when it exists, else from
scratch with a notice; `--init pretrained` requires it; `--init scratch` ignores it) and uses the text
model pretraining was aligned with (its tokenizer and, for tiny-umt5, its weights come from
`pose/pretrain/text_model/`). Pose tokens are projected into UMT5 (models/sign2text.py: `--bridge
encoder|direct`), trained with teacher forcing; each evaluation decodes the validation split (greedy,
or beam search with `--num-beams`) and scores sacrebleu BLEU-4, which picks `checkpoints/best/`.

Data. Samples are normalised once (`--normalize`, data/pose.py) and reduced to the encoder's body
parts; a training batch takes at most `--max-frames` frames per sequence, one random frame from each of
that many equal segments (seeded by the batch's sample indices, so a resumed run draws the same
frames); evaluation takes evenly spaced ones. Splits: the dataset's own train / val / test (pose
folders without splits get a stable 80/10/10 by sample id); an empty val split is replaced by a seeded
`--val-fraction` of train.

Checkpoints and the atomic final directory work as in train/lora.py: checkpoints are written live to
`pose/<stage>/checkpoints/` and hard-linked into the staged directory that replaces `pose/<stage>/`.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gesture_cli.core.errors import ArtifactError, DataError, UsageError, unknown_choice
from gesture_cli.data.pose import PoseBatches, make_pose_splits
from gesture_cli.models.translator import BRIDGE_KIND, FINETUNE_REL, TRANSLATOR_KIND, device_of, generate_texts, pose_inputs
from gesture_cli.train.common import check_data_fields, check_resume, loop_config, set_aside_checkpoints

PRETRAIN_REL = "pose/pretrain"
INITS = ("auto", "pretrained", "scratch")
PRETRAIN_KIND = "pose-pretrain"
HEADS_KIND = "pose-text-heads"
# Settings a resumed run must share with its checkpoint: they fix the model and the data it sees.
PRETRAIN_RESUME_KEYS = ("dataset", "dataset_opts", "text_model", "encoder", "normalize", "max_frames", "embed_dim", "max_samples",
                        "val_fraction", "seed")
FINETUNE_RESUME_KEYS = ("dataset", "dataset_opts", "text_model", "encoder", "normalize", "max_frames", "bridge", "init_from", "max_samples",
                        "val_fraction", "max_text_tokens", "seed")


def _train_config(cfg, *, monitor: str):
    return loop_config(cfg, lr=cfg.lr, monitor=monitor)


def check_dataset_exists(spec: str) -> None:
    """The cheap part of reading a pose dataset: a known source, and for pose:PATH a path that exists.

    Runs before the text model and the pretrained encoder are looked for, so that a mistyped path is
    reported as such, not as a model to download."""
    from gesture_cli.data.pose import get_pose_source

    source, arg = get_pose_source(spec)
    if source.name == "pose" and arg and not Path(arg).expanduser().exists():
        raise DataError(f"{Path(arg).expanduser()}: no such file or directory (--dataset {spec})")


def _validate_common(cfg) -> None:
    from gesture_cli.data.pose import NORMALIZATIONS

    parse_encoder_opts(cfg.encoder_opts)

    if cfg.normalize is not None and cfg.normalize not in NORMALIZATIONS:
        raise unknown_choice("normalisation", cfg.normalize, NORMALIZATIONS)
    if cfg.max_frames < 1:
        raise UsageError(f"--max-frames must be at least 1; got {cfg.max_frames}")
    check_data_fields(cfg)
    _train_config(cfg, monitor="x").validate()


@dataclass(frozen=True)
class PosePretrainConfig:
    dataset: str = "synthetic-signs"  # pose dataset spec: synthetic-signs, pose:FILE|DIR (DESIGN §5)
    dataset_opts: tuple[str, ...] = ()  # KEY=VALUE options of the dataset source, e.g. train_size=1000
    text_model: str = "umt5-small"  # frozen text side: umt5-small, umt5-base, tiny-umt5, a hub id or a local directory
    encoder_config: str | None = None  # JSON/YAML file of pose encoder settings (configs/pose_encoder.json); None = its defaults
    encoder_opts: tuple[str, ...] = ()  # KEY=VALUE overrides of encoder settings, e.g. d_model=128, n_layers=2
    keypoints: str | None = None  # body parts the encoder sees, e.g. body,hands,face-lite; None = the encoder config's
    normalize: str = "shoulders"  # none | max-abs | shoulders | shoulders-frame (data/pose.py)
    max_frames: int = 256  # frames per sequence at most (longer ones are subsampled)
    embed_dim: int = 256  # width of the shared pose-text space
    temperature: float = 0.07  # initial softmax temperature (learned; 1/temperature is capped at 100)
    epochs: int = 20  # passes over the training split
    max_steps: int | None = None  # optimizer steps in all; overrides epochs
    batch_size: int = 32  # sequences per micro-batch and process (the negatives of InfoNCE)
    grad_accum: int = 1  # micro-batches per optimizer step (InfoNCE negatives stay within a micro-batch)
    lr: float = 5e-4  # peak learning rate
    weight_decay: float = 0.01  # AdamW decoupled weight decay (not on biases / norms / the temperature)
    warmup_steps: int | None = None  # linear warm-up in optimizer steps; None = warmup_ratio of all steps
    warmup_ratio: float = 0.05  # warm-up share of all optimizer steps when warmup_steps is None
    max_grad_norm: float = 1.0  # gradient clipping; 0 = off
    patience: int = 5  # evaluations without a better val R@1 before stopping; 0 = never
    eval_every: int = 0  # optimizer steps between evaluations; 0 = every epoch
    checkpoint_every: int = 100  # optimizer steps between saves of checkpoints/last/
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (core.device.resolve_precision: bf16 where fast, fp16 on older GPUs)
    max_samples: int | None = None  # cap per split (seeded random subset), for quick runs
    val_fraction: float = 0.1  # share of train held out when the dataset has no val samples
    seed: int = 0  # weights, split, data order, frame sampling, dropout

    def validate(self) -> None:
        _validate_common(self)
        if self.embed_dim < 1:
            raise UsageError(f"--embed-dim must be at least 1; got {self.embed_dim}")
        if not 0 < self.temperature <= 1:
            raise UsageError(f"--temperature must lie in (0, 1]; got {self.temperature}")
        if self.batch_size < 2:
            raise UsageError("--batch-size must be at least 2: InfoNCE contrasts the sequences of a batch")


@dataclass(frozen=True)
class PoseFinetuneConfig:
    dataset: str = "synthetic-signs"  # pose dataset spec with texts
    dataset_opts: tuple[str, ...] = ()  # KEY=VALUE options of the dataset source
    init: str = "auto"  # auto: the pretrained encoder when there is one, else from scratch | pretrained (required) | scratch
    pretrained: str | None = None  # pretrain folder (or its encoder.safetensors); None = <run dir>/pose/pretrain
    text_model: str | None = None  # None = the pretrained encoder's text model, else umt5-small; or tiny-umt5, a hub id, a directory
    encoder_config: str | None = None  # from scratch: JSON/YAML pose encoder settings; None = the defaults
    encoder_opts: tuple[str, ...] = ()  # from scratch: KEY=VALUE overrides of encoder settings
    keypoints: str | None = None  # from scratch: body parts the encoder sees; None = the encoder config's
    normalize: str | None = None  # None = the pretraining's (shoulders from scratch)
    max_frames: int = 256  # frames per sequence at most
    bridge: str = "encoder"  # encoder: pose tokens are the UMT5 encoder's inputs_embeds | direct: they are its outputs
    max_text_tokens: int = 128  # target tokens at most (eos included); longer texts are truncated
    epochs: int = 30  # passes over the training split
    max_steps: int | None = None  # optimizer steps in all; overrides epochs
    batch_size: int = 16  # sequences per micro-batch and process
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 3e-4  # peak learning rate (pose encoder, projection and UMT5 alike)
    weight_decay: float = 0.01  # AdamW decoupled weight decay (not on biases / norms)
    warmup_steps: int | None = None  # linear warm-up in optimizer steps; None = warmup_ratio of all steps
    warmup_ratio: float = 0.05  # warm-up share of all optimizer steps when warmup_steps is None
    max_grad_norm: float = 1.0  # gradient clipping; 0 = off
    patience: int = 5  # evaluations without a better val BLEU-4 before stopping; 0 = never
    eval_every: int = 0  # optimizer steps between evaluations; 0 = every epoch
    checkpoint_every: int = 100  # optimizer steps between saves of checkpoints/last/
    num_beams: int = 1  # beams when decoding for validation and the final scores (1 = greedy); evaluate/infer default to it
    max_new_tokens: int = 64  # tokens generated per sequence at most
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (core.device.resolve_precision)
    max_samples: int | None = None  # cap per split (seeded random subset), for quick runs
    val_fraction: float = 0.1  # share of train held out when the dataset has no val samples
    seed: int = 0  # weights, split, data order, frame sampling, dropout

    def validate(self) -> None:
        from gesture_cli.models.sign2text import BRIDGES

        _validate_common(self)
        if self.init not in INITS:
            raise unknown_choice("--init", self.init, INITS)
        if self.bridge not in BRIDGES:
            raise unknown_choice("--bridge", self.bridge, BRIDGES)
        if self.num_beams < 1 or self.max_new_tokens < 1 or self.max_text_tokens < 2:
            raise UsageError("--num-beams and --max-new-tokens must be at least 1, --max-text-tokens at least 2")
        if self.init == "scratch" and self.pretrained:
            raise UsageError("--pretrained and --init scratch contradict each other; drop one")


# ---- encoder settings -----------------------------------------------------------------------------
def parse_encoder_opts(opts: tuple[str, ...]) -> dict[str, str]:
    """`--encoder-opt KEY=VALUE` strings -> {key: value}, checking the keys against PoseEncoderConfig."""
    import dataclasses

    from gesture_cli.core.errors import did_you_mean
    from gesture_cli.models.pose_encoder import PoseEncoderConfig

    valid = [f.name for f in dataclasses.fields(PoseEncoderConfig) if f.name != "layout"]  # the layout follows the data
    out = {}
    for item in opts:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UsageError(f"--encoder-opt '{item}' must look like KEY=VALUE, e.g. d_model=128")
        if key not in valid:
            raise UsageError(f"--encoder-opt: unknown key '{key}'{did_you_mean(key, valid)}; valid keys: {', '.join(valid)}")
        out[key] = value.strip()
    return out


def resolve_encoder_config(file: str | None, opts: tuple[str, ...], keypoints: str | None, *, dims: int, layout: str):
    """PoseEncoderConfig from a file and KEY=VALUE overrides; the layout and coordinates follow the data."""
    from gesture_cli.models.pose_encoder import pose_encoder_config
    from gesture_cli.models.skeletons import parse_parts

    overrides = parse_encoder_opts(opts)
    if keypoints:
        overrides["parts"] = parse_parts(keypoints)
    overrides["layout"] = layout
    try:
        enc = pose_encoder_config(file, **overrides)
    except UsageError as exc:  # resolve_config calls the overrides "command line": they came from --encoder-opt / --keypoints
        raise UsageError(str(exc).replace("command line:", "--encoder-opt / --keypoints:", 1)) from None
    if enc.in_channels > dims:
        if "in_channels" in overrides:
            raise UsageError(f"--encoder-opt in_channels={enc.in_channels}, but the dataset has {dims} coordinates per point")
        enc = pose_encoder_config(enc, in_channels=dims)  # 2D data: the encoder reads x, y
    return enc


def _points_of(enc_cfg) -> np.ndarray:
    from gesture_cli.models.skeletons import select_parts

    return select_parts(enc_cfg.layout, enc_cfg.parts).indices


def _summary_common(st, result) -> dict:
    return {
        "steps": st.step, "epochs": round(st.step / max(1, st.steps_per_epoch), 3), "best_step": st.best_step, "stopped_early": st.stopped_early,
        "resumed_from": st.resumed_from, "train_seconds": round(st.elapsed_s, 2),
        "train_samples_per_s": round(st.samples / max(1e-9, st.elapsed_s), 2), "weights": "best" if result.best_dir is not None else "last",
        "precision": st.precision, "skipped_steps": st.skipped_steps,
    }


def _load_best(model, result, device) -> None:
    from gesture_cli.train.checkpoint import load_checkpoint, load_model_state

    if result.best_dir is not None:
        tensors, _, _, _ = load_checkpoint(result.best_dir, device=device)
        load_model_state(model, tensors, source=result.best_dir)


def _finish_dir(out: Path, *, log_path: Path, checkpoint_dir: Path) -> None:
    from gesture_cli.train.common import link_tree

    shutil.copy2(log_path, out / "train_log.csv")
    link_tree(checkpoint_dir, out / "checkpoints")


# ---- pretraining ----------------------------------------------------------------------------------
def retrieval_metrics(pose_emb, text_emb, sample_text: np.ndarray, *, ks=(1, 5)) -> dict[str, float]:
    """Recall@k both ways between N pose embeddings and M distinct-sentence embeddings (unit rows).

    sample_text [N]: the row of each sample's sentence in text_emb. Pose -> text: the rank of a sample's
    own sentence among the M. Text -> pose: a sentence counts as found at k when any of its samples is
    among the k closest pose sequences.
    """
    import torch

    sim = pose_emb.float() @ text_emb.float().t()  # [N, M]
    own = torch.as_tensor(sample_text, dtype=torch.int64)
    own_score = sim.gather(1, own[:, None])  # [N, 1]
    p2t_rank = (sim > own_score).sum(1)  # 0 = first
    order = sim.t().argsort(dim=1, descending=True)  # [M, N] poses by similarity for each sentence
    hit_rank = []
    for m in range(sim.shape[1]):
        mine = (own[order[m]] == m).nonzero()
        hit_rank.append(int(mine[0, 0]) if len(mine) else sim.shape[0])
    t2p_rank = torch.tensor(hit_rank)
    present = torch.zeros(sim.shape[1], dtype=torch.bool)
    present[own] = True
    out = {}
    for k in ks:
        out[f"val_r{k}"] = round(float((p2t_rank < k).float().mean()), 6)
        out[f"val_t2p_r{k}"] = round(float((t2p_rank[present] < k).float().mean()), 6)
    return out


def _sentence_table(texts: list[str]) -> tuple[list[str], np.ndarray]:
    """(distinct sentences in first-seen order, row of each text)."""
    table: dict[str, int] = {}
    rows = np.array([table.setdefault(t, len(table)) for t in texts], dtype=np.int64)
    return list(table), rows


def pretrain_pose(cfg: PosePretrainConfig, run, *, device: str = "auto", force: bool = False, resume: bool = False,
                  argv: list[str] | None = None, callbacks: dict[str, list[Callable]] | None = None,
                  notify: Callable[[str], None] | None = None) -> dict:
    """Align the pose encoder with a frozen text encoder; writes pose/pretrain/ (see the module docstring)."""
    import torch

    from gesture_cli.core.config import config_to_dict
    from gesture_cli.core.device import make_precision
    from gesture_cli.models.pose_encoder import PoseEncoder
    from gesture_cli.models.sign2text import PoseTextAligner, count_parameters, info_nce
    from gesture_cli.models.text import build_text_model, embed_texts, resolve_text_model, text_encoder, text_model_dir
    from gesture_cli.train.common import refuse_unfinished
    from gesture_cli.train.loop import fit, make_accelerator

    cfg.validate()
    check_dataset_exists(cfg.dataset)
    say = notify or (lambda _line: None)
    ckpt_dir = run.path(PRETRAIN_REL, "checkpoints")
    src = resolve_text_model(cfg.text_model)  # fail fast, before any data is read
    if src.kind != "tiny":
        text_model_dir(src)
    if not resume:
        refuse_unfinished(ckpt_dir / "last", force=force)
    splits = make_pose_splits(cfg.dataset, cfg.dataset_opts, seed=cfg.seed, max_samples=cfg.max_samples, val_fraction=cfg.val_fraction)
    enc_cfg = resolve_encoder_config(cfg.encoder_config, cfg.encoder_opts, cfg.keypoints, dims=splits.train.dims, layout=splits.train.layout)
    resolved = {**config_to_dict(cfg), "encoder": enc_cfg.to_dict()}
    if resume:
        check_resume(ckpt_dir / "last", resolved, PRETRAIN_RESUME_KEYS, command="pose-pretrain")
    keys = {"dataset": splits.cache_token} if splits.cache_token else {}
    step = run.begin("pose-pretrain", config={**resolved, "device": device}, inputs=splits.source_files, input_keys=keys,
                     outputs=[PRETRAIN_REL], argv=argv, force=force or resume)
    if step.cached:
        return {**step.entry, "cached": True, "is_main": True}

    acc = make_accelerator(device)
    prec = make_precision(acc.device, cfg.precision)
    text = build_text_model(src, corpus=splits.train.texts, encoder_only=src.kind != "tiny", device=acc.device)
    text.model.requires_grad_(False).eval()  # frozen: never in the optimizer, no dropout in its embeddings
    # Autocast only: its weights stay as they are, since a tiny text model is saved with the encoder.
    prec.wrap(text_encoder(text.model))
    train_sentences, train_rows = _sentence_table(splits.train.texts)
    val_sentences, val_rows = _sentence_table(splits.val.texts)
    train_feats = embed_texts(text, train_sentences)  # [M, D_text], frozen: computed once
    val_feats = embed_texts(text, val_sentences)
    prec.check_finite(train_feats, what="the frozen text encoder's sentence embeddings")
    text_params = sum(p.numel() for p in text.model.parameters())
    text_trainable = sum(p.numel() for p in text.model.parameters() if p.requires_grad)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = PoseTextAligner(PoseEncoder(enc_cfg), text_dim=text.d_model, embed_dim=cfg.embed_dim, temperature=cfg.temperature)
    model.to(acc.device)
    trainable, total = count_parameters(model)
    is_main = acc.is_main_process
    if is_main:
        say(f"precision: {prec.describe()}")
        say(f"trainable parameters: {trainable:,} (pose encoder {sum(p.numel() for p in model.encoder.parameters()):,} + heads + temperature); "
            f"text encoder {text.source.describe()} frozen: {text_params:,} parameters, embeddings of {len(train_sentences)} + "
            f"{len(val_sentences)} distinct sentences computed once")
        say(f"data: train {len(splits.train)}, val {len(splits.val)} ({splits.names['val']}), "
            f"{enc_cfg.layout} {','.join(enc_cfg.parts)} ({len(_points_of(enc_cfg))} points), normalize {cfg.normalize}")
        if resume:
            from gesture_cli.train.checkpoint import read_checkpoint_state

            st = read_checkpoint_state(ckpt_dir / "last")["trainer"]
            say(f"resuming from step {st['step']}/{st['total_steps']} (epoch {st['epoch']})")

    points = _points_of(enc_cfg)
    common = dict(points=points, normalize=cfg.normalize, max_frames=cfg.max_frames, dims=enc_cfg.in_channels, seed=cfg.seed)
    train_data = PoseBatches(splits.train.samples, random_frames=True, **common,
                             extras={"text_features": train_feats[torch.as_tensor(train_rows)]})
    val_data = PoseBatches(splits.val.samples, **common)

    def loss_fn(m, batch):
        dev = device_of(m)
        pose, txt, scale = m(*pose_inputs(batch, dev), batch["text_features"].to(dev))
        loss = info_nce(pose, txt, scale)
        return {"loss": loss, "temperature": (1.0 / scale).detach()}

    def eval_fn(m) -> dict[str, float]:
        pose = _embed_poses(m, val_data, batch_size=max(cfg.batch_size, 64))
        return retrieval_metrics(pose, m.embed_text(val_feats.to(device_of(m))).cpu(), val_rows)

    chance = 1.0 / len(val_sentences)
    meta = {"config": resolved, "text_model": text.describe()}
    ctx = step if is_main else contextlib.nullcontext()
    with ctx:
        set_aside_checkpoints(step, ckpt_dir, resume=resume, is_main=is_main)
        result = fit(model, train_data=train_data, loss_fn=loss_fn, eval_fn=eval_fn, cfg=_train_config(cfg, monitor="val_r1"),
                     checkpoint_dir=ckpt_dir, callbacks=callbacks, resume=resume, meta=meta, accelerator=acc,
                     precision=prec)
        if not is_main:
            return {"is_main": False}
        _load_best(model, result, acc.device)
        model.eval()
        with torch.no_grad():
            final = eval_fn(model)
        st = result.state
        summary = {
            **_summary_common(st, result), "trainable_params": trainable, "total_params": total, "text_encoder_params": text_params,
            "text_encoder_trainable": text_trainable, "text_model": text.describe(), "temperature": round(1.0 / float(model.scale.detach()), 6),
            "val_sentences": len(val_sentences), "chance_r1": round(chance, 6), "best_val_r1": st.best_metric,
            "train": len(splits.train), "val": len(splits.val), "val_split": splits.names["val"],
        }
        out = step.stage(PRETRAIN_REL)
        _write_pretrain(out, model, text=text, cfg=cfg, resolved=resolved, summary=summary, metrics={"val": final}, result=result,
                        checkpoint_dir=ckpt_dir)
        step.metrics.update({"precision": summary["precision"], "val_r1": final["val_r1"], "val_r5": final["val_r5"], "chance_r1": summary["chance_r1"],
                             "trainable_params": trainable, "steps": st.step})
    return {**step.entry, "cached": False, "is_main": True, "summary": summary, "metrics": {"val": final}, "out": str(run.path(PRETRAIN_REL))}


def _embed_poses(model, data: PoseBatches, *, batch_size: int):
    """[N, E] pose embeddings of a dataset, in eval mode, on the CPU."""
    import torch

    was = model.training
    model.eval()
    out = []
    dev = device_of(model)
    with torch.no_grad():
        for lo in range(0, len(data), batch_size):
            b = data.get_batch(range(lo, min(lo + batch_size, len(data))))
            out.append(model.embed_pose(*pose_inputs(b, dev)).float().cpu())
    model.train(was)
    return torch.cat(out)


def _write_pretrain(out: Path, model, *, text, cfg, resolved, summary, metrics, result, checkpoint_dir) -> None:
    from gesture_cli.core.artifacts import save_json, save_tensors
    from gesture_cli.models.pose_encoder import save_pose_encoder
    from gesture_cli.models.text import save_text_model

    data = {"dataset": cfg.dataset, "dataset_opts": list(cfg.dataset_opts), "normalize": cfg.normalize, "max_frames": cfg.max_frames}
    save_pose_encoder(model.encoder, out, extra={"stage": "pretrain", **data})
    heads = {k: v for k, v in model.state_dict().items() if not k.startswith("encoder.")}
    save_tensors(out / "heads.safetensors", heads, kind=HEADS_KIND,
                 meta={"embed_dim": cfg.embed_dim, "text_dim": text.d_model, "temperature": summary["temperature"]})
    save_text_model(text, out / "text_model", weights=text.source.kind == "tiny")
    save_json(out / "pretrain.json", {**data, "text_model": text.describe(), "embed_dim": cfg.embed_dim, "encoder": resolved["encoder"],
                                      "config": resolved}, kind=PRETRAIN_KIND)
    save_json(out / "metrics.json", {**summary, **metrics}, kind="pose-pretrain-metrics")
    _finish_dir(out, log_path=result.log_path, checkpoint_dir=checkpoint_dir)


# ---- fine-tuning ----------------------------------------------------------------------------------
def find_pretrained(run, path: str | None) -> Path | None:
    """The pretrain folder holding encoder.safetensors, or None when absent."""
    base = Path(path).expanduser() if path else run.path(PRETRAIN_REL)
    if base.is_file() and base.name.endswith(".safetensors"):
        base = base.parent
    return base if (base / "encoder.safetensors").is_file() else None


def _pretrain_info(folder: Path) -> dict:
    from gesture_cli.core.artifacts import load_json

    return load_json(folder / "pretrain.json", kind=PRETRAIN_KIND) if (folder / "pretrain.json").is_file() else {}


def tokenize_targets(tokenizer, texts: list[str], *, max_tokens: int) -> list[list[int]]:
    """Token ids of each text with eos appended (truncated to max_tokens, eos kept last)."""
    eos = tokenizer.eos_token_id
    out = []
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        out.append([*ids[: max_tokens - 1], eos])
    return out


def finetune_pose(cfg: PoseFinetuneConfig, run, *, device: str = "auto", force: bool = False, resume: bool = False,
                  argv: list[str] | None = None, callbacks: dict[str, list[Callable]] | None = None,
                  notify: Callable[[str], None] | None = None) -> dict:
    """Train pose encoder + projection + UMT5 to generate text; writes pose/finetune/ (see the module docstring)."""
    import torch

    from gesture_cli.core.config import config_to_dict
    from gesture_cli.core.device import make_precision
    from gesture_cli.models.pose_encoder import PoseEncoder, load_pose_encoder, pose_encoder_config
    from gesture_cli.models.sign2text import PoseToText, count_parameters
    from gesture_cli.models.text import DEFAULT_TEXT_MODEL, build_text_model, load_text_model, resolve_text_model, text_model_dir
    from gesture_cli.train.common import refuse_unfinished
    from gesture_cli.train.loop import fit, make_accelerator

    cfg.validate()
    check_dataset_exists(cfg.dataset)
    say = notify or (lambda _line: None)
    ckpt_dir = run.path(FINETUNE_REL, "checkpoints")
    # Fail fast, before any data is read: the pretrained encoder and the text model.
    pre_dir = None if cfg.init == "scratch" else find_pretrained(run, cfg.pretrained)
    if pre_dir is None and (cfg.init == "pretrained" or cfg.pretrained):
        where = Path(cfg.pretrained).expanduser() if cfg.pretrained else run.path(PRETRAIN_REL)
        raise ArtifactError(f"no pretrained pose encoder at {where} (encoder.safetensors); run `gx pose-pretrain -r {run.root}` first, "
                            "or use --init scratch")
    pre_info = _pretrain_info(pre_dir) if pre_dir is not None else {}
    pre_text = pre_dir / "text_model" if pre_dir is not None and (pre_dir / "text_model").is_dir() else None
    if pre_text is not None:
        from gesture_cli.models.text import read_text_model_info

        aligned = read_text_model_info(pre_text)
        pre_name = aligned["name"]
        if cfg.text_model and cfg.text_model != pre_name and (
                not aligned.get("location") or resolve_text_model(cfg.text_model).location != aligned["location"]):
            raise UsageError(f"{pre_dir} was aligned with text model '{pre_name}', not '{cfg.text_model}'; drop --text-model "
                             f"(or pass --text-model {pre_name}), or use --init scratch")
        text_name = pre_name
    else:
        src = resolve_text_model(cfg.text_model or DEFAULT_TEXT_MODEL)
        if src.kind != "tiny":
            text_model_dir(src)
        text_name = src.name
    normalize = cfg.normalize or pre_info.get("normalize") or "shoulders"
    if not resume:
        refuse_unfinished(ckpt_dir / "last", force=force)
    splits = make_pose_splits(cfg.dataset, cfg.dataset_opts, seed=cfg.seed, max_samples=cfg.max_samples, val_fraction=cfg.val_fraction)
    if pre_dir is not None:
        from gesture_cli.core.artifacts import load_tensors

        _, enc_meta = load_tensors(pre_dir / "encoder.safetensors", kind="pose-encoder")
        enc_cfg = pose_encoder_config(enc_meta["config"])
        if enc_cfg.layout != splits.train.layout:
            raise DataError(f"{pre_dir} was pretrained on {enc_cfg.layout} keypoints; dataset '{cfg.dataset}' has {splits.train.layout}")
        if cfg.encoder_config or cfg.encoder_opts or cfg.keypoints:
            raise UsageError("--encoder-config, --encoder-opt and --keypoints apply from scratch; the pretrained encoder keeps its own "
                             "(use --init scratch to change them)")
    else:
        enc_cfg = resolve_encoder_config(cfg.encoder_config, cfg.encoder_opts, cfg.keypoints, dims=splits.train.dims, layout=splits.train.layout)
    init_from = str((pre_dir / "encoder.safetensors").resolve()) if pre_dir is not None else "scratch"
    resolved = {**config_to_dict(cfg), "text_model": text_name, "normalize": normalize, "encoder": enc_cfg.to_dict(), "init_from": init_from}
    if resume:
        check_resume(ckpt_dir / "last", resolved, FINETUNE_RESUME_KEYS, command="pose-finetune")
    keys = {"dataset": splits.cache_token} if splits.cache_token else {}
    inputs = [*splits.source_files, *([pre_dir / "encoder.safetensors"] if pre_dir is not None else [])]
    step = run.begin("pose-finetune", config={**resolved, "device": device}, inputs=inputs, input_keys=keys, outputs=[FINETUNE_REL],
                     argv=argv, force=force or resume)
    if step.cached:
        return {**step.entry, "cached": True, "is_main": True}

    acc = make_accelerator(device)
    prec = make_precision(acc.device, cfg.precision)
    if pre_text is not None:
        text = load_text_model(pre_text, device=acc.device)
    else:
        text = build_text_model(text_name, corpus=splits.train.texts, device=acc.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        encoder = load_pose_encoder(pre_dir, device=acc.device) if pre_dir is not None else PoseEncoder(enc_cfg)
        model = PoseToText(encoder, text.model, bridge=cfg.bridge)
    if cfg.bridge == "direct":  # the UMT5 encoder is skipped: freeze what only it uses (not the shared embeddings)
        shared = {id(p) for p in model.text.get_decoder().parameters()} | {id(p) for p in model.text.get_output_embeddings().parameters()}
        for p in model.text.get_encoder().parameters():
            if id(p) not in shared:
                p.requires_grad_(False)
    model.to(acc.device)
    trainable, total = count_parameters(model)
    is_main = acc.is_main_process
    if is_main:
        say(f"precision: {prec.describe()}")
        if pre_dir is not None:
            say(f"pose encoder: pretrained, from {pre_dir}")
        elif cfg.init == "auto":
            say(f"pose encoder: from scratch (no pretrained encoder at {run.path(PRETRAIN_REL)}; run `gx pose-pretrain` first to start from "
                "an aligned one)")
        else:
            say("pose encoder: from scratch (--init scratch)")
        say(f"trainable parameters: {trainable:,} of {total:,}; text model {text.source.describe()}, bridge {cfg.bridge}")
        say(f"data: train {len(splits.train)}, val {len(splits.val)} ({splits.names['val']}), test {len(splits.test) if splits.test else 0}; "
            f"{enc_cfg.layout} {','.join(enc_cfg.parts)}, normalize {normalize}")
        if resume:
            from gesture_cli.train.checkpoint import read_checkpoint_state

            st = read_checkpoint_state(ckpt_dir / "last")["trainer"]
            say(f"resuming from step {st['step']}/{st['total_steps']} (epoch {st['epoch']})")

    points = _points_of(enc_cfg)
    common = dict(points=points, normalize=normalize, max_frames=cfg.max_frames, dims=enc_cfg.in_channels, seed=cfg.seed)
    labels = tokenize_targets(text.tokenizer, splits.train.texts, max_tokens=cfg.max_text_tokens)
    train_data = PoseBatches(splits.train.samples, random_frames=True, labels=labels, **common)
    val_data = PoseBatches(splits.val.samples, **common)
    gen = {"num_beams": cfg.num_beams, "max_new_tokens": cfg.max_new_tokens}

    def loss_fn(m, batch):
        dev = device_of(m)
        return m(*pose_inputs(batch, dev), batch["labels"].to(dev))

    def eval_fn(m) -> dict[str, float]:
        from gesture_cli.eval.translate import translation_metrics

        hyps = generate_texts(m, text.tokenizer, val_data, batch_size=max(cfg.batch_size, 32), **gen)
        s = translation_metrics(hyps, splits.val.texts)
        return {"val_bleu4": s["bleu4"], "val_bleu1": s["bleu1"], "val_chrf": s["chrf"], "val_rouge_l": s["rouge_l"]}

    translator = {
        "dataset": cfg.dataset, "dataset_opts": list(cfg.dataset_opts), "normalize": normalize, "max_frames": cfg.max_frames,
        "bridge": cfg.bridge, "num_beams": cfg.num_beams, "max_new_tokens": cfg.max_new_tokens, "seed": cfg.seed, "max_samples": cfg.max_samples,
        "val_fraction": cfg.val_fraction, "init_from": init_from, "layout": enc_cfg.layout, "parts": list(enc_cfg.parts), "dims": enc_cfg.in_channels,
    }
    meta = {"config": resolved, "text_model": text.describe()}
    ctx = step if is_main else contextlib.nullcontext()
    with ctx:
        set_aside_checkpoints(step, ckpt_dir, resume=resume, is_main=is_main)
        result = fit(model, train_data=train_data, loss_fn=loss_fn, eval_fn=eval_fn, cfg=_train_config(cfg, monitor="val_bleu4"),
                     checkpoint_dir=ckpt_dir, callbacks=callbacks, resume=resume, meta=meta, accelerator=acc,
                     precision=prec)
        if not is_main:
            return {"is_main": False}
        _load_best(model, result, acc.device)
        model.eval()
        from gesture_cli.eval.translate import translation_metrics

        metrics: dict[str, Any] = {}
        examples = []
        for role, ds in (("val", splits.val), ("test", splits.test)):
            if ds is None:
                continue
            hyps = generate_texts(model, text.tokenizer, PoseBatches(ds.samples, **common), batch_size=max(cfg.batch_size, 32), **gen)
            scores = translation_metrics(hyps, ds.texts)
            scores.pop("signatures")
            metrics[role] = {"split": splits.names.get(role, role), **scores}
            if role == "val":
                examples = [{"id": s.id, "reference": s.text, "hypothesis": h} for s, h in zip(ds.samples[:5], hyps[:5], strict=False)]
        st = result.state
        summary = {**_summary_common(st, result), "trainable_params": trainable, "total_params": total, "text_model": text.describe(),
                   "bridge": cfg.bridge, "init_from": init_from, "best_val_bleu4": st.best_metric, "num_beams": cfg.num_beams,
                   "train": len(splits.train), "val": len(splits.val), "test": len(splits.test) if splits.test else 0}
        out = step.stage(FINETUNE_REL)
        _write_finetune(out, model, text=text, translator=translator, resolved=resolved, summary=summary,
                        metrics={**metrics, "examples": examples}, result=result, checkpoint_dir=ckpt_dir)
        step.metrics.update({"precision": summary["precision"], "val_bleu4": metrics["val"]["bleu4"], "test_bleu4": metrics.get("test", {}).get("bleu4"),
                             "trainable_params": trainable, "steps": st.step})
    return {**step.entry, "cached": False, "is_main": True, "summary": summary, "metrics": metrics, "examples": examples,
            "out": str(run.path(FINETUNE_REL))}


def _write_finetune(out: Path, model, *, text, translator, resolved, summary, metrics, result, checkpoint_dir) -> None:
    from gesture_cli.core.artifacts import save_json, save_tensors
    from gesture_cli.models.pose_encoder import save_pose_encoder
    from gesture_cli.models.text import TextModel, save_text_model

    save_pose_encoder(model.encoder, out, extra={"stage": "finetune"})
    save_tensors(out / "bridge.safetensors", {"weight": model.proj.weight, "bias": model.proj.bias}, kind=BRIDGE_KIND,
                 meta={"bridge": model.bridge, "pose_dim": model.proj.in_features, "text_dim": model.proj.out_features})
    model.text.float()  # fp32 on disk: frozen parts (the skipped encoder of the direct bridge) were held in the compute dtype
    save_text_model(TextModel(tokenizer=text.tokenizer, model=model.text, source=text.source), out / "text_model", weights=True,
                    extra={"fine_tuned": True})
    save_json(out / "translator.json", {**translator, "text_model": text.describe(), "config": resolved, "precision": summary["precision"]},
              kind=TRANSLATOR_KIND)  # precision: what `gx evaluate/infer translate` run it in by default
    save_json(out / "metrics.json", {**summary, **metrics}, kind="pose-finetune-metrics")
    _finish_dir(out, log_path=result.log_path, checkpoint_dir=checkpoint_dir)


__all__ = ["PoseFinetuneConfig", "PosePretrainConfig", "finetune_pose", "pretrain_pose", "retrieval_metrics"]
