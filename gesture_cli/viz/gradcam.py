"""Where a fine-tuned classifier looks: Grad-CAM, Grad-CAM++ and attention maps, written by hand.

The `gx gradcam` step (classifiers, inputs, RunDir, strips) is `gesture_cli.tasks.gradcam`; here
`explain_images` computes the maps of a batch and `render_strip` draws them.

Grad-CAM (Selvaraju et al.) on a ViT: the "feature map" is the output of the last transformer block
(its input when the head reads only the CLS token: the last block's patch outputs then get no gradient),
patch tokens only (CLS and register tokens, `info.num_prefix_tokens` of them, removed) laid out on the
backbone's patch grid (gh, gw). Channel weights are the patch-mean of d logit[target] / d tokens
(Grad-CAM) or the Grad-CAM++ weighting (Chattopadhay et al., with the usual closed form for an
exponential score); map = ReLU(sum_c w_c A_c), upsampled bilinearly to the image, normalised to [0, 1].

Attention: last-layer CLS -> patch attention per head (and their mean), and attention rollout (Abnar &
Zuidema 2020: per layer, mean over heads + identity, rows renormalised, multiplied through the
layers; the CLS row over patches). A backbone without CLS (I-JEPA) has no CLS row: the maps are the
mean attention each patch *receives* (column mean over queries) instead, and `attention_kind` says so.
The attention probabilities need eager attention; the model is switched to it for that call only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch  # this module is imported lazily, by `gx gradcam` (tasks/gradcam.py) only

from gesture_cli.core.errors import ModelError, unknown_choice

METHODS = ("gradcam", "gradcam++")


# ---- the classifier as one torch module ---------------------------------------------------------


class ProbeClassifier(torch.nn.Module):
    """A `gx probe` classifier in torch: backbone -> pooled features -> standardise -> Linear -> logits.

    The backbone runs in the dtype it was built in, as feature extraction runs it; the standardisation and
    the head stay fp32 (features minus a mean in bf16 would lose most of their digits), so this module is
    never wrapped by a Precision."""

    def __init__(self, backbone, probe, *, pool: str):
        super().__init__()
        self.backbone = backbone
        self.pool = pool
        dev, dt = backbone.device, torch.float32
        self.register_buffer("mean", torch.as_tensor(probe.mean, dtype=dt, device=dev))
        self.register_buffer("scale", torch.as_tensor(probe.scale, dtype=dt, device=dev))
        self.head = torch.nn.Linear(probe.feature_dim, probe.num_classes).to(dev)
        with torch.no_grad():
            self.head.weight.copy_(torch.as_tensor(probe.weight))
            self.head.bias.copy_(torch.as_tensor(probe.bias))

    def forward(self, pixels):
        cls, patches, _ = self.backbone.forward_features(pixels)
        feats = self.backbone.pool(cls, patches, self.pool).float()
        return self.head((feats - self.mean) / self.scale)


@dataclass
class Explained:
    """A loaded classifier and what the maps need from it."""

    source: str  # lora | probe
    name: str  # backbone folder name
    model: object  # nn.Module: pixels [B, 3, S, S] -> logits [B, K]; has .backbone
    classes: list[str]
    image_size: int
    dataset: str | None  # the dataset spec it was trained on
    seed: int
    precision: object  # the core.device.Precision it runs in


# ---- maps ---------------------------------------------------------------------------------------


def last_block(model):
    """The last transformer block: the last entry of the longest ModuleList of the HF model."""
    lists = [m for _, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m)]
    if not lists:
        raise ModelError(f"{type(model).__name__}: no list of transformer blocks found; Grad-CAM needs a ViT backbone")
    return max(lists, key=len)[-1]


def _check_hf(backbone) -> None:
    from gesture_cli.models.backbones import HFBackbone

    if not isinstance(backbone, HFBackbone):
        raise ModelError(f"backbone '{backbone.info.name}': Grad-CAM and attention maps need a transformers ViT backbone (not timm / TorchScript)")


def _normalise(maps, size: tuple[int, int]):
    """[B, gh, gw] -> [B, H, W] bilinear, each map scaled to [0, 1] (all zeros when constant)."""
    up = torch.nn.functional.interpolate(maps[:, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    lo = up.flatten(1).min(1).values.view(-1, 1, 1)
    hi = up.flatten(1).max(1).values.view(-1, 1, 1)
    span = hi - lo
    return torch.where(span > 1e-12, (up - lo) / span.clamp_min(1e-12), torch.zeros_like(up))


def gradcam_maps(model, pixels, *, targets=None, method: str = "gradcam"):
    """(maps float32 [B, H, W] in [0, 1], logits [B, K]) of pixels [B, 3, H, W] for classes `targets` [B] (None = predicted).

    Any H, W that are multiples of the patch size: the grid is (H / patch, W / patch). In bf16/fp16 the hooked
    tokens and their gradients are in that dtype; the weights and the map are computed in fp32."""
    if method not in METHODS:
        raise unknown_choice("--method", method, METHODS)
    backbone = model.backbone
    _check_hf(backbone)
    info = backbone.info
    gh, gw = pixels.shape[-2] // info.patch_size, pixels.shape[-1] // info.patch_size
    store = {}

    def hook(_module, _inputs, output):
        store["tokens"] = output[0] if isinstance(output, tuple) else output  # [B, prefix + gh*gw, D]

    def pre_hook(_module, args, kwargs):
        store["tokens"] = args[0] if args else kwargs["hidden_states"]  # [B, prefix + gh*gw, D]

    block = last_block(backbone.model)
    # A CLS-pooled head never reads the last block's patch outputs: their gradient is exactly zero. The
    # patch tokens entering the last block reach the CLS through its attention, so they are used then.
    cls_only = info.has_cls and getattr(model, "pool", "mean") == "cls"
    handle = block.register_forward_pre_hook(pre_hook, with_kwargs=True) if cls_only else block.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            x = pixels.detach().clone().requires_grad_(True)  # frozen weights: the graph must start somewhere
            logits = model(x)
            tgt = logits.argmax(-1) if targets is None else torch.as_tensor(targets, device=logits.device).view(-1)
            score = logits.gather(1, tgt.view(-1, 1)).sum()
            (grads,) = torch.autograd.grad(score, store["tokens"])
    finally:
        handle.remove()
    prefix = info.num_prefix_tokens
    acts = store["tokens"].detach()[:, prefix:].float()  # [B, gh*gw, D] patch tokens, CLS / registers removed
    g = grads[:, prefix:].float()  # [B, gh*gw, D]
    if acts.shape[1] != gh * gw:
        raise ModelError(f"backbone '{info.name}': {acts.shape[1]} patch tokens after {prefix} prefix tokens; expected a {gh}x{gw} grid")
    if method == "gradcam":
        weights = g.mean(1)  # [B, D]
    else:  # Grad-CAM++ with an exponential score: alpha = g^2 / (2 g^2 + sum_ij A * g^3)
        g2, g3 = g.pow(2), g.pow(3)
        denom = 2 * g2 + acts.sum(1, keepdim=True) * g3
        alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
        weights = (alpha * torch.relu(g)).sum(1)  # [B, D]
    cam = torch.relu((acts * weights[:, None]).sum(-1)).view(-1, gh, gw)
    return _normalise(cam, pixels.shape[-2:]).cpu(), logits.detach().cpu()


def attention_maps(backbone, pixels) -> dict:
    """Attention of the backbone on pixels [B, 3, H, W]: {"cls_heads" [B, heads, H, W], "cls_mean" [B, H, W], "rollout" [B, H, W], "kind"}.

    "kind" is "cls" (CLS row over patches) or "received" (no CLS: mean attention each patch receives).
    """
    _check_hf(backbone)
    info, model = backbone.info, backbone.model
    gh, gw = pixels.shape[-2] // info.patch_size, pixels.shape[-1] // info.patch_size
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")  # sdpa does not return attention probabilities
    try:
        with torch.no_grad():
            other_size = tuple(pixels.shape[-2:]) != (backbone.image_size, backbone.image_size)
            kwargs = {"interpolate_pos_encoding": True} if info.family in ("vit", "ijepa") and other_size else {}
            out = model(pixel_values=pixels.to(backbone.device, backbone.dtype), output_attentions=True, **kwargs)
    finally:
        model.set_attn_implementation(previous)
    atts = [a.float() for a in out.attentions]  # per layer [B, H, T, T], T = prefix + gh*gw
    prefix = info.num_prefix_tokens
    last = atts[-1]
    eye = torch.eye(last.shape[-1], device=last.device)
    rollout = eye.expand_as(last[:, 0]).clone()
    for a in atts:
        a = a.mean(1) + eye  # heads averaged, plus the residual path
        rollout = (a / a.sum(-1, keepdim=True)) @ rollout
    if info.has_cls:
        heads, roll, kind = last[:, :, 0, prefix:], rollout[:, 0, prefix:], "cls"
    else:
        heads, roll, kind = last[:, :, :, prefix:].mean(2), rollout[:, :, prefix:].mean(1), "received"
    b, h = heads.shape[:2]
    size = tuple(pixels.shape[-2:])
    return {
        "cls_heads": _normalise(heads.reshape(b * h, gh, gw), size).view(b, h, *size).cpu(),
        "cls_mean": _normalise(heads.mean(1).view(b, gh, gw), size).cpu(),
        "rollout": _normalise(roll.reshape(b, gh, gw), size).cpu(),
        "kind": kind,
    }


def deletion_drop(model, pixels, maps, targets, *, fraction: float = 0.1, seed: int = 0) -> dict:
    """How faithful the maps are: the fall in log p(target) when the patches they mark are greyed out.

    The top `fraction` of patches by mean map value (at least one) are replaced by the image's mean
    colour, and, for comparison, the same number of random patches (seeded). A faithful map's patches
    carry the evidence, so removing them costs more than removing random ones (the deletion metric of
    Petsiuk et al. 2018, at one point of its curve). Returns per-image drops [B] and their means.
    pixels [B, 3, H, W] normalised; maps [B, H, W] (any non-negative scale); targets [B].
    """
    p = model.backbone.info.patch_size
    b, _, h, w = pixels.shape
    gh, gw = h // p, w // p
    k = max(1, int(round(fraction * gh * gw)))
    score = torch.as_tensor(np.asarray(maps), dtype=torch.float32)[:, : gh * p, : gw * p].reshape(b, gh, p, gw, p).mean((2, 4)).reshape(b, -1)
    top = score.argsort(dim=1, descending=True)[:, :k]
    gen = torch.Generator().manual_seed(seed)
    rand = torch.stack([torch.randperm(gh * gw, generator=gen)[:k] for _ in range(b)])
    tgt = torch.as_tensor(targets, device=pixels.device).view(-1, 1).long()

    def grey(patches: torch.Tensor) -> torch.Tensor:
        keep = torch.ones(b, gh * gw, device=pixels.device)
        keep.scatter_(1, patches.to(pixels.device), 0.0)
        keep = keep.view(b, 1, gh, 1, gw, 1).expand(b, 1, gh, p, gw, p).reshape(b, 1, gh * p, gw * p)
        keep = torch.nn.functional.pad(keep, (0, w - gw * p, 0, h - gh * p), value=1.0).to(pixels.dtype)
        return pixels * keep + pixels.mean((2, 3), keepdim=True) * (1 - keep)

    with torch.no_grad():
        logp = lambda x: torch.log_softmax(model(x).float(), -1).gather(1, tgt)[:, 0]  # noqa: E731
        base = logp(pixels)
        drop_top = (base - logp(grey(top))).cpu().numpy()
        drop_random = (base - logp(grey(rand))).cpu().numpy()
    return {"patches": k, "of": gh * gw, "drop_top": drop_top, "drop_random": drop_random,
            "mean_drop_top": float(drop_top.mean()), "mean_drop_random": float(drop_random.mean())}


def explain_images(explained: Explained, images, *, method: str = "gradcam", targets=None) -> dict:
    """Maps of uint8 images [B, S, S(, 3)] at the classifier's size: gradcam, attention, predictions, the
    class each map explains (`target`: `targets`, else the prediction) and the deletion check of the maps (`deletion_drop`)."""
    from gesture_cli.models.augment import to_float_images

    model = explained.model
    pixels = model.backbone.preprocess(to_float_images(torch.from_numpy(np.ascontiguousarray(images)).to(model.backbone.device)))
    cam, logits = gradcam_maps(model, pixels, targets=targets, method=method)
    explained.precision.check_finite(logits, what=f"the {explained.source} classifier's logits")
    explained.precision.check_finite(cam, what=f"the {explained.source} Grad-CAM maps")
    att = attention_maps(model.backbone, pixels)
    probs = torch.softmax(logits, -1)
    pred = probs.argmax(-1)
    target = pred if targets is None else torch.as_tensor(targets).view(-1)  # the class each map explains
    return {"gradcam": cam.numpy(), **{k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in att.items()},
            "pred": pred.numpy(), "prob": probs.max(-1).values.numpy(), "target": target.numpy(),
            "deletion": deletion_drop(model, pixels, cam, target)}


# ---- pictures -----------------------------------------------------------------------------------


def _overlay(ax, image: np.ndarray, heat: np.ndarray | None, title: str) -> None:
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    if heat is not None:
        ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def render_strip(path: Path, image: np.ndarray, rows: list[dict], *, title: str) -> Path:
    """One PNG: per row (a classifier) input | Grad-CAM overlay | attention rollout overlay."""
    from gesture_cli.viz.plots import _figure, _save

    fig = _figure(7.5, 2.6 * len(rows) + 0.3)
    for r, row in enumerate(rows):
        axes = [fig.add_subplot(len(rows), 3, 3 * r + c + 1) for c in range(3)]
        _overlay(axes[0], image, None, f"{row['label']}: input")
        _overlay(axes[1], image, row["gradcam"], f"{row['method']} (class {row['target']})")
        _overlay(axes[2], image, row["rollout"], f"attention rollout ({row['kind']})")
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)
