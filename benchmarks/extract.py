"""Feature extraction: gx's route against the naive one, on the same model and images.

Naive route: transformers' `pipeline("image-feature-extraction")`, one PIL image at a time (what the
research notebooks gx replaces do). gx route: `extract_split` (batched tensor preprocessing, SDPA,
inference_mode, bf16 weights where the hardware multiplies bf16 natively, prefetching).

Both use the same dinov2-small-sized model (random init, 224x224: 12 layers, 384 wide, patch 14),
saved to a temporary directory exactly like a downloaded snapshot and loaded from there. The matmul
peak of this machine is measured in the same process, so the fraction of peak is honest here.

Usage: python benchmarks/extract.py [--images 64] [--naive-images 16] [--seconds 4]
Target (issue 2): gx >= 1.6x the naive route, and >= 40% of the matmul peak of the dtype gx runs in.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # before transformers is imported
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402

TARGET_RATIO = 1.6
TARGET_PEAK_FRACTION = 0.40


def matmul_peak_gflops(dtype: torch.dtype, seconds: float) -> float:
    """Best sustained GFLOP/s of a square matmul in this process (n=2048 fp32; smaller if slow)."""
    n = 2048 if dtype == torch.float32 else 1024
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def vit_gflops_per_image(*, layers: int, dim: int, tokens: int, mlp_ratio: float = 4.0, patch: int = 14) -> float:
    """Matmul FLOPs of one ViT forward: qkv+proj 8ND^2, MLP 4*mlp_ratio*ND^2, attention 4N^2D, patch embed."""
    per_layer = (8 + 4 * mlp_ratio) * tokens * dim**2 + 4 * tokens**2 * dim
    patch_embed = 2 * (tokens - 1) * 3 * patch * patch * dim
    return (layers * per_layer + patch_embed) / 1e9


def make_snapshot(root: Path) -> Path:
    from transformers import Dinov2Config, Dinov2Model
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    cfg = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536, patch_size=14, image_size=224)
    Dinov2Model(cfg).save_pretrained(root)
    (root / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "BitImageProcessor",
                "do_resize": True,
                "size": {"shortest_edge": 224},
                "do_center_crop": True,
                "crop_size": {"height": 224, "width": 224},
                "do_normalize": True,
                "image_mean": [0.485, 0.456, 0.406],
                "image_std": [0.229, 0.224, 0.225],
            }
        )
    )
    return root


def naive_images_per_s(snapshot: Path, images: np.ndarray) -> float:
    from PIL import Image
    from transformers import AutoModel, pipeline
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    try:
        from transformers import BitImageProcessorPil as Processor  # transformers 5 without torchvision
    except ImportError:
        from transformers import BitImageProcessor as Processor
    hf_logging.disable_progress_bar()
    model = AutoModel.from_pretrained(snapshot)
    pipe = pipeline("image-feature-extraction", model=model, image_processor=Processor.from_pretrained(snapshot), device="cpu")
    pil = [Image.fromarray(im) for im in images]
    pipe(pil[0])  # warm-up
    t0 = time.perf_counter()
    for im in pil:
        pipe(im)
    return len(pil) / (time.perf_counter() - t0)


def gx_images_per_s(snapshot: Path, images: np.ndarray) -> tuple[float, torch.dtype, int]:
    from gesture_cli.core.device import compute_dtype
    from gesture_cli.data.images import ImageDataset
    from gesture_cli.models.backbones import build_backbone
    from gesture_cli.models.features import extract_split

    dev = torch.device("cpu")
    dtype = compute_dtype(dev, "auto")
    backbone = build_backbone(str(snapshot), device=dev, dtype=dtype, image_size=224)
    ds = ImageDataset(spec="bench", split="train", classes=["x"], labels=np.zeros(len(images), dtype=np.int64), images=images)
    batch = 32
    extract_split(backbone, ds, pool="cls", batch_size=batch, device=dev, max_samples=batch)  # warm-up
    t0 = time.perf_counter()
    extract_split(backbone, ds, pool="cls", batch_size=batch, device=dev)
    return len(images) / (time.perf_counter() - t0), dtype, batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64, help="images for the gx route")
    ap.add_argument("--naive-images", type=int, default=16, help="images for the naive route (slow)")
    ap.add_argument("--seconds", type=float, default=3.0, help="time spent measuring each matmul peak")
    args = ap.parse_args()
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.images, 256, 256, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        snap = make_snapshot(Path(tmp) / "dinov2-small-random")
        naive = naive_images_per_s(snap, images[: args.naive_images])
        gx, dtype, batch = gx_images_per_s(snap, images)
    peak_fp32 = matmul_peak_gflops(torch.float32, args.seconds)
    peak_bf16 = matmul_peak_gflops(torch.bfloat16, min(args.seconds, 2.0))
    gflop = vit_gflops_per_image(layers=12, dim=384, tokens=1 + 16 * 16)
    achieved = gx * gflop
    peak_used = peak_bf16 if dtype == torch.bfloat16 else peak_fp32
    ratio = gx / naive
    print(f"model: dinov2-small size, random init, 224x224, {gflop:.1f} GFLOP/image; threads={torch.get_num_threads()}")
    print(f"matmul peak here: fp32 {peak_fp32:.1f} GFLOP/s, bf16 {peak_bf16:.2f} GFLOP/s")
    print(f"naive pipeline (1 image at a time, fp32): {naive:.2f} images/s")
    print(f"gx extract (batch {batch}, {str(dtype).replace('torch.', '')}): {gx:.2f} images/s = {achieved:.1f} GFLOP/s")
    print(f"ratio gx/naive: {ratio:.2f}x (target >= {TARGET_RATIO}x)")
    print(f"fraction of the {str(dtype).replace('torch.', '')} matmul peak: {achieved / peak_used:.2f} (target >= {TARGET_PEAK_FRACTION})")
    if dtype != torch.bfloat16:
        print(f"note: no native bf16 on this CPU (bf16 peak {peak_bf16:.2f} GFLOP/s), so gx runs fp32; bf16 fraction would be {achieved / peak_bf16:.1f}")


if __name__ == "__main__":
    main()
