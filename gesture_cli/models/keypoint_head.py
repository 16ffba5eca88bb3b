"""Keypoint regression on a gx backbone: backbone tokens -> a head -> 16 (x, y) in crop units.

    model = build_keypoint_model(backbone, num_joints=16, method="lora", head="patch")
    xy = model(backbone.preprocess(images))      # float32 [B, 16, 2], (0, 0) top-left, (1, 1) bottom-right

Two heads, both trained by regressing coordinates directly (no heatmap targets):

  patch   integral regression on the patch tokens: a small MLP scores every patch for every joint,
          a softmax over the patches turns the scores into weights, and the joint lands at the
          weighted mean of the patch centres plus a weighted per-patch offset (so it can reach the
          crop's border). Spatial by construction: works with frozen features and any grid size.
  pooled  an MLP on the pooled features (`cls`, `mean` or `cls+mean`) that outputs the 32 numbers:
          the classic "ViT + regression head" baseline.

Methods, as in `gx lora-train`: `frozen` (head only), `lora` (PEFT adapters on the attention
projections + head; LoRA names and defaults from `gesture_cli.models.lora`), `full` (everything).

Artifacts under keypoint/<backbone>/: `head.safetensors` (head weights; its header holds the head
type and sizes, joint names, method, LoRA arguments and the backbone's describe()), plus `adapter/`
(lora) or `backbone/` (full) as `gesture_cli.models.lora.save_backbone_weights` writes them, so
`load_keypoint_model` rebuilds the model from these files alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from gesture_cli.core.errors import ArtifactError, unknown_choice

HEAD_KIND = "keypoint-head"
HEAD_TYPES = ("patch", "pooled")
METHODS = ("frozen", "lora", "full")


class PatchSoftArgmaxHead(nn.Module):
    """patch tokens [B, N, D] on a gh x gw grid -> joints [B, K, 2] (integral regression)."""

    def __init__(self, dim: int, num_joints: int, hidden: int):
        super().__init__()
        self.num_joints = num_joints
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, num_joints * 3))  # score, dx, dy

    def forward(self, patches: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, n, _ = patches.shape
        gh, gw = grid
        out = self.mlp(self.norm(patches)).float().view(b, n, self.num_joints, 3)
        weights = out[..., 0].softmax(dim=1)  # [B, N, K]: over patches
        ys, xs = torch.meshgrid(torch.arange(gh, device=patches.device), torch.arange(gw, device=patches.device), indexing="ij")
        centres = torch.stack([(xs.flatten() + 0.5) / gw, (ys.flatten() + 0.5) / gh], dim=-1).float()  # [N, 2]
        cell = torch.tensor([1.0 / gw, 1.0 / gh], device=patches.device)
        points = centres[None, :, None, :] + out[..., 1:] * cell  # [B, N, K, 2]: offsets in patch units
        return (weights.unsqueeze(-1) * points).sum(dim=1)  # [B, K, 2]


class PooledRegressionHead(nn.Module):
    """pooled features [B, D] -> joints [B, K, 2]; starts by predicting the crop centre."""

    def __init__(self, dim: int, num_joints: int, hidden: int):
        super().__init__()
        self.num_joints = num_joints
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, num_joints * 2))
        with torch.no_grad():
            self.mlp[-1].bias.fill_(0.5)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(pooled)).float().view(-1, self.num_joints, 2)


class KeypointRegressor(nn.Module):
    """backbone -> head -> joints float32 [B, K, 2] in crop units."""

    def __init__(self, backbone, head: nn.Module, *, head_type: str, pool: str, method: str):
        super().__init__()
        self.backbone = backbone  # gesture_cli.models.backbones.Backbone; PEFT wraps backbone.model for lora
        self.head = head
        self.head_type = head_type
        self.pool = pool
        self.method = method

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        cls, patches, grid = self.backbone.forward_features(pixels)
        dtype = self.head.norm.weight.dtype
        if self.head_type == "patch":
            return self.head(patches.to(dtype), grid)
        return self.head(self.backbone.pool(cls, patches, self.pool).to(dtype))


def build_head(head_type: str, *, dim: int, num_joints: int, hidden: int, seed: int = 0) -> nn.Module:
    """A head with weights drawn from `seed` (whatever the global RNG holds)."""
    if head_type not in HEAD_TYPES:
        raise unknown_choice("head", head_type, HEAD_TYPES)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cls = PatchSoftArgmaxHead if head_type == "patch" else PooledRegressionHead
        return cls(dim, num_joints, hidden)


def build_keypoint_model(
    backbone,
    *,
    num_joints: int,
    method: str = "lora",
    head: str = "patch",
    hidden: int = 256,
    pool: str = "cls+mean",
    targets: Sequence[str] | None = None,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.1,
    seed: int = 0,
) -> KeypointRegressor:
    """A regressor whose trainable parameters are exactly those `method` fine-tunes."""
    from gesture_cli.models.lora import apply_lora, resolve_target_modules

    if method not in METHODS:
        raise unknown_choice("method", method, METHODS)
    for p in backbone.parameters():
        p.requires_grad_(False)
    if method == "lora":
        with torch.random.fork_rng(devices=[]):  # LoRA A matrices come from the global RNG: seed them
            torch.manual_seed(seed)
            apply_lora(backbone, targets=resolve_target_modules(backbone, targets), rank=rank, alpha=alpha, dropout=dropout)
    elif method == "full":
        for name, p in backbone.model.named_parameters():
            p.requires_grad_("mask_token" not in name)  # unused outside masked-image pretraining
    dim = backbone.info.embed_dim if head == "patch" else backbone.feature_dim(pool)
    module = build_head(head, dim=dim, num_joints=num_joints, hidden=hidden, seed=seed).to(backbone.device)
    return KeypointRegressor(backbone, module, head_type=head, pool=pool, method=method)


# ---- artifacts ----------------------------------------------------------------------------------


def save_keypoint_model(directory: Path, model: KeypointRegressor, *, joints: Sequence[str], extra: dict | None = None) -> None:
    """head.safetensors (+ adapter/ or backbone/) into `directory`; see the module docstring."""
    from gesture_cli.core.artifacts import save_tensors
    from gesture_cli.models.lora import save_backbone_weights

    directory = Path(directory)
    save_backbone_weights(directory, model)  # lora: adapter/, full: backbone/, frozen: nothing
    head = model.head
    meta = {
        "joints": list(joints),
        "head": {"type": model.head_type, "dim": head.norm.normalized_shape[0], "hidden": head.mlp[0].out_features,
                 "num_joints": head.num_joints},
        "pool": model.pool,
        "method": model.method,
        "backbone": model.backbone.describe(),
        **(extra or {}),
    }
    save_tensors(directory / "head.safetensors", dict(head.state_dict()), kind=HEAD_KIND, meta=meta)


def read_keypoint_meta(directory: Path) -> dict:
    from gesture_cli.core.artifacts import load_tensors

    _, meta = load_tensors(Path(directory) / "head.safetensors", kind=HEAD_KIND, device="cpu")
    return meta


def load_keypoint_model(directory: Path, *, device="cpu", dtype=torch.float32, precision=None) -> tuple[KeypointRegressor, dict]:
    """Rebuild a trained regressor from keypoint/<backbone>/ files alone: (model in eval mode, head meta).

    `precision` (a core.device.Precision, e.g. from `inference_precision`): once built (in `dtype`, with
    LoRA merged), its weights are stored in the precision's dtype and the forward runs under it."""
    from gesture_cli.core.artifacts import load_tensors
    from gesture_cli.models.backbones import build_backbone

    directory = Path(directory)
    tensors, meta = load_tensors(directory / "head.safetensors", kind=HEAD_KIND, device="cpu")
    bb, method = meta["backbone"], meta["method"]
    if method not in METHODS:
        raise ArtifactError(f"{directory / 'head.safetensors'}: unknown method '{method}'")
    if method == "full":
        if (directory / "backbone").is_dir():
            backbone = build_backbone(str(directory / "backbone"), device=device, dtype=dtype, image_size=bb["image_size"])
        elif (directory / "backbone.safetensors").is_file():  # timm / TorchScript backbones
            backbone = build_backbone(bb["name"] or bb["source"], device=device, dtype=dtype, image_size=bb["image_size"])
            weights, _ = load_tensors(directory / "backbone.safetensors", kind="backbone-weights", device="cpu")
            backbone.model.load_state_dict(weights)
        else:
            raise ArtifactError(f"{directory}: a fully fine-tuned model needs backbone/ or backbone.safetensors; rerun gx keypoint-train")
    else:
        backbone = build_backbone(bb["name"] or bb["source"], device=device, dtype=dtype, image_size=bb["image_size"])
    if method == "lora":
        from peft import PeftModel

        adapter = directory / "adapter"
        if not (adapter / "adapter_config.json").is_file():
            raise ArtifactError(f"{adapter}: no PEFT adapter (adapter_config.json); rerun gx keypoint-train")
        backbone.model = PeftModel.from_pretrained(backbone.model, str(adapter)).merge_and_unload()
    backbone.model.to(device=device, dtype=dtype).eval()
    h = meta["head"]
    if h["type"] not in HEAD_TYPES:
        raise ArtifactError(f"{directory / 'head.safetensors'}: unknown head type '{h['type']}'")
    head = build_head(h["type"], dim=h["dim"], num_joints=h["num_joints"], hidden=h["hidden"])
    try:
        head.load_state_dict(tensors)
    except RuntimeError as exc:
        raise ArtifactError(f"{directory / 'head.safetensors'}: weights do not fit a {h['type']} head ({str(exc).splitlines()[0]})") from None
    model = KeypointRegressor(backbone, head.to(device=device, dtype=dtype), head_type=h["type"], pool=meta["pool"], method=method).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if precision is not None:
        precision.for_inference(model)
    return model, meta

