"""The text side of sign-to-text: a UMT5 (or other T5-family) encoder-decoder and its tokenizer.

    src = resolve_text_model("umt5-small")           # registry name, hub id, local directory or tiny-umt5
    bundle = build_text_model(src, corpus=train_texts) # tokenizer + UMT5ForConditionalGeneration
    save_text_model(bundle, run_dir / "text_model")    # tokenizer always; weights for tiny-umt5 (and fine-tuned models)
    bundle = load_text_model(run_dir / "text_model")   # the exact same tokenizer and model again

Specs:
  umt5-small, umt5-base    registry names -> google/umt5-small, google/umt5-base (the default is umt5-small)
  OWNER/NAME               any Hugging Face hub id of an encoder-decoder (UMT5, mT5, T5); the snapshot is
                           looked up in `$GX_HOME/models` first (hub cache layout, what `gx download` writes)
                           and downloaded only when missing and not offline (HF_HUB_OFFLINE / GX_OFFLINE)
  DIR                      a local directory with config.json, weights and tokenizer files
  tiny-umt5                offline: a random-init UMT5 (d_model 64, 2+2 layers, 4 heads) built with a fixed
                           seed, and a BPE tokenizer trained by the `tokenizers` library on the training
                           texts (pad 0, eos 1, unk 2 as in T5); for tests and the demo

The tokenizer always goes into the run directory (`save_text_model`), so `evaluate` and `infer` decode
with exactly the tokenizer training used, even when the hub's copy changes or was converted from a
SentencePiece model. Weights are copied there only for tiny-umt5 and for fine-tuned models; a frozen
hub model is referenced by its id and reloaded from the cache.

transformers and tokenizers are imported inside functions.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gesture_cli.core.errors import ArtifactError, ModelError, UsageError, unknown_choice

TEXT_MODELS = {  # registry name -> hub id (None: built locally)
    "umt5-small": "google/umt5-small",
    "umt5-base": "google/umt5-base",
    "tiny-umt5": None,
}
DEFAULT_TEXT_MODEL = "umt5-small"
TEXT_MODEL_KIND = "text-model"
TEXT_MODEL_FILE = "gx_text_model.json"  # written beside the tokenizer (and weights) by save_text_model
# What a text model snapshot needs: configs, weights (safetensors, or the .bin some T5 repos still ship
# alone), the tokenizer (tokenizer.json or a SentencePiece spiece.model).
TEXT_ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.model", "pytorch_model*.bin"]
SEQ2SEQ_TYPES = ("umt5", "mt5", "t5")
TINY_SEED = 4321  # tiny-umt5 weights are identical in every process and run
TINY_UMT5 = dict(  # ~0.2 M parameters besides the embeddings
    d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4, relative_attention_num_buckets=16,
    relative_attention_max_distance=64, dropout_rate=0.1, feed_forward_proj="gated-gelu",
)
TINY_VOCAB = 256  # BPE vocabulary of the tiny tokenizer (fewer when the corpus has fewer pieces)
PAD, EOS, UNK = "<pad>", "</s>", "<unk>"


@dataclass(frozen=True)
class TextSource:
    name: str  # the spec as given (or the registry name)
    kind: str  # tiny | hub | local
    location: str | None  # hub id or absolute directory; None for tiny

    def describe(self) -> str:
        return self.name if self.kind == "tiny" else f"{self.name} ({self.location})" if self.location != self.name else self.name


@dataclass
class TextModel:
    """A tokenizer and an encoder-decoder (or its encoder alone), with where they came from."""

    tokenizer: Any  # transformers tokenizer (PreTrainedTokenizerFast / TokenizersBackend)
    model: Any  # UMT5ForConditionalGeneration (or another seq2seq LM), or an encoder model when encoder_only
    source: TextSource
    encoder_only: bool = False

    @property
    def d_model(self) -> int:
        return int(self.model.config.d_model)

    def describe(self) -> dict:
        cfg = self.model.config
        return {"name": self.source.name, "source_kind": self.source.kind, "location": self.source.location, "model_type": cfg.model_type,
                "d_model": int(cfg.d_model), "vocab_size": int(cfg.vocab_size), "tokenizer_size": len(self.tokenizer)}


def resolve_text_model(spec: str | None) -> TextSource:
    """A text model spec -> where it lives (see the module docstring); a clear error when it cannot exist."""
    spec = (spec or DEFAULT_TEXT_MODEL).strip()
    if spec in TEXT_MODELS:
        hub = TEXT_MODELS[spec]
        return TextSource(spec, "tiny", None) if hub is None else TextSource(spec, "hub", hub)
    path = Path(spec).expanduser()
    looks_like_path = spec.startswith((".", "/", "~")) or "\\" in spec or path.exists() or spec.count("/") > 1
    if looks_like_path:
        if not path.is_dir():
            raise ModelError(f"text model directory {path} not found; pass a directory with config.json and tokenizer files, "
                             f"a hub id (owner/name) or one of: {', '.join(TEXT_MODELS)}")
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} has no config.json: not a transformers model directory (expected config.json, "
                             "weights and tokenizer files, e.g. a `save_pretrained` folder or a hub snapshot)")
        return TextSource(spec, "local", str(path.resolve()))
    if "/" in spec:
        owner, _, repo = spec.partition("/")
        if owner and repo:
            return TextSource(spec, "hub", spec)
    raise unknown_choice("text model", spec, TEXT_MODELS)


def text_model_dir(src: TextSource) -> Path:
    """The local directory of a hub or local text model (downloading a hub model when allowed)."""
    if src.kind == "local":
        return Path(src.location)
    if src.kind == "hub":
        from gesture_cli.models.backbones import resolve_snapshot

        # named by its hub id: the error for a model missing offline says `gx download <hub id>`, which works
        return resolve_snapshot(src.location, name=src.location, allow_patterns=TEXT_ALLOW_PATTERNS)
    raise ValueError(f"{src.name} is built locally and has no directory")


# ---- tokenizers ------------------------------------------------------------------------------------
def train_tokenizer(texts: list[str], *, vocab_size: int = TINY_VOCAB):
    """A BPE tokenizer trained on `texts` (tokenizers library), wrapped for transformers.

    Words split at whitespace (Metaspace, as SentencePiece does) and punctuation; the initial alphabet is
    printable ASCII, so unseen ASCII words still tokenize (letter by letter) instead of becoming <unk>.
    Encoding appends </s>, as T5 tokenizers do. Special ids: <pad> 0, </s> 1, <unk> 2.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise UsageError("no texts to train the tiny-umt5 tokenizer on: the training split has no sample with a text")
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()])
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS, UNK], initial_alphabet=list(string.printable.strip()),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, tok.token_to_id(EOS))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK)


def load_tokenizer(directory: Path | str, *, name: str | None = None):
    """The tokenizer of a model directory (tokenizer.json, or a SentencePiece model converted once)."""
    from transformers import AutoTokenizer

    directory = Path(directory)
    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except (ImportError, ValueError, OSError, TypeError, AttributeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "sentencepiece" in str(exc).lower() or "protobuf" in str(exc).lower() or (
                (directory / "spiece.model").is_file() and not (directory / "tokenizer.json").is_file()):
            raise ModelError(
                f"text model '{name or directory}': its tokenizer is a SentencePiece model (spiece.model) without tokenizer.json; "
                "converting it needs `pip install sentencepiece protobuf` once (gx then keeps a tokenizer.json in the run dir)"
            ) from None
        raise ModelError(f"text model '{name or directory}': cannot load its tokenizer from {directory} ({first})") from None


# ---- models ----------------------------------------------------------------------------------------
def _check_seq2seq(config, where: str) -> None:
    if not getattr(config, "is_encoder_decoder", False) or config.model_type not in SEQ2SEQ_TYPES:
        raise ModelError(f"{where} is a '{config.model_type}' model; sign-to-text needs a T5-family encoder-decoder "
                         f"({', '.join(SEQ2SEQ_TYPES)}), e.g. google/umt5-small")


def _encoder_class(model_type: str):
    import transformers

    return getattr(transformers, {"umt5": "UMT5EncoderModel", "mt5": "MT5EncoderModel", "t5": "T5EncoderModel"}[model_type])


def build_tiny_umt5(vocab_size: int, *, pad_id: int = 0, eos_id: int = 1, encoder_only: bool = False):
    """A random-init UMT5 with the TINY_UMT5 shape, identical for a given vocabulary size (fixed seed)."""
    import torch
    from transformers import UMT5Config, UMT5EncoderModel, UMT5ForConditionalGeneration

    cfg = UMT5Config(vocab_size=vocab_size, pad_token_id=pad_id, eos_token_id=eos_id, decoder_start_token_id=pad_id, **TINY_UMT5)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = UMT5ForConditionalGeneration(cfg)
    if encoder_only:  # the same encoder weights as the full model's
        enc = UMT5EncoderModel(cfg)
        enc.load_state_dict({k: v for k, v in model.state_dict().items() if k.startswith(("shared.", "encoder."))}, strict=False)
        return enc
    return model


def _load_pretrained(directory: Path, *, name: str, encoder_only: bool):
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    try:
        config = AutoConfig.from_pretrained(str(directory))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"text model '{name}': cannot read {directory / 'config.json'} ({str(exc).splitlines()[0]})") from None
    _check_seq2seq(config, f"text model '{name}' ({directory})")
    cls = _encoder_class(config.model_type) if encoder_only else AutoModelForSeq2SeqLM
    try:
        return cls.from_pretrained(str(directory))
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"text model '{name}': cannot load its weights from {directory} ({str(exc).splitlines()[0]}); "
                         f"run `gx download {name}` again or check the directory") from None


def build_text_model(spec: str | TextSource | None, *, corpus: list[str] | None = None, encoder_only: bool = False,
                     device="cpu") -> TextModel:
    """Tokenizer + model for a spec; tiny-umt5 trains its tokenizer on `corpus` (the training texts)."""
    src = spec if isinstance(spec, TextSource) else resolve_text_model(spec)
    if src.kind == "tiny":
        tokenizer = train_tokenizer(list(corpus or []))
        model = build_tiny_umt5(len(tokenizer), pad_id=tokenizer.pad_token_id, eos_id=tokenizer.eos_token_id, encoder_only=encoder_only)
    else:
        directory = text_model_dir(src)
        tokenizer = load_tokenizer(directory, name=src.name)
        model = _load_pretrained(directory, name=src.name, encoder_only=encoder_only)
    _check_tokenizer(tokenizer, model, src.name)
    return TextModel(tokenizer=tokenizer, model=model.to(device), source=src, encoder_only=encoder_only)


def _check_tokenizer(tokenizer, model, name: str) -> None:
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise ModelError(f"text model '{name}': its tokenizer defines no pad or eos token")
    if len(tokenizer) > model.config.vocab_size:
        raise ModelError(f"text model '{name}': the tokenizer has {len(tokenizer)} tokens but the model only {model.config.vocab_size} embeddings")


def save_text_model(text: TextModel, directory: Path | str, *, weights: bool, extra: dict | None = None) -> Path:
    """Write the tokenizer (always), the model's config and weights (when `weights`) and gx_text_model.json."""
    from gesture_cli.core.artifacts import save_json

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    text.tokenizer.save_pretrained(str(directory))
    if weights:
        if text.encoder_only:
            raise ValueError("an encoder-only text model cannot stand in for the encoder-decoder; save the full model")
        text.model.save_pretrained(str(directory))
    save_json(directory / TEXT_MODEL_FILE, {**text.describe(), "weights": bool(weights), **(extra or {})}, kind=TEXT_MODEL_KIND)
    return directory


def read_text_model_info(directory: Path | str) -> dict:
    path = Path(directory) / TEXT_MODEL_FILE
    if not path.is_file():
        raise ArtifactError(f"{directory}: no {TEXT_MODEL_FILE}; rerun the step that wrote it")
    from gesture_cli.core.artifacts import load_json

    return load_json(path, kind=TEXT_MODEL_KIND)


def load_text_model(directory: Path | str, *, encoder_only: bool = False, device="cpu") -> TextModel:
    """Reload what save_text_model wrote: its tokenizer, and its weights or the referenced hub/local model."""
    directory = Path(directory)
    info = read_text_model_info(directory)
    tokenizer = load_tokenizer(directory, name=info["name"])
    src = TextSource(info["name"], info["source_kind"], info.get("location"))
    if info.get("weights"):
        model = _load_pretrained(directory, name=info["name"], encoder_only=encoder_only)
    elif src.kind == "tiny":
        model = build_tiny_umt5(int(info["vocab_size"]), pad_id=tokenizer.pad_token_id, eos_id=tokenizer.eos_token_id, encoder_only=encoder_only)
    else:
        if src.kind == "local" and not Path(src.location).is_dir():
            raise ArtifactError(f"{directory}: refers to text model directory {src.location}, which no longer exists")
        model = _load_pretrained(text_model_dir(src), name=src.name, encoder_only=encoder_only)
    _check_tokenizer(tokenizer, model, src.name)
    return TextModel(tokenizer=tokenizer, model=model.to(device), source=src, encoder_only=encoder_only)


def text_encoder(model):
    """The encoder stack of a seq2seq model (or the model itself when it is an encoder model)."""
    return model.get_encoder() if hasattr(model, "get_encoder") and getattr(model.config, "is_encoder_decoder", False) else model


def embed_texts(text: TextModel, texts: list[str], *, batch_size: int = 64, max_length: int = 128):
    """float32 [N, D]: the mean of the (frozen) encoder's last hidden states over each text's tokens (eos included)."""
    import torch

    enc = text_encoder(text.model)
    was = enc.training
    enc.eval()
    dev = next(enc.parameters()).device
    out = []
    with torch.no_grad():
        for lo in range(0, len(texts), batch_size):
            tok = text.tokenizer(list(texts[lo: lo + batch_size]), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            ids, mask = tok["input_ids"].to(dev), tok["attention_mask"].to(dev)
            h = enc(input_ids=ids, attention_mask=mask).last_hidden_state.float()  # [B, L, D]
            m = mask.unsqueeze(-1).float()
            out.append(((h * m).sum(1) / m.sum(1).clamp_min(1)).cpu())
    enc.train(was)
    return torch.cat(out) if out else torch.zeros(0, text.d_model)


__all__ = [
    "DEFAULT_TEXT_MODEL", "TEXT_MODELS", "TextModel", "TextSource", "build_text_model", "build_tiny_umt5", "embed_texts", "load_text_model",
    "load_tokenizer", "resolve_text_model", "save_text_model", "text_encoder", "text_model_dir", "train_tokenizer",
]
