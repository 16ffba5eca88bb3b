"""Vision backbones behind one interface: `build_backbone(spec)` -> `Backbone`.

Every backbone, whatever its source (a registry name, a Hugging Face hub id, a local directory,
`timm:NAME`, or a TorchScript `.pt`/`.pt2` file), answers the same calls:

    bb = build_backbone("dinov2-small", image_size=224)
    pixels = bb.preprocess(images)                     # uint8/float images -> [B, 3, S, S] normalised
    cls, patches, (gh, gw) = bb.forward_features(pixels)  # [B, D] | None, [B, gh*gw, D]
    feats = bb.pool(cls, patches, "cls+mean")          # [B, 2D]

Register tokens and CLS are stripped from `patches`, so callers never need to know which family
they hold. The registry (models/backbone_registry.py, no torch) maps short names to sources; the
`tiny-*` entries are random-init models built offline from small configs with a fixed seed, so tests
and `gx demo` exercise the real Hugging Face code paths without a download.

transformers and timm are imported inside functions: importing this module costs only torch.
"""

from __future__ import annotations

import abc
import inspect
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gesture_cli.core.errors import DataError, ModelError, UsageError, unknown_choice
from gesture_cli.core.home import models_dir, offline
from gesture_cli.models.backbone_ref import (
    HF_ALLOW_PATTERNS,
    TORCHSCRIPT_ALLOW_PATTERNS,
    TORCHSCRIPT_SUFFIXES,
    BackboneRef,
    parse_backbone_ref,
)
from gesture_cli.models.backbone_registry import REGISTRY, BackboneEntry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
POOL_KINDS = ("cls", "mean", "cls+mean")
TINY_SEED = 1234  # fixed so tiny weights are identical in every process

# Hugging Face `config.model_type` -> gx family. The families differ only in token layout and
# position embeddings; everything else goes through AutoModel.
HF_MODEL_TYPES = {
    "dinov2": "dinov2",
    "dinov2_with_registers": "dinov2",
    "dinov3_vit": "dinov3",
    "ijepa": "ijepa",
    "vit": "vit",
}
# Files a HF backbone needs from its hub repo: skips duplicate `pytorch_model.bin` / TF / ONNX weights.


@dataclass(frozen=True)
class BackboneInfo:
    """What a built backbone is; `Backbone.describe()` writes it into artifacts."""

    name: str  # registry name, or the hub id / path the user gave
    family: str  # one of FAMILIES
    source: str  # hub id, local dir, .pt path, timm model name, or "tiny"
    embed_dim: int  # D, width of cls and patch tokens
    patch_size: int  # pixels per patch side (feature-map stride for TorchScript / conv models)
    image_size: int  # default input side in pixels
    num_prefix_tokens: int  # CLS + register tokens that forward_features strips
    has_cls: bool
    mean: tuple[float, float, float]  # per-channel normalisation, images in [0, 1]
    std: tuple[float, float, float]
    gated: bool = False  # DINOv3 weights need HF_TOKEN


def backbone_ref(spec: str | BackboneRef) -> BackboneRef:
    """The one reading of a backbone reference (models/backbone_ref.py) against this registry."""
    return parse_backbone_ref(spec, REGISTRY)


def hub_id(name: str | BackboneRef) -> str | None:
    """The hub repo `gx download NAME` fetches: registry name -> its hub id, hub ids pass through.

    None for sources that need no download (tiny models, local paths, `timm:` names, which timm
    fetches itself). An unknown name raises UsageError with a suggestion.
    """
    return backbone_ref(name).hub_id


# ----------------------------------------------------------------------------------------------
# The wrapper
# ----------------------------------------------------------------------------------------------


class Backbone(nn.Module, abc.ABC):
    """One interface over HF, timm and TorchScript backbones. Subclasses implement `_tokens`."""

    def __init__(self, model: nn.Module, info: BackboneInfo, *, image_size: int):
        super().__init__()
        self.model = model  # the underlying module; LoRA targets live here
        self.info = info
        self.image_size = image_size  # the side this instance runs at (position table prepared for it)
        self.train(model.training)  # the wrapper follows the model: eval after build_backbone

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Images -> normalised pixels [B, 3, S, S] on the backbone's device and dtype, S = image_size.

        images: uint8 (0..255) or float (0..1), laid out [B, H, W] (grey), [B, H, W, C] or [B, C, H, W]
        with C in {1, 3}. The whole image is resized to S x S (bilinear, antialiased; no crop, so a
        non-square image is squashed), grey is repeated to RGB, then normalised with info.mean/std.
        """
        x = images
        if x.ndim == 3:
            x = x.unsqueeze(1)  # [B, 1, H, W]
        elif x.ndim == 4 and x.shape[1] not in (1, 3):
            if x.shape[-1] not in (1, 3):
                raise DataError(f"images of shape {tuple(x.shape)}: expected [B,H,W], [B,H,W,C] or [B,C,H,W] with C = 1 or 3")
            x = x.permute(0, 3, 1, 2)  # channels-last -> [B, C, H, W]
        elif x.ndim != 4:
            raise DataError(f"images of shape {tuple(x.shape)}: expected [B,H,W], [B,H,W,C] or [B,C,H,W] with C = 1 or 3")
        # Move while still uint8 (4x fewer bytes), then work in fp32: antialiased resize and
        # normalisation in bf16 would lose precision before the model sees the pixels.
        x = x.to(self.device, non_blocking=True)
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        elif x.is_floating_point():
            x = x.float()
        else:
            raise DataError(f"images of dtype {x.dtype}: expected uint8 (0..255) or float (0..1)")
        side = self.image_size
        if tuple(x.shape[-2:]) != (side, side):
            x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grey -> RGB
        mean = torch.tensor(self.info.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.info.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        # contiguous NCHW: a channels-last view of HWC images made a LoRA training step ~6x slower in bf16 on
        # CPU (the patch-embedding convolution's backward), and inference ~7% slower
        return ((x - mean) / std).to(self.dtype).contiguous()

    def forward_features(self, pixels: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, tuple[int, int]]:
        """pixels [B, 3, H, W] -> (cls [B, D] or None, patch tokens [B, gh*gw, D], (gh, gw)).

        CLS and register tokens are removed from the patch tokens. H, W are normally image_size;
        other sizes work (position embeddings are interpolated on the fly, a little slower).
        """
        return self._tokens(pixels.to(device=self.device, dtype=self.dtype))

    @abc.abstractmethod
    def _tokens(self, pixels: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, tuple[int, int]]:
        """Family-specific forward: pixels on the right device/dtype -> (cls, patches, grid)."""

    def _split(self, hidden: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor | None, torch.Tensor, tuple[int, int]]:
        """hidden [B, prefix + gh*gw, D] -> (cls [B, D] | None, patches [B, gh*gw, D], grid)."""
        prefix = self.info.num_prefix_tokens
        if hidden.shape[1] != prefix + grid[0] * grid[1]:
            raise ModelError(
                f"backbone '{self.info.name}' returned {hidden.shape[1]} tokens; expected {prefix} prefix + "
                f"{grid[0]}x{grid[1]} patches: its token layout does not match family '{self.info.family}'"
            )
        cls = hidden[:, 0] if self.info.has_cls else None
        return cls, hidden[:, prefix:], grid

    def pool(self, cls: torch.Tensor | None, patches: torch.Tensor, kind: str = "cls") -> torch.Tensor:
        """Pool tokens into one vector per image.

        kind: "cls" -> cls [B, D]; "mean" -> mean of patch tokens [B, D]; "cls+mean" -> [B, 2D]
        (DINOv2's linear-probe input). A backbone without CLS (I-JEPA, Sapiens, conv nets) has nothing
        to concatenate: "cls" and "cls+mean" both fall back to the mean of patch tokens [B, D].
        """
        if kind not in POOL_KINDS:
            raise unknown_choice("pool", kind, POOL_KINDS)
        if kind == "mean" or cls is None:
            return patches.mean(dim=1)
        if kind == "cls":
            return cls
        return torch.cat([cls, patches.mean(dim=1)], dim=-1)

    def feature_dim(self, pool: str) -> int:
        """Width of `pool(..., kind=pool)`."""
        if pool not in POOL_KINDS:
            raise unknown_choice("pool", pool, POOL_KINDS)
        return 2 * self.info.embed_dim if pool == "cls+mean" and self.info.has_cls else self.info.embed_dim

    def forward(self, pixels: torch.Tensor, pool: str = "cls") -> torch.Tensor:
        """Pooled features [B, feature_dim(pool)]."""
        cls, patches, _ = self.forward_features(pixels)
        return self.pool(cls, patches, pool)

    def describe(self) -> dict:
        """JSON-able; `build_backbone(d["name"], image_size=d["image_size"])` rebuilds this backbone."""
        info = self.info
        return {
            "name": info.name,
            "family": info.family,
            "source": info.source,
            "embed_dim": info.embed_dim,
            "patch_size": info.patch_size,
            "image_size": self.image_size,
            "num_prefix_tokens": info.num_prefix_tokens,
            "has_cls": info.has_cls,
            "mean": list(info.mean),
            "std": list(info.std),
            "gated": info.gated,
        }

    def extra_repr(self) -> str:
        return (
            f"name={self.info.name!r}, family={self.info.family}, image_size={self.image_size}, embed_dim={self.info.embed_dim}"
        )


class HFBackbone(Backbone):
    """transformers Dinov2 / Dinov2WithRegisters / DINOv3ViT / ViT / IJepa model."""

    def _tokens(self, pixels):
        h, w = pixels.shape[-2:]
        patch = self.info.patch_size
        kwargs = {}
        # ViT and I-JEPA refuse a size other than their table's unless asked to interpolate;
        # Dinov2 interpolates by itself and DINOv3 uses RoPE.
        if self.info.family in ("vit", "ijepa") and (h, w) != (self.image_size, self.image_size):
            kwargs["interpolate_pos_encoding"] = True
        hidden = self.model(pixel_values=pixels, **kwargs).last_hidden_state  # [B, prefix + gh*gw, D]
        return self._split(hidden, (h // patch, w // patch))


class TimmBackbone(Backbone):
    """timm model: ViTs return tokens [B, prefix + N, D], conv nets a feature map [B, D, h, w]."""

    def _tokens(self, pixels):
        out = self.model.forward_features(pixels)
        if out.ndim == 4:  # [B, D, h, w] feature map
            return None, out.flatten(2).transpose(1, 2), tuple(out.shape[-2:])
        h, w = pixels.shape[-2:]
        return self._split(out, (h // self.info.patch_size, w // self.info.patch_size))


class TorchScriptBackbone(Backbone):
    """A TorchScript module (Sapiens pretrain) returning a feature map [B, D, h, w] or a tuple ending in one."""

    def _tokens(self, pixels):
        out = self.model(pixels)
        while isinstance(out, (tuple, list)):
            out = out[-1]
        if not isinstance(out, torch.Tensor) or out.ndim != 4:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ModelError(f"TorchScript backbone '{self.info.name}' returned {shape}; expected a feature map [B, D, h, w]")
        if out.shape[1] != self.info.embed_dim:
            raise ModelError(
                f"TorchScript backbone '{self.info.name}' returned {out.shape[1]} channels; expected embed_dim {self.info.embed_dim}"
            )
        patches = out.flatten(2).transpose(1, 2)  # [B, D, h, w] -> [B, h*w, D], no CLS
        return None, patches, (int(out.shape[2]), int(out.shape[3]))


# ----------------------------------------------------------------------------------------------
# build_backbone
# ----------------------------------------------------------------------------------------------


def build_backbone(spec: str | BackboneRef, *, device="cpu", dtype=torch.float32, image_size: int | None = None) -> Backbone:
    """Build a frozen backbone in eval mode on `device`, weights cast to `dtype`.

    spec: a registry name (`backbone_registry.list_backbones()`), a hub id `owner/name`, a local HF model directory,
    `timm:NAME`, or a TorchScript `.pt`/`.pt2` file. image_size: input side in pixels (a multiple of
    the patch size); default the model's own. Learned position tables are resized for it once here.
    Parameters have requires_grad=False; fine-tuning callers turn it back on.
    """
    device = torch.device(device)
    if image_size is not None and image_size <= 0:
        raise UsageError(f"image size must be positive, got {image_size}")
    ref = backbone_ref(spec)
    spec, kind = ref.spec, ref.kind
    if kind == "registry":
        if ref.entry.build is not None:
            return _build_tiny(ref.entry, device=device, dtype=dtype, image_size=image_size)
        return _build_from_hub(ref.entry.source, name=ref.name, entry=ref.entry, device=device, dtype=dtype, image_size=image_size)
    if kind == "timm":
        return build_timm_backbone(ref.name, device=device, dtype=dtype, image_size=image_size)
    if kind == "path":
        path = ref.path
        if path.is_dir() and (path / "config.json").is_file():
            return _build_hf(path, name=spec, source=spec, device=device, dtype=dtype, image_size=image_size)
        if path.is_file() and path.suffix in TORCHSCRIPT_SUFFIXES:
            return _build_torchscript(path, name=spec, source=spec, device=device, dtype=dtype, image_size=image_size)
        if path.is_dir():
            return _build_torchscript(
                _find_torchscript(path, spec), name=spec, source=spec, device=device, dtype=dtype, image_size=image_size
            )
        raise ModelError(f"backbone path '{spec}' is neither a model directory with config.json nor a TorchScript .pt/.pt2 file")
    # A registry source typed as its hub id keeps what the entry knows (gated, Sapiens width).
    entry = next((e for e in REGISTRY.values() if e.source == spec), None)
    return _build_from_hub(spec, name=spec, entry=entry, device=device, dtype=dtype, image_size=image_size)


def _finish(model: nn.Module, *, device, dtype) -> nn.Module:
    """Eval mode, frozen, on device in dtype (casting weights beats autocast on CPU)."""
    model = model.to(device=device, dtype=dtype).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _check_image_size(image_size: int, patch_size: int, name: str) -> None:
    if image_size % patch_size:
        lower = max(patch_size, image_size // patch_size * patch_size)
        raise UsageError(
            f"image size {image_size} is not a multiple of backbone '{name}''s patch size {patch_size}; "
            f"use {lower} or {lower + patch_size}"
        )


def _build_tiny(entry: BackboneEntry, *, device, dtype, image_size) -> Backbone:
    # fork_rng keeps the caller's RNG stream untouched; the seed makes weights identical everywhere.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = entry.build()
    return _wrap_hf(
        model,
        name=entry.name,
        source="tiny",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        default_size=None,
        gated=False,
        device=device,
        dtype=dtype,
        image_size=image_size,
    )


def _build_from_hub(repo_id: str, *, name: str, entry: BackboneEntry | None, device, dtype, image_size) -> Backbone:
    family = entry.family if entry is not None else None
    patterns = TORCHSCRIPT_ALLOW_PATTERNS if family == "sapiens" else None
    snapshot = resolve_snapshot(repo_id, name=name, allow_patterns=patterns, gated=bool(entry and entry.gated))
    if (snapshot / "config.json").is_file():
        return _build_hf(snapshot, name=name, source=repo_id, device=device, dtype=dtype, image_size=image_size, entry=entry)
    return _build_torchscript(
        _find_torchscript(snapshot, name),
        name=name,
        source=repo_id,
        device=device,
        dtype=dtype,
        image_size=image_size,
        entry=entry,
    )


def resolve_snapshot(
    repo_id: str, *, name: str | None = None, allow_patterns: list[str] | None = None, gated: bool = False
) -> Path:
    """Local snapshot directory of a hub repo under `$GX_HOME/models` (hub cache layout).

    The cache is tried first and, when it has the repo, the network is never touched. Otherwise the
    repo is downloaded, unless offline (`HF_HUB_OFFLINE=1` / `GX_OFFLINE=1`). The token comes from
    HF_TOKEN or `hf auth login` via huggingface_hub; gx never stores it.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    name = name or repo_id
    cache = models_dir()
    missing = (
        f"model '{name}' is not in the cache ({cache}); run `gx download {name}` first "
        "(with network access), or point GX_HOME at a cache that has it"
    )
    try:
        # Only config files are required to accept a cached snapshot: `gx download` may have fetched
        # a different file set than we would, and a missing weight file fails clearly at load time.
        return Path(snapshot_download(repo_id, cache_dir=cache, local_files_only=True, allow_patterns=["*.json"]))
    except LocalEntryNotFoundError:
        pass
    if offline():
        raise ModelError(missing + "; offline mode is on (HF_HUB_OFFLINE / GX_OFFLINE)")
    try:
        return Path(
            snapshot_download(repo_id, cache_dir=cache, allow_patterns=allow_patterns or HF_ALLOW_PATTERNS + ["*.pt2", "*.pt"])
        )
    except GatedRepoError as exc:
        raise ModelError(_gated_message(name, repo_id)) from exc
    except RepositoryNotFoundError as exc:  # the hub answers 401 both for "no such repo" and "private"
        if gated:
            raise ModelError(_gated_message(name, repo_id)) from exc
        raise ModelError(
            f"model '{name}': the hub has no repo '{repo_id}' that you can read; check the id, or set HF_TOKEN "
            "if it is private or gated"
        ) from exc
    except (LocalEntryNotFoundError, HfHubHTTPError) as exc:  # hub unreachable, refused or failing; nothing cached
        status = _http_status(exc)
        if status == 403 or (gated and status == 401):
            raise ModelError(_gated_message(name, repo_id)) from exc
        reason = f"HTTP {status}" if status else str(exc.__cause__ or exc).splitlines()[0]
        raise ModelError(f"{missing}; the hub could not be reached ({reason})") from exc
    except OSError as exc:  # disk full, permissions, connection reset mid-download
        raise ModelError(f"{missing}; download failed: {exc}") from exc


def _http_status(exc: BaseException | None) -> int | None:
    """HTTP status of a hub error or of the error it wraps (snapshot_download chains them)."""
    while exc is not None:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status is not None:
            return status
        exc = exc.__cause__
    return None


def _gated_message(name: str, repo_id: str) -> str:
    return (
        f"model '{name}' ({repo_id}) is gated on the Hugging Face hub: accept its licence at "
        f"https://huggingface.co/{repo_id}, set HF_TOKEN (or run `hf auth login`), then run `gx download {name}`"
    )


def _find_torchscript(directory: Path, name: str) -> Path:
    files = sorted(p for p in directory.rglob("*") if p.suffix in TORCHSCRIPT_SUFFIXES and p.is_file())
    if len(files) != 1:
        found = ", ".join(p.name for p in files) or "none"
        raise ModelError(f"backbone '{name}': expected one TorchScript .pt/.pt2 file in {directory}, found {found}")
    return files[0]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc


def _processor_size(proc: dict) -> int | None:
    """Side the model's own image processor feeds it: the centre crop if it crops, else the resize."""
    for key in (("crop_size",) if proc.get("do_center_crop") else ()) + ("size",):
        size = proc.get(key)
        if isinstance(size, int):
            return size
        if isinstance(size, dict):
            for k in ("height", "shortest_edge"):
                if isinstance(size.get(k), int):
                    return size[k]
    return None


def _build_hf(
    directory: Path, *, name: str, source: str, device, dtype, image_size, entry: BackboneEntry | None = None
) -> Backbone:
    config = _read_json(directory / "config.json")
    model_type = config.get("model_type")
    if model_type not in HF_MODEL_TYPES:
        raise ModelError(
            f"backbone '{name}' is a '{model_type}' model; supported model types: {', '.join(HF_MODEL_TYPES)} "
            "(use `timm:NAME` or a TorchScript file for others)"
        )
    # Read the processor JSON ourselves: DINOv3's AutoImageProcessor needs torchvision.
    proc_path = directory / "preprocessor_config.json"
    proc = _read_json(proc_path) if proc_path.is_file() else {}
    mean = tuple(float(v) for v in proc.get("image_mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in proc.get("image_std", IMAGENET_STD))
    if len(mean) != 3 or len(std) != 3:
        raise ModelError(f"{proc_path}: image_mean/image_std must have 3 values, got {mean} / {std}")

    import pickle

    from transformers import AutoModel

    try:
        # Load straight into the target dtype: a 7B model in fp32 would need twice the memory.
        model = AutoModel.from_pretrained(directory, attn_implementation="sdpa", dtype=dtype)
    except pickle.UnpicklingError:
        # torch loads .bin weights with weights_only=True and refuses a pickle that holds more than tensors;
        # its text names neither the file nor a way out.
        found = sorted(directory.glob("*.bin"))
        weights = next((p for p in found if p.name == "pytorch_model.bin"), found[0] if found else directory)
        raise ModelError(
            f"{weights}: pickled PyTorch weights that hold more than tensors; gx does not unpickle them (that can run code). "
            "If you trust the file, convert it to model.safetensors in the same folder with the library that made it "
            "(e.g. transformers: from_pretrained, then save_pretrained with safe_serialization=True); or use another backbone"
        ) from None
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(
            f"cannot load backbone '{name}' from {directory}: {exc}. If this is a partial download, run `gx download {name}` again"
        ) from exc
    if getattr(model, "pooler", None) is not None:
        model.pooler = None  # ViT's pooler head is unused (we read last_hidden_state) and often untrained
    return _wrap_hf(
        model,
        name=name,
        source=source,
        mean=mean,
        std=std,
        default_size=(entry.image_size if entry else None) or _processor_size(proc),
        gated=bool(entry and entry.gated),
        device=device,
        dtype=dtype,
        image_size=image_size,
    )


def _wrap_hf(model, *, name, source, mean, std, default_size, gated, device, dtype, image_size) -> HFBackbone:
    config = model.config
    family = HF_MODEL_TYPES[config.model_type]
    patch = config.patch_size if isinstance(config.patch_size, int) else int(config.patch_size[0])
    native = config.image_size if isinstance(config.image_size, int) else int(config.image_size[0])
    if image_size is None:
        # The model's own processor size (224 for the hub DINOv2s, whose config says 518), rounded
        # down to whole patches; tiny models use their config size.
        image_size = max(patch, (default_size or native) // patch * patch)
    _check_image_size(image_size, patch, name)
    registers = getattr(config, "num_register_tokens", 0) or 0
    has_cls = family != "ijepa"
    if family in ("dinov2", "vit", "ijepa"):
        _resize_position_table(model, image_size=image_size, patch_size=patch, has_cls=has_cls)
    info = BackboneInfo(
        name=name,
        family=family,
        source=source,
        embed_dim=int(config.hidden_size),
        patch_size=patch,
        image_size=image_size,
        num_prefix_tokens=int(has_cls) + registers,
        has_cls=has_cls,
        mean=mean,
        std=std,
        gated=gated,
    )
    return HFBackbone(_finish(model, device=device, dtype=dtype), info, image_size=image_size)


def _resize_position_table(model: nn.Module, *, image_size: int, patch_size: int, has_cls: bool) -> None:
    """Resize the learned position table for `image_size` once, so forward never interpolates.

    HF interpolates the table on every forward whose grid differs from it (real DINOv2 configs say 518
    while everyone feeds 224). We call the model's own `interpolate_pos_encoding` (bicubic, HF's exact
    arithmetic) once, in fp32, and store the result and the new size back into the model and config.
    """
    emb = model.embeddings
    table = emb.position_embeddings  # [1, cls + n*n, D]; Dinov2 register tokens carry no position
    grid = image_size // patch_size
    n_cls = int(has_cls)
    if table.shape[1] != n_cls + grid * grid:
        with torch.no_grad():
            emb.position_embeddings = nn.Parameter(table.detach().float(), requires_grad=False)
            dummy = torch.zeros(1, n_cls + grid * grid, table.shape[-1])  # only its shape is read
            new = emb.interpolate_pos_encoding(dummy, image_size, image_size)  # [1, cls + grid*grid, D]
        emb.position_embeddings = nn.Parameter(new.to(table.dtype).contiguous(), requires_grad=table.requires_grad)
    size = (image_size, image_size)
    emb.patch_embeddings.image_size = size
    emb.patch_embeddings.num_patches = grid * grid
    if hasattr(emb, "image_size"):
        emb.image_size = size  # ViT / I-JEPA check inputs against this
    model.config.image_size = image_size  # a later save_pretrained stays self-consistent


def build_timm_backbone(
    name: str, *, device="cpu", dtype=torch.float32, image_size: int | None = None, pretrained: bool = True
) -> Backbone:
    """`timm:NAME` backbones. `pretrained=False` (tests) builds random weights without a download."""
    try:
        import timm
    except ImportError as exc:
        raise ModelError(f"timm is not installed or cannot be imported ({exc}); `pip install gesture-cli[timm]`") from exc
    kwargs = {"pretrained": pretrained, "num_classes": 0}
    if pretrained and "cache_dir" in inspect.signature(timm.create_model).parameters:
        kwargs["cache_dir"] = str(models_dir())  # timm >= 1.0.16: keep its weights in $GX_HOME too
    try:
        try:
            # ViTs resize their position table for img_size here, once.
            model = timm.create_model(name, **kwargs, **({"img_size": image_size} if image_size else {}))
        except TypeError as exc:
            if image_size is None or "img_size" not in str(exc):
                raise
            model = timm.create_model(name, **kwargs)  # conv nets take no img_size: any input size works
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise ModelError(f"timm has no model '{name}'; see `timm.list_models()`") from exc
        raise ModelError(f"cannot build timm model '{name}': {exc}") from exc
    except (OSError, TypeError) as exc:  # OSError: weights not cached offline, or download failed
        raise ModelError(f"cannot build timm model '{name}': {exc}") from exc
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    patch_embed = getattr(model, "patch_embed", None)
    if patch_embed is not None:  # ViT-like: tokens [B, prefix + N, D]
        patch = int(patch_embed.patch_size[0])
        native = int(patch_embed.img_size[0])
        prefix = int(getattr(model, "num_prefix_tokens", 0))
        has_cls = getattr(model, "cls_token", None) is not None
    else:  # conv net: feature map at the last stage's stride
        patch = int(model.feature_info[-1]["reduction"])
        native = int(cfg.get("input_size", (3, 224, 224))[-1])
        prefix, has_cls = 0, False
    image_size = image_size or native
    _check_image_size(image_size, patch, f"timm:{name}")
    info = BackboneInfo(
        name=f"timm:{name}",
        family="timm",
        source=name,
        embed_dim=int(model.num_features),
        patch_size=patch,
        image_size=image_size,
        num_prefix_tokens=prefix,
        has_cls=has_cls,
        mean=tuple(float(v) for v in cfg.get("mean", IMAGENET_MEAN)),
        std=tuple(float(v) for v in cfg.get("std", IMAGENET_STD)),
    )
    return TimmBackbone(_finish(model, device=device, dtype=dtype), info, image_size=image_size)


def _build_torchscript(
    path: Path, *, name: str, source: str, device, dtype, image_size, entry: BackboneEntry | None = None
) -> Backbone:
    # Casting to dtype below is what makes bf16 fast on GPU; Sapiens' own demo runs its TorchScript
    # files in fp32, so if a trace has fp32 constants baked in, build with dtype=torch.float32.
    try:
        model = torch.jit.load(str(path), map_location=device)
    except (RuntimeError, OSError, ValueError) as exc:
        raise ModelError(f"cannot load TorchScript backbone '{name}' from {path}: {exc}") from exc
    # A bare .pt has no config: read width and patch from the patch-embedding conv, the first 4-D weight.
    conv = next((p for p in model.parameters() if p.ndim == 4), None)
    embed_dim = (entry.embed_dim if entry else None) or (int(conv.shape[0]) if conv is not None else None)
    patch = (entry.patch_size if entry else None) or (int(conv.shape[-1]) if conv is not None else 16)
    if embed_dim is None:
        raise ModelError(f"TorchScript backbone '{name}': cannot tell its width (no conv weight); register it with embed_dim")
    image_size = image_size or (entry.image_size if entry else None) or 1024  # Sapiens pretrains at 1024
    _check_image_size(image_size, patch, name)
    info = BackboneInfo(
        name=name,
        family="sapiens",
        source=source,
        embed_dim=embed_dim,
        patch_size=patch,
        image_size=image_size,
        num_prefix_tokens=0,
        has_cls=False,
        # Sapiens normalises 0..255 pixels with [123.675, 116.28, 103.53] / [58.395, 57.12, 57.375]:
        # the ImageNet statistics times 255, i.e. the same as ImageNet on 0..1 pixels.
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        gated=False,
    )
    return TorchScriptBackbone(_finish(model, device=device, dtype=dtype), info, image_size=image_size)
