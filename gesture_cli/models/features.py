"""Frozen-backbone feature extraction: a dataset's images -> pooled features [N, D], batch by batch.

Speed levers, measured (DESIGN §7): weights cast to bf16 where the hardware multiplies bf16 natively
(CUDA, AVX512-BF16/AMX CPUs; never on other CPUs, where bf16 is emulated and hundreds of times
slower), batched preprocessing as tensor ops, SDPA attention, `torch.inference_mode`. Images are
decoded and resized in DataLoader worker processes (`--workers`) while the model runs; with no
workers, a thread prefetches the next batch (OpenCV releases the GIL).

The run-dir step (shards, resume, ranks) is `gesture_cli.tasks.features`; this module turns batches
of a dataset into pooled features and knows nothing of run directories.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

POOL_KINDS = ("cls", "mean", "cls+mean")
MAX_AUTO_WORKERS = 8  # decoding processes per rank when --workers is auto


# ----------------------------------------------------------------------------------------------
# Batches in, pooled features out
# ----------------------------------------------------------------------------------------------


def auto_workers(dataset, device, *, local_world: int = 1) -> int:
    """Decoding processes for one rank: the rank's share of the cores minus the one that feeds the
    model, at least 1 and at most MAX_AUTO_WORKERS, when an accelerator would otherwise wait for
    the decoder. 0 for in-memory images (nothing to decode) and on CPU, where the model needs every
    core: there a 640x480 JPEG decodes and resizes in 1/185 s against 1/9 s in the model
    (dinov2-small, bf16, 2 cores), the prefetch thread hides it, and workers only take cores away
    (measured: 1 worker 0.77x, 2 workers 0.63x the speed of none; benchmarks/extract.py --decode)."""
    if dataset.paths is None or device.type == "cpu":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(MAX_AUTO_WORKERS, cores // max(1, local_world) - 1))


class _BatchSet:
    """Item k = uint8 tensor [B, S, S(, 3)] of the k-th index array: what a DataLoader worker decodes.

    Items are whole batches (not single images) because `ImageDataset.batch` decides grey vs RGB per
    batch, and so one worker decodes and resizes a batch while the model runs on another.
    """

    def __init__(self, dataset, batches: list, size: int):
        self.dataset, self.batches, self.size = dataset, batches, size

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int):
        import numpy as np
        import torch

        return torch.from_numpy(np.ascontiguousarray(self.dataset.batch(self.batches[k], size=self.size)))


def _worker_init(_worker_id: int) -> None:
    import cv2

    cv2.setNumThreads(1)  # one decoding process = one core; OpenCV's own pool would oversubscribe


def iter_loaded_batches(dataset, batches: list, *, size: int, workers: int, pin_memory: bool = False) -> Iterator:
    """uint8 pixel tensors of `batches` (index arrays), in order, decoded ahead of the consumer."""
    items = _BatchSet(dataset, batches, size)
    if not items:
        return
    if workers == 0:
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(items.__getitem__, 0)
            for k in range(len(items)):
                raw = pending.result()
                if k + 1 < len(items):
                    pending = pool.submit(items.__getitem__, k + 1)
                yield raw.pin_memory() if pin_memory else raw
        return
    from torch.utils.data import DataLoader

    # spawn, not fork: a forked child inherits OpenCV's and OpenMP's thread pools mid-state and can
    # hang on its first resize (seen here once the main process had decoded in a thread). Spawned
    # workers import gx afresh (a second or two, once per split) and receive the file list.
    loader = DataLoader(
        items, batch_size=None, shuffle=False, num_workers=min(workers, len(items)), pin_memory=pin_memory,
        prefetch_factor=2, worker_init_fn=_worker_init, multiprocessing_context="spawn",
    )
    yield from loader


def iter_batch_features(
    backbone,
    dataset,
    batches: list,
    *,
    pool: str,
    batch_size: int,
    workers: int = 0,
    on_backoff: Callable[[int], None] | None = None,
) -> Iterator:
    """float32 [len(b), D] CPU features of each index array b of `batches`, in order.

    On CUDA out-of-memory the loaded batch is finished in halves, and later batches keep the
    smaller size (`on_backoff(new_size)` is told).
    """
    import torch

    from gesture_cli.core.device import run_with_oom_backoff

    state = {"bs": int(batch_size)}

    def backoff(bs: int) -> None:
        state["bs"] = bs
        if on_backoff is not None:
            on_backoff(bs)

    pin = backbone.device.type == "cuda"
    for raw in iter_loaded_batches(dataset, batches, size=backbone.image_size, workers=workers, pin_memory=pin):
        outs: list = []

        def forward(bs: int, raw=raw, outs=outs) -> None:
            done = sum(len(o) for o in outs)  # resume after the chunks that fit before an OOM
            while done < len(raw):
                pixels = backbone.preprocess(raw[done : done + bs])
                cls, patches, _ = backbone.forward_features(pixels)
                outs.append(backbone.pool(cls, patches, pool).float().cpu())
                done += len(outs[-1])

        # Inference mode around the forward only, never across the yield: a context held open over a yield
        # stays on in the caller's thread, and one abandoned generator (an error mid-way) would leave every
        # later tensor of that thread an inference tensor that training cannot use.
        with torch.inference_mode():
            run_with_oom_backoff(forward, min(state["bs"], len(raw)), on_backoff=backoff)
            batch = torch.cat(outs) if len(outs) > 1 else outs[0]
        yield batch


def contiguous_batches(lo: int, hi: int, batch_size: int) -> list:
    """int64 index arrays [lo, lo+B), [lo+B, lo+2B), ... up to hi."""
    import numpy as np

    return [np.arange(a, min(a + batch_size, hi), dtype=np.int64) for a in range(lo, hi, batch_size)]


def extract_split(
    backbone,
    dataset,
    *,
    pool: str,
    batch_size: int,
    device=None,
    max_samples: int | None = None,
    workers: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
    on_backoff: Callable[[int], None] | None = None,
):
    """Return (features float32 [N, D] on CPU, labels int64 [N]) for one dataset split, in one process.

    `device` is accepted for older callers; the backbone's own device is used.
    """
    import numpy as np
    import torch

    n = len(dataset) if max_samples is None else min(len(dataset), max_samples)
    feats = torch.empty((n, backbone.feature_dim(pool)), dtype=torch.float32)
    done = 0
    batches = contiguous_batches(0, n, batch_size)
    for out in iter_batch_features(backbone, dataset, batches, pool=pool, batch_size=batch_size, workers=workers, on_backoff=on_backoff):
        feats[done : done + len(out)] = out
        done += len(out)
        if on_progress is not None:
            on_progress(done, n)
    labels = torch.from_numpy(np.asarray(dataset.labels[:n], dtype=np.int64))
    return feats, labels
