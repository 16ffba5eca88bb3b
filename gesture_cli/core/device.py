"""Device choice, compute dtype, and CUDA out-of-memory batch-size back-off.

bf16 is used on CUDA (when supported) and on CPUs with native bf16 matmul (AVX512-BF16 or AMX).
On other CPUs bf16 matmul is emulated and hundreds of times slower than fp32 (measured: 0.16 vs
66 GFLOP/s on an AVX2-only EPYC), and fp16 on CPU is never used.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from gesture_cli.core.errors import UsageError

T = TypeVar("T")

DEVICE_CHOICES = "auto|cpu|cuda|cuda:N|mps"


def resolve_device(spec: str | None = "auto"):
    """Turn `auto|cpu|cuda|cuda:N|mps` into a torch.device, checking that it exists."""
    import torch

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise UsageError("--device mps: no Apple MPS device here; use --device cpu or auto")
        return torch.device("mps")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {spec}: CUDA is not available on this machine; use --device cpu or auto")
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) here")
        return dev
    raise UsageError(f"--device '{spec}' is not one of {DEVICE_CHOICES}")


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU multiplies bf16 natively (avx512_bf16 or amx_bf16 in /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False


def compute_dtype(device, precision: str = "auto"):
    """The dtype to run inference in: bf16 where it is fast, else fp32.

    precision: `auto` (bf16 on CUDA with bf16 support and on native-bf16 CPUs), `bf16`, `fp32`.
    """
    import torch

    precision = (precision or "auto").lower()
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision != "auto":
        raise UsageError(f"--precision '{precision}' is not one of auto|bf16|fp32")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def is_cuda_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "CUDA out of memory" in str(exc)


def run_with_oom_backoff(fn: Callable[[int], T], batch_size: int, *, min_batch_size: int = 1, on_backoff=None) -> T:
    """Call fn(batch_size); on CUDA OOM free the cache, halve the batch and retry.

    `on_backoff(new_batch_size)` is called after each halving (for a log line).
    """
    import torch

    while True:
        try:
            return fn(batch_size)
        except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is a RuntimeError
            if not is_cuda_oom(exc) or batch_size <= min_batch_size:
                raise
            torch.cuda.empty_cache()
            batch_size = max(min_batch_size, batch_size // 2)
            if on_backoff is not None:
                on_backoff(batch_size)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) for reproducible runs."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
