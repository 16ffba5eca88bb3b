"""One small training loop on Hugging Face Accelerate, shared by every gx trainer.

    result = fit(
        model,
        train_data=data,             # len(data) samples; data.get_batch(indices) -> one batch
        loss_fn=lambda m, batch: ...,  # (model, batch) -> scalar loss, or {"loss": loss, **scalar logs}
        eval_fn=lambda m: {...},     # (unwrapped model) -> {"val_accuracy": ..., ...}, run in eval mode
        cfg=TrainConfig(epochs=10, lr=5e-4),
        checkpoint_dir=out / "checkpoints",
        callbacks={"on_step_end": [progress], "on_eval_end": [print_metrics]},
        resume=False,
        meta={"backbone": ..., "classes": [...]},  # stored in every checkpoint, for the caller to check
    )

Tasks differ only in `loss_fn`, `eval_fn` and the data object; the loop owns everything else:
AdamW (no decay on biases and norms) with linear warm-up and cosine decay, gradient accumulation and
clipping, the precision policy of `core.device.Precision` (`--precision auto|fp32|bf16|fp16`: frozen
parameters stored in the compute dtype, trained ones kept as fp32 master weights, the model's forward
run under autocast with its inputs converted first, and a gradient scaler that skips overflowing steps
in fp16),
evaluation every epoch or every N steps, `best/` by `cfg.monitor`, early stopping after `cfg.patience`
evaluations without improvement, `last/` every `cfg.checkpoint_every` steps, `train_log.csv`.

Determinism and resume. The order of epoch e is `randperm(N)` from a generator seeded by (seed, e);
micro-batch j of optimizer step s runs after `torch.manual_seed(mix(seed, s, j, rank))`, so dropout
and augmentation draw the same numbers whether or not the run was interrupted. A checkpoint stores
the step, epoch and position in the epoch (always an optimizer-step boundary), the trainable weights,
the optimizer and scheduler state and the log so far; `resume=True` continues from it and ends with
the same weights as an uninterrupted run. The loop runs inside `torch.random.fork_rng`, so the
caller's torch random stream is left as it was (a resumed run restores the checkpoint's NumPy and
Python random states, continuing the interrupted process's streams).

Pre-emption. SIGINT and SIGTERM set a flag (a second SIGINT interrupts at once); at the next step
boundary the loop saves `last/` and raises `TrainingInterrupted`, whose message says how to resume.
The previous handlers are restored when `fit` returns. Callbacks can ask for the same stop with
`state.request_stop(reason)`.

Several processes. The same code runs under `accelerate launch` or `torchrun`: each process takes
every world_size-th sample of each global micro-batch, gradients are averaged by DDP, evaluation runs
on the main process and its metrics are broadcast, stop flags are combined across processes at
every step, and only the main process writes checkpoints and the log or runs callbacks.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gesture_cli.core.errors import ArtifactError, GxError, GxWarning, UsageError
from gesture_cli.train.checkpoint import find_checkpoint, load_checkpoint, load_model_state, restore_rng, write_checkpoint

EVENTS = ("on_fit_start", "on_step_end", "on_eval_end", "on_checkpoint", "on_fit_end")
# Config fields that fix what "position in the epoch" means: a resume must use the same values.
RESUME_INVARIANT = ("seed", "batch_size", "grad_accum", "drop_last")
# Config fields the saved optimizer and LR schedule fix: the peak lr and weight decay come back with the optimizer
# and scheduler state, the schedule's length and warm-up shape its steps so far. A resume must use the same values
# (a new one would be ignored, or make the logged lr jump, while run.json recorded it as used).
SCHEDULE_FIXED = ("lr", "max_steps", "epochs", "warmup_steps", "warmup_ratio", "min_lr_ratio", "weight_decay")
LOG_COLUMNS = ("step", "epoch", "lr", "loss", "samples_per_s", "elapsed_s")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10  # passes over the training data
    max_steps: int | None = None  # optimizer steps in all; overrides epochs (the LR schedule spans it)
    batch_size: int = 32  # samples per micro-batch and process
    grad_accum: int = 1  # micro-batches per optimizer step (effective batch = batch_size * grad_accum * processes)
    lr: float = 1e-3  # peak learning rate, reached after warm-up
    weight_decay: float = 0.01  # AdamW decoupled weight decay; biases and 1-d (norm) weights get none
    warmup_steps: int | None = None  # linear warm-up length in optimizer steps; None = warmup_ratio of all steps
    warmup_ratio: float = 0.05  # fraction of all optimizer steps used for warm-up when warmup_steps is None
    min_lr_ratio: float = 0.0  # cosine decay floor, as a fraction of lr
    max_grad_norm: float = 1.0  # gradient clipping (global L2 norm); 0 = off
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (auto: core.device.resolve_precision)
    seed: int = 0  # data order, dropout and augmentation
    checkpoint_every: int = 100  # optimizer steps between saves of last/; 0 = only at the end and on stop
    eval_every: int = 0  # optimizer steps between evaluations; 0 = at the end of every epoch
    log_every: int = 10  # optimizer steps between rows of train_log.csv
    monitor: str = "val_accuracy"  # metric of eval_fn that picks best/ and drives early stopping
    monitor_mode: str = "max"  # max | min
    patience: int = 0  # evaluations without improvement before stopping early; 0 = never stop early
    drop_last: bool = False  # drop the last incomplete micro-batch of each epoch

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1; got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise UsageError(f"--max-steps must be at least 1; got {self.max_steps}")
        if not self.lr > 0:
            raise UsageError(f"--lr must be positive; got {self.lr}")
        if self.weight_decay < 0 or self.max_grad_norm < 0:
            raise UsageError("--weight-decay and --max-grad-norm must not be negative")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise UsageError(f"--warmup-steps must not be negative; got {self.warmup_steps}")
        if not 0 <= self.warmup_ratio < 1:
            raise UsageError(f"--warmup-ratio must lie in [0, 1); got {self.warmup_ratio}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise UsageError(f"min_lr_ratio must lie in [0, 1]; got {self.min_lr_ratio}")
        for name in ("checkpoint_every", "eval_every", "patience"):
            if getattr(self, name) < 0:
                raise UsageError(f"--{name.replace('_', '-')} must not be negative; got {getattr(self, name)}")
        if self.log_every < 1:
            raise UsageError(f"log_every must be at least 1; got {self.log_every}")
        if self.monitor_mode not in ("max", "min"):
            raise UsageError(f"monitor_mode must be max or min; got '{self.monitor_mode}'")
        from gesture_cli.core.device import PRECISIONS

        if self.precision not in PRECISIONS:
            raise UsageError(f"--precision '{self.precision}' is not one of {'|'.join(PRECISIONS)}")


class BatchSource(Protocol):
    """What `fit` trains on: a number of samples and a way to build a batch from sample indices."""

    def __len__(self) -> int: ...

    def get_batch(self, indices: Sequence[int]) -> Any: ...


class TrainingInterrupted(GxError, KeyboardInterrupt):
    """Training stopped by a signal or a stop request after saving last/; rerun with --resume.

    A KeyboardInterrupt too, so that a RunDir step records it as `interrupted`, not `failed`. The exit
    code follows the shell's 128 + signal: 143 after SIGTERM (a scheduler's or a cloud's stop), 130
    after Ctrl-C or a stop request.
    """

    exit_code = 130

    def __init__(self, message: str, *, signum: int | None = None):
        super().__init__(message)
        if signum is not None:
            self.exit_code = 128 + int(signum)


@dataclass
class FitState:
    """Where training is; passed to every callback. Callbacks may call `request_stop`."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch, 0-based
    batch_in_epoch: int = 0  # micro-batches of `epoch` already consumed (a multiple of grad_accum)
    total_steps: int = 0
    steps_per_epoch: int = 0
    micro_batches_per_epoch: int = 0
    samples: int = 0  # training samples seen, all processes
    loss: float | None = None  # mean training loss of the last log window
    lr: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)  # last evaluation
    best_metric: float | None = None
    best_step: int | None = None
    bad_evals: int = 0  # evaluations since the last improvement
    samples_per_s: float = 0.0
    precision: str = "fp32"  # the resolved --precision the loop ran in (fp32 | bf16 | fp16)
    precision_history: list = field(default_factory=list)  # [[first step, precision], ...]: a resume may change it
    num_processes_history: list = field(default_factory=list)  # [[first step, processes], ...], likewise
    skipped_steps: int = 0  # fp16 optimizer steps skipped by the gradient scaler (overflowing gradients)
    elapsed_s: float = 0.0  # training time so far, resumed runs included
    resumed_from: int | None = None  # step of the checkpoint this run resumed from
    stopped_early: bool = False
    stop_reason: str | None = None
    stop_signal: int | None = None  # the signal that asked for the stop (sets the exit code), if any
    finished: bool = False
    log: list[dict[str, Any]] = field(default_factory=list)
    is_main: bool = True
    num_processes: int = 1

    @property
    def epochs_done(self) -> float:
        """Epochs as a fraction: the place in the epoch order (kept across a resume with another process count,
        while the steps per epoch change with it)."""
        return self.epoch + self.batch_in_epoch / max(1, self.micro_batches_per_epoch)

    def request_stop(self, reason: str = "a stop was requested") -> None:
        self.stop_reason = self.stop_reason or reason


@dataclass
class FitResult:
    state: FitState
    last_dir: Path
    best_dir: Path | None  # None without eval_fn or when nothing was evaluated
    log_path: Path


# ---- schedule, order, seeding -------------------------------------------------------------------


def warmup_cosine(step: int, *, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """LR multiplier for optimizer step `step` (0-based): (step+1)/(warmup+1) during warm-up, then cosine to min_ratio."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _mix(*parts: int) -> int:
    """A 63-bit seed from integers (SplitMix64 steps): distinct for (seed, epoch) pairs that sum alike."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


def epoch_order(n: int, *, seed: int, epoch: int):
    """int64 [n]: the sample order of `epoch`, the same in every process and on every resume."""
    import torch

    return torch.randperm(n, generator=torch.Generator().manual_seed(_mix(seed, epoch)))


def micro_batches(order, *, batch_size: int, rank: int, world: int, drop_last: bool) -> list[list[int]]:
    """This process's share of each global micro-batch (batch_size * world samples) of an epoch order.

    With several processes a trailing chunk too small to give every process a sample is dropped, so no
    process ever runs an empty batch.
    """
    order = order.tolist()
    step = batch_size * world
    out: list[list[int]] = []
    for lo in range(0, len(order), step):
        chunk = order[lo : lo + step]
        if len(chunk) < step and (drop_last or len(chunk) < world):
            break
        out.append(chunk[rank::world])
    return out


def make_accelerator(device: str = "auto"):
    """An Accelerator for `--device` (under `accelerate launch` / `torchrun` each process gets its own GPU).

    Its own mixed precision stays off: `core.device.Precision` applies gx's policy (Accelerate has no fp16
    on CPU, so the fp16 path could not be tested without a GPU, and it would autocast data loading too)."""
    import os

    from accelerate import Accelerator

    from gesture_cli.core.device import resolve_device

    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    dev = resolve_device(device)
    if launched and dev.type == "cuda":
        import torch

        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    elif dev.type == "cuda" and dev.index is not None:
        import torch

        torch.cuda.set_device(dev)
    try:
        return Accelerator(cpu=dev.type == "cpu", mixed_precision="no")
    except ValueError as exc:  # the process-wide AcceleratorState was set up with other settings
        if "already been initialized" not in str(exc):
            raise
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=False)
        return Accelerator(cpu=dev.type == "cpu", mixed_precision="no")


# ---- signals ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _stop_on_signals(state: FitState):
    """SIGINT/SIGTERM -> state.request_stop; a second SIGINT raises KeyboardInterrupt at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if signum == signal.SIGINT and state.stop_reason is not None:
            raise KeyboardInterrupt
        if state.stop_reason is None:
            state.stop_signal = signum
        state.request_stop(f"{name} received")

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


# ---- the loop -----------------------------------------------------------------------------------


class _LogWindow:
    """Training logs since the last row of train_log.csv: per-sample sums, kept on the device (no host
    sync per micro-batch, which would stall a GPU), combined over processes when read."""

    def __init__(self, device):
        self.device = device
        self.sums: dict[str, Any] = {}
        self.samples = 0
        self.t0 = time.perf_counter()

    def add(self, values: dict, n: int) -> None:
        import torch

        for k, v in values.items():
            v = torch.as_tensor(v, device=self.device).detach().double() * n
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.samples += n

    def totals(self, acc) -> tuple[dict[str, float], float]:
        """(sums, samples) over all processes; every process must call it at the same step."""
        import torch

        keys = sorted(self.sums)
        t = torch.stack([self.sums[k] for k in keys] + [torch.tensor(float(self.samples), dtype=torch.float64, device=self.device)])
        if acc.num_processes > 1:
            t = acc.reduce(t, reduction="sum")
        values = t.tolist()
        return dict(zip(keys, values[:-1], strict=True)), values[-1]

    def reset(self) -> None:
        self.sums, self.samples, self.t0 = {}, 0, time.perf_counter()

    def restore(self, saved: dict) -> None:
        """Sums saved in a checkpoint (main process only: the others start from zero)."""
        import torch

        self.sums = {k: torch.tensor(v, dtype=torch.float64, device=self.device) for k, v in saved.get("sums", {}).items()}
        self.samples = int(saved.get("samples", 0))


def fit(
    model,
    *,
    train_data: BatchSource,
    loss_fn: Callable[[Any, Any], Any],
    cfg: TrainConfig,
    checkpoint_dir: Path,
    eval_fn: Callable[[Any], dict[str, float]] | None = None,
    params: Sequence | None = None,
    callbacks: dict[str, list[Callable[[FitState], None]]] | None = None,
    resume: bool = False,
    meta: dict[str, Any] | None = None,
    accelerator=None,
    device: str = "auto",
    precision=None,
) -> FitResult:
    """Train `model` in place (see the module docstring); returns the final state and checkpoint paths.

    On return the model holds the weights of the last step (load `best_dir` for the best ones).
    `params`: what the optimizer updates (default: every parameter with requires_grad); checkpoints
    hold exactly these, by name; every other parameter is stored in the compute dtype. `precision`: a
    `core.device.Precision` (default: `cfg.precision` on the accelerator's device; tests pass fp16 on a
    CPU this way). `device` is used only when no accelerator is given. Raises TrainingInterrupted after saving last/ on SIGINT/SIGTERM or
    `state.request_stop`, ArtifactError when `resume` finds no usable checkpoint.
    """
    import torch

    cfg.validate()
    callbacks = callbacks or {}
    for event in callbacks:
        if event not in EVENTS:
            raise ValueError(f"unknown callback event '{event}'; events: {', '.join(EVENTS)}")
    checkpoint_dir = Path(checkpoint_dir)
    from gesture_cli.core.device import make_precision

    acc = accelerator or make_accelerator(device)
    prec = precision or make_precision(acc.device, cfg.precision)
    world, rank, is_main = acc.num_processes, acc.process_index, acc.is_main_process

    raw_model = model
    chosen = {id(p) for p in params} if params is not None else None
    trainable = [(n, p) for n, p in raw_model.named_parameters() if (id(p) in chosen if chosen is not None else p.requires_grad)]
    if not trainable:
        raise UsageError("nothing to train: the model has no parameter with requires_grad")
    names = [n for n, _ in trainable]

    n = len(train_data)
    if n == 0:
        raise UsageError("the training set is empty")
    probe_batches = micro_batches(epoch_order(n, seed=cfg.seed, epoch=0), batch_size=cfg.batch_size, rank=rank, world=world, drop_last=cfg.drop_last)
    micro_per_epoch = len(probe_batches)
    if micro_per_epoch == 0:
        fixes = [*(["lower --batch-size"] if cfg.batch_size > 1 else []), *([f"launch fewer than {world} processes"] if world > 1 else [])]
        raise UsageError(f"{n} training samples make no full batch of {cfg.batch_size} x {world} processes; {' or '.join(fixes)}")
    steps_per_epoch = math.ceil(micro_per_epoch / cfg.grad_accum)
    total = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * steps_per_epoch
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else int(round(cfg.warmup_ratio * total))

    # Frozen parts in the compute dtype, trained ones fp32; forward under autocast (core.device.Precision).
    prec.wrap(prec.store_frozen(raw_model, trainable=[p for _, p in trainable]))
    scaler = prec.grad_scaler()
    decay = [p for _, p in trainable if p.ndim >= 2]
    no_decay = [p for _, p in trainable if p.ndim < 2]
    groups = [g for g in ({"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, warmup=warmup, total=total, min_ratio=cfg.min_lr_ratio)
    )
    model, acc_optimizer = acc.prepare(raw_model, optimizer)
    params_list = [p for _, p in trainable]

    state = FitState(
        total_steps=total, steps_per_epoch=steps_per_epoch, micro_batches_per_epoch=micro_per_epoch,
        lr=cfg.lr * warmup_cosine(0, warmup=warmup, total=total, min_ratio=cfg.min_lr_ratio),
        is_main=is_main, num_processes=world, precision=prec.name, precision_history=[[0, prec.name]],
        num_processes_history=[[0, world]],
    )
    last_dir, best_dir, log_path = checkpoint_dir / "last", checkpoint_dir / "best", checkpoint_dir / "train_log.csv"
    cfg_dict = asdict(cfg)

    saved = None  # state.json of the checkpoint resumed from, and its RNG tensors
    if resume:
        saved = _resume(state, raw_model, optimizer, scheduler, names=names, cfg=cfg_dict, last_dir=last_dir, device=acc.device)
        if scaler is not None and saved[0].get("scaler"):
            scaler.load_state_dict(saved[0]["scaler"])
        if is_main:
            _write_log(log_path, state.log)
    elif is_main:
        _clear_dir(checkpoint_dir)

    def fire(event: str) -> None:
        if is_main:
            for fn in callbacks.get(event, []):
                fn(state)

    window = _LogWindow(acc.device)

    def save_last() -> None:
        sums, samples = window.totals(acc)  # the open log window travels with the checkpoint
        if is_main:
            write_checkpoint(
                last_dir,
                model_state={n: p.detach() for n, p in trainable},
                optimizer_state=optimizer.state_dict(),
                state={**_state_json(state, scheduler, cfg_dict, meta), "window": {"sums": sums, "samples": samples},
                       "scaler": scaler.state_dict() if scaler is not None else None},
            )
            fire("on_checkpoint")

    def evaluate() -> None:
        metrics: dict[str, float] = {}
        if eval_fn is not None:
            if is_main:
                model.eval()
                # No autocast here: eval_fn loads its data, and the model's wrapped forward autocasts itself.
                with torch.no_grad():
                    metrics = {k: float(v) for k, v in eval_fn(acc.unwrap_model(model)).items()}
                model.train()
            if world > 1:
                from accelerate.utils import broadcast_object_list

                box = [metrics]
                broadcast_object_list(box, from_process=0)
                metrics = box[0]
        state.metrics = metrics
        value = metrics.get(cfg.monitor)
        if value is None:
            return
        better = state.best_metric is None or (value > state.best_metric if cfg.monitor_mode == "max" else value < state.best_metric)
        if better:
            state.best_metric, state.best_step, state.bad_evals = value, state.step, 0
            if is_main:
                write_checkpoint(
                    best_dir,
                    model_state={n: p.detach() for n, p in trainable},
                    state={**_state_json(state, scheduler, cfg_dict, meta), "log": []},
                    rng=False,
                )
        else:
            state.bad_evals += 1
            if cfg.patience and state.bad_evals >= cfg.patience:
                state.stopped_early = True
        fire("on_eval_end")

    def stop_requested() -> bool:
        if world == 1:
            return state.stop_reason is not None
        flag = torch.tensor([1.0 if state.stop_reason else 0.0], device=acc.device)
        flag = acc.reduce(flag, reduction="sum")
        if flag.item() > 0 and state.stop_reason is None:
            state.request_stop("another process was asked to stop")
        return flag.item() > 0

    cuda_devices = [acc.device.index or 0] if acc.device.type == "cuda" else []
    if saved is not None and is_main:
        window.restore(saved[0].get("window", {}))
    t_start = time.perf_counter() - state.elapsed_s
    with _stop_on_signals(state), torch.random.fork_rng(devices=cuda_devices), ThreadPoolExecutor(max_workers=1) as pool:
        if saved is not None:
            restore_rng(saved[1], saved[0].get("rng", {}))
        model.train()
        fire("on_fit_start")
        while state.step < total and not state.stopped_early and not state.finished:
            order = epoch_order(n, seed=cfg.seed, epoch=state.epoch)
            chunks = micro_batches(order, batch_size=cfg.batch_size, rank=rank, world=world, drop_last=cfg.drop_last)
            start = state.batch_in_epoch
            if start >= len(chunks):
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                continue
            pending = pool.submit(train_data.get_batch, chunks[start])
            for g_lo in range(start, len(chunks), cfg.grad_accum):
                group = chunks[g_lo : g_lo + cfg.grad_accum]
                for j, idx in enumerate(group):
                    batch = pending.result()
                    nxt = g_lo + j + 1
                    pending = pool.submit(train_data.get_batch, chunks[nxt]) if nxt < len(chunks) else None
                    torch.manual_seed(_mix(cfg.seed, state.step, j, rank))
                    sync = j == len(group) - 1 or world == 1
                    with contextlib.nullcontext() if sync else acc.no_sync(model):
                        out = loss_fn(model, batch)  # the forward autocasts itself (Precision.wrap)
                        loss = out["loss"] if isinstance(out, dict) else out
                        scaled = loss / len(group)
                        acc.backward(scaler.scale(scaled) if scaler is not None else scaled)
                    window.add(out if isinstance(out, dict) else {"loss": loss}, len(idx))
                    # Drop the graph now: held into the next forward it keeps ~20% more memory resident
                    # (measured: peak RSS 1.6 vs 1.3 GB, dinov3-vits16 LoRA, batch 8 at 224 px, CPU).
                    del out, loss, scaled
                    state.samples += len(idx) * world
                if scaler is not None:
                    scaler.unscale_(acc_optimizer)  # clip the true gradients, not the scaled ones
                if cfg.max_grad_norm:
                    acc.clip_grad_norm_(params_list, cfg.max_grad_norm)
                if scaler is not None:
                    scale = scaler.get_scale()
                    scaler.step(acc_optimizer)  # skipped when a gradient overflowed
                    scaler.update()
                    skipped = scaler.get_scale() < scale
                else:
                    acc_optimizer.step()
                    skipped = False
                if skipped:
                    state.skipped_steps += 1
                else:
                    scheduler.step()
                acc_optimizer.zero_grad(set_to_none=True)

                state.step += 1
                state.batch_in_epoch = g_lo + len(group)
                state.lr = scheduler.get_last_lr()[0]
                epoch_done = state.batch_in_epoch >= len(chunks)
                done = state.step >= total
                eval_due = done or (state.step % cfg.eval_every == 0 if cfg.eval_every else epoch_done)
                if eval_due or epoch_done or state.step % cfg.log_every == 0:
                    sums, count = window.totals(acc)
                    now = time.perf_counter()
                    count = max(1.0, count)
                    extras = {k: round(v / count, 6) for k, v in sums.items() if k != "loss"}
                    state.loss = sums["loss"] / count
                    if not math.isfinite(state.loss):
                        raise GxError(f"training loss became {state.loss} by step {state.step}; lower --lr, or use --precision fp32")
                    state.samples_per_s = count / max(1e-9, now - window.t0)
                    state.elapsed_s = now - t_start
                    row = {**_log_row(state), **extras}
                    if eval_due:
                        evaluate()
                        row.update(state.metrics)
                    state.log.append(row)
                    if is_main:
                        _write_log(log_path, state.log)
                    window.reset()
                if epoch_done:
                    state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                state.elapsed_s = time.perf_counter() - t_start
                fire("on_step_end")
                stop = stop_requested()
                if stop or (cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0):
                    save_last()
                    window.t0 = time.perf_counter()
                if stop:
                    acc.wait_for_everyone()
                    raise TrainingInterrupted(
                        f"training stopped at step {state.step}/{total} ({state.stop_reason}); "
                        f"checkpoint saved to {last_dir}; rerun the same command with --resume to continue",
                        signum=state.stop_signal,
                    )
                if done or state.stopped_early:
                    break
        state.finished = True
        state.elapsed_s = time.perf_counter() - t_start
        save_last()
        fire("on_fit_end")
    acc.wait_for_everyone()
    return FitResult(state=state, last_dir=last_dir, best_dir=best_dir if (best_dir / "state.json").is_file() else None, log_path=log_path)


def resume_conflicts(saved: dict, cfg: dict) -> list[str]:
    """The RESUME_INVARIANT and SCHEDULE_FIXED fields whose value in `cfg` (a TrainConfig as a dict) differs from a
    checkpoint's saved one. epochs counts only where a max_steps is unset (max_steps overrides it), warmup_ratio only
    where a warmup_steps is unset."""
    out = []
    for key in (*RESUME_INVARIANT, *SCHEDULE_FIXED):
        if key not in saved or key not in cfg:
            continue
        if key == "epochs" and saved.get("max_steps") is not None and cfg.get("max_steps") is not None:
            continue
        if key == "warmup_ratio" and saved.get("warmup_steps") is not None and cfg.get("warmup_steps") is not None:
            continue
        if saved[key] != cfg[key]:
            out.append(key)
    return out


def _resume(state: FitState, model, optimizer, scheduler, *, names: list[str], cfg: dict, last_dir: Path, device) -> tuple[dict, dict]:
    """Load last/ into model, optimizer, scheduler and state; returns (its state.json, its RNG tensors)."""
    found = find_checkpoint(last_dir)
    if found is None:
        raise ArtifactError(f"nothing to resume: no checkpoint at {last_dir}; run without --resume to start training")
    tensors, saved, opt_state, rng = load_checkpoint(found, device=device)
    saved_cfg = saved.get("config", {})
    changed = resume_conflicts(saved_cfg, cfg)
    if changed:
        diffs = ", ".join(f"{k} {saved_cfg[k]} -> {cfg[k]}" for k in changed)
        raise UsageError(f"cannot resume {found}: it was trained with different settings ({diffs}); use the same values or --force to start over")
    if sorted(tensors) != sorted(names):
        missing = sorted(set(names) - set(tensors)) or sorted(set(tensors) - set(names))
        raise ArtifactError(
            f"{found}: its tensors do not match this model's trainable parameters (e.g. '{missing[0]}'); "
            "it was written by a different model or method: use another run dir or --force to start over"
        )
    load_model_state(model, tensors, source=found)
    if opt_state is not None:
        optimizer.load_state_dict(opt_state)
    scheduler.load_state_dict(saved["scheduler"])
    t = saved["trainer"]
    for key in ("step", "epoch", "batch_in_epoch", "samples", "best_metric", "best_step", "bad_evals", "elapsed_s", "stopped_early", "finished", "metrics"):
        setattr(state, key, t[key])
    state.skipped_steps = int(t.get("skipped_steps", 0))
    state.log = list(saved.get("log", []))
    state.lr = scheduler.get_last_lr()[0]
    state.resumed_from = state.step
    _resume_precision(state, t, found)
    # the count of the latest resume, even one that ran no step: batch_in_epoch was counted in its batches
    saved_world = int(t.get("num_processes", state.num_processes))
    worlds = t.get("num_processes_history") or [[0, saved_world]]
    ran = _step_ranges(worlds, upto=state.step)  # before this resume: which steps ran with how many processes
    state.num_processes_history = _continue_history(worlds, state.num_processes, step=state.step)
    if state.is_main and ran and ran[-1][2] != state.num_processes:  # not going on as its latest steps ran
        said = (_ran_text(ran, verb="with", unit=" process(es)") if len(ran) > 1
                else f"steps up to {state.step} ran with {ran[-1][2]}")
        warnings.warn(GxWarning(f"resuming {found} with {state.num_processes} process(es), but its {said}; training goes on from "
                                "the same sample, though not bit for bit as an uninterrupted run, and metrics.json lists each "
                                "under num_processes_history"), stacklevel=2)
    if saved_world != state.num_processes and state.batch_in_epoch:
        # Another number of processes: keep the samples consumed in this epoch (not bit-exact any more).
        pos = state.batch_in_epoch * saved_world // state.num_processes
        state.batch_in_epoch = pos - pos % int(cfg["grad_accum"])
    return saved, rng


def _continue_history(history: list, value, *, step: int) -> list:
    """A checkpoint's [[first step, value], ...] carried on by this run: [step, value] added when the value changed.
    An entry that ran no step (a resume stopped before its first step) is replaced, not kept beside this one."""
    carried = [list(h) for h in history]
    if carried and carried[-1][0] == step and carried[-1][1] != value:
        carried.pop()
    if not carried or carried[-1][1] != value:
        carried.append([step, value])
    return carried


def _step_ranges(history: list, *, upto: int) -> list[tuple[int, int, object]]:
    """[[first step, value], ...] as (first, last, value) of the steps 1..upto that ran with each value (1-based,
    inclusive); a value that ran no step is left out, and neighbours with one value are joined."""
    ranges: list[tuple[int, int, object]] = []
    for i, (start, value) in enumerate(history):
        end = history[i + 1][0] if i + 1 < len(history) else upto
        if end <= start:
            continue
        if ranges and ranges[-1][2] == value:
            ranges[-1] = (ranges[-1][0], end, value)
        else:
            ranges.append((start + 1, end, value))
    return ranges


def _ran_text(ran: list[tuple[int, int, object]], *, verb: str, unit: str = "") -> str:
    """_step_ranges as words: 'steps 1-4 ran in fp32, 5-8 in bf16' (verb 'in'), '... ran with 8 process(es), ...'."""
    spans = [(f"{first}-{end}" if end > first else f"{first}", value) for first, end, value in ran]
    return f"steps {spans[0][0]} ran {verb} {spans[0][1]}{unit}, " + ", ".join(f"{span} {verb} {value}{unit}" for span, value in spans[1:])


def _resume_precision(state: FitState, trainer: dict, found: Path) -> None:
    """Carry the checkpoint's precision history on. Resuming in another precision is allowed (a bf16 run
    pre-empted and resumed on a card without bf16 has to), but it is said, and metrics.json lists both."""
    history = trainer.get("precision_history") or ([[0, trainer["precision"]]] if trainer.get("precision") else None)
    if not history:  # a checkpoint from before precision was recorded
        return
    ran = _step_ranges(history, upto=state.step)  # before this resume: which steps ran in which precision
    state.precision_history = _continue_history(history, state.precision, step=state.step)
    if not state.is_main or not ran or ran[-1][2] == state.precision:  # going on as its latest steps ran
        return
    last = ran[-1][2]
    if len(ran) == 1:
        warnings.warn(GxWarning(f"resuming {found} in {state.precision}, but its steps up to {state.step} ran in {last}; "
                                "metrics.json lists both under precision_history (pass --precision "
                                f"{last} to keep one)"), stacklevel=2)
        return
    warnings.warn(GxWarning(f"resuming {found} in {state.precision}; its {_ran_text(ran, verb='in')}; metrics.json lists each under "
                            f"precision_history (pass --precision {last} to go on as it last ran)"), stacklevel=2)


def _state_json(state: FitState, scheduler, cfg: dict, meta: dict | None) -> dict[str, Any]:
    trainer = {
        k: getattr(state, k)
        for k in ("step", "epoch", "batch_in_epoch", "samples", "total_steps", "best_metric", "best_step", "bad_evals",
                  "elapsed_s", "stopped_early", "finished", "metrics", "num_processes", "skipped_steps", "precision", "precision_history",
                  "num_processes_history")
    }
    sched = scheduler.state_dict()  # JSON-able: LambdaLR keeps None for plain functions
    return {"trainer": trainer, "scheduler": sched, "config": cfg, "meta": meta or {}, "log": state.log}


def _log_row(state: FitState) -> dict[str, Any]:
    return {
        "step": state.step,
        "epoch": round(state.epochs_done, 4),
        "lr": float(f"{state.lr:.6g}"),
        "loss": round(state.loss, 6) if state.loss is not None else None,
        "samples_per_s": round(state.samples_per_s, 2),
        "elapsed_s": round(state.elapsed_s, 2),
    }


def _write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    from gesture_cli.core.artifacts import atomic_write_text

    columns = list(LOG_COLUMNS)
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    atomic_write_text(path, buf.getvalue())


def _clear_dir(directory: Path) -> None:
    """A fresh run starts from an empty checkpoint dir (old best/ or log rows would mislead).

    The gx trainers set the previous run's checkpoints aside first (train.common.set_aside_checkpoints),
    so that a run that fails keeps them; what is removed here is only what a caller left in place."""
    import shutil

    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
