"""Segmentation heads on a frozen backbone's patch tokens, and the model that joins the two.

    head = build_seg_head("linear", embed_dim=384, num_classes=26)
    model = Segmenter(backbone, head)                 # backbone frozen, kept in eval mode
    out = model(masks=masks, images=images)           # {"loss": ..., "pixel_acc": ...}
    probs = model.scores(images=images, size=(H, W))  # [B, K, H, W] per-class scores

Heads take patch tokens [B, N, D] with their grid (gh, gw), never pixels, so they train the same way on
tokens computed on the fly and on tokens cached by gx:

  linear        the DINOv2 / DINOv3 linear-segmentation protocol: BatchNorm over the D channels of the
                token map, a 1x1 convolution to K classes, bilinear upsampling of the logits to the
                label size, cross-entropy with ignore index 255.
  mask2former   transformers' Mask2FormerForUniversalSegmentation (small config) with its Swin encoder
                replaced by a simple feature pyramid over the token map (1x1 projection, then 4x and 2x
                transposed convolutions, identity and 2x pooling: strides 4..32 for a patch-16 ViT), the
                multi-scale deformable pixel decoder, the masked-attention transformer decoder, and its
                own Hungarian-matched mask + class loss. `train_only="class_embed"` trains only the
                class predictor (the head-only recipe of the original: a Linear of hidden_dim + 1 inputs);
                `all` trains the whole head. Its semantic scores are
                softmax(class logits)[:, :, :K]^T x sigmoid(mask logits), as in the paper.

BatchNorm running statistics are registered as frozen parameters (not buffers), so the shared
training loop's checkpoints, which hold parameters by name, carry them to best/, last/ and resume.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gesture_cli.core.errors import ArtifactError, UsageError, unknown_choice

HEADS = ("linear", "mask2former")
TRAIN_ONLY = ("all", "class_embed")
SEG_HEAD_KIND = "segment-head"
IGNORE_INDEX = 255


class StatsBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose running mean / variance are frozen nn.Parameters (see the module docstring)."""

    def __init__(self, num_features: int, **kwargs):
        super().__init__(num_features, **kwargs)
        mean, var = self._buffers.pop("running_mean"), self._buffers.pop("running_var")
        self.running_mean = nn.Parameter(mean, requires_grad=False)
        self.running_var = nn.Parameter(var, requires_grad=False)
        # The batch counter is only read when momentum is None (cumulative averages); with a fixed
        # momentum it is dead state that a checkpoint would not carry, so there is none.
        self.num_batches_tracked = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Skip _NormBase's hook, which inserts a `num_batches_tracked` entry into old-style state dicts.
        nn.Module._load_from_state_dict(self, state_dict, prefix, *args, **kwargs)


def tokens_to_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """[B, gh*gw, D] -> [B, D, gh, gw]."""
    b, n, d = tokens.shape
    gh, gw = grid
    if n != gh * gw:
        raise ValueError(f"{n} tokens do not fill a {gh}x{gw} grid")
    return tokens.transpose(1, 2).reshape(b, d, gh, gw)


class LinearSegHead(nn.Module):
    """BatchNorm + 1x1 conv on the token map; logits upsampled bilinearly (DINOv2 linear protocol)."""

    kind = "linear"

    def __init__(self, embed_dim: int, num_classes: int):
        super().__init__()
        self.args = {}
        self.num_classes = num_classes
        self.bn = StatsBatchNorm2d(embed_dim)
        self.conv = nn.Conv2d(embed_dim, num_classes, kernel_size=1)
        nn.init.normal_(self.conv.weight, std=0.01)
        nn.init.zeros_(self.conv.bias)

    def logits(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """[B, K, gh, gw] at the token grid."""
        x = tokens_to_map(tokens.to(self.conv.weight.dtype), grid)
        return self.conv(self.bn(x))

    def loss(self, tokens: torch.Tensor, grid: tuple[int, int], masks: torch.Tensor) -> dict:
        logits = F.interpolate(self.logits(tokens, grid), size=masks.shape[-2:], mode="bilinear", align_corners=False).float()
        target = masks.long()
        loss = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
        valid = target != IGNORE_INDEX
        acc = ((logits.argmax(1) == target) & valid).sum() / valid.sum().clamp(min=1)
        return {"loss": loss, "pixel_acc": acc.detach()}

    def scores(self, tokens: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
        """Class probabilities [B, K, H, W] (softmax of the upsampled logits)."""
        logits = F.interpolate(self.logits(tokens, grid).float(), size=size, mode="bilinear", align_corners=False)
        return logits.softmax(1)

    def trainable_parameters(self, train_only: str = "all") -> list[nn.Parameter]:
        if train_only != "all":
            raise UsageError(f"--train-only {train_only} applies to --head mask2former; the linear head always trains whole")
        return [p for n, p in self.named_parameters() if not n.startswith("bn.running_")]

    def state_parameters(self) -> list[nn.Parameter]:
        """Parameters that are not trained by gradients but must be checkpointed (BatchNorm statistics)."""
        return [self.bn.running_mean, self.bn.running_var]


class _TokenPyramid(nn.Module):
    """A token map [B, D, gh, gw] -> four feature maps at 4x, 2x, 1x and 1/2 the grid (ViTDet-style simple
    pyramid), with `channels` as Mask2Former's pixel decoder expects from its backbone."""

    def __init__(self, embed_dim: int, width: int, channels: list[int]):
        super().__init__()
        self.channels = list(channels)
        self.proj = nn.Sequential(nn.Conv2d(embed_dim, width, kernel_size=1), nn.GroupNorm(1, width))
        self.up4 = nn.Sequential(nn.ConvTranspose2d(width, width, 2, stride=2), nn.GroupNorm(1, width), nn.GELU(),
                                 nn.ConvTranspose2d(width, channels[0], 2, stride=2))
        self.up2 = nn.ConvTranspose2d(width, channels[1], 2, stride=2)
        self.same = nn.Conv2d(width, channels[2], kernel_size=1)
        self.down = nn.Sequential(nn.MaxPool2d(2, ceil_mode=True), nn.Conv2d(width, channels[3], kernel_size=1))

    def forward(self, x: torch.Tensor):
        from transformers.modeling_outputs import BackboneOutput

        x = self.proj(x)
        return BackboneOutput(feature_maps=(self.up4(x), self.up2(x), self.same(x), self.down(x)))


class Mask2FormerSegHead(nn.Module):
    """transformers' Mask2Former on the token map (see the module docstring)."""

    kind = "mask2former"
    keep_fp32 = True  # runs with autocast off (see _fp32): Precision.store_frozen leaves its frozen parts fp32

    def __init__(self, embed_dim: int, num_classes: int, *, hidden_dim: int = 256, queries: int = 100, encoder_layers: int = 3,
                 decoder_layers: int = 6, points: int = 12544):
        super().__init__()
        from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

        if hidden_dim % 32:
            raise UsageError(f"--m2f-dim must be a multiple of 32 (GroupNorm groups); got {hidden_dim}")
        if decoder_layers < 2 or encoder_layers < 1 or queries < 1:
            raise UsageError("mask2former needs at least 1 encoder layer, 2 decoder layers and 1 query")
        self.args = {"hidden_dim": hidden_dim, "queries": queries, "encoder_layers": encoder_layers, "decoder_layers": decoder_layers,
                     "points": points}
        self.num_classes = num_classes
        c = max(16, hidden_dim // 8)
        channels = [c, 2 * c, 4 * c, 8 * c]
        # The Swin config only fixes the channel widths the pixel decoder is built for; its encoder is
        # replaced by the token pyramid right after construction.
        swin = SwinConfig(embed_dim=c, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], out_features=["stage1", "stage2", "stage3", "stage4"])
        heads = max(1, hidden_dim // 32)
        config = Mask2FormerConfig(
            backbone_config=swin, feature_size=hidden_dim, mask_feature_size=hidden_dim, hidden_dim=hidden_dim,
            encoder_feedforward_dim=4 * hidden_dim, dim_feedforward=4 * hidden_dim, encoder_layers=encoder_layers,
            decoder_layers=decoder_layers, num_attention_heads=heads, num_queries=queries, num_labels=num_classes,
            train_num_points=points, ignore_value=IGNORE_INDEX,
        )
        self.model = Mask2FormerForUniversalSegmentation(config)
        self.model.model.pixel_level_module.encoder = _TokenPyramid(embed_dim, hidden_dim, channels)

    @contextlib.contextmanager
    def _fp32(self, device: torch.device):
        # Hungarian matching hands the cost matrix to scipy, which cannot read bf16: the head runs in fp32
        # (it is small next to the backbone, which keeps its own dtype).
        with torch.autocast(device_type=device.type, enabled=False):
            yield

    def _forward(self, tokens, grid, **labels):
        x = tokens_to_map(tokens.float(), grid)
        with self._fp32(x.device):
            return self.model(pixel_values=x, **labels)

    def loss(self, tokens: torch.Tensor, grid: tuple[int, int], masks: torch.Tensor) -> dict:
        mask_labels, class_labels = [], []
        target = masks.long()
        for m in target:
            present = torch.unique(m)
            present = present[present != IGNORE_INDEX]
            class_labels.append(present)
            mask_labels.append((m[None] == present[:, None, None]).float())
        out = self._forward(tokens, grid, mask_labels=mask_labels, class_labels=class_labels)
        with torch.no_grad():
            pred = self._semantic(out, masks.shape[-2:]).argmax(1)
            valid = target != IGNORE_INDEX
            acc = ((pred == target) & valid).sum() / valid.sum().clamp(min=1)
        return {"loss": out.loss, "pixel_acc": acc}

    def _semantic(self, out, size) -> torch.Tensor:
        cls = out.class_queries_logits.float().softmax(-1)[..., :-1]  # [B, Q, K], "no object" dropped
        masks = out.masks_queries_logits.float()
        masks = F.interpolate(masks, size=size, mode="bilinear", align_corners=False).sigmoid()  # [B, Q, H, W]
        return torch.einsum("bqk,bqhw->bkhw", cls, masks)

    def scores(self, tokens: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
        return self._semantic(self._forward(tokens, grid), size)

    def trainable_parameters(self, train_only: str = "all") -> list[nn.Parameter]:
        if train_only == "class_embed":
            return list(self.model.class_predictor.parameters())
        if train_only == "all":
            return list(self.parameters())
        raise unknown_choice("--train-only", train_only, TRAIN_ONLY)

    def state_parameters(self) -> list[nn.Parameter]:
        return []


def build_seg_head(kind: str, *, embed_dim: int, num_classes: int, **args) -> nn.Module:
    """A head by name; `args` are the head's constructor arguments (`head.args` of a built one)."""
    if kind == "linear":
        if args:
            raise UsageError(f"the linear head takes no options; got {', '.join(sorted(args))}")
        return LinearSegHead(embed_dim, num_classes)
    if kind == "mask2former":
        return Mask2FormerSegHead(embed_dim, num_classes, **args)
    raise unknown_choice("head", kind, HEADS)


class Segmenter(nn.Module):
    """A frozen backbone (or None when training on cached tokens) and a segmentation head."""

    autocast_methods = ("scores",)  # entry points besides forward that Precision.wrap runs under autocast

    def __init__(self, backbone, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def train(self, mode: bool = True):
        super().train(mode)
        if self.backbone is not None:
            self.backbone.eval()  # frozen: no dropout, no statistics updates, ever
        return self

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """uint8 / float images -> (patch tokens [B, N, D] float32, grid)."""
        if self.backbone is None:
            raise RuntimeError("this Segmenter was built without a backbone: pass tokens=")
        pixels = self.backbone.preprocess(images)
        _, patches, grid = self.backbone.forward_features(pixels)
        return patches.float(), grid

    def forward(self, *, masks: torch.Tensor, images: torch.Tensor | None = None, tokens: torch.Tensor | None = None,
                grid: tuple[int, int] | None = None) -> dict:
        """Training loss (and pixel accuracy) for a batch of label masks [B, H, W] and images or tokens."""
        if tokens is None:
            tokens, grid = self.encode(images)
        return self.head.loss(tokens, grid, masks)

    @torch.no_grad()
    def scores(self, *, size: tuple[int, int], images: torch.Tensor | None = None, tokens: torch.Tensor | None = None,
               grid: tuple[int, int] | None = None) -> torch.Tensor:
        if tokens is None:
            tokens, grid = self.encode(images)
        return self.head.scores(tokens, grid, size)


def count_segmenter_parameters(model: Segmenter) -> tuple[int, int]:
    """(trainable, total): parameters with requires_grad, and every parameter of backbone and head
    (BatchNorm statistics, held as frozen parameters, are not counted)."""
    stats = {id(p) for p in model.head.state_parameters()}
    head = [p for p in model.head.parameters() if id(p) not in stats]
    backbone = list(model.backbone.parameters()) if model.backbone is not None else []
    return sum(p.numel() for p in head if p.requires_grad), sum(p.numel() for p in head + backbone)


def freeze_for(head: nn.Module, train_only: str) -> list[nn.Parameter]:
    """Set requires_grad on the head for `train_only`; returns what the optimizer gets (+ BN statistics,
    which have no gradient but travel with the checkpoints)."""
    chosen = head.trainable_parameters(train_only)
    ids = {id(p) for p in chosen}
    for p in head.parameters():
        p.requires_grad_(id(p) in ids)
    return chosen + head.state_parameters()


def save_seg_head(path: Path, head: nn.Module, *, meta: dict) -> None:
    from gesture_cli.core.artifacts import save_tensors

    state = {k: v for k, v in head.state_dict().items()}
    save_tensors(path, state, kind=SEG_HEAD_KIND, meta={"head": head.kind, "head_args": head.args, "num_classes": head.num_classes, **meta})


def load_seg_head(path: Path, *, device="cpu") -> tuple[nn.Module, dict]:
    """(head in eval mode, its header: classes, backbone describe(), class map, config, ...)."""
    from gesture_cli.core.artifacts import load_tensors

    tensors, meta = load_tensors(path, kind=SEG_HEAD_KIND)
    try:
        head = build_seg_head(meta["head"], embed_dim=int(meta["embed_dim"]), num_classes=int(meta["num_classes"]), **meta.get("head_args", {}))
        head.load_state_dict(tensors, strict=True)
    except (KeyError, RuntimeError, TypeError) as exc:
        first = str(exc).splitlines()[0]
        raise ArtifactError(f"{path}: cannot rebuild the segmentation head ({first}); rerun gx segment-train") from None
    return head.to(device).eval(), meta


__all__ = [
    "HEADS",
    "TRAIN_ONLY",
    "LinearSegHead",
    "Mask2FormerSegHead",
    "Segmenter",
    "build_seg_head",
    "count_segmenter_parameters",
    "freeze_for",
    "load_seg_head",
    "save_seg_head",
]
