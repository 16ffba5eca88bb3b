"""Two training kernels that gx uses in place of slower stock ones on CPU; same maths, same results.

`KeepMaskDropout` (LoRA's dropout on the adapter input, see models.lora.apply_lora): the stock CPU
dropout draws its mask with `bernoulli_`, a serial generator that costs 3 ms per [8, 201, 384] tensor,
and keeps the mask for backward as a tensor of the input's dtype (fp32: PEFT casts the input to the
adapter's dtype first). Here the mask comes from 31 random bits per element (`random_`, 3x faster),
compared once with p * 2^31, and backward keeps it as bool (1 byte an element instead of 4).
Same distribution: each element is kept with probability 1 - p (to within 2^-31) and scaled by 1/(1 - p).

`gx_sdpa` (a transformers attention implementation, see `use_fp32_attention_backward`): on CPU the
bf16 flash-attention backward kernel is slower than the fp32 one (measured, one thread, q/k/v
[8, 6, 201, 64]: 15.8 ms against 9.7 ms, while the bf16 forward is faster: 3.5 against 4.8 ms). When
attention runs in bf16 on the CPU with gradients, the forward is the stock bf16 flash kernel and the
backward upcasts what that kernel saved and runs the fp32 kernel. Everywhere else (no gradient,
fp32, CUDA, a mask, dropout, causal) it is transformers' own `sdpa` unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

ATTENTION = "gx_sdpa"
_RANDOM_BITS = 2**31  # int32 random_() draws uniformly from [0, 2^31)


class KeepMaskDropout(nn.Dropout):
    """nn.Dropout whose CPU training path draws its mask from 31-bit integers and keeps it as bool."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or self.p >= 1 or x.device.type != "cpu" or self.inplace:
            return super().forward(x)
        keep = torch.empty(x.shape, dtype=torch.int32).random_() >= round(self.p * _RANDOM_BITS)  # [*x.shape] bool
        # `where` keeps only the bool mask for backward; the scale is a Python float, applied in fp32 opmath
        return torch.where(keep, x, 0.0).mul_(1.0 / (1.0 - self.p))


def use_keep_mask_dropout(model: nn.Module) -> int:
    """Replace every nn.Dropout inside `model`'s LoRA layers (their `lora_dropout` dicts) with a
    KeepMaskDropout of the same p; returns how many were replaced. Dropouts elsewhere stay."""
    replaced = 0
    for module in model.modules():
        table = getattr(module, "lora_dropout", None)
        if not isinstance(table, nn.ModuleDict):
            continue
        for name, drop in list(table.items()):
            if type(drop) is nn.Dropout:
                table[name] = KeepMaskDropout(p=drop.p)
                replaced += 1
    return replaced


class _Fp32BackwardAttention(torch.autograd.Function):
    """Attention (no mask, no dropout, not causal): the compute-dtype flash kernel forward, the fp32 one backward."""

    @staticmethod
    def forward(ctx, query, key, value, scale: float):
        out, logsumexp = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(query, key, value, scale=scale)[:2]
        ctx.save_for_backward(query, key, value, out, logsumexp)  # what the stock kernel saves: no more memory
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad):
        query, key, value, out, logsumexp = ctx.saved_tensors
        dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad.float(), query.float(), key.float(), value.float(), out.float(), logsumexp, 0.0, False, scale=ctx.scale
        )
        return dq.to(query.dtype), dk.to(key.dtype), dv.to(value.dtype), None


def sdpa_fp32_backward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                       is_causal: bool | None = None, **kwargs):
    """transformers' attention-function signature: q/k/v [B, H, L, D] -> ([B, L, H, D] output, None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    plain = (attention_mask is None and not dropout and not (causal and query.shape[2] > 1)
             and not any(kwargs.get(k) is not None for k in ("position_bias", "cache", "softcap"))
             and query.shape[1] == key.shape[1] == value.shape[1] and key.shape[-1] == value.shape[-1])
    if (plain and query.device.type == "cpu" and query.dtype == torch.bfloat16 == key.dtype == value.dtype
            and torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad)):
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        out = _Fp32BackwardAttention.apply(query, key, value, scale)  # [B, H, L, D]
        return out.transpose(1, 2).contiguous(), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  is_causal=is_causal, **kwargs)


def use_fp32_attention_backward(model: nn.Module) -> bool:
    """Switch a transformers model that runs `sdpa` attention to `gx_sdpa`; True if switched.

    The name is not saved with the model (transformers leaves `_attn_implementation` out of config.json),
    so what a trained model saves loads anywhere with the stock attention."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION, sdpa_fp32_backward)
    config._attn_implementation = ATTENTION
    return True
