"""Feature extraction: gx's route against the naive one, on the same model and images, in one run.

Naive route: transformers' `pipeline("image-feature-extraction")`, one PIL image at a time (what the
research notebooks gx replaces do). gx route: `iter_batch_features` (batched tensor preprocessing,
SDPA, inference_mode, bf16 weights where the hardware multiplies bf16 natively, prefetching), in
variants: batch size, attention implementation, torch.compile, fp32.

Both use the same dinov2-small-sized model (random init, 224x224: 12 layers, 384 wide, patch 14),
saved to a temporary directory exactly like a downloaded snapshot and loaded from there. The matmul
peak of this machine is measured in the same process, so the fraction of peak is honest here.

The machine may be shared: every route is timed once per round, rounds interleave the routes, and
the median over rounds is reported, so a burst of load elsewhere hits all routes alike. Ratios are
of medians measured in this run.

Usage: python benchmarks/extract.py [--images 64] [--naive-images 8] [--rounds 3] [--no-compile]
       python benchmarks/extract.py --decode   (JPEG folder: --workers 0 vs 2, then 1 vs 2 processes)
Targets (issue 19): gx >= 1.6x the naive route (goal 2.2x), >= 0.55 of the bf16 matmul peak.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # before transformers is imported
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402

TARGET_RATIO = 1.6
GOAL_RATIO = 2.2
TARGET_PEAK_FRACTION = 0.55
REPO = Path(__file__).resolve().parents[1]


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def matmul_peak_gflops(dtype: torch.dtype, seconds: float, dev: torch.device = torch.device("cpu")) -> float:
    """Best sustained GFLOP/s of a square matmul in this process (n=2048 fp32 on a CPU; 8192 on a GPU)."""
    n = 8192 if dev.type == "cuda" else (2048 if dtype == torch.float32 else 1024)
    a, b = torch.randn(n, n, device=dev).to(dtype), torch.randn(n, n, device=dev).to(dtype)
    a @ b
    _sync(dev)
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        a @ b
        _sync(dev)
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


def make_naive(snapshot: Path, dev: torch.device):
    """A function(images) that runs the transformers pipeline on each image, one at a time."""
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
    pipe = pipeline("image-feature-extraction", model=model, image_processor=Processor.from_pretrained(snapshot), device=str(dev))

    def run(images: np.ndarray) -> None:
        for im in images:
            pipe(Image.fromarray(im))

    run(images=np.zeros((1, 256, 256, 3), dtype=np.uint8))  # warm-up
    return run


def make_gx(snapshot: Path, *, dev: torch.device, precision: str = "auto", batch: int = 32, attn: str = "sdpa", compile: bool = False):
    """(function(images), dtype, seconds spent warming up, compiling included) for one gx variant."""
    from gesture_cli.core.device import compute_dtype
    from gesture_cli.data.images import ImageDataset
    from gesture_cli.models.backbones import build_backbone
    from gesture_cli.models.features import contiguous_batches, iter_batch_features

    dtype = compute_dtype(dev, precision)
    backbone = build_backbone(str(snapshot), device=dev, dtype=dtype, image_size=224)
    if attn != "sdpa":
        backbone.model.set_attn_implementation(attn)
    if compile:
        backbone.model.compile()

    def run(images: np.ndarray) -> None:
        ds = ImageDataset(spec="bench", split="train", classes=["x"], labels=np.zeros(len(images), dtype=np.int64), images=images)
        for _ in iter_batch_features(backbone, ds, contiguous_batches(0, len(images), batch), pool="cls", batch_size=batch):
            pass
        _sync(dev)

    t0 = time.perf_counter()
    run(np.zeros((batch, 256, 256, 3), dtype=np.uint8))  # warm-up (and the compile) at the measured batch shape
    return run, dtype, time.perf_counter() - t0


def interleaved(routes: dict, images: dict, rounds: int) -> dict[str, float]:
    """Median images/s of each route over `rounds` rounds, the routes taking turns within a round."""
    times: dict[str, list[float]] = {name: [] for name in routes}
    for _ in range(rounds):
        for name, fn in routes.items():
            t0 = time.perf_counter()
            fn(images[name])
            times[name].append(len(images[name]) / (time.perf_counter() - t0))
    return {name: statistics.median(v) for name, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64, help="images per round for each gx variant")
    ap.add_argument("--naive-images", type=int, default=8, help="images per round for the naive route (slow)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    ap.add_argument("--seconds", type=float, default=3.0, help="time spent measuring each matmul peak")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant (tens of seconds of compiling)")
    ap.add_argument("--decode", action="store_true", help="measure the input pipeline and 1 vs 2 processes instead")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where every route runs")
    ap.add_argument("--json", type=Path, help="also write the images/s of every route and the ratios to this JSON file")
    args = ap.parse_args()
    if args.decode:
        decode_and_scaling(args)
        return

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.images, 256, 256, 3), dtype=np.uint8)
    variants = {
        "gx bf16 batch 32 (the CPU default)": dict(batch=32),
        "gx bf16 batch 8": dict(batch=8),
        "gx bf16 batch 64": dict(batch=64),
        "gx bf16 batch 32 eager attention": dict(batch=32, attn="eager"),
        "gx fp32 batch 32": dict(batch=32, precision="fp32"),
    }
    if not args.no_compile:
        variants["gx bf16 batch 32 --compile"] = dict(batch=32, compile=True)
    with tempfile.TemporaryDirectory() as tmp:
        snap = make_snapshot(Path(tmp) / "dinov2-small-random")
        dev = torch.device(args.device)
        routes = {"naive pipeline (fp32, 1 image at a time)": make_naive(snap, dev)}
        dtypes, warmups = {}, {}
        for name, kw in variants.items():
            routes[name], dtypes[name], warmups[name] = make_gx(snap, dev=dev, **kw)
        feed = {name: images[: args.naive_images] if name.startswith("naive") else images for name in routes}
        speed = interleaved(routes, feed, args.rounds)
    peak_fp32 = matmul_peak_gflops(torch.float32, args.seconds, dev)
    peak_bf16 = matmul_peak_gflops(torch.bfloat16, min(args.seconds, 2.0), dev)
    gflop = vit_gflops_per_image(layers=12, dim=384, tokens=1 + 16 * 16)
    naive = next(v for k, v in speed.items() if k.startswith("naive"))
    print(f"model: dinov2-small size, random init, 224x224, {gflop:.1f} GFLOP/image; threads={torch.get_num_threads()}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other work slows every route alike)")
    print(f"matmul peak here: fp32 {peak_fp32:.1f} GFLOP/s, bf16 {peak_bf16:.1f} GFLOP/s")
    print(f"median of {args.rounds} interleaved rounds:")
    for name, v in speed.items():
        if name.startswith("naive"):
            print(f"  {name:40s} {v:7.2f} images/s  1.00x")
            continue
        peak = peak_bf16 if dtypes[name] == torch.bfloat16 else peak_fp32
        extra = f", warm-up {warmups[name]:.0f} s" if "compile" in name else ""
        print(f"  {name:40s} {v:7.2f} images/s  {v / naive:.2f}x  {v * gflop / peak:.2f} of the {str(dtypes[name]).replace('torch.', '')} peak{extra}")
    default = speed["gx bf16 batch 32 (the CPU default)"]
    print(f"ratio gx (CPU default: bf16, batch 32)/naive: {default / naive:.2f}x (floor >= {TARGET_RATIO}x, goal >= {GOAL_RATIO}x)")
    print(f"fraction of the bf16 matmul peak: {default * gflop / peak_bf16:.2f} (goal >= {TARGET_PEAK_FRACTION})")
    if args.json:
        args.json.write_text(json.dumps({"device": args.device, "images_per_s": speed, "ratio_default_vs_naive": default / naive,
                                         "peak_gflops": {"fp32": peak_fp32, "bf16": peak_bf16},
                                         "bf16_peak_fraction": default * gflop / peak_bf16}, indent=1))


def decode_and_scaling(args) -> None:
    """JPEG folder (640x480 photos' size): images/s with --workers 0 and 2, then 1 process vs torchrun 2."""
    import cv2

    from gesture_cli.data.images import ImageDataset
    from gesture_cli.models.backbones import build_backbone
    from gesture_cli.models.features import extract_split

    n = max(args.images, 64)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        snap = make_snapshot(tmp / "dinov2-small-random")
        folder = tmp / "jpegs"
        paths = []
        for c in ("a", "b"):
            (folder / c).mkdir(parents=True)
        for i in range(n):
            # smooth noise compresses like a photo: a 640x480 JPEG of 30-60 KB, about 3 ms to decode
            img = cv2.resize(rng.integers(0, 256, size=(60, 80, 3), dtype=np.uint8), (640, 480), interpolation=cv2.INTER_CUBIC)
            paths.append(folder / "ab"[i % 2] / f"{i:05d}.jpg")
            cv2.imwrite(str(paths[-1]), img)
        ds = ImageDataset(spec="bench", split="all", classes=["a", "b"], labels=np.arange(n) % 2, paths=paths, color=True)
        backbone = build_backbone(str(snap), image_size=224, dtype=torch.bfloat16)
        t0 = time.perf_counter()
        for p in paths:
            cv2.resize(cv2.imread(str(p)), (224, 224), interpolation=cv2.INTER_AREA)
        decode = n / (time.perf_counter() - t0)
        extract_split(backbone, ds, pool="cls", batch_size=32, max_samples=32)  # warm-up
        speeds: dict[int, list[float]] = {0: [], 1: [], 2: []}
        for _ in range(args.rounds):
            for w in speeds:
                t0 = time.perf_counter()
                extract_split(backbone, ds, pool="cls", batch_size=32, workers=w)
                speeds[w].append(n / (time.perf_counter() - t0))
        print(f"JPEG folder, {n} images 640x480, dinov2-small size bf16, batch 32; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(f"  decode + resize alone, one core: {decode:.1f} images/s")
        base = statistics.median(speeds[0])
        for w, v in speeds.items():
            print(f"  --workers {w}: {statistics.median(v):6.2f} images/s  {statistics.median(v) / base:.2f}x")
        # 1 process with every core vs 2 processes with one core each, through the CLI
        common = ["extract-features", "-b", str(snap), "-d", f"folder:{folder}", "--split", "all", "--batch-size", "32",
                  "--workers", "0", "--precision", "bf16", "--shard-size", "32"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))}
        cores = os.cpu_count() or 2
        one = _cli_speed([sys.executable, "-m", "gesture_cli", *common, "-r", str(tmp / "one")], {**env, "OMP_NUM_THREADS": str(cores)}, tmp / "one")
        torchrun = Path(sys.executable).with_name("torchrun")
        two = _cli_speed([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "gesture_cli", *common, "-r", str(tmp / "two")],
                         {**env, "OMP_NUM_THREADS": str(max(1, cores // 2))}, tmp / "two")
        print(f"  1 process x {cores} threads: {one:.2f} images/s; torchrun 2 processes x {max(1, cores // 2)} threads: {two:.2f} images/s "
              f"({two / one:.2f}x)")


def _cli_speed(cmd: list[str], env: dict, run: Path) -> float:
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    if res.returncode != 0:
        raise SystemExit(res.stdout + res.stderr)
    meta = json.loads(next((run / "features").glob("*/meta.json")).read_text())
    return meta["splits"]["all"]["images_per_s"]


if __name__ == "__main__":
    main()
