"""LoRA training step: gx's route against a plain Hugging Face `Trainer` + PEFT script, same model.

Model: a dinov3-vits16-sized DINOv3 ViT (random init: hidden 384, 12 layers, 6 heads, patch 16,
4 registers), saved to a temporary directory like a downloaded snapshot. Both routes put LoRA (r=8,
alpha=16, dropout 0.1) on q_proj/v_proj, a Linear head on the CLS token, AdamW, clip 1.0, in one precision:

  --precision fp32   both routes in fp32.
  --precision bf16   the Trainer with `bf16=True` (autocast over fp32 weights, what HF users run); gx with
                     its policy (core.device.Precision): the frozen base weights stored in bf16, LoRA and head
                     fp32 master weights, the forward under bf16 autocast.

  gx route   `gesture_cli.train.loop.fit` with gx's classifier and loss: uint8 images in, batched
             augmentation (crop, rotation, colour) and preprocessing on the device, every step. The
             classifier is what `gx lora-train` builds, with its CPU kernels (models.train_kernels: the
             adapters' dropout mask, their update added by one addmm, DINOv3's patch RoPE in one function,
             attention's bf16 backward in the fp32 kernel; the same maths as PEFT's and transformers').
  hf route   `transformers.Trainer` on a PEFT model; its dataset hands out already normalised float
             pixels (no augmentation at all), so the baseline pays nothing for its inputs.

Each route runs in its own child process, so peak memory (ru_maxrss) is that route's alone, imports
included. Throughput is batch / the fastest timed step after warm-up (robust to other processes on a
shared machine); the median step is printed too.

Usage: python benchmarks/lora.py [--precision fp32|bf16] [--batch 8] [--size 224] [--steps 8] [--warmup 1]
       (about 1.5 min on 2 cores per precision)
Targets: fp32 (issue 4): gx at least as fast as the Trainer (ratio >= 1.0) with no more memory (<= 1.0);
         bf16 (issue 15): >= 1.3x samples/s and <= 0.8x peak memory.
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
NUM_CLASSES = 24
TARGETS = {"fp32": (1.0, 1.0), "bf16": (1.3, 0.8), "fp16": (1.3, 0.8)}  # precision -> (min speed ratio, max memory ratio); fp16: CUDA only


def make_snapshot(root: Path, size: int) -> None:
    import torch
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    torch.manual_seed(0)
    cfg = DINOv3ViTConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536, patch_size=16,
                          image_size=size, num_register_tokens=4)
    DINOv3ViTModel(cfg).save_pretrained(root)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    (root / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "DINOv3ViTImageProcessorFast", "size": {"height": size, "width": size},
        "image_mean": mean, "image_std": std, "do_normalize": True, "do_rescale": True, "rescale_factor": 1 / 255,
    }))


def _peak_rss_mb() -> float:
    """Peak memory of this route: GPU memory allocated on CUDA, else the process's resident set."""
    import torch

    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _step_end() -> float:
    """The time a step ended: on CUDA after its queued kernels finished, else a step would be timed by how fast it
    was queued (gx's loop never waits for the GPU within a step; the Trainer does, for its grad norm)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()


def _result(times: list[float], *, batch: int, warmup: int) -> dict:
    """Throughput from the end times of every step: the fastest timed step (the least disturbed by other
    processes on a shared machine) and the median."""
    import torch

    steps = [b - a for a, b in zip(times[warmup - 1 :], times[warmup:], strict=False)]
    return {"samples_per_s": batch / min(steps), "step_s": min(steps), "median_step_s": statistics.median(steps),
            "peak_rss_mb": _peak_rss_mb(), "threads": torch.get_num_threads()}


def child_gx(model_dir: Path, *, batch: int, size: int, steps: int, warmup: int, precision: str, device: str) -> dict:
    import numpy as np

    from gesture_cli.data.images import ImageDataset
    from gesture_cli.models.augment import AugmentConfig
    from gesture_cli.models.backbones import build_backbone
    from gesture_cli.models.lora import build_classifier
    from gesture_cli.train.loop import TrainConfig, fit, make_accelerator
    from gesture_cli.train.lora import ImageBatches, make_loss_fn

    n = batch * (steps + warmup)
    rng = np.random.default_rng(0)
    ds = ImageDataset(spec="bench", split="train", classes=[str(i) for i in range(NUM_CLASSES)],
                      labels=rng.integers(0, NUM_CLASSES, n), images=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))
    acc = make_accelerator(device)
    model = build_classifier(build_backbone(str(model_dir), device=acc.device, image_size=size), num_classes=NUM_CLASSES, method="lora",
                             pool="cls")
    times: list[float] = []
    cfg = TrainConfig(max_steps=steps + warmup, batch_size=batch, lr=5e-4, checkpoint_every=0, log_every=1000, precision=precision)
    with tempfile.TemporaryDirectory() as tmp:
        fit(model, train_data=ImageBatches(ds, size=size), loss_fn=make_loss_fn(augment=AugmentConfig()), cfg=cfg,
            checkpoint_dir=Path(tmp), callbacks={"on_step_end": [lambda s: times.append(_step_end())]},
            accelerator=acc)
    return _result(times, batch=batch, warmup=warmup)


def child_hf(model_dir: Path, *, batch: int, size: int, steps: int, warmup: int, precision: str, device: str) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel, Trainer, TrainerCallback, TrainingArguments

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = get_peft_model(AutoModel.from_pretrained(model_dir), LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1,
                                                                                           target_modules=["q_proj", "v_proj"]))
            self.head = torch.nn.Linear(384, NUM_CLASSES)

        def forward(self, pixel_values, labels=None):
            logits = self.head(self.backbone(pixel_values=pixel_values).last_hidden_state[:, 0])
            loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
            return {"loss": loss, "logits": logits}

    class Pixels(torch.utils.data.Dataset):
        def __init__(self, n):
            g = torch.Generator().manual_seed(0)
            self.x = torch.randn(n, 3, size, size, generator=g)  # already normalised: the baseline's best case
            self.y = torch.randint(0, NUM_CLASSES, (n,), generator=g)

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            return {"pixel_values": self.x[i], "labels": self.y[i]}

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            times.append(_step_end())

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=batch, max_steps=steps + warmup, learning_rate=5e-4, weight_decay=0.01,
            lr_scheduler_type="cosine", max_grad_norm=1.0, logging_strategy="no", save_strategy="no", eval_strategy="no",
            report_to=[], use_cpu=device == "cpu", dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=True,
            bf16=precision == "bf16", fp16=precision == "fp16",
        )
        Trainer(model=Classifier(), args=args, train_dataset=Pixels(batch * (steps + warmup)), callbacks=[Timer()]).train()
    return _result(times, batch=batch, warmup=warmup)


ROUTES = {"gx": child_gx, "hf": child_hf}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8, help="images per step")
    ap.add_argument("--size", type=int, default=224, help="input side in pixels")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per route (after warm-up)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--precision", choices=sorted(TARGETS), default="fp32", help="both routes in this precision (fp16: CUDA only)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where both routes train")
    ap.add_argument("--json", type=Path, help="also write the results and ratios to this JSON file")
    ap.add_argument("--child", choices=sorted(ROUTES), help=argparse.SUPPRESS)
    ap.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.warmup < 1 or args.steps < 2:
        ap.error("--warmup must be >= 1 and --steps >= 2")
    if args.child:
        out = ROUTES[args.child](args.model, batch=args.batch, size=args.size, steps=args.steps, warmup=args.warmup,
                                 precision=args.precision, device=args.device)
        print("RESULT " + json.dumps(out), flush=True)
        return

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "dinov3-vits16-random"
        make_snapshot(model_dir, args.size)
        print(f"model: DINOv3 ViT-S/16 size (random init), batch {args.batch} at {args.size}px, {args.precision}, LoRA r=8 on q_proj/v_proj; "
              f"{args.warmup} warm-up + {args.steps} timed steps per route")
        for route in ("hf", "gx"):
            t0 = time.perf_counter()
            cmd = [sys.executable, __file__, "--child", route, "--model", str(model_dir), "--batch", str(args.batch),
                   "--size", str(args.size), "--steps", str(args.steps), "--warmup", str(args.warmup), "--precision", args.precision,
                   "--device", args.device]
            res = subprocess.run(cmd, capture_output=True, text=True, env=env)
            line = next((ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if res.returncode != 0 or line is None:
                sys.exit(f"route {route} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
            results[route] = json.loads(line[len("RESULT "):])
            r = results[route]
            print(f"  {route:>2}: {r['samples_per_s']:6.2f} samples/s  (best step {r['step_s']:.2f} s, median {r['median_step_s']:.2f} s)  "
                  f"peak RSS {r['peak_rss_mb']:7.0f} MB"
                  f"  [{time.perf_counter() - t0:.0f} s, {r['threads']} threads]")
    speed = results["gx"]["samples_per_s"] / results["hf"]["samples_per_s"]
    memory = results["gx"]["peak_rss_mb"] / results["hf"]["peak_rss_mb"]
    fast, small = TARGETS[args.precision]
    if args.json:
        args.json.write_text(json.dumps({"precision": args.precision, "device": args.device, "batch": args.batch, "size": args.size,
                                         "routes": results, "speed_ratio": speed, "memory_ratio": memory,
                                         "targets": {"speed": fast, "memory": small}}, indent=1))
    print(f"gx / Trainer ({args.precision}): speed {speed:.2f}x (target >= {fast}: {'ok' if speed >= fast else 'MISSED'}), "
          f"peak memory {memory:.2f}x (target <= {small}: {'ok' if memory <= small else 'MISSED'})")


if __name__ == "__main__":
    main()
