"""Pose encoder training: SDPA attention against the same encoder with eager attention.

For each sequence length (default 128 and 512 frames) and attention implementation, a child process
builds the default encoder (configs/pose_encoder.json: GCN over body + hands + face-lite, 4 blocks,
d_model 256), makes a batch of 8 random MediaPipe-Holistic sequences (20% of points masked, two
sequences padded to 3/4 of the length) and trains (forward, backward on the pooled output, AdamW).

- Speed: one warm-up step, then `--steps` timed steps -> sequences/s.
- Peak memory, in a second child: on CUDA torch.cuda.max_memory_allocated over two steps; on CPU the
  growth of the process's peak RSS (ru_maxrss) over its RSS just before the first of two steps, with
  glibc told to serve every block of 64 KiB or more by mmap (MALLOC_MMAP_THRESHOLD_=65536), so that a
  freed tensor goes back to the OS at once and the RSS peak is the peak of live tensors, not of
  allocator caching (without it, fragmentation over a few steps drowned a 130 MB difference).
  tracemalloc does not see torch's allocations.

A child per configuration keeps one configuration's peak from hiding another's.

Prints, per length, the SDPA/eager speed ratio (> 1: SDPA faster) and the eager/SDPA memory ratio
(> 1: SDPA leaner). Both sides share the weights' initialisation and the inputs.

Usage: python benchmarks/pose.py [--lengths 128 512] [--batch 8] [--steps 3] [--threads 0] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def child(impl: str, length: int, batch: int, steps: int, device: str, threads: int, measure: str) -> dict:
    import resource

    import torch

    sys.path.insert(0, str(REPO))
    from gesture_cli.models.pose_encoder import build_pose_encoder

    if threads > 0:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    torch.manual_seed(0)
    model = build_pose_encoder(REPO / "configs" / "pose_encoder.json", attn_impl=impl).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    kp = torch.rand(batch, length, 543, 3, generator=g).to(dev)
    pm = (torch.rand(batch, length, 543, generator=g) > 0.2).to(dev)
    fm = torch.ones(batch, length, dtype=torch.bool, device=dev)
    fm[:2, (3 * length) // 4:] = False

    def step() -> None:
        out = model(kp, pm, fm)
        loss = out.pooled.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if measure == "memory":
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
            base = torch.cuda.memory_allocated(dev)
        base_rss = _rss_mb()
        for _ in range(2):  # the first step also allocates AdamW's state: the same for both attention kinds
            step()
        if dev.type == "cuda":
            peak_mb = (torch.cuda.max_memory_allocated(dev) - base) / 2**20
        else:
            peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base_rss  # ru_maxrss is in KiB on Linux
        return {"peak_mb": peak_mb}
    step()  # warm-up: optimizer state, allocator pools, kernel selection
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - t0
    return {"seq_per_s": batch * steps / seconds, "step_s": seconds / steps, "threads": torch.get_num_threads(), "device": str(dev)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[128, 512], help="sequence lengths in frames")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3, help="timed training steps per configuration (after one warm-up)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--child", nargs=3, metavar=("IMPL", "LENGTH", "MEASURE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        impl, length, measure = args.child
        print(json.dumps(child(impl, int(length), args.batch, args.steps, args.device, args.threads, measure)))
        return

    results: dict[tuple[str, int], dict] = {}
    print(f"pose encoder training, batch {args.batch}, {args.steps} timed steps, device {args.device}")
    print(f"{'attention':<10}{'frames':>8}{'seq/s':>10}{'s/step':>10}{'peak MB':>10}")
    for length in args.lengths:
        for impl in ("sdpa", "eager"):
            r: dict = {}
            for measure in ("speed", "memory"):
                cmd = [sys.executable, __file__, "--child", impl, str(length), measure, "--batch", str(args.batch),
                       "--steps", str(args.steps), "--threads", str(args.threads), "--device", args.device]
                env = {**os.environ, "PYTHONWARNINGS": "ignore"}
                if measure == "memory":
                    env["MALLOC_MMAP_THRESHOLD_"] = "65536"
                out = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if out.returncode != 0:
                    sys.exit(f"{impl} T={length} ({measure}) failed:\n{out.stderr}")
                r.update(json.loads(out.stdout.strip().splitlines()[-1]))
            results[(impl, length)] = r
            print(f"{impl:<10}{length:>8}{r['seq_per_s']:>10.2f}{r['step_s']:>10.2f}{r['peak_mb']:>10.0f}", flush=True)
    print()
    for length in args.lengths:
        s, e = results[("sdpa", length)], results[("eager", length)]
        print(f"T={length}: speed SDPA/eager = {s['seq_per_s'] / e['seq_per_s']:.2f}x, "
              f"peak memory eager/SDPA = {e['peak_mb'] / max(s['peak_mb'], 1e-6):.2f}x")


if __name__ == "__main__":
    main()
