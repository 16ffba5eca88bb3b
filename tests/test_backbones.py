"""Backbone wrapper: parametrised over the tiny registry entries, plus the hub-cache, local-dir,
TorchScript and timm loading paths. Everything runs offline in fp32 on tiny models."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest
import torch

from gesture_cli.core.errors import ModelError, UsageError
from gesture_cli.models import backbones as bb_mod
from gesture_cli.models.backbone_registry import FAMILIES, REGISTRY, list_backbones, register_backbone
from gesture_cli.models.backbones import POOL_KINDS, Backbone, build_backbone, hub_id

TINY = sorted(name for name, entry in REGISTRY.items() if entry.source == "tiny")
B = 2


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """No test reads the user's cache or the network."""
    monkeypatch.setenv("GX_HOME", str(tmp_path / "gx_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny_backbones() -> dict[str, Backbone]:
    return {name: build_backbone(name) for name in TINY}


def _raw_tiny(name: str) -> torch.nn.Module:
    """The unwrapped HF model a tiny entry is built from (same seed, untouched position table)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(bb_mod.TINY_SEED)
        return REGISTRY[name].build().eval()


def _pixels(side: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(B, 3, side, side, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------


def test_registry_entries_are_complete():
    assert {"tiny-dinov2", "tiny-dinov3", "tiny-vit", "tiny-ijepa"} <= set(TINY)
    for entry in list_backbones():
        assert entry.family in FAMILIES and entry.source and entry.description, entry
        assert (entry.build is not None) == (entry.source == "tiny"), entry
    assert REGISTRY["dinov3-vits16"].gated and not REGISTRY["dinov2-small"].gated
    assert hub_id("dinov2-small") == "facebook/dinov2-small"
    assert hub_id("dinov3-vitb16") == "facebook/dinov3-vitb16-pretrain-lvd1689m"
    assert hub_id("sapiens-1b") == "facebook/sapiens-pretrain-1b-torchscript"
    assert hub_id("tiny-vit") is None
    assert hub_id("someone/some-model") == "someone/some-model"
    assert hub_id("timm:vit_small_patch14_dinov2.lvd142m") is None
    with pytest.raises(UsageError, match="did you mean 'dinov2-small'"):
        hub_id("dinov2-smal")


def test_register_twice_is_an_error():
    with pytest.raises(ValueError, match="twice"):
        register_backbone("tiny-vit", family="vit", source="tiny")


def test_unknown_name_suggests():
    with pytest.raises(UsageError, match="did you mean 'tiny-dinov3'"):
        build_backbone("tiny-dinov")


# ----------------------------------------------------------------------------------------------
# Every tiny entry: shapes, pooling, preprocessing, determinism, describe() round trip
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TINY)
def test_forward_features_shapes(name, tiny_backbones):
    bb = tiny_backbones[name]
    info = bb.info
    assert not bb.training and all(not p.requires_grad for p in bb.parameters())
    with torch.inference_mode():
        cls, patches, grid = bb.forward_features(_pixels())
    assert grid == (8, 8)
    assert patches.shape == (B, 64, info.embed_dim)
    assert (cls is None) == (not info.has_cls) == (info.family == "ijepa")
    if cls is not None:
        assert cls.shape == (B, info.embed_dim)
    expected_prefix = {"dinov2": 1, "vit": 1, "dinov3": 5, "ijepa": 0}[info.family]
    assert info.num_prefix_tokens == expected_prefix


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("kind", POOL_KINDS)
def test_pool_kinds_match_feature_dim(name, kind, tiny_backbones):
    bb = tiny_backbones[name]
    with torch.inference_mode():
        cls, patches, _ = bb.forward_features(_pixels())
        pooled = bb.pool(cls, patches, kind)
        direct = bb(_pixels(), pool=kind)
    assert pooled.shape == (B, bb.feature_dim(kind))
    torch.testing.assert_close(direct, pooled)
    if kind == "mean" or cls is None:  # no CLS: every kind falls back to mean pooling
        torch.testing.assert_close(pooled, patches.mean(1))
    elif kind == "cls+mean":
        torch.testing.assert_close(pooled[:, : bb.info.embed_dim], cls)


def test_unknown_pool_kind(tiny_backbones):
    bb = tiny_backbones["tiny-vit"]
    with pytest.raises(UsageError, match="did you mean 'mean'"):
        bb.feature_dim("meen")


@pytest.mark.parametrize("name", TINY)
def test_preprocess_layouts(name, tiny_backbones):
    bb = tiny_backbones[name]
    grey = torch.randint(0, 256, (B, 28, 28), dtype=torch.uint8)
    rgb_last = torch.randint(0, 256, (B, 40, 30, 3), dtype=torch.uint8)
    for images in (grey, rgb_last, rgb_last.permute(0, 3, 1, 2), rgb_last.float() / 255, grey.unsqueeze(1)):
        pixels = bb.preprocess(images)
        assert pixels.shape == (B, 3, 64, 64) and pixels.dtype == torch.float32
    # grey becomes three identical channels before normalisation: undo it and compare
    pixels = bb.preprocess(grey)
    mean = torch.tensor(bb.info.mean).view(1, 3, 1, 1)
    std = torch.tensor(bb.info.std).view(1, 3, 1, 1)
    raw = pixels * std + mean
    torch.testing.assert_close(raw[:, 0], raw[:, 2], atol=1e-5, rtol=0)
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
    # uint8 and the same image as float in [0, 1] give the same pixels
    torch.testing.assert_close(bb.preprocess(rgb_last), bb.preprocess(rgb_last.float() / 255))
    # at the native size nothing is resized: exact normalisation
    native = torch.rand(B, 3, 64, 64)
    torch.testing.assert_close(bb.preprocess(native), (native - mean) / std)


def test_preprocess_rejects_bad_layout(tiny_backbones):
    from gesture_cli.core.errors import DataError

    with pytest.raises(DataError, match="expected"):
        tiny_backbones["tiny-vit"].preprocess(torch.zeros(B, 5, 8, 8))
    with pytest.raises(DataError, match="dtype"):
        tiny_backbones["tiny-vit"].preprocess(torch.zeros(B, 8, 8, dtype=torch.int32))


@pytest.mark.parametrize("name", TINY)
def test_deterministic_and_describe_round_trip(name, tiny_backbones):
    bb = tiny_backbones[name]
    state = torch.get_rng_state()
    d = json.loads(json.dumps(bb.describe()))  # must be JSON-able
    again = build_backbone(d["name"] or d["source"], image_size=d["image_size"])
    assert torch.equal(torch.get_rng_state(), state), "building a tiny model must not move the global RNG"
    assert again.describe() == d
    assert d["name"] == name and d["source"] == "tiny" and d["image_size"] == 64
    with torch.inference_mode():
        torch.testing.assert_close(again(_pixels(), pool="cls+mean"), bb(_pixels(), pool="cls+mean"), rtol=0, atol=0)


@pytest.mark.slow
def test_tiny_weights_identical_across_processes(tiny_backbones):
    code = (
        "import hashlib, torch\n"
        "from gesture_cli.models.backbones import build_backbone\n"
        f"for n in {TINY!r}:\n"
        "    sd = build_backbone(n).model.state_dict()\n"
        "    h = hashlib.sha256(b''.join(sd[k].numpy().tobytes() for k in sorted(sd)))\n"
        "    print(n, h.hexdigest())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for line in out.strip().splitlines():
        name, digest = line.split()
        sd = tiny_backbones[name].model.state_dict()
        assert hashlib.sha256(b"".join(sd[k].numpy().tobytes() for k in sorted(sd))).hexdigest() == digest


# ----------------------------------------------------------------------------------------------
# Image sizes and position embeddings
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-dinov2", "tiny-vit", "tiny-ijepa"])
@pytest.mark.parametrize("side", [32, 96])
def test_prepared_position_table_matches_hf_interpolation(name, side):
    """Resizing the table once at build time gives HF's on-the-fly interpolation, without the cost."""
    bb = build_backbone(name, image_size=side)
    grid = side // 8
    prefix = int(bb.info.has_cls)
    assert bb.model.embeddings.position_embeddings.shape[1] == prefix + grid * grid
    assert bb.model.config.image_size == side and bb.image_size == side
    raw = _raw_tiny(name)
    pixels = _pixels(side)
    with torch.inference_mode():
        cls, patches, g = bb.forward_features(pixels)
        kwargs = {} if bb.info.family == "dinov2" else {"interpolate_pos_encoding": True}
        ref = raw(pixel_values=pixels, **kwargs).last_hidden_state
    assert g == (grid, grid) and patches.shape == (B, grid * grid, 64)
    torch.testing.assert_close(patches, ref[:, prefix:], atol=1e-4, rtol=1e-4)
    if cls is not None:
        torch.testing.assert_close(cls, ref[:, 0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", TINY)
def test_other_input_size_at_forward(name, tiny_backbones):
    bb = tiny_backbones[name]  # built for 64 px
    with torch.inference_mode():
        cls, patches, grid = bb.forward_features(_pixels(80))
    assert grid == (10, 10) and patches.shape == (B, 100, 64)


def test_dinov3_other_build_size_keeps_registers():
    bb = build_backbone("tiny-dinov3", image_size=48)
    with torch.inference_mode():
        cls, patches, grid = bb.forward_features(bb.preprocess(torch.zeros(B, 28, 28, dtype=torch.uint8)))
    assert grid == (6, 6) and patches.shape == (B, 36, 64) and cls.shape == (B, 64)


def test_image_size_must_be_whole_patches():
    with pytest.raises(UsageError, match="multiple of .* patch size 8; use 64 or 72"):
        build_backbone("tiny-vit", image_size=70)


# ----------------------------------------------------------------------------------------------
# Hub cache, local directory
# ----------------------------------------------------------------------------------------------


def _tiny_hf_model(model_type: str) -> torch.nn.Module:
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    if model_type == "dinov2_with_registers":
        torch.manual_seed(7)
        cfg = Dinov2WithRegistersConfig(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=64, patch_size=8, num_register_tokens=4
        )
        return Dinov2WithRegistersModel(cfg).eval()
    name = {"dinov2": "tiny-dinov2", "dinov3_vit": "tiny-dinov3", "vit": "tiny-vit", "ijepa": "tiny-ijepa"}[model_type]
    return _raw_tiny(name)


def _save_as_hub_snapshot(model, repo_id: str, home, *, mean, std) -> tuple:
    """Lay the model out exactly like a hub cache entry: models--owner--name/{refs/main, snapshots/<sha>}."""
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    repo_dir = home / "models" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / commit
    model.save_pretrained(snapshot)
    processor = {"image_mean": mean, "image_std": std, "do_center_crop": True, "crop_size": {"height": 64, "width": 64}}
    (snapshot / "preprocessor_config.json").write_text(json.dumps(processor))
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return snapshot


@pytest.mark.parametrize(
    ("model_type", "family", "prefix"),
    [
        ("dinov2", "dinov2", 1),
        ("dinov2_with_registers", "dinov2", 5),
        ("dinov3_vit", "dinov3", 5),
        ("vit", "vit", 1),
        ("ijepa", "ijepa", 0),
    ],
)
def test_load_from_hub_cache_and_local_dir(model_type, family, prefix, tmp_path):
    home = tmp_path / "gx_home"  # GX_HOME, set by the autouse fixture; HF_HUB_OFFLINE=1
    model = _tiny_hf_model(model_type)
    repo_id = f"someone/tiny-{model_type}"
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    snapshot = _save_as_hub_snapshot(model, repo_id, home, mean=mean, std=std)
    pixels = _pixels()
    with torch.inference_mode():
        ref = model(pixel_values=pixels).last_hidden_state  # [B, prefix + 64, D]
    for spec in (repo_id, str(snapshot)):
        bb = build_backbone(spec)
        assert bb.info.family == family and bb.info.num_prefix_tokens == prefix
        assert bb.info.mean == tuple(mean) and bb.info.std == tuple(std)
        assert bb.info.name == spec and bb.info.source == spec and bb.image_size == 64
        with torch.inference_mode():
            cls, patches, grid = bb.forward_features(pixels)
        assert grid == (8, 8)
        torch.testing.assert_close(patches, ref[:, prefix:], atol=1e-5, rtol=1e-5)
        if family != "ijepa":
            torch.testing.assert_close(cls, ref[:, 0], atol=1e-5, rtol=1e-5)
        assert bb.model.config._attn_implementation == "sdpa"


def test_default_size_comes_from_processor_and_table_is_resized(tmp_path):
    """Like the real DINOv2 repos (config 518, processor crop 224): run at the processor's size."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(3)
    model = Dinov2Model(
        Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=96, patch_size=8)
    ).eval()
    _save_as_hub_snapshot(model, "someone/tiny-dinov2-96", tmp_path / "gx_home", mean=[0.5] * 3, std=[0.5] * 3)
    bb = build_backbone("someone/tiny-dinov2-96")
    assert bb.image_size == 64 and bb.model.embeddings.position_embeddings.shape[1] == 1 + 64
    with torch.inference_mode():
        _, patches, grid = bb.forward_features(_pixels())
        ref = model(pixel_values=_pixels()).last_hidden_state  # HF interpolates 12x12 -> 8x8 on the fly
    assert grid == (8, 8)
    torch.testing.assert_close(patches, ref[:, 1:], atol=1e-4, rtol=1e-4)


def test_missing_hub_model_offline_names_gx_download():
    with pytest.raises(ModelError, match="gx download dinov2-small") as info:
        build_backbone("dinov2-small")
    assert "not in the cache" in str(info.value)
    with pytest.raises(ModelError, match="gx download someone/not-there"):
        build_backbone("someone/not-there")


def test_gated_repo_error_mentions_hf_token(monkeypatch):
    import httpx2
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")

    def fake_snapshot_download(repo_id, *, local_files_only=False, **kwargs):
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        response = httpx2.Response(403, request=httpx2.Request("GET", f"https://huggingface.co/api/models/{repo_id}"))
        raise GatedRepoError("403 Client Error: gated", response=response)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    with pytest.raises(ModelError, match="HF_TOKEN") as info:
        build_backbone("dinov3-vits16")
    assert "gx download dinov3-vits16" in str(info.value) and "hf_secret_value" not in str(info.value)


def test_unsupported_model_type_is_a_model_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelError, match="'bert' model; supported"):
        build_backbone(str(tmp_path))


# ----------------------------------------------------------------------------------------------
# TorchScript (Sapiens) and timm
# ----------------------------------------------------------------------------------------------


class _FeatureMapNet(torch.nn.Module):
    """Sapiens-like: patch conv + 1x1 conv, returns a one-tuple of a feature map [B, D, h, w]."""

    def __init__(self):
        super().__init__()
        self.patch = torch.nn.Conv2d(3, 32, kernel_size=8, stride=8)
        self.mix = torch.nn.Conv2d(32, 32, kernel_size=1)

    def forward(self, x):
        return (self.mix(torch.relu(self.patch(x))),)


def test_torchscript_feature_map(tmp_path):
    torch.manual_seed(0)
    net = _FeatureMapNet().eval()
    path = tmp_path / "tiny_sapiens_torchscript.pt2"
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 3, 64, 64)), str(path))
    bb = build_backbone(str(path), image_size=64)
    assert bb.info.family == "sapiens" and bb.info.embed_dim == 32 and bb.info.patch_size == 8
    assert not bb.info.has_cls and bb.info.num_prefix_tokens == 0
    pixels = bb.preprocess(torch.randint(0, 256, (B, 28, 28), dtype=torch.uint8))
    with torch.inference_mode():
        cls, patches, grid = bb.forward_features(pixels)
        ref = net(pixels)[0]
    assert cls is None and grid == (8, 8) and patches.shape == (B, 64, 32)
    torch.testing.assert_close(patches, ref.flatten(2).transpose(1, 2))
    assert bb(pixels, pool="cls+mean").shape == (B, bb.feature_dim("cls+mean")) == (B, 32)
    again = build_backbone(bb.describe()["name"], image_size=bb.describe()["image_size"])
    assert again.describe() == bb.describe()
    # the same file in a hub snapshot without config.json (how the Sapiens repos look), loaded by hub id
    repo_dir = tmp_path / "gx_home" / "models" / "models--someone--tiny-sapiens-torchscript"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo_dir / "snapshots" / commit).mkdir(parents=True)
    (repo_dir / "snapshots" / commit / path.name).write_bytes(path.read_bytes())
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    by_id = build_backbone("someone/tiny-sapiens-torchscript", image_size=64)
    assert by_id.info.family == "sapiens" and by_id.info.source == "someone/tiny-sapiens-torchscript"
    with torch.inference_mode():
        torch.testing.assert_close(by_id(pixels, pool="mean"), patches.mean(1))


def test_timm_backbone():
    pytest.importorskip("timm")
    bb = bb_mod.build_timm_backbone("vit_tiny_patch16_224", image_size=64, pretrained=False)
    assert bb.info.family == "timm" and bb.info.patch_size == 16 and bb.info.num_prefix_tokens == 1
    with torch.inference_mode():
        cls, patches, grid = bb.forward_features(_pixels())
    assert grid == (4, 4) and patches.shape == (B, 16, bb.info.embed_dim) and cls.shape == (B, bb.info.embed_dim)


def test_timm_dinov2_with_registers_strips_prefix_tokens():
    pytest.importorskip("timm")
    bb = bb_mod.build_timm_backbone("vit_small_patch14_reg4_dinov2", image_size=56, pretrained=False)
    assert bb.info.patch_size == 14 and bb.info.num_prefix_tokens == 5  # CLS + 4 registers
    pixels = _pixels(56)
    with torch.inference_mode():
        cls, patches, grid = bb.forward_features(pixels)
        tokens = bb.model.forward_features(pixels)  # timm's own [B, 5 + 16, D]
    assert grid == (4, 4) and patches.shape == (B, 16, 384)
    torch.testing.assert_close(patches, tokens[:, 5:])
    torch.testing.assert_close(cls, tokens[:, 0])
