"""Streaming PCA (`gesture_cli.models.pca.PatchPCA`): exactness, memory, overhead, merge.

(a) exactness: top components against scikit-learn's PCA (full SVD, float64) on the same patch
    features; target |cosine| >= 0.999 for the top 5.
(b) memory: peak RSS of a child process per size when the number of patches grows 10x; target
    within 10%. Rows are generated in fixed-size chunks (the same buffer size at every N), so what
    can grow is the accumulator alone; RSS is sampled after every chunk (current RSS, /proc), from a
    baseline taken after imports and one warm-up chunk. The baseline route is the original tool's
    (keep every patch, scikit-learn PCA at the end), measured the same way.
(c) overhead: feature extraction of patch tokens with a dinov2-small-sized model (random init,
    224 px, 12 layers, 384 wide, patch 14) against extraction + accumulation, interleaved, best of
    --repeats; target < 10% more time.
(d) merge: two halves accumulated separately, saved as state dicts and merged, against one pass.

Usage: python benchmarks/pca.py [--frames 16] [--repeats 3] [--dim 384] [--patches 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET_COS = 0.999
TARGET_MEMORY_RATIO = 1.10
TARGET_OVERHEAD = 1.10
CHUNK = 4096  # rows per update in the memory benchmark


# ----------------------------------------------------------------------------------------------
# (b) memory: one child process per (mode, N)
# ----------------------------------------------------------------------------------------------


def _rss_mb() -> float:
    """Current resident set size in MiB (Linux /proc; ru_maxrss is a high-water mark that import-time
    peaks would hide the accumulator under)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child_memory(mode: str, n: int, dim: int) -> dict:
    import torch

    from gesture_cli.models.pca import PatchPCA

    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(0)
    mix = torch.randn(dim, dim, generator=gen) / dim**0.5
    chunk = torch.randn(CHUNK, dim, generator=gen) @ mix  # warm the allocator and the matmul path
    base = peak = _rss_mb()
    acc = PatchPCA(dim) if mode == "stream" else None
    kept = []
    t0 = time.perf_counter()
    for lo in range(0, n, CHUNK):
        chunk = torch.randn(min(CHUNK, n - lo), dim, generator=gen) @ mix  # [rows, D] float32, like patch tokens
        if acc is not None:
            acc.update(chunk)
        else:
            kept.append(chunk)
        peak = max(peak, _rss_mb())
    if acc is not None:
        acc.finalize(10)
    else:
        from sklearn.decomposition import PCA

        PCA(n_components=10).fit(torch.cat(kept).numpy())
    peak = max(peak, _rss_mb())
    return {"peak_mb": peak, "base_mb": base, "seconds": time.perf_counter() - t0}


def run_child(mode: str, n: int, dim: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(n), str(dim)], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------
# (c) overhead, with the features reused for (a) and (d)
# ----------------------------------------------------------------------------------------------


def build_mid_backbone(root: Path):
    import torch
    from transformers import Dinov2Config, Dinov2Model

    from gesture_cli.models.backbones import build_backbone

    torch.manual_seed(0)
    cfg = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536, patch_size=14, image_size=224)
    Dinov2Model(cfg).save_pretrained(root)
    return build_backbone(str(root), image_size=224)


def frames_224(n: int) -> np.ndarray:
    from gesture_cli.data.images import resize_image
    from gesture_cli.data.video import make_frame_source

    frames = [resize_image(f, 224) for f, _ in make_frame_source("synthetic-video").iter_frames(max_frames=n)]
    return np.stack(frames)


def time_routes(bb, frames: np.ndarray, *, repeats: int, batch: int = 8):
    """Best-of-`repeats` seconds for extraction alone and extraction + accumulation; and the patches."""
    import torch

    from gesture_cli.models.pca import PatchPCA

    x = torch.from_numpy(frames)
    dim = bb.info.embed_dim
    best = {"extract": float("inf"), "extract+pca": float("inf")}
    rows = []
    with torch.inference_mode():
        bb.forward_features(bb.preprocess(x[:2]))  # warm-up
        for rep in range(repeats):
            for route in ("extract", "extract+pca") if rep % 2 == 0 else ("extract+pca", "extract"):
                acc = PatchPCA(dim) if route == "extract+pca" else None
                t0 = time.perf_counter()
                for lo in range(0, len(x), batch):
                    _, patches, _ = bb.forward_features(bb.preprocess(x[lo : lo + batch]))
                    patches = patches.float()
                    if acc is not None:
                        acc.update(patches.reshape(-1, dim))
                        if rep == 0:
                            rows.append(patches.reshape(-1, dim).clone())
                if acc is not None:
                    acc.finalize(10)
                best[route] = min(best[route], time.perf_counter() - t0)
    return best, torch.cat(rows)


def exactness(rows) -> list[float]:
    from sklearn.decomposition import PCA

    from gesture_cli.models.pca import PatchPCA

    acc = PatchPCA(rows.shape[1])
    for chunk in rows.split(4096):
        acc.update(chunk)
    mine = acc.finalize(10).components.numpy()
    ref = PCA(n_components=10, svd_solver="full").fit(rows.double().numpy()).components_
    return [abs(float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))) for a, b in zip(mine, ref, strict=True)]


def merge_check(rows) -> tuple[float, float]:
    from gesture_cli.models.pca import PatchPCA

    half = len(rows) // 2
    one, a, b = PatchPCA(rows.shape[1]), PatchPCA(rows.shape[1], seed=1), PatchPCA(rows.shape[1], seed=2)
    one.update(rows)
    a.update(rows[:half])
    b.update(rows[half:])
    merged = PatchPCA.from_state(a.state_dict()).merge(PatchPCA.from_state(b.state_dict()))
    rel = float((merged.xtx - one.xtx).abs().max() / one.xtx.abs().max())
    c1, c2 = one.finalize(10).components, merged.finalize(10).components
    cos = float((c1 * c2).sum(1).abs().min())
    return rel, cos


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=16, help="frames per timed route")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dim", type=int, default=384, help="feature width in the memory benchmark")
    ap.add_argument("--patches", type=int, default=20_000, help="smaller size in the memory benchmark (the larger is 10x)")
    ap.add_argument("--child", nargs=3, metavar=("MODE", "N", "DIM"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        mode, n, dim = args.child
        print(json.dumps(child_memory(mode, int(n), int(dim))))
        return

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no "Loading weights" bars in the report
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(max(1, min(os.cpu_count() or 1, 2)))
    with tempfile.TemporaryDirectory() as tmp:
        bb = build_mid_backbone(Path(tmp) / "dinov2-small-random")
        frames = frames_224(args.frames)
        best, rows = time_routes(bb, frames, repeats=args.repeats)
    print(f"features: {len(rows):,} patch tokens x {rows.shape[1]} from {len(frames)} synthetic-video frames, dinov2-small-sized model at 224")

    cos = exactness(rows)
    ok = min(cos[:5]) >= TARGET_COS
    print(f"(a) exactness vs scikit-learn PCA (full SVD, float64): |cos| top-10 = {' '.join(f'{c:.6f}' for c in cos)}; "
          f"min top-5 {min(cos[:5]):.6f} (target >= {TARGET_COS}): {'PASS' if ok else 'FAIL'}")

    n1, n2 = args.patches, 10 * args.patches
    s1, s2 = run_child("stream", n1, args.dim), run_child("stream", n2, args.dim)
    k1, k2 = run_child("keep", n1, args.dim), run_child("keep", n2, args.dim)
    ratio = s2["peak_mb"] / s1["peak_mb"]
    g1, g2 = s1["peak_mb"] - s1["base_mb"], s2["peak_mb"] - s2["base_mb"]
    kg1, kg2 = k1["peak_mb"] - k1["base_mb"], k2["peak_mb"] - k2["base_mb"]
    print(f"(b) memory, D={args.dim}: {n1:,} patches peak RSS {s1['peak_mb']:.0f} MB (accumulation +{g1:.1f} MB, {s1['seconds']:.1f} s); "
          f"{n2:,}: {s2['peak_mb']:.0f} MB (+{g2:.1f} MB, {s2['seconds']:.1f} s): ratio {ratio:.3f} (target <= {TARGET_MEMORY_RATIO}): "
          f"{'PASS' if ratio <= TARGET_MEMORY_RATIO else 'FAIL'}")
    print(f"    baseline, keep every patch + scikit-learn PCA: +{kg1:.0f} MB -> +{kg2:.0f} MB ({kg2 / max(kg1, 1e-9):.1f}x), "
          f"{k1['seconds']:.1f} s -> {k2['seconds']:.1f} s")

    over = best["extract+pca"] / best["extract"]
    print(f"(c) overhead: extraction {best['extract']:.2f} s, extraction + accumulation {best['extract+pca']:.2f} s "
          f"({args.frames} frames, best of {args.repeats}): ratio {over:.3f} (target < {TARGET_OVERHEAD}): {'PASS' if over < TARGET_OVERHEAD else 'FAIL'}")

    rel, mcos = merge_check(rows)
    ok = rel < 1e-12 and mcos > 1 - 1e-9
    print(f"(d) merge: two halves merged vs one pass: max |dXtX| / max |XtX| = {rel:.1e}, min |cos| of top-10 components = {mcos:.12f}: "
          f"{'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    main()
