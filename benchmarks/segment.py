"""Linear segmentation head: training on cached patch tokens against on-the-fly backbone passes.

Model: a dinov2-small-sized DINOv2 (random init: hidden 384, 12 layers, 6 heads, patch 14), saved to a
temporary directory like a downloaded snapshot; `synthetic-scenes` images at `--size` (224: a 16x16
token grid). Both routes train the same `linear` head (BatchNorm + 1x1 conv, 19 classes) through
`gesture_cli.train.loop.fit` with gx's loss function, batch `--batch`, on the same images:

  on-the-fly   every step decodes and resizes the images and runs the frozen backbone (in its fast
               dtype: bf16 where the CPU multiplies it natively), then the head.
  cached       `build_token_cache` computes the tokens once (timed separately: a one-off cost), then
               every step reads float16 tokens from the memory-mapped shards and runs the head alone.

Each route runs in its own child process, so peak memory (ru_maxrss; on CUDA also the allocator's
peak) is that route's alone, imports included. Throughput is batch / the fastest timed step after
warm-up (robust to other processes on a shared machine); the median step is printed too. The break-even
line says after how many epochs caching has paid for itself.

Usage: python benchmarks/segment.py [--batch 8] [--size 224] [--steps 6] [--warmup 1] [--images 48] [--device cpu]
(about 2 min on 2 cores). Target (issue 7): cached training several times faster per step, with less memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = 19


def make_snapshot(root: Path, size: int) -> None:
    import torch
    from transformers import Dinov2Config, Dinov2Model
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Writing model shards" bar in the report
    torch.manual_seed(0)
    cfg = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4, patch_size=14, image_size=size)
    Dinov2Model(cfg).save_pretrained(root)
    (root / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "BitImageProcessor", "crop_size": {"height": size, "width": size}, "do_center_crop": True,
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
    }))


def _peak(device) -> dict:
    import torch

    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # KiB on Linux
    if device.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def child(route: str, model_dir: Path, *, batch: int, size: int, steps: int, warmup: int, images: int, device: str) -> dict:
    import torch

    from gesture_cli.core.device import compute_dtype
    from gesture_cli.data.segmentation import make_seg_dataset
    from gesture_cli.models.backbones import build_backbone
    from gesture_cli.models.seg_heads import Segmenter, build_seg_head, freeze_for
    from gesture_cli.train.loop import TrainConfig, fit, make_accelerator
    from gesture_cli.train.segment import PixelBatches, TokenBatches, build_token_cache, make_loss_fn

    acc = make_accelerator(device)
    dev = acc.device
    ds = make_seg_dataset("synthetic-scenes", split="train", size=size, train_images=images)
    backbone = build_backbone(str(model_dir), device=dev, dtype=compute_dtype(dev, "auto"), image_size=size)
    head = build_seg_head("linear", embed_dim=backbone.info.embed_dim, num_classes=NUM_CLASSES)
    params = freeze_for(head, "all")
    out: dict = {"dtype": str(backbone.dtype).replace("torch.", ""), "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        if route == "cached":
            t0 = time.perf_counter()
            data = TokenBatches(build_token_cache(Segmenter(backbone, head), ds, Path(tmp) / "cache", size=size, batch_size=batch))
            out["cache_s"] = time.perf_counter() - t0
            model = Segmenter(None, head)
            del backbone  # training never touches it again
        else:
            data, model = PixelBatches(ds, size=size), Segmenter(backbone, head)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        times: list[float] = []
        cfg = TrainConfig(max_steps=steps + warmup, batch_size=batch, lr=1e-3, checkpoint_every=0, log_every=1000)
        fit(model, train_data=data, loss_fn=make_loss_fn(hflip=False), cfg=cfg, params=params, checkpoint_dir=Path(tmp) / "ckpt",
            callbacks={"on_step_end": [lambda s: times.append(time.perf_counter())]}, accelerator=acc)
    step = [b - a for a, b in zip(times[warmup - 1 :], times[warmup:], strict=False)]
    return {**out, "samples_per_s": batch / min(step), "step_s": min(step), "median_step_s": statistics.median(step), **_peak(dev)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8, help="images per step")
    ap.add_argument("--size", type=int, default=224, help="input side in pixels (a multiple of 14)")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per route (after warm-up)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--images", type=int, default=48, help="training images (the cached route caches them all)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    ap.add_argument("--child", choices=("on-the-fly", "cached"), help=argparse.SUPPRESS)
    ap.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.warmup < 1 or args.steps < 2 or args.size % 14:
        ap.error("--warmup must be >= 1, --steps >= 2 and --size a multiple of 14")
    if args.child:
        res = child(args.child, args.model, batch=args.batch, size=args.size, steps=args.steps, warmup=args.warmup, images=args.images,
                    device=args.device)
        print("RESULT " + json.dumps(res), flush=True)
        return

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "dinov2-small-random"
        make_snapshot(model_dir, args.size)
        print(f"model: DINOv2 ViT-S/14 size (random init), linear head, {NUM_CLASSES} classes, batch {args.batch} at {args.size}px, "
              f"{args.images} images; {args.warmup} warm-up + {args.steps} timed steps per route, device {args.device}")
        for route in ("on-the-fly", "cached"):
            t0 = time.perf_counter()
            cmd = [sys.executable, __file__, "--child", route, "--model", str(model_dir), "--batch", str(args.batch), "--size", str(args.size),
                   "--steps", str(args.steps), "--warmup", str(args.warmup), "--images", str(args.images), "--device", args.device]
            res = subprocess.run(cmd, capture_output=True, text=True, env=env)
            line = next((ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if res.returncode != 0 or line is None:
                sys.exit(f"route {route} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
            r = results[route] = json.loads(line[len("RESULT "):])
            cache = f", cache built in {r['cache_s']:.1f} s" if "cache_s" in r else ""
            cuda = f", CUDA peak {r['peak_cuda_mb']:.0f} MB" if "peak_cuda_mb" in r else ""
            print(f"  {route:>10}: {r['samples_per_s']:8.1f} samples/s  (best step {r['step_s']:.3f} s, median {r['median_step_s']:.3f} s)  "
                  f"peak RSS {r['peak_rss_mb']:6.0f} MB{cuda}{cache}  [backbone {r['dtype']}, {r['threads']} threads, {time.perf_counter() - t0:.0f} s]")
    fly, cached = results["on-the-fly"], results["cached"]
    speed = cached["samples_per_s"] / fly["samples_per_s"]
    memory = cached["peak_rss_mb"] / fly["peak_rss_mb"]
    print(f"cached / on-the-fly: training speed {speed:.1f}x, peak RSS {memory:.2f}x"
          + (f", CUDA peak {cached['peak_cuda_mb'] / max(1e-9, fly['peak_cuda_mb']):.2f}x" if "peak_cuda_mb" in fly else ""))
    # Epochs E after which caching has paid off: cache_s + E*N/cached_rate <= E*N/fly_rate
    per_epoch_saved = args.images / fly["samples_per_s"] - args.images / cached["samples_per_s"]
    if per_epoch_saved > 0:
        print(f"break-even: caching ({cached['cache_s']:.1f} s once) pays for itself after {cached['cache_s'] / per_epoch_saved:.2f} epochs")


if __name__ == "__main__":
    main()
