"""The backbone registry: short names (`dinov2-small`, `tiny-vit`, ...) -> where each model comes from.

    entry = REGISTRY["dinov2-small"]      # BackboneEntry: family 'dinov2', source 'facebook/dinov2-small'
    model = REGISTRY["tiny-vit"].build()  # tiny-*: an untrained model from a small config (imports transformers)

`register_backbone` fills `REGISTRY` when this module is imported. No torch here: `gx download NAME`
and data/hub.py read the registry without loading a model; models/backbones.py builds from it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

FAMILIES = ("dinov2", "dinov3", "ijepa", "vit", "sapiens", "timm")


@dataclass(frozen=True)
class BackboneEntry:
    """One registry row. `build` is set for tiny entries (builds the random-init model offline)."""

    name: str
    family: str
    source: str  # hub id, or "tiny"
    gated: bool = False
    description: str = ""
    embed_dim: int | None = None  # needed where the source has no config to read it from (TorchScript)
    patch_size: int | None = None
    image_size: int | None = None  # default input side when the source does not give one
    build: Callable[[], nn.Module] | None = None


REGISTRY: dict[str, BackboneEntry] = {}


def register_backbone(name: str, **entry_fields):
    """Register `name` now; used as a decorator it also sets the entry's `build` function.

    `register_backbone("x", family=..., source="owner/repo")` registers a hub-backed entry;
    `@register_backbone("tiny-x", family=..., source="tiny")` on a zero-argument function that returns
    an untrained model registers a tiny offline entry.
    """
    if name in REGISTRY:
        raise ValueError(f"backbone '{name}' is registered twice")
    entry = BackboneEntry(name=name, **entry_fields)
    if entry.family not in FAMILIES:
        raise ValueError(f"backbone '{name}': family '{entry.family}' is not one of {FAMILIES}")
    REGISTRY[name] = entry

    def decorator(fn):
        REGISTRY[name] = dataclasses.replace(REGISTRY[name], build=fn)
        return fn

    return decorator


def list_backbones() -> list[BackboneEntry]:
    return sorted(REGISTRY.values(), key=lambda e: e.name)


# ----------------------------------------------------------------------------------------------
# Registry: hub-backed entries
# ----------------------------------------------------------------------------------------------

for _size in ("vits16", "vits16plus", "vitb16", "vitl16", "vith16plus", "vit7b16"):
    register_backbone(
        f"dinov3-{_size}",
        family="dinov3",
        source=f"facebook/dinov3-{_size}-pretrain-lvd1689m",
        gated=True,
        description="DINOv3 (LVD-1689M), patch 16, 1 CLS + 4 registers, RoPE; gated: needs HF_TOKEN",
    )
for _size in ("small", "base", "large", "giant"):
    register_backbone(
        f"dinov2-{_size}",
        family="dinov2",
        source=f"facebook/dinov2-{_size}",
        description="DINOv2, patch 14, 1 CLS",
    )
    register_backbone(
        f"dinov2-{_size}-reg",
        family="dinov2",
        source=f"facebook/dinov2-with-registers-{_size}",
        description="DINOv2 with 4 register tokens, patch 14",
    )
register_backbone(
    "ijepa-vith14",
    family="ijepa",
    source="facebook/ijepa_vith14_1k",
    description="I-JEPA ViT-H/14 (ImageNet-1k); no CLS token: mean-pooled",
)
register_backbone(
    "vit-base", family="vit", source="google/vit-base-patch16-224", description="supervised ViT-B/16 (ImageNet-21k+1k)"
)
# Sapiens pretrain ViTs ship as TorchScript files; there is no config to read the width from.
for _size, _dim in (("0.3b", 1024), ("0.6b", 1280), ("1b", 1536), ("2b", 1920)):
    register_backbone(
        f"sapiens-{_size}",
        family="sapiens",
        source=f"facebook/sapiens-pretrain-{_size}-torchscript",
        embed_dim=_dim,
        patch_size=16,
        image_size=1024,
        description="Sapiens human-centric ViT (TorchScript), patch 16, feature map output, no CLS",
    )


# ----------------------------------------------------------------------------------------------
# Registry: tiny offline entries (random init, fixed seed). Same HF classes as the real models.
# ----------------------------------------------------------------------------------------------

_TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=64, patch_size=8)  # 8x8 grid


@register_backbone(
    "tiny-dinov2", family="dinov2", source="tiny", description="random-init Dinov2Model, D=64, 1 CLS (tests, demo)"
)
def _tiny_dinov2() -> nn.Module:
    from transformers import Dinov2Config, Dinov2Model

    return Dinov2Model(Dinov2Config(**_TINY, mlp_ratio=4))


@register_backbone(
    "tiny-dinov3", family="dinov3", source="tiny", description="random-init DINOv3ViTModel, D=64, 1 CLS + 4 registers, RoPE"
)
def _tiny_dinov3() -> nn.Module:
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    return DINOv3ViTModel(DINOv3ViTConfig(**_TINY, intermediate_size=256, num_register_tokens=4))


@register_backbone("tiny-vit", family="vit", source="tiny", description="random-init ViTModel, D=64, 1 CLS")
def _tiny_vit() -> nn.Module:
    from transformers import ViTConfig, ViTModel

    return ViTModel(ViTConfig(**_TINY, intermediate_size=256), add_pooling_layer=False)


@register_backbone("tiny-ijepa", family="ijepa", source="tiny", description="random-init IJepaModel, D=64, no CLS")
def _tiny_ijepa() -> nn.Module:
    from transformers import IJepaConfig, IJepaModel

    return IJepaModel(IJepaConfig(**_TINY, intermediate_size=256))


__all__ = ["FAMILIES", "REGISTRY", "BackboneEntry", "list_backbones", "register_backbone"]
