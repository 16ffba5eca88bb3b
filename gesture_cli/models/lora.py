"""An image classifier on a gx backbone, fine-tuned three ways, and its artifacts.

    model = build_classifier(backbone, num_classes=24, method="lora", pool="cls", targets=None, rank=8)
    logits = model(backbone.preprocess(images))          # [B, num_classes]

Methods: `lora` (PEFT LoRA adapters on the attention projections + the head), `full` (every backbone
weight + the head), `head` (the head alone on a frozen backbone). The head is one Linear layer on the
pooled features (`cls`, `mean` or `cls+mean`).

LoRA targets are resolved per family from the Linear layers the model really has: transformers 5
names the projections `q_proj`/`v_proj` in every ViT family, older releases `query`/`value` in
DINOv2 / ViT / I-JEPA; timm ViTs have one fused `qkv`. `--target-modules` overrides; a name the model
lacks is a UsageError listing the valid Linear names.

Artifacts (written by `gx lora-train`: tasks/classify.py with the trainer of train/lora.py):
  adapter/           PEFT's own format (adapter_config.json + adapter_model.safetensors) for `lora`
  backbone/          a transformers model directory (save_pretrained) for `full`
  head.safetensors   head weight and bias; its header holds the class names, pool, backbone
                     describe(), method and LoRA arguments, so `load_classifier` needs nothing else
  merged/            (`--merge`) LoRA folded into the weights: a plain transformers model directory
                     with a preprocessor_config.json, loadable by AutoModel.from_pretrained alone

`load_classifier(directory)` reads such a folder back; which folder of a run dir holds it
(lora/<backbone>/) is `gesture_cli.tasks.classify.load_lora_classifier`'s business.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from gesture_cli.core.errors import ArtifactError, ModelError, UsageError

METHODS = ("lora", "full", "head")
HEAD_KIND = "lora-head"
# Candidate LoRA target sets per family, first match wins (names of nn.Linear leaves).
DEFAULT_TARGETS: dict[str, tuple[tuple[str, ...], ...]] = {
    "dinov3": (("q_proj", "v_proj"),),
    "dinov2": (("query", "value"), ("q_proj", "v_proj")),
    "vit": (("query", "value"), ("q_proj", "v_proj")),
    "ijepa": (("query", "value"), ("q_proj", "v_proj")),
    "timm": (("qkv",),),
}
# The image processor class transformers would pick for a merged model of each family.
PROCESSOR_TYPES = {
    "dinov3": "DINOv3ViTImageProcessorFast",
    "dinov2": "BitImageProcessor",
    "vit": "ViTImageProcessor",
    "ijepa": "ViTImageProcessor",
}


class ImageClassifier(nn.Module):
    """backbone -> pooled features [B, D'] -> head Linear -> logits [B, num_classes]."""

    def __init__(self, backbone, head: nn.Linear, *, pool: str, method: str):
        super().__init__()
        self.backbone = backbone  # gesture_cli.models.backbones.Backbone; PEFT wraps backbone.model for lora
        self.head = head
        self.pool = pool
        self.method = method

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        cls, patches, _ = self.backbone.forward_features(pixels)
        return self.backbone.pool(cls, patches, self.pool)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        feats = self.features(pixels)
        return self.head(feats.to(self.head.weight.dtype))


def linear_module_names(model: nn.Module) -> list[str]:
    """Sorted leaf names of every nn.Linear in `model` (what LoRA can target)."""
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear) and name})


def resolve_target_modules(backbone, requested: Sequence[str] | None = None) -> list[str]:
    """LoRA target names for a backbone: `requested` (checked) or the family default."""
    model = backbone.model
    if isinstance(model, torch.jit.ScriptModule):
        raise ModelError(f"backbone '{backbone.info.name}' is a TorchScript module: LoRA cannot wrap it; use --method head or full")
    valid = linear_module_names(model)
    if requested:
        full_names = {name for name, m in model.named_modules() if isinstance(m, nn.Linear)}
        unknown = [t for t in requested if t not in valid and t not in full_names]
        if unknown:
            raise UsageError(
                f"--target-modules: backbone '{backbone.info.name}' has no Linear module named {', '.join(repr(u) for u in unknown)}; "
                f"valid: {', '.join(valid)}"
            )
        return list(dict.fromkeys(requested))
    for candidate in DEFAULT_TARGETS.get(backbone.info.family, ()):
        if all(name in valid for name in candidate):
            return list(candidate)
    raise ModelError(
        f"no default LoRA targets for backbone '{backbone.info.name}' (family {backbone.info.family}); "
        f"pass --target-modules from its Linear modules: {', '.join(valid)}"
    )


def build_head(in_features: int, num_classes: int, *, seed: int = 0) -> nn.Linear:
    """Linear head, weights N(0, 0.01) from a seeded generator, zero bias (DINOv2's linear-probe init)."""
    head = nn.Linear(in_features, num_classes)
    with torch.no_grad():
        head.weight.normal_(0.0, 0.01, generator=torch.Generator().manual_seed(seed))
        head.bias.zero_()
    return head


def apply_lora(backbone, *, targets: Sequence[str], rank: int, alpha: float, dropout: float) -> None:
    """Wrap backbone.model in a PeftModel with LoRA on `targets`; only the adapters are trainable.

    The adapters' dropout is models.train_kernels.KeepMaskDropout: PEFT's nn.Dropout's distribution with a
    faster mask on CPU, kept as one byte an element for backward. Each adapter adds its update to the
    frozen layer's output in place, with one addmm (train_kernels.use_addmm_lora). The adapters take their
    input in the dtype it comes in: PEFT would cast a bf16 input up to the fp32 adapter weights, only for
    autocast to cast the dropped input back down for the matmul (two copies of [B, N, D] per adapter and
    step, the same values: the dropout scale is applied in fp32 either way and rounded once). Frozen
    weights are only ever stored in a lower dtype than the adapters together with an autocast forward
    (core.device.Precision)."""
    from peft import LoraConfig, get_peft_model

    from gesture_cli.models.train_kernels import use_addmm_lora, use_keep_mask_dropout

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets), bias="none")
    peft_model = get_peft_model(backbone.model, config)
    use_keep_mask_dropout(peft_model)
    use_addmm_lora(peft_model)
    for module in peft_model.modules():
        if hasattr(module, "lora_A"):
            module.cast_input_dtype_enabled = False  # read by PEFT's LoraLayer._cast_input_dtype
    peft_model.peft_config["default"].base_model_name_or_path = backbone.info.source if backbone.info.source != "tiny" else backbone.info.name
    backbone.model = peft_model


def build_classifier(
    backbone,
    *,
    num_classes: int,
    method: str = "lora",
    pool: str = "cls",
    targets: Sequence[str] | None = None,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.1,
    seed: int = 0,
) -> ImageClassifier:
    """A classifier whose trainable parameters are exactly those `method` fine-tunes (see module doc).

    Every random initial weight (LoRA A matrices, the head) comes from `seed`, whatever the global RNG holds.
    A transformers backbone trained through (`lora`, `full`) runs its attention as models.train_kernels'
    `gx_sdpa`: the same forward, and on CPU in bf16 the faster fp32 kernel for backward; a DINOv3 one
    applies its rotary embedding through train_kernels' `_PatchRope` (bit for bit the stock result).
    """
    from gesture_cli.models.train_kernels import use_fp32_attention_backward, use_fused_rope

    if method not in METHODS:
        raise UsageError(f"--method '{method}' is not one of {', '.join(METHODS)}")
    for p in backbone.parameters():
        p.requires_grad_(False)
    if method != "head":
        use_fp32_attention_backward(backbone.model)
        use_fused_rope(backbone.model)
    if method == "lora":
        with torch.random.fork_rng(devices=[]):  # LoRA A matrices are drawn from the global RNG: seed them
            torch.manual_seed(seed)
            apply_lora(backbone, targets=resolve_target_modules(backbone, targets), rank=rank, alpha=alpha, dropout=dropout)
    elif method == "full":
        for name, p in backbone.model.named_parameters():
            # mask tokens only serve masked-image pretraining: never used here, and DDP rejects unused parameters
            p.requires_grad_("mask_token" not in name)
    head = build_head(backbone.feature_dim(pool), num_classes, seed=seed).to(backbone.device)
    return ImageClassifier(backbone, head, pool=pool, method=method)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def lora_targets_of(model: ImageClassifier) -> list[str]:
    cfg = getattr(model.backbone.model, "peft_config", {}).get("default")
    return sorted(cfg.target_modules) if cfg is not None else []


# ---- artifacts ----------------------------------------------------------------------------------


def processor_config(backbone) -> dict:
    """A preprocessor_config.json for a backbone: resize to image_size, rescale, normalise like gx."""
    side = backbone.image_size
    return {
        "image_processor_type": PROCESSOR_TYPES.get(backbone.info.family, "ViTImageProcessor"),
        "do_resize": True,
        "size": {"height": side, "width": side},
        "resample": 2,  # bilinear, as Backbone.preprocess
        "do_center_crop": False,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(backbone.info.mean),
        "image_std": list(backbone.info.std),
        "do_convert_rgb": True,
    }


def save_head(path: Path, model: ImageClassifier, *, classes: Sequence[str], extra: dict | None = None) -> None:
    from gesture_cli.core.artifacts import save_tensors

    meta = {
        "classes": list(classes),
        "pool": model.pool,
        "method": model.method,
        "backbone": model.backbone.describe(),
        "head": {"in_features": model.head.in_features, "num_classes": model.head.out_features},
        **(extra or {}),
    }
    save_tensors(path, {"weight": model.head.weight, "bias": model.head.bias}, kind=HEAD_KIND, meta=meta)


def save_backbone_weights(directory: Path, model: ImageClassifier) -> None:
    """`lora`: the PEFT adapter; `full`: a transformers model directory; `head`: nothing."""
    directory = Path(directory)
    inner = model.backbone.model
    if model.method == "lora":
        inner.save_pretrained(directory / "adapter", save_embedding_layers=False)  # no embeddings trained; skips a hub lookup
    elif model.method == "full":
        if hasattr(inner, "save_pretrained"):
            inner.save_pretrained(directory / "backbone")
            (directory / "backbone" / "preprocessor_config.json").write_text(json.dumps(processor_config(model.backbone), indent=2) + "\n")
        else:  # timm / TorchScript: a gx safetensors file of the state dict
            from gesture_cli.core.artifacts import save_tensors

            save_tensors(directory / "backbone.safetensors", dict(inner.state_dict()), kind="backbone-weights", meta={"backbone": model.backbone.describe()})


def save_merged(directory: Path, model: ImageClassifier) -> None:
    """Fold LoRA into a copy of the weights and save a standalone transformers model directory."""
    import copy

    if model.method != "lora":
        raise UsageError("--merge applies to --method lora (full fine-tuning already saves a standalone backbone/)")
    # fp32 on disk whatever the training precision: frozen base weights were held in the compute dtype, and
    # a bf16 merged model would refuse the fp32 pixels that AutoModel users feed it.
    peft_model = copy.deepcopy(model.backbone.model).to("cpu", dtype=torch.float32)
    merged = peft_model.merge_and_unload()
    merged.config.image_size = model.backbone.image_size
    merged.save_pretrained(directory)
    (Path(directory) / "preprocessor_config.json").write_text(json.dumps(processor_config(model.backbone), indent=2) + "\n")


def load_classifier(directory: Path, *, device="cpu", dtype=torch.float32, merge: bool = True) -> tuple[ImageClassifier, dict]:
    """Rebuild a trained classifier from `lora/<backbone>/` files alone; returns (model in eval mode, head meta).

    `merge=True` folds LoRA into the backbone weights (faster inference, same logits up to float rounding).
    """
    from gesture_cli.core.artifacts import load_tensors
    from gesture_cli.models.backbones import build_backbone

    directory = Path(directory)
    tensors, meta = load_tensors(directory / "head.safetensors", kind=HEAD_KIND, device="cpu")
    bb = meta["backbone"]
    method = meta["method"]
    if method == "full" and (directory / "backbone").is_dir():
        backbone = build_backbone(str(directory / "backbone"), device=device, dtype=dtype, image_size=bb["image_size"])
    else:
        backbone = build_backbone(bb["name"] or bb["source"], device=device, dtype=dtype, image_size=bb["image_size"])
    if method == "full" and (directory / "backbone.safetensors").is_file():
        weights, _ = load_tensors(directory / "backbone.safetensors", kind="backbone-weights", device="cpu")
        backbone.model.load_state_dict(weights)
    if method == "lora":
        from peft import PeftModel

        adapter = directory / "adapter"
        if not (adapter / "adapter_config.json").is_file():
            raise ArtifactError(f"{adapter}: no PEFT adapter (adapter_config.json); rerun gx lora-train")
        peft_model = PeftModel.from_pretrained(backbone.model, str(adapter))
        backbone.model = peft_model.merge_and_unload() if merge else peft_model
    backbone.model.to(device=device, dtype=dtype).eval()
    head = nn.Linear(meta["head"]["in_features"], meta["head"]["num_classes"])
    head.load_state_dict({"weight": tensors["weight"], "bias": tensors["bias"]})
    model = ImageClassifier(backbone, head.to(device=device, dtype=dtype), pool=meta["pool"], method=method).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, meta
