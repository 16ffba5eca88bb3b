"""Streaming, exact, mergeable PCA of backbone patch features (`gx pca-compute`; its run-dir step is `gesture_cli.tasks.pca`).

One pass over the frames accumulates, per patch token x (D-dim), the count n, the sum Σx and the
sum of outer products XᵀX, in float64 on the run's device: memory O(D²) whatever the number of
patches (D=384: 1.2 MB). At the end

    μ = Σx / n,   cov = (XᵀX - n μμᵀ) / (n - 1),   cov = V Λ Vᵀ  (torch.linalg.eigh)

which is the exact sample covariance (float64 keeps the raw-moment formula's cancellation error
near 1e-16 |μ|²/σ², far below anything a float32 feature can resolve). Measured on 200k x 384
patches: 0.4 s for eigh vs 4 s and 1 GB for scikit-learn's full SVD (DESIGN §7).

Because (n, Σx, XᵀX) simply add, the statistics are saved with the result and runs computed on
different machines merge into the same PCA as one run over all their data (`PatchPCA.merge`,
`gx pca-compute --merge`). Processes of one launched run (torchrun, accelerate launch) go further and
add in the order one process does, so their result has its very bits (see "blocks" below).

Colour ranges. Rendering maps each component's projection to 0..255 with fixed per-component ranges
(the 1st and 99th percentile over the data), so videos do not flicker. Projections need the
components, which exist only after the pass, so the accumulator also keeps a bounded uniform sample
of raw patches (a reservoir, 10,000 rows by default: 15 MB at D=384) and projects it at the end.
We chose this over a second pass because a second pass re-runs the backbone (doubling the cost),
while the sample costs a few MB and merges exactly: every row carries a uniform random key and a
reservoir keeps the rows with the smallest keys, so the union of two reservoirs cut to size is a
uniform sample of the union of their data. A 1st/99th percentile from 10,000 draws is within about
±0.2 percentile points of the true one.

Foreground (`--foreground`). As in the DINOv2 paper's figures, a first pass computes the first
component over all patches; patches whose (centred) score on it is above a threshold are the
foreground, with the component's sign chosen so that at threshold 0 the foreground is the minority
of patches (objects and people cover less of a frame than the background). The second pass
accumulates foreground patches only. Both the first-pass mean/component and the threshold are
stored, so `gx pca-visualize` can mask the background the same way.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from gesture_cli.core.errors import DataError, UsageError

RESERVOIR_SIZE = 10_000  # raw patches kept (uniform sample) to set colour ranges; 15 MB at D=384
RANGE_PERCENTILES = (1.0, 99.0)  # projection percentiles that map to colour 0 and 255
MEMORY_EVERY_S = 10.0  # seconds between memory lines in verbose mode


@dataclass(frozen=True)
class PCAConfig:
    backbone: str = "tiny-dinov2"  # registry name, hub id, local dir, timm:NAME or TorchScript file
    dataset: str = "synthetic-video"  # video:FILE|DIR, synthetic-video, or any image dataset spec
    n_components: int = 10  # principal components kept (stored, rendered, listed)
    frame_stride: int = 1  # use frames 0, s, 2s, ... of every clip
    max_samples: int | None = None  # cap on frames (images) in total
    image_size: int | None = None  # square input side in pixels; None = the backbone's default
    batch_size: int = 0  # frames per forward pass; 0 = auto (32 on CPU, 256 on CUDA, halved on OOM)
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (core.device.resolve_precision: bf16 where fast, fp16 on older GPUs)
    foreground: bool = False  # two passes: threshold PC1 of pass 1, accumulate foreground patches only
    foreground_threshold: float | None = None  # PC1 score above which a patch is foreground; None = 0
    reservoir_size: int = RESERVOIR_SIZE  # raw patches sampled for colour ranges (0: no ranges)
    shard: str | None = None  # "I/N": clips (images) I, I+N, I+2N, ...: one part of a split run, merge later
    seed: int = 0  # synthetic data and the reservoir's sampling

    def validate(self) -> None:
        if self.n_components < 1:
            raise UsageError("--n-components must be at least 1")
        if self.frame_stride < 1:
            raise UsageError("--frame-stride must be at least 1")
        if self.max_samples is not None and self.max_samples < 1:
            raise UsageError("--max-samples must be at least 1")
        if self.batch_size < 0:
            raise UsageError("--batch-size must be 0 (auto) or a positive number")
        if self.reservoir_size < 0:
            raise UsageError("--reservoir-size must be 0 or more")
        if self.foreground_threshold is not None and not self.foreground:
            raise UsageError("--foreground-threshold needs --foreground")
        if self.shard is not None:
            parse_shard(self.shard)


def parse_shard(text: str) -> tuple[int, int]:
    """'1/4' -> (1, 4); the index counts from 0."""
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard '{text}' must look like I/N, e.g. 0/2 and 1/2 for two machines") from None
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"--shard '{text}': need 0 <= I < N")
    return index, count


# ----------------------------------------------------------------------------------------------
# The accumulator
# ----------------------------------------------------------------------------------------------


class RowReservoir:
    """A uniform sample of at most `size` rows of a stream, mergeable across streams.

    Each row gets a uniform random key and an integer id; the reservoir keeps the rows that come first
    in (key, id) order, so the union of two reservoirs cut to `size` is a uniform sample of the union of
    their streams. The id only breaks ties between equal float64 keys: with it the order is total, so
    the kept set depends on which rows were offered, never on the order in which they arrived (ranks
    of a launched run offer them in another order than one process). Storage is allocated once
    ([size, D] float32) and updated in place: O(m*D + size) per batch, m = rows that enter, which
    falls towards 0 as the stream grows.
    """

    def __init__(self, dim: int, size: int, *, device="cpu", seed: int = 0):
        import torch

        self.dim, self.size = dim, int(size)
        self.device = torch.device(device)
        self._rows = torch.empty((self.size, dim), dtype=torch.float32, device=self.device)
        self._keys = torch.empty(self.size, dtype=torch.float64, device=self.device)
        self._ids = torch.empty(self.size, dtype=torch.int64, device=self.device)
        self.count = 0  # filled slots
        self._gen = torch.Generator(device=self.device).manual_seed(int(seed) % 2**63)
        self._next_id = 0  # update() numbers the rows of its own stream 0, 1, 2, ...

    @property
    def rows(self):
        """float32 [count, D]: the sampled rows (in slot order; `ordered()` gives a canonical order)."""
        return self._rows[: self.count]

    @property
    def keys(self):
        """float64 [count] in [0, 1): their keys."""
        return self._keys[: self.count]

    @property
    def ids(self):
        """int64 [count]: their tie-breaking ids."""
        return self._ids[: self.count]

    def ordered(self):
        """(rows, keys, ids) sorted by (key, id): the same tensors for the same kept set, however it was filled."""
        order = _key_order(self.keys, self.ids)
        return self.rows[order], self.keys[order], self.ids[order]

    def update(self, x, keys=None, ids=None) -> None:
        """Offer rows x [N, D] (any float dtype, any device); keys/ids default to this reservoir's own stream."""
        import torch

        if self.size == 0 or len(x) == 0:
            return
        if keys is None:
            keys = torch.rand(len(x), generator=self._gen, device=self.device, dtype=torch.float64)
            ids = torch.arange(self._next_id, self._next_id + len(x), device=self.device)
            self._next_id += len(x)
        self.offer(x, keys, ids)

    def merge(self, other: RowReservoir) -> None:
        self.offer(other.rows, other.keys, other.ids)

    def offer(self, rows, keys, ids=None) -> None:
        """Rows with their keys (and ids; default 0, 1, ...): fill free slots, then keep the first in (key, id) order."""
        import torch

        if self.size == 0 or len(keys) == 0:
            return
        keys = keys.to(self.device, torch.float64)
        ids = torch.arange(len(keys), device=self.device) if ids is None else ids.to(self.device, torch.int64)
        free = self.size - self.count
        if free > 0:
            k = min(free, len(keys))
            self._rows[self.count : self.count + k] = rows[:k].to(self.device, torch.float32)
            self._keys[self.count : self.count + k] = keys[:k]
            self._ids[self.count : self.count + k] = ids[:k]
            self.count += k
            rows, keys, ids = rows[k:], keys[k:], ids[k:]
            if len(keys) == 0:
                return
        # The last kept row in (key, id) order: O(size) to find, and few newcomers beat it once many
        # rows have been seen.
        worst_key = self._keys.max()
        worst_id = self._ids[self._keys == worst_key].max()
        enter = torch.nonzero((keys < worst_key) | ((keys == worst_key) & (ids < worst_id))).reshape(-1)
        if len(enter) == 0:
            return
        if len(enter) > self.size:
            enter = enter[_key_order(keys[enter], ids[enter])[: self.size]]
        rows = rows[enter.to(rows.device)].to(self.device, torch.float32)
        keys, ids = keys[enter], ids[enter]
        # Only the m last kept rows can be displaced by m newcomers: the m first of those m and the
        # newcomers take their slots.
        m = len(keys)
        worst = _key_order(self._keys, self._ids)[-m:]
        pool_keys = torch.cat([self._keys[worst], keys])
        pool_ids = torch.cat([self._ids[worst], ids])
        pool_rows = torch.cat([self._rows[worst], rows])
        best = _key_order(pool_keys, pool_ids)[:m]
        self._keys[worst] = pool_keys[best]
        self._ids[worst] = pool_ids[best]
        self._rows[worst] = pool_rows[best]


def _key_order(keys, ids):
    """The permutation that sorts rows by key, equal keys by id (two stable sorts: a lexicographic order)."""
    import torch

    order = torch.argsort(ids, stable=True)
    return order[torch.argsort(keys[order], stable=True)]


@dataclass(frozen=True)
class PCAResult:
    mean: object  # float64 [D]
    components: object  # float64 [k, D], rows unit length, sign: largest-magnitude entry positive
    eigenvalues: object  # float64 [k], variances along the components, descending
    explained_variance_ratio: object  # float64 [k]: eigenvalue / total variance


class PatchPCA:
    """Exact streaming PCA of rows [N, D]: update() batches, merge() other accumulators, finalize(k).

        acc = PatchPCA(384, device="cuda")
        for patches in batches: acc.update(patches.reshape(-1, 384))
        res = acc.finalize(10)          # PCAResult
        torch_state = acc.state_dict()  # n, sum, xtx, reservoir: save it, merge it later
    """

    def __init__(self, dim: int, *, device="cpu", reservoir_size: int = RESERVOIR_SIZE, seed: int = 0):
        import torch

        self.dim = int(dim)
        self.device = torch.device(device)
        self.n = 0  # rows seen (Python int: no overflow, no float rounding)
        self.sum = torch.zeros(self.dim, dtype=torch.float64, device=self.device)  # [D] Σx
        self.xtx = torch.zeros((self.dim, self.dim), dtype=torch.float64, device=self.device)  # [D, D] Σ x xᵀ
        self.reservoir = RowReservoir(self.dim, reservoir_size, device=self.device, seed=seed)

    def update(self, x, keys=None, ids=None) -> None:
        """Add rows x [N, D] (any float dtype, any device); keys/ids: their reservoir keys (RowReservoir.update)."""
        import torch

        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"PatchPCA.update expects [N, {self.dim}] rows, got {tuple(x.shape)}")
        x64 = x.to(self.device, torch.float64)
        self.n += int(x.shape[0])
        self.sum += x64.sum(0)
        self.xtx.addmm_(x64.T, x64)
        self.reservoir.update(x, keys, ids)

    def merge(self, other: PatchPCA) -> PatchPCA:
        """Add another accumulator's statistics (same D) into this one; returns self."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge a {other.dim}-dim PCA into a {self.dim}-dim one")
        self.n += other.n
        self.sum += other.sum.to(self.device)
        self.xtx += other.xtx.to(self.device)
        self.reservoir.merge(other.reservoir)
        return self

    @property
    def mean(self):
        return self.sum / max(self.n, 1)

    def covariance(self):
        """float64 [D, D] sample covariance (n - 1 in the denominator)."""
        import torch

        if self.n < 2:
            raise DataError(f"PCA needs at least 2 patches; got {self.n}")
        mu = self.mean
        cov = (self.xtx - self.n * torch.outer(mu, mu)) / (self.n - 1)
        return (cov + cov.T) / 2  # exact symmetry for eigh

    def finalize(self, k: int) -> PCAResult:
        """The top-k components: eigh of the covariance, sorted by variance, signs made deterministic."""
        import torch

        if not 1 <= k <= self.dim:
            raise UsageError(f"--n-components {k} must be between 1 and the embedding width {self.dim}")
        evals, evecs = torch.linalg.eigh(self.covariance())  # ascending
        evals = evals.flip(0).clamp_min(0.0)
        comps = evecs.flip(1)[:, :k].T.contiguous()  # [k, D]
        pivot = comps.abs().argmax(dim=1)
        signs = torch.sign(comps[torch.arange(k, device=comps.device), pivot])
        comps = comps * torch.where(signs == 0, torch.ones_like(signs), signs)[:, None]
        total = evals.sum()
        ratio = evals[:k] / total if float(total) > 0 else torch.zeros(k, dtype=evals.dtype, device=evals.device)
        return PCAResult(mean=self.mean, components=comps, eigenvalues=evals[:k].contiguous(), explained_variance_ratio=ratio)

    def state_dict(self) -> dict:
        """n, Σx, XᵀX and the reservoir, its rows sorted by key (equal kept sets save equal tensors)."""
        import torch

        rows, keys, _ = self.reservoir.ordered()
        return {"n": torch.tensor([self.n], dtype=torch.int64), "sum": self.sum, "xtx": self.xtx, "reservoir": rows, "reservoir_keys": keys}

    @classmethod
    def from_state(cls, state: dict, *, device="cpu", reservoir_size: int | None = None) -> PatchPCA:
        """Rebuild from `state_dict()`; the reservoir keeps at most `reservoir_size` rows (default: as saved)."""
        import torch

        rows = state.get("reservoir")
        saved = len(rows) if rows is not None else 0
        acc = cls(int(state["sum"].shape[0]), device=device, reservoir_size=saved if reservoir_size is None else reservoir_size)
        acc.n = int(state["n"].reshape(-1)[0])
        acc.sum = state["sum"].to(acc.device, torch.float64).clone()
        acc.xtx = state["xtx"].to(acc.device, torch.float64).clone()
        if saved:
            acc.reservoir.offer(rows, state["reservoir_keys"])
        return acc


def project(x, mean, components):
    """Scores [..., k] of rows x [..., D] on components [k, D] after centring with mean [D] (x's dtype)."""
    return (x - mean.to(x.dtype)) @ components.to(x.dtype).T


def projection_ranges(rows, result: PCAResult, percentiles=RANGE_PERCENTILES):
    """float64 [k, 2]: the given percentiles of each component's scores over `rows` [R, D]."""
    import torch

    scores = project(rows.double(), result.mean, result.components)  # [R, k]
    q = torch.tensor([p / 100 for p in percentiles], dtype=torch.float64, device=scores.device)
    lo_hi = torch.quantile(scores, q, dim=0).T.contiguous()  # [k, 2]
    flat = lo_hi[:, 1] - lo_hi[:, 0] <= 1e-12  # a constant component: any range, not a zero division
    lo_hi[flat, 1] = lo_hi[flat, 0] + 1.0
    return lo_hi


# ----------------------------------------------------------------------------------------------
# Frames -> patch tokens, batched, with prefetch and CUDA OOM back-off
# ----------------------------------------------------------------------------------------------


def auto_batch_size(device, image_size: int) -> int:
    """32 frames on CPU; on CUDA 256 at 224 px, scaled by pixel count (the OOM back-off corrects it)."""
    if device.type != "cuda":
        return 32
    return max(8, int(256 * (224 / image_size) ** 2))


def memory_line(device) -> str:
    """One line on the memory in use: CUDA allocator numbers, or the process's peak RSS on CPU."""
    import torch

    if device.type == "cuda":
        gib = 1024**3
        return (
            f"cuda memory: allocated {torch.cuda.memory_allocated(device) / gib:.2f} GiB, "
            f"peak {torch.cuda.max_memory_allocated(device) / gib:.2f} GiB, reserved {torch.cuda.memory_reserved(device) / gib:.2f} GiB"
        )
    import resource

    return f"memory: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2:.2f} GiB"


def iter_patch_batches(
    backbone,
    frames: Iterator,
    *,
    batch_size: int,
    keep_frames: bool = False,
    ends_batch: Callable[[object], bool] | None = None,
    on_backoff: Callable[[int], None] | None = None,
    on_memory: Callable[[str], None] | None = None,
) -> Iterator[tuple[list, object, tuple[int, int], list | None]]:
    """Yield (metas, patch tokens float32 [B, N, D] on the backbone's device, (gh, gw), frames or None).

    Frames come from `frames` ((uint8 HxWx3, meta) pairs); the next batch is decoded and resized in
    a worker thread while the model runs (OpenCV releases the GIL). On CUDA out-of-memory the batch
    is finished in halves, and later batches keep the smaller size. A batch also ends after a frame
    whose meta `ends_batch` holds true (pca-compute's blocks: a batch never mixes two of them).
    """
    import torch

    from gesture_cli.core.device import run_with_oom_backoff
    from gesture_cli.data.images import resize_image

    size = backbone.image_size
    device = backbone.device
    frames = iter(frames)  # load() resumes where the last batch stopped
    state = {"bs": int(batch_size)}
    last_memory = time.perf_counter()

    def load():
        if ends_batch is None:
            batch = list(itertools.islice(frames, state["bs"]))
        else:
            batch = []
            for item in frames:
                batch.append(item)
                if len(batch) == state["bs"] or ends_batch(item[1]):
                    break
        if not batch:
            return None
        originals = [f for f, _ in batch] if keep_frames else None
        pixels = np.stack([resize_image(f, size) for f, _ in batch])  # uint8 [B, S, S, 3]
        return [m for _, m in batch], torch.from_numpy(pixels), originals

    def backoff(bs: int) -> None:
        state["bs"] = bs
        if on_backoff is not None:
            on_backoff(bs)

    with ThreadPoolExecutor(max_workers=1) as pool:  # inference mode around the forward only (features.iter_batch_features)
        pending = pool.submit(load)
        while True:
            loaded = pending.result()
            if loaded is None:
                break
            pending = pool.submit(load)
            metas, raw, originals = loaded
            outs: list = []
            grid_box: list = []

            def forward(bs: int, raw=raw, outs=outs, grid_box=grid_box) -> None:
                done = sum(len(o) for o in outs)  # resume after the chunks that fit before an OOM
                while done < len(raw):
                    chunk = raw[done : done + bs].to(device, non_blocking=True)
                    _, patches, grid = backbone.forward_features(backbone.preprocess(chunk))
                    outs.append(patches.float())
                    grid_box[:] = [grid]
                    done += len(chunk)

            with torch.inference_mode():
                if device.type == "cuda":
                    run_with_oom_backoff(forward, min(state["bs"], len(raw)), on_backoff=backoff)
                else:
                    forward(len(raw))
                patches = torch.cat(outs) if len(outs) > 1 else outs[0]
            yield metas, patches, tuple(grid_box[0]), originals
            if on_memory is not None and time.perf_counter() - last_memory >= MEMORY_EVERY_S:
                last_memory = time.perf_counter()
                on_memory(f"{memory_line(device)}, batch size {state['bs']}")


# ----------------------------------------------------------------------------------------------
# gx pca-compute: blocks, the order of summation
#
# Floating-point addition is not associative, so N processes give one process's bits only if they
# add the same numbers in the same order. The source is cut into blocks of consecutive units (the
# clips of a video source, the images of an image dataset), each holding at least one batch of
# frames, by a rule that looks only at the source and the batch size, never at the number of
# processes. A block's statistics are summed from zero over its batches (a batch never spans two
# blocks, so it holds the same frames in every run), and the total adds the block sums in block
# order: one process computes block after block; under a launcher rank r computes blocks r, r+N,
# r+2N, ... and sends each block's sums to rank 0, which adds its own and the received ones in
# block order. Memory stays one block's [D, D] per process plus rank 0's total, however many clips.
# The reservoir needs no order: every row's key comes from a generator seeded by (seed, unit, frame),
# so the rows that come first in key order are the same whichever process saw them.
# ----------------------------------------------------------------------------------------------


@dataclass
class _Counts:
    frames: int = 0
    subjects: set | None = None
    clips: set | None = None
    warnings: list | None = None

    def __post_init__(self) -> None:
        self.subjects = set() if self.subjects is None else self.subjects
        self.clips = set() if self.clips is None else self.clips
        self.warnings = [] if self.warnings is None else self.warnings


@dataclass
class FrameUnits:
    """A frame source as a list of units read one at a time: its clips, or the images of an image dataset."""

    counts: list  # frames each unit yields at the stride; None where a video header has no count
    read: Callable[[int, int | None], Iterator]  # (unit, max frames or None) -> (frame, FrameMeta) pairs
    warnings: list  # the source's warnings list, which read() appends to

    def total(self, units=None, max_frames: int | None = None) -> int | None:
        """Frames of `units` (default all) as source.count() reports them: None when a count is unknown."""
        counts = self.counts if units is None else [self.counts[u] for u in units]
        if None in counts:
            return max_frames
        return sum(counts) if max_frames is None else min(sum(counts), max_frames)


def frame_units(source, stride: int) -> FrameUnits:
    """`source` cut into units; a FrameSource of another kind is one unit (read by one process)."""
    from gesture_cli.data.images import to_rgb
    from gesture_cli.data.video import ClipFrames, DatasetFrames, FrameMeta, image_clip

    if isinstance(source, ClipFrames):
        def read_clip(u: int, left: int | None) -> Iterator:
            # a one-clip copy of the source: the same reading and stride code; `replace` keeps its warnings list
            return replace(source, clips=[source.clips[u]]).iter_frames(stride, left)

        return FrameUnits([clip.count(stride) for clip in source.clips], read_clip, source.warnings)
    if isinstance(source, DatasetFrames):
        rows = list(source._rows(stride))  # its --shard and stride selection, in its order

        def read_image(u: int, left: int | None) -> Iterator:
            ds, i = rows[u]
            yield to_rgb(ds.image(i)), FrameMeta(ds.classes[ds.labels[i]], image_clip(ds, i), 0)

        return FrameUnits([1] * len(rows), read_image, source.warnings)
    return FrameUnits([source.count(stride)], lambda u, left: source.iter_frames(stride, left), source.warnings)


def plan_blocks(counts: list, min_frames: int) -> list[range]:
    """Consecutive units grouped until a group holds at least `min_frames` frames (a unit of unknown count ends its group)."""
    blocks, start, frames = [], 0, 0
    for u, c in enumerate(counts):
        frames += min_frames if c is None else c
        if frames >= min_frames:
            blocks.append(range(start, u + 1))
            start, frames = u + 1, 0
    if start < len(counts):
        blocks.append(range(start, len(counts)))
    return blocks


@dataclass(frozen=True)
class _Frame:
    meta: object  # FrameMeta
    block: int
    unit: int
    ordinal: int  # position among the frames its unit yields: with the unit, seeds the frame's reservoir keys
    last: bool = False  # the last frame of its block: the batch ends here and the block's sums are complete


def _block_frames(units: FrameUnits, plan: list[range], blocks, max_frames: int | None, warnings: dict) -> Iterator:
    """(frame, _Frame) for the frames of `blocks`, the last of each block marked; new source warnings go to warnings[block]."""
    left = max_frames
    for b in blocks:
        held = None  # one frame of look-ahead: a frame is known to be its block's last only when the block ends
        for u in plan[b]:
            if left is not None and left <= 0:
                break
            before = len(units.warnings)
            for ordinal, (frame, meta) in enumerate(units.read(u, left)):
                if held is not None:
                    yield held
                held = (frame, _Frame(meta, b, u, ordinal))
                if left is not None:
                    left -= 1
            if len(units.warnings) > before:
                warnings.setdefault(b, []).extend(units.warnings[before:])
        if held is not None:
            yield held[0], replace(held[1], last=True)


_M64 = (1 << 64) - 1


def _mix64(*values: int) -> int:
    """A 64-bit hash of integers (splitmix64 rounds): unrelated generator seeds for neighbouring (unit, frame) pairs."""
    h = 0
    for v in values:
        h = ((h ^ (v & _M64)) + 0x9E3779B97F4A7C15) & _M64
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _M64
        h ^= h >> 31
    return h


def _row_keys(gen, seed: int, tags: list, n_patches: int, device):
    """Reservoir keys and ids of the patches of the frames `tags`: the same numbers in any process.

    Keys come from a CPU generator seeded per (seed, unit, frame), so they do not depend on which
    process (or device) reads the frame. Ids order rows by (unit, frame, patch) to break key ties;
    they are exact below 2^27 units, 2^20 frames per unit and 2^16 patches per frame (beyond, ties
    of equal float64 keys, themselves about 2^-53 likely, may resolve in arrival order).
    """
    import torch

    keys = torch.empty(len(tags) * n_patches, dtype=torch.float64)
    for i, t in enumerate(tags):
        gen.manual_seed(_mix64(seed, t.unit, t.ordinal))
        torch.rand(n_patches, generator=gen, dtype=torch.float64, out=keys[i * n_patches : (i + 1) * n_patches])
    base = torch.tensor([(t.unit << 36) + (t.ordinal << 16) for t in tags], dtype=torch.int64)
    ids = (base[:, None] + torch.arange(n_patches, dtype=torch.int64)[None, :]).reshape(-1)
    return keys.to(device), ids.to(device)


def _block_sums(backbone, frames, own, cfg: PCAConfig, acc: PatchPCA, counts: _Counts, *, seed: int, foreground, batch_size: int,
                on_progress, on_backoff, on_memory) -> Iterator[PatchPCA]:
    """The statistics (no reservoir) of each block in `own`, in order, an empty one for a block without frames;
    rows also go to acc.reservoir with their keys."""
    import torch

    pending = iter(own)
    part = None
    gen = torch.Generator()
    batches = iter_patch_batches(backbone, frames, batch_size=batch_size, ends_batch=lambda t: t.last,
                                 on_backoff=on_backoff, on_memory=on_memory)
    for tags, patches, _grid, _ in batches:
        rows = patches.reshape(-1, patches.shape[-1])  # [B*N, D]
        if not bool(torch.isfinite(rows).all()):
            raise DataError(f"non-finite patch features from backbone '{cfg.backbone}'; rerun with --precision fp32")
        if part is None:  # a block starts: blocks of ours that yielded no frame come first, empty
            for b in pending:
                if b == tags[0].block:
                    break
                yield PatchPCA(acc.dim, device=acc.device, reservoir_size=0)
            part = PatchPCA(acc.dim, device=acc.device, reservoir_size=0)
        keys, ids = _row_keys(gen, seed, tags, patches.shape[1], acc.device)
        if foreground is not None:
            keep = foreground_mask(rows, foreground)
            rows, keys, ids = rows[keep], keys[keep.to(keys.device)], ids[keep.to(ids.device)]
        part.update(rows)
        acc.reservoir.offer(rows, keys, ids)
        counts.frames += len(tags)
        counts.subjects.update(t.meta.subject for t in tags)
        counts.clips.update(t.meta.clip for t in tags)
        if on_progress is not None:
            on_progress(counts.frames)
        if tags[-1].last:
            yield part
            part = None
    for _ in pending:
        yield PatchPCA(acc.dim, device=acc.device, reservoir_size=0)


def _pack(part: PatchPCA):
    """One float64 [D+1, D+1] message: XᵀX, Σx in the last column, n in the corner (exact below 2^53)."""
    import torch

    d = part.dim
    msg = torch.zeros((d + 1, d + 1), dtype=torch.float64, device=part.device)
    msg[:d, :d] = part.xtx
    msg[:d, d] = part.sum
    msg[d, d] = part.n
    return msg


def _unpack(msg, device) -> PatchPCA:
    d = msg.shape[0] - 1
    part = PatchPCA(d, device=device, reservoir_size=0)
    msg = msg.to(part.device)
    part.n = int(msg[d, d])
    part.sum = msg[:d, d].clone()
    part.xtx = msg[:d, :d].clone()
    return part


def _accumulate(backbone, units: FrameUnits, plan: list[range], cfg: PCAConfig, ctx, acc: PatchPCA, *, seed: int,
                foreground=None, on_progress=None, on_backoff=None, on_memory=None, batch_size: int) -> _Counts:
    """One pass over this process's blocks: every (foreground) patch of every frame.

    On rank 0 `acc` ends with the sums of all blocks added in block order and the reservoir of every
    process, and the counts are those of the whole run (warnings in block order); elsewhere both
    are left partial.
    """
    import torch

    own = range(ctx.rank, len(plan), ctx.world)
    counts, warnings = _Counts(), {}
    frames = _block_frames(units, plan, own, cfg.max_samples, warnings)
    parts = _block_sums(backbone, frames, own, cfg, acc, counts, seed=seed, foreground=foreground, batch_size=batch_size,
                        on_progress=on_progress, on_backoff=on_backoff, on_memory=on_memory)
    if ctx.is_main:
        like = torch.zeros((acc.dim + 1, acc.dim + 1), dtype=torch.float64)
        for b in range(len(plan)):
            part = next(parts) if b % ctx.world == 0 else _unpack(ctx.recv_from(b % ctx.world, like), acc.device)
            if part.n:
                acc.merge(part)
    else:
        for part in parts:
            ctx.send_to_main(_pack(part).cpu())
    for _ in parts:  # run the batch iterator to its end (its worker thread); no block is left
        pass
    if ctx.world > 1:
        rows, keys, ids = acc.reservoir.ordered()
        gathered = ctx.all_gather(((rows.cpu(), keys.cpu(), ids.cpu()), (counts.frames, sorted(counts.subjects), sorted(counts.clips), warnings)))
        if ctx.is_main:
            counts, warnings = _Counts(), {}
            for r, (reservoir, (frames_n, subjects, clips, warned)) in enumerate(gathered):
                if r:
                    acc.reservoir.offer(*reservoir)
                counts.frames += frames_n
                counts.subjects.update(subjects)
                counts.clips.update(clips)
                warnings.update(warned)
    counts.warnings = [w for b in sorted(warnings) for w in warnings[b]]
    return counts


def foreground_mask(rows, fg: dict):
    """bool [N]: rows whose score on the first-pass component is above the threshold."""
    return project(rows.double(), fg["mean"], fg["component"][None, :])[:, 0] > fg["threshold"]


def choose_foreground(acc: PatchPCA, threshold: float | None) -> dict:
    """First-pass component with its sign set so the foreground (score > 0) is the minority of patches."""
    res = acc.finalize(1)
    comp = res.components[0]
    rows = acc.reservoir.ordered()[0]  # a uniform sample of the first pass's patches decides the sign (in key order: same bits)
    scores = project(rows.double(), res.mean, comp[None, :])[:, 0]
    if float((scores > 0).double().mean()) > 0.5:
        comp, scores = -comp, -scores
    thr = 0.0 if threshold is None else float(threshold)
    return {"mean": res.mean, "component": comp, "threshold": thr, "kept_fraction": float((scores > thr).double().mean())}


# ----------------------------------------------------------------------------------------------
# Stored components on a device
# ----------------------------------------------------------------------------------------------


class PatchProjector:
    """Stored PCA on the backbone's device: patch tokens -> scores on every component (+ foreground mask)."""

    def __init__(self, tensors: dict, *, device):
        import torch

        f32 = dict(device=device, dtype=torch.float32)
        self.mean = tensors["mean"].to(**f32)  # [D]
        self.components = tensors["components"].to(**f32)  # [k, D]
        self.ranges = tensors["ranges"].double().cpu().numpy() if "ranges" in tensors else None  # [k, 2]
        self.fg = None
        if "fg_component" in tensors:
            self.fg = (tensors["fg_mean"].to(**f32), tensors["fg_component"].to(**f32), float(tensors["fg_threshold"][0]))

    @property
    def k(self) -> int:
        return int(self.components.shape[0])

    def __call__(self, patches, grid: tuple[int, int], *, mask: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """patches [B, N, D] -> (scores float32 [B, gh, gw, k], foreground bool [B, gh, gw] or None)."""
        b = patches.shape[0]
        scores = (patches - self.mean) @ self.components.T  # [B, N, k]
        fg = None
        if mask and self.fg is not None:
            mean, comp, thr = self.fg
            fg = (((patches - mean) @ comp) > thr).reshape(b, *grid).cpu().numpy()
        return scores.reshape(b, *grid, -1).cpu().numpy(), fg
