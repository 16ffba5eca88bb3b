"""Sign-to-text models on top of the pose encoder (models/pose_encoder.py) and UMT5 (models/text.py).

PoseTextAligner (gx pose-pretrain): CLIP-style alignment. The pooled pose embedding [B, D_pose] and the
pooled embedding of the frozen text encoder [B, D_text] each go through a linear head into a shared
space [B, E], are L2-normalised, and are compared with a learnable temperature (stored as log(1/tau),
clamped so the logit scale stays within [1, 100]). The frozen text encoder is not part of the module:
its embeddings are computed once per distinct text (they never change) and fed in as inputs.

PoseToText (gx pose-finetune): pose tokens -> Linear(D_pose, D_text) -> UMT5. Two bridges:
  encoder (default)  the projected frame tokens are the UMT5 encoder's `inputs_embeds`: its pretrained
                     self-attention (with its relative position buckets) contextualises them, and the
                     decoder cross-attends to its output as it would to a sentence's encoding
  direct             the projected tokens are the `encoder_outputs` themselves: the decoder cross-attends
                     to the pose encoder's states; the UMT5 encoder is unused (and gets no gradients)
Padded frames are masked out of the encoder and the cross-attention (`attention_mask` = frame mask).
Teacher forcing: `labels` are the tokenised target (eos appended, padding -100); UMT5 shifts them right
behind its decoder start token. `generate` runs transformers' greedy or beam search on the same inputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BRIDGES = ("encoder", "direct")
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's cap on 1/temperature


class PoseTextAligner(nn.Module):
    """Pose encoder + linear heads + learnable temperature (see the module docstring)."""

    autocast_methods = ("embed_pose", "embed_text")  # entry points besides forward that Precision.wrap runs under autocast

    def __init__(self, encoder: nn.Module, *, text_dim: int, embed_dim: int = 256, temperature: float = 0.07):
        super().__init__()
        d = encoder.config.d_model
        self.encoder = encoder
        self.pose_head = nn.Linear(d, embed_dim)
        self.text_head = nn.Linear(text_dim, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))
        for head in (self.pose_head, self.text_head):
            nn.init.normal_(head.weight, std=head.in_features ** -0.5)
            nn.init.zeros_(head.bias)

    @property
    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(0.0, MAX_LOGIT_SCALE).exp()

    def embed_pose(self, keypoints, point_mask, frame_mask) -> torch.Tensor:
        """[B, E] unit vectors."""
        pooled = self.encoder(keypoints, point_mask, frame_mask).pooled
        return F.normalize(self.pose_head(pooled).float(), dim=-1)

    def embed_text(self, text_features: torch.Tensor) -> torch.Tensor:
        """[N, E] unit vectors from the frozen encoder's pooled embeddings [N, D_text]."""
        return F.normalize(self.text_head(text_features.to(self.text_head.weight.dtype)).float(), dim=-1)

    def forward(self, keypoints, point_mask, frame_mask, text_features):
        return self.embed_pose(keypoints, point_mask, frame_mask), self.embed_text(text_features), self.scale


def info_nce(pose: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of pairs: (CE(pose -> texts) + CE(text -> poses)) / 2.

    pose, text [B, E] unit vectors, row i of each a pair. Two samples of the same sentence have identical
    text embeddings (the text encoder is frozen), so their rows and columns cancel in the gradient: a
    duplicate is not pushed apart from its own sentence, it only adds a constant log(k) to the loss.
    """
    logits = scale * pose @ text.t()  # [B, B]
    target = torch.arange(len(pose), device=pose.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


class PoseToText(nn.Module):
    """Pose encoder -> projection -> UMT5 encoder-decoder (see the module docstring)."""

    autocast_methods = ("generate",)  # entry points besides forward that Precision.wrap runs under autocast

    def __init__(self, encoder: nn.Module, text_model: nn.Module, *, bridge: str = "encoder"):
        super().__init__()
        if bridge not in BRIDGES:
            raise ValueError(f"bridge '{bridge}' is not one of {BRIDGES}")
        self.encoder = encoder
        self.proj = nn.Linear(encoder.config.d_model, text_model.config.d_model)
        self.text = text_model
        self.bridge = bridge
        nn.init.normal_(self.proj.weight, std=encoder.config.d_model ** -0.5)
        nn.init.zeros_(self.proj.bias)

    def _inputs(self, keypoints, point_mask, frame_mask) -> dict:
        """The UMT5 keyword arguments that stand for the source sentence."""
        out = self.encoder(keypoints, point_mask, frame_mask)
        tokens = self.proj(out.hidden)  # [B, T, D_text]
        mask = out.frame_mask.long()  # [B, T]
        if self.bridge == "encoder":
            return {"inputs_embeds": tokens, "attention_mask": mask}
        from transformers.modeling_outputs import BaseModelOutput

        return {"encoder_outputs": BaseModelOutput(last_hidden_state=tokens), "attention_mask": mask}

    def forward(self, keypoints, point_mask, frame_mask, labels: torch.Tensor):
        """Teacher-forced cross-entropy (mean over target tokens; -100 = padding)."""
        return self.text(**self._inputs(keypoints, point_mask, frame_mask), labels=labels).loss

    @torch.no_grad()
    def generate(self, keypoints, point_mask, frame_mask, *, num_beams: int = 1, max_new_tokens: int = 64) -> torch.Tensor:
        """Token ids [B, L] (greedy with num_beams=1, else beam search)."""
        return self.text.generate(**self._inputs(keypoints, point_mask, frame_mask), num_beams=num_beams, do_sample=False,
                                  max_new_tokens=max_new_tokens, early_stopping=num_beams > 1 or None)


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in module.parameters())
    return sum(p.numel() for p in module.parameters() if p.requires_grad), total


__all__ = ["BRIDGES", "PoseTextAligner", "PoseToText", "count_parameters", "info_nce"]
