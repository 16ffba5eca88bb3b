"""Pose encoder: a spatial graph network per frame, then a temporal transformer over frames.

    cfg = PoseEncoderConfig(layout="mediapipe-holistic", parts=("body", "hands", "face-lite"))
    enc = build_pose_encoder(cfg)
    out = enc(batch["keypoints"], batch["point_mask"], batch["frame_mask"])   # from data.pose.collate_pose
    out.hidden   # [B, T, D] per-frame states (0 at padded frames), for a text decoder's cross-attention
    out.pooled   # [B, D] mean over the real frames

Spatial part, per frame: each selected point gets features (x, y[, z], 1) where it is observed and
all zeros where it is masked, plus a learned embedding of which point it is; graph convolutions
then average each point's neighbourhood on the skeleton (models/skeletons.py, D^-1/2 (A+I) D^-1/2
with the columns of masked points removed and each row renormalised over what is left), so a masked
point feeds nothing into its neighbours, whatever its coordinates. The points are pooled into one
token per frame: `parts` = a masked mean per body part, concatenated (robust to a hand that
disappears), or `flatten` = every point's features concatenated (masked ones zeroed).

Temporal part: pre-norm transformer blocks (RMSNorm, multi-head attention with rotary position
embeddings and a key-padding mask, SwiGLU or GELU MLP). The rotary cos/sin cache starts at
`rope_cache` frames and grows (doubling) when a longer sequence arrives; positions are computed the
same way at any cache size, so growing changes nothing. `attn_impl="sdpa"` uses
F.scaled_dot_product_attention, `"eager"` computes the same softmax(QK^T/sqrt(d))V explicitly (for
the benchmark and for debugging); they agree to ~1e-6 in fp32.

Artifacts: `save_pose_encoder(model, dir)` writes `encoder.safetensors` (weights; its header carries
the full config, so `load_pose_encoder` needs nothing else) and a readable `config.json`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from gesture_cli.core.errors import ArtifactError, UsageError
from gesture_cli.models.skeletons import LAYOUT_SIZES, normalized_adjacency, select_parts

POSE_ENCODER_KIND = "pose-encoder"
POOLS = ("parts", "flatten")
MLPS = ("swiglu", "gelu")
ATTN_IMPLS = ("sdpa", "eager")


@dataclass(frozen=True)
class PoseEncoderConfig:
    """Every field is documented in configs/pose_encoder.md; configs/pose_encoder.json holds the defaults."""

    layout: str = "mediapipe-holistic"  # keypoint layout of the input (models/skeletons.py)
    parts: tuple[str, ...] = ("body", "hands", "face-lite")  # body parts the encoder sees (aliases: hands, all)
    in_channels: int = 3  # coordinates per point: 2 (x, y) or 3 (x, y, z); the point's mask is one more input feature
    gcn_dims: tuple[int, ...] = (64, 64)  # output width of each graph-convolution layer
    pool: str = "parts"  # parts: masked mean per body part, concatenated | flatten: all points' features concatenated
    d_model: int = 256  # width of the per-frame tokens and of the transformer
    n_layers: int = 4  # transformer blocks
    n_heads: int = 4  # attention heads (d_model / n_heads must be even, for the rotary embedding)
    mlp: str = "swiglu"  # swiglu | gelu
    mlp_ratio: float = 4.0  # MLP hidden width / d_model (SwiGLU uses 2/3 of it: the same parameter count)
    dropout: float = 0.1  # dropout on frame tokens and on each block's attention and MLP outputs (training only)
    attn_dropout: float = 0.0  # dropout on attention weights; > 0 makes CPU SDPA fall back to its unfused kernel (eager's memory)
    rope_base: float = 10000.0  # rotary embedding base (wavelengths up to 2*pi*base frames)
    rope_cache: int = 64  # initial length of the rotary cos/sin cache in frames; grows on demand
    attn_impl: str = "sdpa"  # sdpa (F.scaled_dot_product_attention) | eager (explicit softmax, same result)
    norm_eps: float = 1e-6  # RMSNorm epsilon

    def validate(self) -> None:
        if self.layout not in LAYOUT_SIZES:
            raise UsageError(f"pose encoder layout '{self.layout}' is not one of {', '.join(sorted(LAYOUT_SIZES))}")
        select_parts(self.layout, self.parts)  # raises on an unknown part
        if self.in_channels not in (2, 3):
            raise UsageError("in_channels must be 2 (x, y) or 3 (x, y, z)")
        if not self.gcn_dims or min(self.gcn_dims) < 1:
            raise UsageError("gcn_dims needs at least one positive width")
        if self.pool not in POOLS:
            raise UsageError(f"pool '{self.pool}' is not one of {', '.join(POOLS)}")
        if self.mlp not in MLPS:
            raise UsageError(f"mlp '{self.mlp}' is not one of {', '.join(MLPS)}")
        if self.attn_impl not in ATTN_IMPLS:
            raise UsageError(f"attn_impl '{self.attn_impl}' is not one of {', '.join(ATTN_IMPLS)}")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise UsageError(f"d_model {self.d_model} must split into {self.n_heads} heads of an even width")
        if self.n_layers < 0 or self.rope_cache < 1 or not 0 <= self.dropout < 1 or not 0 <= self.attn_dropout < 1:
            raise UsageError("n_layers >= 0, rope_cache >= 1 and 0 <= dropout, attn_dropout < 1 are required")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


class PoseEncoderOutput(NamedTuple):
    hidden: torch.Tensor  # [B, T, D] per-frame states; 0 at padded frames
    pooled: torch.Tensor  # [B, D] mean of `hidden` over the real frames
    frame_mask: torch.Tensor  # [B, T] bool, True = a real frame


# ---- spatial graph network -----------------------------------------------------------------------
class GraphConv(nn.Module):
    """h_i' = gelu(W * sum_j a_ij m_j h_j / sum_j a_ij m_j + b) (+ h_i): a masked, renormalised GCN layer.

    No normalisation layer inside: at B*T*K point rows every saved activation costs ~100 MB per layer
    at batch 8 x 512 frames, so a layer keeps just two (the Linear's input and the GELU's).
    """

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.residual = d_in == d_out

    def forward(self, h: torch.Tensor, adj: torch.Tensor, mask: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        # h [N, K, d] with the rows of masked points already 0, so only observed neighbours add up;
        # den [N, K, 1] = their total adjacency weight; adj [K, K]
        out = F.gelu(self.linear(torch.matmul(adj, h) / den))
        out = out + h if self.residual else out
        return out * mask  # [N, K, 1]: masked points' outputs stay 0 (they feed nothing into the next layer)


class SpatialEncoder(nn.Module):
    """[B, T, K, C] keypoints + [B, T, K] mask -> [B, T, D] frame tokens."""

    def __init__(self, cfg: PoseEncoderConfig):
        super().__init__()
        sel = select_parts(cfg.layout, cfg.parts)
        k = sel.num_points
        self.register_buffer("point_index", torch.as_tensor(sel.indices, dtype=torch.long), persistent=False)
        self.register_buffer("adj", torch.from_numpy(normalized_adjacency(k, sel.edges)), persistent=False)
        member = torch.zeros(len(sel.parts), k)
        member[torch.as_tensor(sel.part_of), torch.arange(k)] = 1.0
        self.register_buffer("part_member", member, persistent=False)  # [P, K]
        self.num_points, self.num_parts = k, len(sel.parts)
        self.pool = cfg.pool
        d0 = cfg.gcn_dims[0]
        self.input = nn.Linear(cfg.in_channels + 1, d0)
        self.point_embed = nn.Parameter(torch.zeros(k, d0))
        dims = [d0, *cfg.gcn_dims]
        self.layers = nn.ModuleList(GraphConv(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
        d_last = dims[-1]
        width = self.num_parts * (d_last + 1) if cfg.pool == "parts" else k * d_last
        self.proj = nn.Linear(width, cfg.d_model)
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, k, c = x.shape
        m = mask.reshape(b * t, k).to(x.dtype)
        m3 = m.unsqueeze(-1)  # [N, K, 1]
        # masked points: coordinates replaced by 0 (torch.where, so NaN or garbage there cannot leak) and mask feature 0
        feats = torch.cat([torch.where(mask.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device)), mask.unsqueeze(-1).to(x.dtype)], dim=-1)
        h = (self.input(feats.reshape(b * t, k, c + 1)) + self.point_embed) * m3
        den = torch.matmul(m, self.adj.t()).clamp_min(1e-6).unsqueeze(-1)  # [N, K, 1] observed neighbours' weight
        for layer in self.layers:
            h = layer(h, self.adj, m3, den)
        if self.pool == "parts":
            w = self.part_member.to(h.dtype).unsqueeze(0) * m.unsqueeze(1)  # [N, P, K] observed points of each part
            count = w.sum(-1, keepdim=True)  # [N, P, 1]
            pooled = torch.matmul(w, h) / count.clamp_min(1.0)  # [N, P, d]
            presence = count / self.part_member.sum(-1, keepdim=True).to(h.dtype)  # fraction of the part observed
            tok = torch.cat([pooled, presence], dim=-1).reshape(b, t, -1)
        else:
            tok = h.reshape(b, t, -1)
        return self.norm(self.proj(tok))


# ---- temporal transformer ------------------------------------------------------------------------
def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding (split-halves convention): x [B, H, T, hd], cos/sin [T, hd/2]."""
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    return out.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: PoseEncoderConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.d_model // cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.dropout = cfg.attn_dropout
        self.impl = cfg.attn_impl

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, T, hd]
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        allowed = key_mask[:, None, None, :]  # [B, 1, 1, T] True = may be attended to
        p = self.dropout if self.training else 0.0
        if self.impl == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)
        else:
            scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.head_dim)
            scores = scores.masked_fill(~allowed, float("-inf"))
            weights = torch.softmax(scores, dim=-1)
            y = torch.matmul(F.dropout(weights, p=p) if p > 0 else weights, v)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, cfg: PoseEncoderConfig):
        super().__init__()
        self.kind = cfg.mlp
        hidden = int(cfg.mlp_ratio * cfg.d_model)
        if self.kind == "swiglu":
            hidden = max(8, int(round(2 * hidden / 3 / 8)) * 8)  # 2/3 keeps the parameter count of a GELU MLP
            self.up = nn.Linear(cfg.d_model, 2 * hidden, bias=False)
        else:
            self.up = nn.Linear(cfg.d_model, hidden, bias=False)
        self.down = nn.Linear(hidden, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "swiglu":
            gate, val = self.up(x).chunk(2, dim=-1)
            return self.down(F.silu(gate) * val)
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    def __init__(self, cfg: PoseEncoderConfig):
        super().__init__()
        self.norm1 = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = Attention(cfg)
        self.norm2 = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, cos, sin, key_mask):
        x = x + self.drop(self.attn(self.norm1(x), cos, sin, key_mask))
        return x + self.drop(self.mlp(self.norm2(x)))


class PoseEncoder(nn.Module):
    """Keypoint sequences -> per-frame hidden states [B, T, D] and a pooled embedding [B, D]."""

    def __init__(self, cfg: PoseEncoderConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.spatial = SpatialEncoder(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        # the rotary cos/sin cache is a plain attribute, not a buffer: it is derived, device-local state whose
        # length differs between processes (DDP broadcasts buffers and would meet caches of different sizes)
        self._rope_cos = self._rope_sin = torch.empty(0)
        self._build_rope(cfg.rope_cache, torch.device("cpu"))
        self.apply(self._init)
        for blk in self.blocks:  # GPT-2: residual projections scaled down with depth
            nn.init.normal_(blk.attn.out.weight, std=0.02 / math.sqrt(2 * max(cfg.n_layers, 1)))
            nn.init.normal_(blk.mlp.down.weight, std=0.02 / math.sqrt(2 * max(cfg.n_layers, 1)))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @property
    def rope_cache_len(self) -> int:
        return int(self._rope_cos.shape[0])

    def _build_rope(self, length: int, device: torch.device) -> None:
        half = self.config.d_model // self.config.n_heads // 2
        inv_freq = 1.0 / self.config.rope_base ** (torch.arange(half, dtype=torch.float32, device=device) / half)
        pos = torch.arange(length, dtype=torch.float32, device=device)
        freqs = torch.outer(pos, inv_freq)  # [L, hd/2]: the same values at any L
        self._rope_cos, self._rope_sin = freqs.cos(), freqs.sin()

    def _rope(self, t: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if t > self.rope_cache_len:  # a longer sequence than ever before: grow to the next power of two (at least double)
            self._build_rope(max(1 << (t - 1).bit_length(), 2 * self.rope_cache_len), device)
        elif self._rope_cos.device != device:
            self._build_rope(self.rope_cache_len, device)
        return self._rope_cos[:t], self._rope_sin[:t]

    @property
    def num_points(self) -> int:
        return self.spatial.num_points

    def _select(self, keypoints: torch.Tensor, point_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        k, c = keypoints.shape[2], keypoints.shape[3]
        full = LAYOUT_SIZES[self.config.layout]
        if c < self.config.in_channels:
            raise UsageError(f"keypoints have {c} coordinates per point; this encoder needs {self.config.in_channels}")
        x = keypoints[..., : self.config.in_channels]
        mask = point_mask if point_mask is not None else torch.ones(keypoints.shape[:3], dtype=torch.bool, device=keypoints.device)
        if k == full and k != self.num_points:
            idx = self.spatial.point_index
            x, mask = x.index_select(2, idx), mask.index_select(2, idx)
        elif k != self.num_points:
            raise UsageError(f"keypoints have {k} points; this encoder expects {full} ({self.config.layout}) or {self.num_points} (its parts {','.join(self.config.parts)})")
        return x, mask.bool()

    def forward(self, keypoints: torch.Tensor, point_mask: torch.Tensor | None = None, frame_mask: torch.Tensor | None = None) -> PoseEncoderOutput:
        """keypoints [B, T, K, C] (K = the layout's points or the selected parts'; C >= in_channels, extra
        channels dropped), point_mask [B, T, K] bool (None = all observed), frame_mask [B, T] bool (None = all real)."""
        b, t = keypoints.shape[:2]
        x, mask = self._select(keypoints, point_mask)
        fm = frame_mask.bool() if frame_mask is not None else torch.ones(b, t, dtype=torch.bool, device=keypoints.device)
        mask = mask & fm.unsqueeze(-1)
        h = self.drop(self.spatial(x, mask))  # [B, T, D]
        cos, sin = self._rope(t, h.device)
        key_mask = fm | ~fm.any(dim=1, keepdim=True)  # a sequence with no real frame attends to all (its output is zeroed)
        for blk in self.blocks:
            h = blk(h, cos, sin, key_mask)
        h = self.norm(h) * fm.unsqueeze(-1).to(h.dtype)
        pooled = h.sum(dim=1) / fm.sum(dim=1, keepdim=True).clamp_min(1).to(h.dtype)
        return PoseEncoderOutput(hidden=h, pooled=pooled, frame_mask=fm)


# ---- factory and artifacts -----------------------------------------------------------------------
def pose_encoder_config(cfg: PoseEncoderConfig | dict | str | Path | None = None, **overrides) -> PoseEncoderConfig:
    """A validated config from a config object, a dict, or a JSON/YAML file; `overrides` win."""
    from gesture_cli.core.config import resolve_config

    if isinstance(cfg, PoseEncoderConfig):
        base: dict[str, Any] = cfg.to_dict()
        return resolve_config(PoseEncoderConfig, None, {**base, **overrides})
    if isinstance(cfg, (str, Path)):
        return resolve_config(PoseEncoderConfig, cfg, overrides, file_option="--encoder-config")  # a file comes from that option
    return resolve_config(PoseEncoderConfig, None, {**(cfg or {}), **overrides})


def build_pose_encoder(cfg: PoseEncoderConfig | dict | str | Path | None = None, **overrides) -> PoseEncoder:
    """Build a freshly initialised encoder (seed torch first for reproducible weights)."""
    return PoseEncoder(pose_encoder_config(cfg, **overrides))


def save_pose_encoder(model: PoseEncoder, directory: Path | str, *, extra: dict | None = None) -> Path:
    """Write `encoder.safetensors` (weights + config in its header) and `config.json` into `directory`."""
    from gesture_cli.core.artifacts import save_json, save_tensors

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sel = select_parts(model.config.layout, model.config.parts)
    meta = {"config": model.config.to_dict(), "num_points": sel.num_points, "point_indices": sel.indices.tolist(),
            "parts": list(sel.parts), **(extra or {})}
    save_tensors(directory / "encoder.safetensors", model.state_dict(), kind=POSE_ENCODER_KIND, meta=meta)
    save_json(directory / "config.json", {k: v for k, v in meta.items() if k != "point_indices"}, kind=POSE_ENCODER_KIND + "-config")
    return directory / "encoder.safetensors"


def load_pose_encoder(path: Path | str, *, device: str | torch.device = "cpu") -> PoseEncoder:
    """Rebuild an encoder from `encoder.safetensors` (or the directory holding it) alone."""
    from gesture_cli.core.artifacts import load_tensors

    path = Path(path)
    if path.is_dir():
        path = path / "encoder.safetensors"
    tensors, meta = load_tensors(path, kind=POSE_ENCODER_KIND, device=str(device))
    if "config" not in meta:
        raise ArtifactError(f"{path}: no encoder config in the header; re-save it with gx")
    model = PoseEncoder(pose_encoder_config(meta["config"]))
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ArtifactError(f"{path}: weights do not fit the config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.to(device)
