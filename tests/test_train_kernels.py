"""models.train_kernels: LoRA's dropout with a bool mask and attention whose bf16 CPU backward runs the fp32
kernel. Both must compute what the stock modules compute: the same distribution, the same forward, gradients
at least as close to an fp32 reference."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from gesture_cli.models.backbones import build_backbone
from gesture_cli.models.lora import build_classifier
from gesture_cli.models.train_kernels import ATTENTION, KeepMaskDropout, sdpa_fp32_backward, use_keep_mask_dropout

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- KeepMaskDropout -------------------------------------------------------------------------------


def test_dropout_keeps_one_minus_p_scales_like_nn_dropout_and_saves_a_bool_mask():
    drop = KeepMaskDropout(p=0.1).train()
    x = (torch.rand(64, 201, 384, generator=torch.Generator().manual_seed(0)) + 0.5).requires_grad_()  # no zeros: y != 0 is the mask
    torch.manual_seed(0)
    y = drop(x)
    keep = y != 0
    assert abs(keep.float().mean().item() - 0.9) < 2e-3  # 4.9M draws: the standard error is 1.4e-4
    assert torch.equal(y[keep], (x * (1 / 0.9))[keep])  # what nn.Dropout's fp32 kernel gives, bit for bit
    assert y.grad_fn.next_functions[0][0]._saved_condition.dtype == torch.bool  # `where` keeps only the mask
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, keep.float() * (1 / 0.9))
    torch.manual_seed(0)
    assert torch.equal(drop(x), y)  # drawn from the global generator: fit's per-step seeds make it repeatable


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
