"""Training kernels that gx uses in place of slower stock ones on CPU; same maths, same results.

`KeepMaskDropout` (LoRA's dropout on the adapter input, see models.lora.apply_lora): the stock CPU
dropout draws its mask with `bernoulli_`, a serial generator that costs 3 ms per [8, 201, 384] tensor,
and keeps the mask for backward as a tensor of the input's dtype (fp32: PEFT casts the input to the
adapter's dtype first). Here one 31-bit draw of the global generator (`random_`) gives two elements
15 random bits each, so the mask costs half the draws; it is kept for backward as one byte an element,
and applied as a multiply by 0 or 1 (bool masks take slow, unvectorised kernels on CPU: `where` costs
4x a multiply). The distribution is nn.Dropout's with p rounded to a multiple of 2^-15 (each element is
kept with probability 1 - p to within 2^-16) and the same 1/(1 - p) scale, applied in fp32 opmath and
rounded once, so every kept value is bit for bit what nn.Dropout gives.

`use_addmm_lora` (PEFT's LoRA Linear layers, see models.lora.apply_lora): PEFT adds the update as
`result + lora_B(h) * scaling`, three [B, N, out] tensors (B h, its scaled copy, the sum) and three
roundings in bf16. With one plain adapter on a frozen nn.Linear, the same sum is added to the layer's
output in place, `out.addmm_(h, B^T, alpha=scaling)`: no new tensor, accumulated in fp32 and rounded
once. Any other configuration (not on the CPU, several or disabled adapters, merged weights, DoRA and
other variants, a lora_B bias, a trained base layer) runs PEFT's own forward.

`use_fused_rope` (DINOv3's rotary embedding of the patch tokens' queries and keys, transformers'
`apply_rotary_pos_emb`): stock autograd builds it from split, mul, neg, cat, mul, add and cat, seven
[B, H, N, D]-sized tensors per query and the same again in backward. `_PatchRope` writes the result
into one tensor and its backward is the rotation's transpose, with the same roundings in the same order:
forward and gradients are bit for bit the stock ones (tested in fp32 and bf16). It takes over only
CPU calls with gradients enabled; every other call runs transformers' function.

`gx_sdpa` (a transformers attention implementation, see `use_fp32_attention_backward`): on CPU the
bf16 flash-attention backward kernel is slower than the fp32 one (measured, one thread, q/k/v
[8, 6, 201, 64]: 15.8 ms against 9.7 ms, while the bf16 forward is faster: 3.5 against 4.8 ms). When
attention runs in bf16 on the CPU with gradients, the forward is the stock bf16 flash kernel and the
backward upcasts what that kernel saved and runs the fp32 kernel. Everywhere else (no gradient,
fp32, CUDA, a mask, dropout, causal) it is transformers' own `sdpa` unchanged.
"""

from __future__ import annotations

import types

import torch
from torch import nn

ATTENTION = "gx_sdpa"
_MASK_BITS = 2**15  # random bits per element: an int32 random_() draw is uniform on [0, 2^31), two 15-bit halves


def keep_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """uint8 0/1 [*shape]: 1 with probability 1 - p (p rounded to a multiple of 2^-15), from the global generator."""
    n = shape.numel()
    bits = torch.empty((n + 1) // 2, dtype=torch.int32).random_().view(torch.int16)[:n]  # low half: 16 bits, high: 15
    bits.bitwise_and_(_MASK_BITS - 1)  # [n] uniform on [0, 2^15)
    return (bits >= round(p * _MASK_BITS)).view(torch.uint8).view(shape)


class _ScaleByMask(torch.autograd.Function):
    """y = x * mask * scale with a 0/1 uint8 mask; backward keeps only the mask (and the scale)."""

    @staticmethod
    def forward(ctx, x, mask, scale: float):
        ctx.save_for_backward(mask)
        ctx.scale = scale
        return (x * mask.to(x.dtype)).mul_(scale)  # exact 0/1 product, then one rounding in fp32 opmath

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad.mul(ctx.scale).mul_(mask.to(grad.dtype)), None, None


class KeepMaskDropout(nn.Dropout):
    """nn.Dropout whose CPU training path draws half the random numbers and keeps a one-byte mask."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or self.p >= 1 or x.device.type != "cpu" or self.inplace:
            return super().forward(x)
        return _ScaleByMask.apply(x, keep_mask(x.shape, self.p), 1.0 / (1.0 - self.p))


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


def _addmm_lora_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """A peft.tuners.lora.Linear forward: base(x) + scaling * B(A(dropout(x))), the update added in place by addmm_."""
    active = self.active_adapters
    name = active[0] if len(active) == 1 else None
    base = self.base_layer
    if (args or kwargs or x.device.type != "cpu" or self.disable_adapters or self.merged or name not in self.lora_A
            or name in self.lora_variant or self.lora_B[name].bias is not None or type(base) is not nn.Linear
            or self.fan_in_fan_out or base.weight.requires_grad):
        return type(self).forward(self, x, *args, **kwargs)
    flat = x.reshape(-1, x.shape[-1])
    # the frozen layer on [M, in] gives a fresh [M, out] tensor that neither it nor anything else keeps for
    # backward, so the update can be added to it in place
    out = base(flat)
    h = self.lora_A[name](self.lora_dropout[name](flat))  # [M, r]
    weight = self.lora_B[name].weight  # [out, r]
    if not (out.dtype == h.dtype == weight.dtype or torch.is_autocast_enabled(out.device.type)):
        out = (out + self.lora_B[name](h) * self.scaling[name]).to(out.dtype)  # mixed dtypes, no autocast: PEFT's sum
    else:
        out.addmm_(h.to(out.dtype), weight.to(out.dtype).t(), alpha=self.scaling[name])  # autocast's casts, by hand
    return out.view(*x.shape[:-1], out.shape[-1])


def use_addmm_lora(model: nn.Module) -> int:
    """Give every PEFT LoRA Linear in `model` the one-addmm forward; returns how many. State dicts are unchanged."""
    from peft.tuners.lora.layer import Linear

    fused = 0
    for module in model.modules():
        if type(module) is Linear and module.forward.__func__ is not _addmm_lora_forward:
            module.forward = types.MethodType(_addmm_lora_forward, module)
            fused += 1
    return fused


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


class _PatchRope(torch.autograd.Function):
    """x [B, H, N, D] -> x with the last P tokens rotated: x * cos + rotate_half(x) * sin (cos, sin [P, D])."""

    @staticmethod
    def forward(ctx, x, cos, sin):
        prefix, half = x.shape[-2] - cos.shape[-2], x.shape[-1] // 2
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # [B, H, N, D] contiguous, as cat returns
        out[..., :prefix, :] = x[..., :prefix, :]  # class and register tokens pass through
        patches, rotated = x[..., prefix:, :], out[..., prefix:, :]
        torch.mul(patches, cos, out=rotated)
        term = torch.empty(patches.shape, dtype=x.dtype, device=x.device)  # rotate_half(patches) * sin
        torch.mul(patches[..., half:], sin[..., :half], out=term[..., :half]).neg_()  # (-x2) * s == -(x2 * s) exactly
        torch.mul(patches[..., :half], sin[..., half:], out=term[..., half:])
        rotated.add_(term)
        ctx.save_for_backward(cos, sin)
        return out

    @staticmethod
    def backward(ctx, grad):
        cos, sin = ctx.saved_tensors
        prefix, half = grad.shape[-2] - cos.shape[-2], grad.shape[-1] // 2
        dx = torch.empty(grad.shape, dtype=grad.dtype, device=grad.device)
        dx[..., :prefix, :] = grad[..., :prefix, :]
        patches, rotated = grad[..., prefix:, :], dx[..., prefix:, :]
        torch.mul(patches, cos, out=rotated)
        term = patches * sin  # rotate_half's transpose: [t1, t2] -> [t2, -t1]
        rotated[..., :half].add_(term[..., half:])
        rotated[..., half:].sub_(term[..., :half])
        return dx, None, None


def _fused_rope_or_stock(stock):
    def apply_rotary_pos_emb(q, k, cos, sin, **kwargs):
        if (not kwargs and torch.is_grad_enabled() and q.device.type == "cpu" and q.dim() == 4 and q.shape == k.shape
                and cos.dim() == 2 and cos.shape == sin.shape and cos.shape[-1] == q.shape[-1]
                and q.shape[-1] % 2 == 0 and cos.shape[0] <= q.shape[-2] and q.dtype == k.dtype == cos.dtype == sin.dtype):
            return _PatchRope.apply(q, cos, sin), _PatchRope.apply(k, cos, sin)
        return stock(q, k, cos, sin, **kwargs)

    apply_rotary_pos_emb.stock = stock
    return apply_rotary_pos_emb


def use_fused_rope(model: nn.Module) -> bool:
    """Route transformers' DINOv3 rotary embedding through `_PatchRope` if `model` has DINOv3 attention;
    True if it does. The switch is module-wide and once: outside CPU training it calls the stock function."""
    if not any(type(m).__name__ == "DINOv3ViTAttention" for m in model.modules()):
        return False
    from transformers.models.dinov3_vit import modeling_dinov3_vit

    stock = modeling_dinov3_vit.apply_rotary_pos_emb
    if not hasattr(stock, "stock"):
        modeling_dinov3_vit.apply_rotary_pos_emb = _fused_rope_or_stock(stock)
    return True


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
