"""Pose encoder: masking, the growing RoPE cache, SDPA == eager, save/load, config file."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch

from gesture_cli.core.errors import UsageError
from gesture_cli.models.pose_encoder import (
    PoseEncoderConfig,
    build_pose_encoder,
    load_pose_encoder,
    pose_encoder_config,
    save_pose_encoder,
)
from gesture_cli.models.skeletons import select_parts
from tests.conftest import REPO

TINY = {"d_model": 32, "n_layers": 2, "n_heads": 2, "gcn_dims": [16, 16], "dropout": 0.0}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(seed: int = 0, **kw):
    torch.manual_seed(seed)
    return build_pose_encoder(**{**TINY, **kw}).eval()


def batch(b: int = 3, t: int = 20, k: int = 543, c: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    kp = torch.rand(b, t, k, c, generator=g)
    pm = torch.rand(b, t, k, generator=g) > 0.2
    pm[0, :, 501:522] = False  # a lost left hand
    fm = torch.ones(b, t, dtype=torch.bool)
    fm[1, t // 2:] = False  # a shorter sequence, padded
    return kp, pm, fm


def test_shapes_and_pooled_is_the_mean_over_real_frames():
    enc = tiny()
    kp, pm, fm = batch()
    with torch.no_grad():
        out = enc(kp, pm, fm)
    assert tuple(out.hidden.shape) == (3, 20, 32) and tuple(out.pooled.shape) == (3, 32)
    assert (out.hidden[1, 10:] == 0).all()
    torch.testing.assert_close(out.pooled[1], out.hidden[1, :10].mean(0))
    # the layout's 543 points or the already-selected 94 give the same result
    idx = torch.as_tensor(select_parts("mediapipe-holistic", ("body", "hands", "face-lite")).indices)
    with torch.no_grad():
        pre = enc(kp[:, :, idx], pm[:, :, idx], fm)
    torch.testing.assert_close(pre.hidden, out.hidden)


def test_masked_points_contribute_nothing():
    enc = tiny()
    kp, pm, fm = batch()
    moved = kp.clone()
    moved[~pm] = torch.randn(int((~pm).sum()), 3) * 1e4  # any coordinates where masked...
    moved[0, 3, 510] = float("nan")  # ...even NaN
    with torch.no_grad():
        a, b = enc(kp, pm, fm), enc(moved, pm, fm)
    assert torch.equal(a.hidden, b.hidden) and torch.equal(a.pooled, b.pooled)
    # while an observed point does change the output
    moved2 = kp.clone()
    i = int(torch.nonzero(pm[0, 0, :25])[0])
    moved2[0, 0, i] += 1.0
    with torch.no_grad():
        assert not torch.equal(enc(moved2, pm, fm).hidden[0], a.hidden[0])


def test_padded_frames_change_nothing():
    enc = tiny()
    kp, pm, fm = batch()
    other = kp.clone()
    other[1, 10:] = torch.rand_like(other[1, 10:]) * 100
    with torch.no_grad():
        assert torch.equal(enc(kp, pm, fm).hidden, enc(other, pm, fm).hidden)


def test_rope_cache_grows_past_its_initial_length_with_the_same_result():
    small = tiny(rope_cache=8)
    big = tiny(rope_cache=4096)
    big.load_state_dict(small.state_dict())
    assert small.rope_cache_len == 8
    kp, pm, fm = batch(t=100)
    with torch.no_grad():
        a, b = small(kp, pm, fm), big(kp, pm, fm)
    assert small.rope_cache_len == 128  # grown to the next power of two
    torch.testing.assert_close(a.hidden, b.hidden, rtol=0, atol=1e-6)
    with torch.no_grad():
        c = small(kp[:, :30], pm[:, :30], fm[:, :30])  # shorter again: the grown cache serves it
    torch.testing.assert_close(c.hidden, big(kp[:, :30], pm[:, :30], fm[:, :30]).hidden, rtol=0, atol=1e-6)


def test_sdpa_equals_eager_attention():
    sdpa = tiny(attn_impl="sdpa")
    eager = tiny(attn_impl="eager")
    eager.load_state_dict(sdpa.state_dict())
    kp, pm, fm = batch(t=37)
    with torch.no_grad():
        a, b = sdpa(kp, pm, fm), eager(kp, pm, fm)
    assert (a.hidden - b.hidden).abs().max().item() < 1e-5
    assert (a.pooled - b.pooled).abs().max().item() < 1e-5


def test_training_step_has_finite_gradients_for_every_variant():
    for kw in ({}, {"pool": "flatten", "mlp": "gelu", "parts": ["hands"]}, {"in_channels": 2, "attn_impl": "eager"}):
        torch.manual_seed(0)
        enc = build_pose_encoder(**{**TINY, "dropout": 0.1, **kw}).train()
        kp, pm, fm = batch(b=2, t=12)
        fm[0] = False  # a sequence without a single real frame must not produce NaN
        out = enc(kp, pm, fm)
        out.pooled.pow(2).sum().backward()
        grads = [p.grad for p in enc.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), kw
        assert torch.equal(out.pooled[0], torch.zeros_like(out.pooled[0]))


def test_save_and_load_rebuild_from_files_alone(tmp_path):
    enc = tiny(parts=["body", "hands"], rope_cache=16)
    path = save_pose_encoder(enc, tmp_path / "pretrain")
    assert path.name == "encoder.safetensors"
    info = json.loads((tmp_path / "pretrain" / "config.json").read_text())
    assert info["config"]["parts"] == ["body", "hands"] and info["config"]["layout"] == "mediapipe-holistic" and info["num_points"] == 67
    back = load_pose_encoder(tmp_path / "pretrain").eval()
    assert back.config == enc.config
    kp, pm, fm = batch(t=40)
    with torch.no_grad():
        torch.testing.assert_close(back(kp, pm, fm).hidden, enc(kp, pm, fm).hidden, rtol=0, atol=0)


def test_config_file_and_its_documentation():
    cfg = pose_encoder_config(REPO / "configs" / "pose_encoder.json")
    assert cfg == PoseEncoderConfig()  # the example file holds the defaults
    doc = (REPO / "configs" / "pose_encoder.md").read_text()
    documented = set(re.findall(r"^\| `(\w+)` \|", doc, flags=re.M))
    assert documented == {f.name for f in dataclasses.fields(PoseEncoderConfig)}
    with pytest.raises(UsageError, match="did you mean 'n_heads'"):
        pose_encoder_config(n_head=4)
    with pytest.raises(UsageError, match="even width"):
        pose_encoder_config(d_model=30, n_heads=2)
    with pytest.raises(UsageError, match="unknown keypoint part"):
        pose_encoder_config(parts=["tail"])


def test_wrong_number_of_points_is_a_clear_error():
    enc = tiny()
    kp, pm, fm = batch(k=137)
    with pytest.raises(UsageError, match="137 points; this encoder expects 543"):
        enc(kp, pm, fm)


def test_encoder_runs_on_collated_synthetic_signs():
    from gesture_cli.data.pose import make_pose_dataset
    from gesture_cli.data.pose_batches import collate_pose

    ds = make_pose_dataset("synthetic-signs", split="val", val_size=4)
    b = collate_pose(ds.samples, normalize="shoulders", points=select_parts(ds.layout, ("body", "hands", "face-lite")).indices)
    with torch.no_grad():
        out = tiny()(b["keypoints"], b["point_mask"], b["frame_mask"])
    assert out.hidden.shape[:2] == b["frame_mask"].shape and torch.isfinite(out.hidden).all()
