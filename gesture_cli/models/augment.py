"""Batched image augmentation for hand signs, as tensor ops on the training device.

One affine warp per image (random resized crop + small rotation) through a single `grid_sample`,
then brightness and contrast jitter. There is no horizontal flip by default: a mirrored hand is the
other hand, and in sign languages handedness carries meaning (`hflip=True` turns it on for datasets
where it does not, e.g. HaGRID's gestures).

Random numbers come from `generator` (a CPU torch.Generator) or, without one, from torch's global
CPU generator, which `gesture_cli.train.loop.fit` reseeds before every micro-batch: the same step of
the same run always sees the same augmentation, on any device, resumed or not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    crop_scale: tuple[float, float] = (0.7, 1.0)  # area of the crop as a fraction of the image
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # width / height of the crop
    rotate_deg: float = 10.0  # rotation drawn uniformly from [-rotate_deg, +rotate_deg] degrees
    brightness: float = 0.2  # pixel gain drawn from [1 - b, 1 + b]
    contrast: float = 0.2  # contrast gain around the per-image mean, from [1 - c, 1 + c]
    hflip: bool = False  # mirror half of the images (off: handedness carries meaning in sign languages)


def _uniform(n: int, lo: float, hi: float, generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def augment_batch(images: torch.Tensor, cfg: AugmentConfig = AugmentConfig(), *, generator: torch.Generator | None = None) -> torch.Tensor:
    """images float [B, C, H, W] in [0, 1] -> augmented float [B, C, H, W] in [0, 1], same device.

    The crop keeps the output size: a crop covering `scale` of the area is resampled to H x W
    (bilinear), so the result feeds `Backbone.preprocess` unchanged.
    """
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"augment_batch wants float images [B, C, H, W]; got {images.dtype} {tuple(images.shape)}")
    b = images.shape[0]
    if b == 0:
        return images
    # Crop size in normalised coordinates (1 = the whole side), as torchvision's RandomResizedCrop draws it.
    area = _uniform(b, *cfg.crop_scale, generator)
    log_ratio = _uniform(b, math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]), generator)
    ratio = torch.exp(log_ratio)
    w = torch.sqrt(area * ratio).clamp(max=1.0)
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (1 - w) * (2 * torch.rand(b, generator=generator) - 1)  # centre in [-1, 1] so the crop stays inside
    cy = (1 - h) * (2 * torch.rand(b, generator=generator) - 1)
    angle = torch.deg2rad(_uniform(b, -cfg.rotate_deg, cfg.rotate_deg, generator))
    flip = torch.ones(b)
    if cfg.hflip:
        flip = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
    gain = _uniform(b, 1 - cfg.brightness, 1 + cfg.brightness, generator)
    contrast = _uniform(b, 1 - cfg.contrast, 1 + cfg.contrast, generator)

    # Output pixel (u, v) in [-1, 1]^2 samples input R(angle) . diag(flip * w, h) . (u, v) + (cx, cy).
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [torch.stack([cos * w * flip, -sin * h, cx], dim=1), torch.stack([sin * w * flip, cos * h, cy], dim=1)], dim=1
    )  # [B, 2, 3]
    dev, dtype = images.device, images.dtype
    grid = F.affine_grid(theta.to(dev, dtype), list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * contrast.to(dev, dtype).view(b, 1, 1, 1) + mean
    out = out * gain.to(dev, dtype).view(b, 1, 1, 1)
    return out.clamp_(0.0, 1.0)


def to_float_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W] / [B, H, W, 3] / [B, C, H, W] -> float [B, C, H, W] in [0, 1], on the same device."""
    x = images
    if x.ndim == 3:
        x = x.unsqueeze(1)
    elif x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.permute(0, 3, 1, 2)
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float()
