"""models.train_kernels: LoRA's dropout with a one-byte mask, the adapter update added by one addmm, DINOv3's
patch RoPE as one autograd function, and attention whose bf16 CPU backward runs the fp32 kernel. Each must
compute what the stock modules compute: the same distribution, the same forward (bit for bit where the
roundings are the same), gradients at least as close to an fp32 reference."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from gesture_cli.models.backbones import build_backbone
from gesture_cli.models.lora import build_classifier
from gesture_cli.models.train_kernels import ATTENTION, KeepMaskDropout, keep_mask, sdpa_fp32_backward, use_keep_mask_dropout

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- KeepMaskDropout -------------------------------------------------------------------------------


def test_dropout_keeps_one_minus_p_scales_like_nn_dropout_and_saves_a_one_byte_mask():
    drop = KeepMaskDropout(p=0.1).train()
    x = (torch.rand(64, 201, 384, generator=torch.Generator().manual_seed(0)) + 0.5).requires_grad_()  # no zeros: y != 0 is the mask
    torch.manual_seed(0)
    y = drop(x)
    keep = y != 0
    assert abs(keep.float().mean().item() - 0.9) < 2e-3  # 4.9M draws: the standard error is 1.4e-4
    assert torch.equal(y[keep], (x * (1 / 0.9))[keep])  # what nn.Dropout's fp32 kernel gives, bit for bit
    (saved,) = y.grad_fn.saved_tensors  # backward keeps only the mask, one byte an element
    assert saved.dtype == torch.uint8 and saved.shape == x.shape and torch.equal(saved.bool(), keep)
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, keep.float() * (1 / 0.9))
    torch.manual_seed(0)
    assert torch.equal(drop(x), y)  # drawn from the global generator: fit's per-step seeds make it repeatable


@pytest.mark.parametrize("n", [2 * 300_000, 2 * 300_000 + 1])
def test_keep_mask_halves_are_each_kept_with_probability_one_minus_p(n):
    torch.manual_seed(0)
    keep = keep_mask(torch.Size([n]), 0.3).float()
    assert keep.shape == (n,) and set(keep.unique().tolist()) == {0.0, 1.0}
    # even elements come from the low 16 bits of a draw, odd ones from the high 15: both must be uniform
    for half in (keep[0::2], keep[1::2]):
        assert abs(half.mean().item() - 0.7) < 4e-3  # 300k draws: the standard error is 8e-4
    assert not torch.equal(keep[0::2][:1000], keep[1::2][:1000])


def test_dropout_in_bf16_matches_the_fp32_route_rounded_once():
    drop = KeepMaskDropout(p=0.25).train()
    x = (torch.rand(8, 50, 64, generator=torch.Generator().manual_seed(0)) + 0.5).bfloat16()
    torch.manual_seed(1)
    y = drop(x)
    keep = y != 0
    assert y.dtype == torch.bfloat16
    assert torch.equal(y[keep], (x.float() / 0.75).bfloat16()[keep])


def test_dropout_is_the_identity_in_eval_and_at_p0_and_stock_elsewhere():
    x = torch.randn(4, 10)
    assert torch.equal(KeepMaskDropout(p=0.5).eval()(x), x)
    assert torch.equal(KeepMaskDropout(p=0.0).train()(x), x)
    assert torch.equal(KeepMaskDropout(p=1.0).train()(x), torch.zeros_like(x))


def test_lora_layers_get_keep_mask_dropout_and_nothing_else_changes():
    model = build_classifier(build_backbone("tiny-dinov3", image_size=32), num_classes=3, method="lora")
    drops = [m for name, m in model.named_modules() if name.endswith("lora_dropout.default")]
    assert drops and all(type(m) is KeepMaskDropout and m.p == 0.1 for m in drops)
    assert use_keep_mask_dropout(model) == 0  # already replaced: nothing left to do
    assert not any(k for k in model.state_dict() if "dropout" in k)  # no state: adapters save as before


# ---- attention -------------------------------------------------------------------------------------


class _Attn(nn.Module):
    is_causal = False


def _qkv(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, 37, 16, generator=g).to(dtype).requires_grad_() for _ in range(3)]


def test_bf16_attention_forward_is_the_stock_kernel_and_its_gradients_are_closer_to_fp32():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    ref = _qkv(torch.float32)
    out_ref, _ = sdpa_attention_forward(_Attn(), *ref, None, scaling=0.25)
    grad = torch.randn_like(out_ref)
    out_ref.backward(grad)

    def run(fn):
        qkv = _qkv(torch.bfloat16)
        out, _ = fn(_Attn(), *qkv, None, scaling=0.25)
        out.backward(grad.bfloat16())
        return out, [t.grad for t in qkv]

    out_stock, g_stock = run(sdpa_attention_forward)
    out_gx, g_gx = run(sdpa_fp32_backward)
    assert torch.equal(out_gx, out_stock)
    for r, s, x in zip(ref, g_stock, g_gx, strict=True):
        err_stock = (s.float() - r.grad).norm() / r.grad.norm()
        err_gx = (x.float() - r.grad).norm() / r.grad.norm()
        assert x.dtype == torch.bfloat16 and err_gx <= err_stock * 1.05 and err_gx < 1e-2


def test_attention_without_gradients_or_in_fp32_is_transformers_sdpa():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    for dtype in (torch.float32, torch.bfloat16):
        q, k, v = (t.detach() for t in _qkv(dtype))
        with torch.no_grad():
            assert torch.equal(sdpa_fp32_backward(_Attn(), q, k, v, None)[0], sdpa_attention_forward(_Attn(), q, k, v, None)[0])
    grads = []
    for fn in (sdpa_attention_forward, sdpa_fp32_backward):
        qkv = _qkv(torch.float32)
        fn(_Attn(), *qkv, None)[0].sum().backward()
        grads.append([t.grad for t in qkv])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


@pytest.mark.parametrize(("method", "want"), [("lora", ATTENTION), ("full", ATTENTION), ("head", "sdpa")])
def test_trained_backbones_use_it_and_saved_configs_do_not_name_it(tmp_path, method, want):
    model = build_classifier(build_backbone("tiny-dinov3", image_size=32), num_classes=3, method=method)
    assert model.backbone.model.config._attn_implementation == want
    model.backbone.model.config.save_pretrained(tmp_path)
    assert ATTENTION not in (tmp_path / "config.json").read_text()
    assert "attn_implementation" not in json.loads((tmp_path / "config.json").read_text())


def test_adapters_take_bf16_input_as_is_and_compute_what_peft_s_upcast_computes():
    from gesture_cli.core.device import Precision

    model = build_classifier(build_backbone("tiny-dinov3", image_size=32), num_classes=3, method="lora")
    prec = Precision("bf16", torch.device("cpu"))
    prec.wrap(prec.store_frozen(model)).train()
    layers = [m for m in model.modules() if hasattr(m, "lora_A")]
    assert layers and not any(m.cast_input_dtype_enabled for m in layers)
    for m in layers:
        m.lora_B["default"].weight.data.normal_(0, 0.5)  # LoRA B starts at zero: make the branch count
    pixels = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    logits = []
    for cast in (False, True):
        for m in layers:
            m.cast_input_dtype_enabled = cast
        torch.manual_seed(3)
        logits.append(model(pixels))
    assert torch.equal(*logits)


# ---- one-addmm LoRA update ---------------------------------------------------------------------------


def _lora_pair(dtype=torch.float32):
    """Two identical LoRA classifiers over tiny-dinov3 with non-zero B matrices: one with gx's forward, one PEFT's."""
    from peft.tuners.lora.layer import Linear

    models = []
    for _ in range(2):
        model = build_classifier(build_backbone("tiny-dinov3", image_size=32), num_classes=3, method="lora", seed=0)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * 0.1)
                elif not p.requires_grad and dtype != torch.float32:
                    p.data = p.data.to(dtype)  # the frozen base in the compute dtype, as core.device.Precision stores it
        models.append(model.eval())  # eval: no dropout, so both see the same adapter input
    for module in models[1].modules():
        if type(module) is Linear:
            del module.forward  # back to PEFT's class forward
    return models


def _run(model, x, autocast_dtype=None):
    with torch.autocast("cpu", dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        out = model(x)
    out.float().square().sum().backward()
    return out.float(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def test_addmm_lora_computes_peft_s_sum_in_fp32():
    gx, peft = _lora_pair()
    lora_layers = [m for m in gx.modules() if type(m).__name__ == "Linear" and hasattr(m, "lora_A")]
    assert lora_layers and all(m.forward.__func__.__name__ == "_addmm_lora_forward" for m in lora_layers)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    (out_gx, grads_gx), (out_peft, grads_peft) = _run(gx, x), _run(peft, x)
    assert torch.allclose(out_gx, out_peft, rtol=1e-5, atol=1e-6)
    assert grads_gx.keys() == grads_peft.keys() and len(grads_gx) > 2
    for name, g in grads_gx.items():
        assert torch.allclose(g, grads_peft[name], rtol=1e-4, atol=1e-6), name
    assert gx.state_dict().keys() == peft.state_dict().keys()  # nothing new is saved


def test_addmm_lora_in_bf16_is_at_least_as_close_to_fp32_as_peft():
    ref, _ = _lora_pair()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    want, _ = _run(ref, x)
    gx, peft = _lora_pair(torch.bfloat16)
    (out_gx, _), (out_peft, _) = _run(gx, x, torch.bfloat16), _run(peft, x, torch.bfloat16)
    err_gx, err_peft = ((o - want).norm() / want.norm() for o in (out_gx, out_peft))
    assert err_gx <= err_peft * 1.05 and err_gx < 2e-2


def test_addmm_lora_leaves_disabled_and_merged_adapters_to_peft():
    gx, peft = _lora_pair()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        with_adapters = gx(x)
        with gx.backbone.model.disable_adapter(), peft.backbone.model.disable_adapter():
            base = gx(x)
            assert torch.equal(base, peft(x)) and not torch.allclose(base, with_adapters, atol=1e-3)
        gx.backbone.model.merge_adapter()
        assert torch.allclose(gx(x), with_adapters, rtol=1e-4, atol=1e-5)


# ---- DINOv3 rotary embedding -------------------------------------------------------------------------


def _rope_run(fn, dtype, grad_enabled=True):
    """q, k as DINOv3 makes them (views of [B, N, H*D] projections), 5 prefix tokens; outputs and input grads."""
    g = torch.Generator().manual_seed(0)
    q_proj, k_proj = (torch.randn(2, 21, 4 * 8, generator=g).to(dtype).requires_grad_() for _ in range(2))
    cos, sin = (torch.randn(16, 8, generator=g).to(dtype) for _ in range(2))
    with torch.set_grad_enabled(grad_enabled):
        q, k = (t.view(2, 21, 4, 8).transpose(1, 2) for t in (q_proj, k_proj))
        q_out, k_out = fn(q, k, cos, sin)
    if not grad_enabled:
        return q_out, k_out
    w = torch.randn(q_out.shape, generator=g).to(dtype)
    q_out.backward(w)
    k_out.backward(w * 2)
    return q_out.detach(), k_out.detach(), q_proj.grad, k_proj.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_patch_rope_is_bit_for_bit_the_stock_forward_and_backward(dtype):
    from transformers.models.dinov3_vit import modeling_dinov3_vit

    from gesture_cli.models.train_kernels import _PatchRope, use_fused_rope

    assert use_fused_rope(build_classifier(build_backbone("tiny-dinov3", image_size=32), num_classes=3, method="lora"))
    fused = modeling_dinov3_vit.apply_rotary_pos_emb
    stock = fused.stock
    assert not hasattr(stock, "stock")  # installed once, over transformers' own function
    gx, ref = _rope_run(fused, dtype), _rope_run(stock, dtype)
    assert all(torch.equal(a, b) for a, b in zip(gx, ref, strict=True))
    q = torch.randn(1, 2, 21, 8, requires_grad=True)
    assert type(fused(q, q, *torch.randn(2, 16, 8))[0].grad_fn).__name__ == _PatchRope.__name__ + "Backward"
    assert all(torch.equal(a, b) for a, b in zip(_rope_run(fused, dtype, False), _rope_run(stock, dtype, False), strict=True))


def test_fused_rope_is_only_for_dinov3():
    from gesture_cli.models.train_kernels import use_fused_rope

    assert not use_fused_rope(build_backbone("tiny-dinov2", image_size=32).model)
